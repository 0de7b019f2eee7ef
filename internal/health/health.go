// Package health runs a region's health checks (regions[].health): HTTP,
// TCP, SQL, an object store written and read back, a PostgreSQL standby's
// replay lag, a script. A Monitor keeps each check's state: its last
// result, its recent history, and how many times in a row it failed. A
// check that failed the configured number of times in a row is down, and
// so is its region.
package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/config"
	"tandem/internal/hook"
	"tandem/internal/objstore"
	"tandem/internal/postgres"
	"tandem/internal/redact"
)

// HistoryLen is how many results a check's state keeps.
const HistoryLen = 20

// Result is one run of a check.
type Result struct {
	At      time.Time `json:"at"`
	OK      bool      `json:"ok"`
	Seconds float64   `json:"seconds"`
	// Detail says what was found: the error, or what was measured.
	Detail string `json:"detail"`
}

// State is a check's state.
type State struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Down: the check failed Failures times in a row.
	Down bool `json:"down"`
	// Failures counts its failures in a row.
	Failures int       `json:"failures"`
	Last     *Result   `json:"last,omitempty"`
	History  []Result  `json:"history"`
	Since    time.Time `json:"since,omitzero"` // when it went down, or came back
}

// Report is a region's health: down when any of its checks is.
type Report struct {
	Region string    `json:"region"`
	Down   bool      `json:"down"`
	Checks []State   `json:"checks"`
	At     time.Time `json:"at"`
}

// Env is where checks find stores and the configuration (*member.Env).
type Env interface {
	Open(ctx context.Context, region, url string, create bool) (objstore.Bucket, error)
	Config() *config.Config
}

// A Custom check is one a member kind provides (stream_lag: package
// member/streams), registered by the kind; it says what it found or why
// it failed.
type Custom func(ctx context.Context, env Env, region string, c config.HealthCheck) (string, error)

var custom = map[string]Custom{}

// RegisterCheck registers the check of kind (a HealthCheck.Kind()).
func RegisterCheck(kind string, f Custom) { custom[kind] = f }

// Monitor runs one region's checks and keeps their states. It is safe for
// concurrent use.
type Monitor struct {
	region string
	h      config.Health
	env    Env

	mu     sync.Mutex
	states []State
}

// New returns a monitor of region's checks as configured.
func New(region string, h config.Health, env Env) *Monitor {
	m := &Monitor{region: region, h: h, env: env}
	for _, c := range h.Checks {
		m.states = append(m.states, State{Name: c.Name, Kind: c.Kind(), History: []Result{}})
	}
	return m
}

// Report is the region's health as of the last run.
func (m *Monitor) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := Report{Region: m.region, At: time.Now().UTC()}
	for _, s := range m.states {
		s.History = append([]Result(nil), s.History...)
		r.Checks = append(r.Checks, s)
		r.Down = r.Down || s.Down
	}
	return r
}

// RunOnce runs every check at once, each within the timeout, records the
// results and returns the report.
func (m *Monitor) RunOnce(ctx context.Context) Report {
	results := make([]Result, len(m.h.Checks))
	var wg sync.WaitGroup
	for i, c := range m.h.Checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, time.Duration(m.h.Timeout))
			defer cancel()
			results[i] = Run(cctx, m.region, c, m.env)
		})
	}
	wg.Wait()
	m.mu.Lock()
	for i, r := range results {
		s := &m.states[i]
		s.Last = &r
		s.History = append(s.History, r)
		if len(s.History) > HistoryLen {
			s.History = s.History[len(s.History)-HistoryLen:]
		}
		wasDown := s.Down
		if r.OK {
			s.Failures = 0
		} else {
			s.Failures++
		}
		s.Down = s.Failures >= m.h.Failures
		if s.Down != wasDown {
			s.Since = r.At
		}
	}
	m.mu.Unlock()
	return m.Report()
}

// Run runs the checks every interval until ctx ends, calling report after
// each round.
func (m *Monitor) Run(ctx context.Context, report func(Report)) {
	t := time.NewTicker(time.Duration(m.h.Interval))
	defer t.Stop()
	for {
		r := m.RunOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if report != nil {
			report(r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Run runs one check of region, within ctx's deadline.
func Run(ctx context.Context, region string, c config.HealthCheck, env Env) Result {
	start := time.Now()
	detail, err := run(ctx, region, c, env)
	r := Result{At: start.UTC(), OK: err == nil, Seconds: time.Since(start).Seconds(), Detail: detail}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within the timeout: %w", err)
		}
		r.Detail = err.Error()
	}
	return r
}

func run(ctx context.Context, region string, c config.HealthCheck, env Env) (string, error) {
	if f, ok := custom[c.Kind()]; ok {
		return f(ctx, env, region, c)
	}
	switch {
	case c.HTTP != nil:
		return checkHTTP(ctx, c.HTTP)
	case c.TCP != nil:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.TCP.Address)
		if err != nil {
			return "", err
		}
		conn.Close()
		return "connected to " + c.TCP.Address, nil
	case c.SQL != nil:
		return checkSQL(ctx, c.SQL)
	case c.Store != nil:
		return checkStore(ctx, region, c.Store.URL, env)
	case c.ReplayLag != nil:
		s, err := postgres.Check(ctx, string(c.ReplayLag.DSN))
		switch {
		case err != nil:
			return "", err
		case !s.InRecovery:
			return "", errors.New("the server is not a standby (it is not in recovery)")
		case !s.Streaming:
			return "", fmt.Errorf("the standby receives no WAL (its receiver is not streaming); %d bytes received and not replayed", s.Lag)
		case s.Lag > int64(c.ReplayLag.Max):
			return "", fmt.Errorf("%d bytes of WAL received and not replayed, more than %d", s.Lag, int64(c.ReplayLag.Max))
		}
		return fmt.Sprintf("replay lag %d bytes", s.Lag), nil
	case c.Script != nil:
		var out bytes.Buffer
		err := hook.Run(ctx, config.Action{Script: c.Script}, hook.Data{Region: region}, hook.FirstBytes(&out, 4<<10))
		detail := strings.TrimSpace(out.String())
		if err != nil && detail != "" {
			err = fmt.Errorf("%w: %s", err, detail)
		}
		return detail, err
	}
	return "", errors.New("the check has nothing to do")
}

func checkHTTP(ctx context.Context, h *config.HTTPCheck) (string, error) {
	url := string(h.URL)
	req, err := http.NewRequestWithContext(ctx, h.Method, url, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %v", redact.URL(url), err)
	}
	for k, v := range h.Headers {
		req.Header.Set(k, string(v))
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", redact.URL(url), redact.Err(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	took := time.Since(start)
	switch {
	case h.Status != 0 && resp.StatusCode != h.Status:
		return "", fmt.Errorf("status %d, want %d", resp.StatusCode, h.Status)
	case h.Status == 0 && resp.StatusCode/100 != 2:
		return "", fmt.Errorf("status %d, want 2xx", resp.StatusCode)
	case h.Body != "" && !regexp.MustCompile(h.Body).Match(body):
		return "", fmt.Errorf("the body does not match %q", h.Body)
	case h.Latency != 0 && took > time.Duration(h.Latency):
		return "", fmt.Errorf("answered in %s, more than %s", took.Round(time.Millisecond), time.Duration(h.Latency))
	}
	return fmt.Sprintf("status %d in %s", resp.StatusCode, took.Round(time.Millisecond)), nil
}

func checkSQL(ctx context.Context, s *config.SQLCheck) (string, error) {
	db, err := catalog.Open(s.Driver, string(s.DSN))
	if err != nil {
		return "", err
	}
	defer db.Close()
	var got any
	if err := db.QueryRowContext(ctx, s.Query).Scan(&got); err != nil {
		return "", fmt.Errorf("%s: %w", s.Query, scrubDSN(err, string(s.DSN)))
	}
	v := fmt.Sprint(got)
	if b, ok := got.([]byte); ok {
		v = string(b)
	}
	if s.Expect != "" && v != s.Expect {
		return "", fmt.Errorf("%s returned %q, want %q", s.Query, v, s.Expect)
	}
	return "returned " + v, nil
}

// scrubDSN keeps a connection string out of an error.
func scrubDSN(err error, dsn string) error {
	if dsn != "" && strings.Contains(err.Error(), dsn) {
		return errors.New(strings.ReplaceAll(err.Error(), dsn, "(the dsn)"))
	}
	return err
}

// checkStore writes a probe object, reads it back and deletes it: the
// store takes writes and serves reads.
func checkStore(ctx context.Context, region, url string, env Env) (string, error) {
	b, err := env.Open(ctx, region, url, false)
	if err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	key := fmt.Sprintf("tandem-health/%s-%s-%d", region, host, os.Getpid())
	want := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := b.Put(ctx, key, bytes.NewReader(want), int64(len(want)), objstore.PutOptions{}); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	got, _, err := objstore.ReadAll(ctx, b, key)
	if err != nil {
		return "", fmt.Errorf("read back: %w", err)
	}
	if !bytes.Equal(got, want) {
		return "", fmt.Errorf("read back %d bytes that differ from the %d written", len(got), len(want))
	}
	if err := b.Delete(ctx, key); err != nil {
		return "", fmt.Errorf("delete: %w", err)
	}
	return "wrote, read back and deleted " + key, nil
}
