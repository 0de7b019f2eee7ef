// Package hook runs the actions of workflow switches and user steps: an
// HTTP request, SQL statements in one transaction, or a script. Their
// strings are Go templates over Data. What an action prints or answers is
// written to the step's log; errors name an HTTP endpoint by host only and
// never print a DSN or header value, which often carry secrets.
package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"text/template"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/config"
	"tandem/internal/notify"

	"tandem/internal/redact"
)

// Data is what templates see.
type Data struct {
	Plan      string // switchover, failover, ...
	Execution string
	From, To  string // the regions the plan moves from and to
	Region    string // the region the action acts on
	Vars      map[string]string
}

func render(name, text string, d Data) (string, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return b.String(), nil
}

// Run runs a; log receives its output.
func Run(ctx context.Context, a config.Action, d Data, log io.Writer) error {
	switch {
	case a.HTTP != nil:
		return runHTTP(ctx, a.HTTP, d, log)
	case a.SQL != nil:
		var stmts []string
		for i, s := range a.SQL.Statements {
			r, err := render(fmt.Sprintf("statements[%d]", i), s, d)
			if err != nil {
				return err
			}
			stmts = append(stmts, r)
		}
		if err := catalog.Exec(ctx, a.SQL.Driver, string(a.SQL.DSN), stmts); err != nil {
			return err
		}
		fmt.Fprintf(log, "%d statements committed\n", len(stmts))
		return nil
	case a.Script != nil:
		return runScript(ctx, a.Script, d, log)
	}
	return errors.New("the action has nothing to do")
}

func runHTTP(ctx context.Context, h *config.HTTPAction, d Data, log io.Writer) error {
	u, err := render("url", string(h.URL), d)
	if err != nil {
		return err
	}
	body, err := render("body", h.Body, d)
	if err != nil {
		return err
	}
	method := h.Method
	if method == "" {
		method = http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("http %s: %w", notify.Host(u), redact.Err(err))
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range h.Headers {
		hv, err := render("headers."+k, string(v), d)
		if err != nil {
			return err
		}
		req.Header.Set(k, hv)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("http %s %s: %w", method, notify.Host(u), redact.Err(err))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	fmt.Fprintf(log, "%s %s: %s\n%s\n", method, notify.Host(u), resp.Status, out)
	if h.Expect != 0 && resp.StatusCode != h.Expect || h.Expect == 0 && resp.StatusCode/100 != 2 {
		return fmt.Errorf("http %s %s answered %s", method, notify.Host(u), resp.Status)
	}
	return nil
}

func runScript(ctx context.Context, s *config.ScriptAction, d Data, log io.Writer) error {
	var args []string
	for i, a := range s.Command {
		r, err := render(fmt.Sprintf("command[%d]", i), a, d)
		if err != nil {
			return err
		}
		args = append(args, r)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "TANDEM_PLAN="+d.Plan, "TANDEM_EXECUTION="+d.Execution,
		"TANDEM_FROM="+d.From, "TANDEM_TO="+d.To, "TANDEM_REGION="+d.Region)
	for k, v := range s.Env {
		r, err := render("env."+k, string(v), d)
		if err != nil {
			return err
		}
		cmd.Env = append(cmd.Env, k+"="+r)
	}
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("script %s: %w", args[0], err)
	}
	return nil
}

// Reachable checks that the action's endpoint answers, without running
// it: the HTTP server accepts a connection, the database answers a ping,
// the script's program exists.
func Reachable(ctx context.Context, a config.Action, d Data) error {
	switch {
	case a.HTTP != nil:
		raw, err := render("url", string(a.HTTP.URL), d)
		if err != nil {
			return err
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("http: invalid URL")
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
		if err != nil {
			return fmt.Errorf("http %s is not reachable: %w", notify.Host(raw), err)
		}
		return c.Close()
	case a.SQL != nil:
		if err := catalog.Ping(ctx, a.SQL.Driver, string(a.SQL.DSN)); err != nil {
			return fmt.Errorf("sql: %w", err)
		}
	case a.Script != nil:
		arg, err := render("command[0]", a.Script.Command[0], d)
		if err != nil {
			return err
		}
		if _, err := exec.LookPath(arg); err != nil {
			return fmt.Errorf("script: %w", err)
		}
	}
	return nil
}
