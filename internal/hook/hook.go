// Package hook runs the actions of workflow switches and user steps: an
// HTTP request, SQL statements in one transaction, or a script. Their
// strings are Go templates over Data. What an action prints or answers is
// written to the step's log; errors name an HTTP endpoint by host only and
// never print a DSN or header value, which often carry secrets.
package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/config"
	"tandem/internal/notify"

	"tandem/internal/redact"
)

// Data is what templates see.
type Data struct {
	Plan      string // switchover, failover, ...; sync for a sync job
	Execution string
	From, To  string // the regions the plan moves from and to
	Region    string // the region the action acts on
	Vars      map[string]string
	// Epoch is the lease epoch the action acts under (0 outside a
	// protection group): an API that keeps the highest epoch it saw can
	// refuse a stale region's request with it.
	Epoch int64
	// Steps are the outputs of the earlier actions of a sequence, by name
	// (.Steps.export.json.jobId).
	Steps map[string]Output
	// Response is the start's answer, in a job's status URL template.
	Response Output
	// Value and Expected are an endpoint switch's new and expected record.
	Value, Expected string
}

// Output is what an action gave: an HTTP answer's status, headers (first
// value of each, canonical names), body and, if the body is JSON, json; a
// script's output and json; SQL's statements (how many committed).
type Output map[string]any

// funcs are the functions templates may call besides Go's own: json
// writes a value as JSON.
var funcs = template.FuncMap{"json": func(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}}

// Parse parses a template as actions do (for checking configurations).
func Parse(text string) error {
	_, err := template.New("").Funcs(funcs).Option("missingkey=error").Parse(text)
	return err
}

func render(name, text string, d Data) (string, error) {
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(text)
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
	_, err := RunOutput(ctx, a, d, log)
	return err
}

// RunOutput runs a and returns what it gave, for the actions after it.
func RunOutput(ctx context.Context, a config.Action, d Data, log io.Writer) (Output, error) {
	switch {
	case a.HTTP != nil && a.HTTP.Job != nil:
		return runJob(ctx, a.HTTP, d, log)
	case a.HTTP != nil:
		out, err := runHTTP(ctx, a.HTTP, d, log)
		if err == nil {
			err = out.expect(a.HTTP)
		}
		return out.Output, err
	case a.SQL != nil:
		var stmts []string
		for i, s := range a.SQL.Statements {
			r, err := render(fmt.Sprintf("statements[%d]", i), s, d)
			if err != nil {
				return nil, err
			}
			stmts = append(stmts, r)
		}
		if err := catalog.Exec(ctx, a.SQL.Driver, string(a.SQL.DSN), stmts); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "%d statements committed\n", len(stmts))
		return Output{"statements": len(stmts)}, nil
	case a.Script != nil:
		return runScript(ctx, a.Script, d, log)
	}
	return nil, errors.New("the action has nothing to do")
}

// answer is one HTTP exchange.
type answer struct {
	Output
	method, host, status string
	code                 int
}

// expect fails unless the answer's status is the one h expects (2xx by
// default).
func (a answer) expect(h *config.HTTPAction) error {
	if h.Expect != 0 && a.code != h.Expect || h.Expect == 0 && a.code/100 != 2 {
		return fmt.Errorf("http %s %s answered %s%s", a.method, a.host, a.status, excerpt(a.Output))
	}
	return nil
}

// excerpt is the start of an answer's body for an error message.
func excerpt(o Output) string {
	b, _ := o["body"].(string)
	b = strings.TrimSpace(b)
	if b == "" {
		return ""
	}
	if len(b) > 200 {
		b = b[:200] + "..."
	}
	return ": " + strings.ReplaceAll(b, "\n", " ")
}

func runHTTP(ctx context.Context, h *config.HTTPAction, d Data, log io.Writer) (answer, error) {
	u, err := render("url", string(h.URL), d)
	if err != nil {
		return answer{}, err
	}
	body, err := render("body", h.Body, d)
	if err != nil {
		return answer{}, err
	}
	method := h.Method
	if method == "" {
		method = http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
	}
	return request(ctx, method, u, body, h.Headers, d, log)
}

// request sends one request; its answer's body is read up to 1 MiB.
func request(ctx context.Context, method, u, body string, headers map[string]config.Secret, d Data, log io.Writer) (answer, error) {
	a := answer{method: method, host: notify.Host(u)}
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return a, fmt.Errorf("http %s: %w", a.host, redact.Err(err))
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		hv, err := render("headers."+k, string(v), d)
		if err != nil {
			return a, err
		}
		req.Header.Set(k, hv)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return a, fmt.Errorf("http %s %s: %w", method, a.host, redact.Err(err))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	shown := out
	if len(shown) > 16<<10 {
		shown = shown[:16<<10]
	}
	fmt.Fprintf(log, "%s %s: %s\n%s\n", method, a.host, resp.Status, shown)
	a.code, a.status = resp.StatusCode, resp.Status
	hdr := map[string]any{}
	for k, v := range resp.Header {
		hdr[k] = v[0]
	}
	if loc, err := resp.Location(); err == nil {
		hdr["Location"] = loc.String() // resolved against the request's URL
	}
	a.Output = Output{"status": resp.StatusCode, "headers": hdr, "body": string(out)}
	if v, ok := parseJSON(out); ok {
		a.Output["json"] = v
	}
	return a, nil
}

// parseJSON decodes a JSON document (numbers kept as written).
func parseJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

// Answer runs a (quietly) and returns what it answered: the value at the
// dotted path field of its JSON answer, or without field its whole answer
// (an HTTP body, a script's output), trimmed.
func Answer(ctx context.Context, a config.Action, d Data, field string) (any, error) {
	out, err := RunOutput(ctx, a, d, io.Discard)
	if err != nil {
		return nil, err
	}
	if field != "" {
		v, ok := Field(out["json"], field)
		if !ok {
			return nil, fmt.Errorf("the answer has no %q", field)
		}
		return v, nil
	}
	if b, ok := out["body"].(string); ok {
		return strings.TrimSpace(b), nil
	}
	return strings.TrimSpace(fmt.Sprint(out["output"])), nil
}

// Field returns the value at a dotted path in a decoded JSON document
// (items.0.name: a number indexes an array).
func Field(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[part]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func runScript(ctx context.Context, s *config.ScriptAction, d Data, log io.Writer) (Output, error) {
	var args []string
	for i, a := range s.Command {
		r, err := render(fmt.Sprintf("command[%d]", i), a, d)
		if err != nil {
			return nil, err
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
			return nil, err
		}
		cmd.Env = append(cmd.Env, k+"="+r)
	}
	cmd.WaitDelay = 5 * time.Second
	var stdout bytes.Buffer
	mu := new(sync.Mutex) // both copy into log
	cmd.Stdout = &locked{mu: mu, w: io.MultiWriter(log, FirstBytes(&stdout, 1<<20))}
	cmd.Stderr = &locked{mu: mu, w: log}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("script %s: %w", args[0], err)
	}
	out := Output{"output": stdout.String()}
	if v, ok := parseJSON(stdout.Bytes()); ok {
		out["json"] = v
	}
	return out, nil
}

// locked serialises writes that share a writer.
type locked struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *locked) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// FirstBytes is a writer that passes the first n bytes written to it on
// to w and drops the rest (reporting every write as whole).
func FirstBytes(w io.Writer, n int) io.Writer { return &firstBytes{w: w, n: n} }

type firstBytes struct {
	w io.Writer
	n int
}

func (l *firstBytes) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
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
