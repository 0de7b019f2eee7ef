package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	"tandem/internal/postgres/pgtest"
)

var ctx = context.Background()

// folders is an Env whose locations are local folders.
type folders struct{}

func (folders) Open(ctx context.Context, region, url string, create bool) (objstore.Bucket, error) {
	return local.Open(url, create)
}
func (folders) Config() *config.Config { return nil }

var openLocal folders

// Every kind of check against a real endpoint that answers well, and one
// that does not: each result says what it found.
func TestChecks(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := l.Addr().String()
	closedL, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := closedL.Addr().String()
	closedL.Close()
	defer l.Close()
	dir := t.TempDir()
	db := "file:" + filepath.Join(dir, "h.db")

	for _, tc := range []struct {
		name  string
		check config.HealthCheck
		ok    bool
		says  string
	}{
		{"http ok", config.HealthCheck{HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL + "/"), Body: `"status":"ok"`}}, true, "status 200"},
		{"http status", config.HealthCheck{HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL + "/down")}}, false, "status 503, want 2xx"},
		{"http body", config.HealthCheck{HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL + "/"), Body: `degraded`}}, false, "does not match"},
		{"http latency", config.HealthCheck{HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL + "/slow"), Latency: config.Duration(50 * time.Millisecond)}}, false, "more than 50ms"},
		{"tcp ok", config.HealthCheck{TCP: &config.TCPCheck{Address: open}}, true, "connected"},
		{"tcp refused", config.HealthCheck{TCP: &config.TCPCheck{Address: closed}}, false, "refused"},
		{"sql ok", config.HealthCheck{SQL: &config.SQLCheck{Driver: "sqlite", DSN: config.Secret(db), Query: "select 1", Expect: "1"}}, true, "returned 1"},
		{"sql expect", config.HealthCheck{SQL: &config.SQLCheck{Driver: "sqlite", DSN: config.Secret(db), Query: "select 2", Expect: "1"}}, false, `returned "2", want "1"`},
		{"sql error", config.HealthCheck{SQL: &config.SQLCheck{Driver: "sqlite", DSN: config.Secret(db), Query: "select x from nowhere"}}, false, "no such table"},
		{"store ok", config.HealthCheck{Store: &config.StoreCheck{URL: dir}}, true, "wrote, read back and deleted"},
		{"store missing", config.HealthCheck{Store: &config.StoreCheck{URL: filepath.Join(dir, "gone")}}, false, "does not exist"},
		{"script ok", config.HealthCheck{Script: &config.ScriptAction{Command: []string{"sh", "-c", "echo fine; exit 0"}}}, true, "fine"},
		{"script fails", config.HealthCheck{Script: &config.ScriptAction{Command: []string{"sh", "-c", "echo broken >&2; exit 3"}}}, false, "broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			r := Run(cctx, "east", tc.check, openLocal)
			if r.OK != tc.ok || !strings.Contains(r.Detail, tc.says) {
				t.Fatalf("%+v; want ok %v saying %q", r, tc.ok, tc.says)
			}
		})
	}
	// Nothing was left in the store.
	b, _ := local.Open(dir, false)
	for info, err := range b.List(ctx, "tandem-health/") {
		t.Fatalf("left in the store: %v %v", info.Key, err)
	}
}

// A check that does not answer within the timeout fails, saying so.
func TestTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	m := New("east", config.Health{Interval: config.Duration(time.Second), Timeout: config.Duration(100 * time.Millisecond), Failures: 1,
		Checks: []config.HealthCheck{{Name: "api", HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL)}}}}, openLocal)
	r := m.RunOnce(ctx)
	if !r.Down || !strings.Contains(r.Checks[0].Last.Detail, "timeout") {
		t.Fatalf("%+v", r.Checks[0])
	}
}

// A check is down after the configured failures in a row, not before;
// one success brings it back; history keeps the last results.
func TestConsecutiveFailures(t *testing.T) {
	up := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	m := New("east", config.Health{Interval: config.Duration(time.Second), Timeout: config.Duration(time.Second), Failures: 3,
		Checks: []config.HealthCheck{{Name: "api", HTTP: &config.HTTPCheck{Method: "GET", URL: config.Secret(srv.URL)}}}}, openLocal)
	// Round by round: up, then down four times (the third failure in a
	// row makes it down), then up (back at once).
	rounds := []bool{true, false, false, false, false, true}
	wantDown := []bool{false, false, false, true, true, false}
	for i, u := range rounds {
		up = u
		if r := m.RunOnce(ctx); r.Down != wantDown[i] {
			t.Fatalf("round %d (up %v): down %v, want %v: %+v", i, u, r.Down, wantDown[i], r.Checks[0])
		}
	}
	s := m.Report().Checks[0]
	if len(s.History) != len(rounds) || s.Failures != 0 || s.Since.IsZero() {
		t.Fatalf("state after the rounds: %+v", s)
	}
	for range HistoryLen {
		m.RunOnce(ctx)
	}
	if n := len(m.Report().Checks[0].History); n != HistoryLen {
		t.Fatalf("history holds %d results, want %d", n, HistoryLen)
	}
}

// A PostgreSQL standby's replay lag, on a real primary and standby; the
// primary itself is no standby, and a stopped standby fails.
func TestReplayLag(t *testing.T) {
	primary := pgtest.Primary(t)
	standby := pgtest.Standby(t, primary)
	check := func(dsn string) Result {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return Run(cctx, "west", config.HealthCheck{ReplayLag: &config.ReplayLagCheck{DSN: config.Secret(dsn), Max: 16 << 20}}, openLocal)
	}
	var r Result
	for range 50 { // the standby's receiver connects shortly after it starts
		if r = check(standby.DSN()); r.OK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !r.OK || !strings.Contains(r.Detail, "replay lag") {
		t.Fatalf("standby: %+v", r)
	}
	if r := check(primary.DSN()); r.OK || !strings.Contains(r.Detail, "not a standby") {
		t.Fatalf("primary: %+v", r)
	}
	standby.Stop()
	if r := check(standby.DSN()); r.OK {
		t.Fatalf("stopped standby: %+v", r)
	}
}
