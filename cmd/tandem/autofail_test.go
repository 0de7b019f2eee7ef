package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tandem/internal/autofail"
	"tandem/internal/loopback"
	"tandem/internal/plan"
	"tandem/internal/postgres/pgtest"
)

// autoConfig: two regions, each with one health check whose URL each
// process reads from its environment (so a test can show one observer
// another view than the others: a partition), and a protection group that
// fails over by itself.
const autoConfig = `regions:
  - name: east
    state: DIR/east/.tandem
    health:
      interval: 200ms
      timeout: 150ms
      failures: 2
      checks:
        - {name: app, http: {url: "${EAST_APP}"}}
  - name: west
    state: DIR/west/.tandem
    health:
      interval: 200ms
      timeout: 150ms
      failures: 2
      checks:
        - {name: app, http: {url: "${WEST_APP}"}}
witness:
  url: DIR/witness
replication:
  - name: lake
    from: {region: east, url: DIR/east/lake}
    to: {region: west, url: DIR/west/lake}
    interval: 1s
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    lease_ttl: 1s
NOTIFYPRACTICE    auto_failover:
      mode: MODE
      min_down: 1s
      min_interval: 1h
BLOCKED`

// app is a region's application endpoint the health checks look at.
type app struct {
	srv *httptest.Server
}

func newApp(t testing.TB) *app {
	a := &app{srv: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))}
	t.Cleanup(a.srv.Close)
	return a
}

// deadURL is a loopback URL nothing answers.
func deadURL(t testing.TB) string {
	return "http://" + loopback.Free(t) + "/"
}

type autoRig struct {
	dir, cfg string
	east     *app
}

func newAutoRig(t testing.TB, mode, blocked string, notify ...string) *autoRig {
	return newAutoRigPractice(t, mode, blocked, "", notify...)
}

func newAutoRigPractice(t testing.TB, mode, blocked, practice string, notify ...string) *autoRig {
	dir := t.TempDir()
	r := &autoRig{dir: dir, cfg: filepath.Join(dir, "tandem.yaml"), east: newApp(t)}
	os.MkdirAll(filepath.Join(dir, "east/lake"), 0o755)
	os.WriteFile(filepath.Join(dir, "east/lake/a.csv"), []byte("a"), 0o644)
	n := ""
	if len(notify) > 0 {
		n = "    notify: {webhook: \"" + notify[0] + "\"}\n"
	}
	cfg := strings.NewReplacer("DIR", dir, "MODE", mode, "BLOCKED", blocked, "NOTIFY", n, "PRACTICE", practice).Replace(autoConfig)
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// serve starts one role's process: a region's serve, or the witness
// observer (region "witness"), seeing eastApp as east's endpoint.
func (r *autoRig) serve(t testing.TB, role, eastApp string) *server {
	args := []string{"-test.run=^$", "--", "serve", "--config", r.cfg, "--listen", "127.0.0.1:0"}
	if role == "witness" {
		args = append(args, "--witness", "observer")
	} else {
		args = append(args, "--region", role)
	}
	s := &server{cmd: exec.Command(os.Args[0], args...), out: &lockedBuffer{}, done: make(chan struct{})}
	west := newApp(t)
	s.cmd.Env = append(os.Environ(), "TANDEM_MAIN=1", "EAST_APP="+eastApp, "WEST_APP="+west.srv.URL)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.stop() })
	return s
}

// start runs the three roles, every one seeing view as east's endpoint,
// and waits until east holds the lease.
func (r *autoRig) start(t testing.TB, view string) (east, west *server) {
	east = r.serve(t, "east", view)
	waitUntil(t, 30*time.Second, "east never held the lease", func() bool { return r.holder() == "east" }, east)
	west = r.serve(t, "west", view)
	r.serve(t, "witness", view)
	return east, west
}

func (r *autoRig) holder() string {
	var rec struct{ Holder string }
	data, _ := os.ReadFile(filepath.Join(r.dir, "witness/leases/lakehouse.json"))
	json.Unmarshal(data, &rec)
	return rec.Holder
}

func (r *autoRig) decision() autofail.Record {
	var rec autofail.Record
	data, _ := os.ReadFile(filepath.Join(r.dir, "witness/auto/lakehouse.json"))
	json.Unmarshal(data, &rec)
	return rec
}

// executions are the plan runs recorded in region's state.
func (r *autoRig) executions(region string) []plan.Execution {
	files, _ := filepath.Glob(filepath.Join(r.dir, region, ".tandem/plans/lakehouse/executions/*.json"))
	var out []plan.Execution
	for _, f := range files {
		var x plan.Execution
		data, _ := os.ReadFile(f)
		if json.Unmarshal(data, &x) == nil {
			out = append(out, x)
		}
	}
	return out
}

// waitUntil polls ok every 50ms for up to d.
func waitUntil(t testing.TB, d time.Duration, what string, ok func() bool, logs ...*server) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			for _, s := range logs {
				t.Log(s.out.String())
			}
			t.Fatal(what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An outage of the primary's application, seen by the standby and the
// witness observer: the standby fails over by itself, the primary's serve
// (alive) demotes itself, and the execution says why.
func TestAutoFailoverOutage(t *testing.T) {
	hook, told := receiver(t)
	r := newAutoRig(t, "failover", "", hook)
	east, west := r.start(t, r.east.srv.URL)
	waitUntil(t, 30*time.Second, "the standby never saw east healthy", func() bool { return r.decision().Decision.State == autofail.Healthy }, west)

	r.east.srv.Close() // east's application goes down
	waitUntil(t, 60*time.Second, "no automatic failover to west", func() bool { return r.holder() == "west" }, east, west)
	waitUntil(t, 60*time.Second, "the failover did not finish", func() bool {
		xs := r.executions("west")
		return len(xs) == 1 && xs[0].State == plan.Succeeded
	}, west)
	x := r.executions("west")[0]
	if x.Trigger == nil || x.Trigger.Region != "east" || len(x.Trigger.Observers) != 2 || !strings.Contains(x.Trigger.Reason, "seen by west and observer") {
		t.Fatalf("the execution does not say why it ran: %+v", x.Trigger)
	}
	if !strings.Contains(east.out.String(), "demoted") {
		t.Fatalf("east's serve did not say it demoted itself:\n%s", east.out.String())
	}
	waitUntil(t, 10*time.Second, "the decision record does not say the run succeeded", func() bool {
		d := r.decision()
		return d.Execution == x.ID && d.Outcome == "succeeded"
	}, west)
	// The old primary, back or not, is no standby (the lease names none
	// until a failback): it decides nothing, so the record keeps the
	// decision that ran, and nothing fails back by itself.
	time.Sleep(2 * time.Second)
	if d := r.decision(); d.Decision.State != autofail.Triggered || d.Decision.Standby != "west" {
		t.Fatalf("the decision was overwritten after the failover: %+v", d.Decision)
	}
	// status shows every observer's view, with each check's last result,
	// and the decision with the run.
	apps := []string{"EAST_APP=" + r.east.srv.URL, "WEST_APP=" + r.east.srv.URL}
	code, out := tandem(t, apps, "status", "--config", r.cfg)
	for _, want := range []string{"health and automatic failover", "observer (witness, ", "west (region, ", "east DOWN (east app: ", "automatic failover of lakehouse (mode failover): TRIGGERED", "(" + x.ID + "): succeeded"} {
		if code != 4 || !strings.Contains(out, want) {
			t.Fatalf("status (exit %d) does not say %q:\n%s", code, want, out)
		}
	}
	_, out = tandem(t, apps, "status", "--json", "--config", r.cfg)
	var doc struct {
		Health autofail.Status `json:"health"`
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&doc); err != nil || len(doc.Health.Observations) != 3 || doc.Health.Decisions["lakehouse"].Execution != x.ID {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, o := range doc.Health.Observations {
		if len(o.Regions) != 2 || len(o.Regions[0].Checks[0].History) == 0 || o.Regions[0].Checks[0].Last == nil {
			t.Fatalf("observation without the checks' history: %+v", o)
		}
	}
	// The metrics say what was decided and what the standby sees.
	metrics := scrape(t, west)
	for _, want := range []string{`tandem_auto_failover_decision{group="lakehouse",region="west",state="triggered"} 1`,
		`tandem_auto_failover_decision{group="lakehouse",region="west",state="healthy"} 0`,
		`tandem_health_region_down{region="east"} 1`, `tandem_health_check_up{check="app",region="west"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s:\n%s", want, metrics)
		}
	}
	// The new primary does not fail back by itself.
	time.Sleep(2 * time.Second)
	if r.holder() != "west" || len(r.executions("west"))+len(r.executions("east")) != 1 {
		t.Fatalf("a second automatic run, or the lease moved again: holder %s", r.holder())
	}
	// A person was told each thing once: the region down, the decision,
	// the old primary's demotion, the run and its end, the lease moving.
	got := told()
	for _, want := range []string{"region.down firing", "auto_failover triggered", "auto_failover demoted", "plan.failover started", "plan.failover succeeded", "lease changed"} {
		if n := slices.Index(got, want); n < 0 || slices.Index(got[n+1:], want) >= 0 {
			t.Fatalf("%q told %d times, want once: %v", want, count(got, want), got)
		}
	}
}

// No failover where it could make two primaries: a standby cut off from
// the primary while the witness still sees it; no witness observer at
// all; a blocked window; alert-only. Each says why, and the lease stays.
func TestAutoFailoverWithheld(t *testing.T) {
	for _, tc := range []struct {
		name, mode, blocked string
		witness             bool
		westSeesDead        bool // west sees east's endpoint dead, others see it up
		state, says         string
	}{
		{"partition isolates the standby", "failover", "", true, true, autofail.Suspect, "still sees it up"},
		{"no witness observer", "failover", "", false, false, autofail.Suspect, "no witness observer has reported lately"},
		{"blocked window", "failover", "      blocked: [{from: \"00:00\", to: \"12:00\"}, {from: \"12:00\", to: \"00:00\"}]\n", true, false, autofail.Withheld, "blocked window"},
		{"alert-only", "alert-only", "", true, false, autofail.Withheld, "mode alert-only"},
		{"a failover would lose more than max_lag", "failover", "      max_lag: 1ms\n", true, false, autofail.Withheld, "more than max_lag 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook, told := receiver(t)
			r := newAutoRig(t, tc.mode, tc.blocked, hook)
			eastURL := r.east.srv.URL
			westView := eastURL
			if tc.westSeesDead {
				westView = deadURL(t)
			}
			east := r.serve(t, "east", eastURL)
			waitUntil(t, 30*time.Second, "east never held the lease", func() bool { return r.holder() == "east" }, east)
			west := r.serve(t, "west", westView)
			if tc.witness {
				r.serve(t, "witness", eastURL)
			}
			if !tc.westSeesDead {
				r.east.srv.Close() // down for everyone
			}
			waitUntil(t, 30*time.Second, fmt.Sprintf("no %s decision", tc.state), func() bool {
				d := r.decision().Decision
				return d.State == tc.state && strings.Contains(d.Reason, tc.says)
			}, west)
			time.Sleep(2 * time.Second) // more than min_down and the lease TTL
			if r.holder() != "east" || len(r.executions("west")) != 0 {
				t.Fatalf("failed over anyway: holder %s, %d executions", r.holder(), len(r.executions("west")))
			}
			if !strings.Contains(west.out.String(), tc.says) {
				t.Fatalf("west's log does not say why:\n%s", west.out.String())
			}
			// A person is told the decision once, while it lasts.
			if want := "auto_failover." + tc.state + " firing"; count(told(), want) != 1 {
				t.Fatalf("%q told %d times: %v", want, count(told(), want), told())
			}
		})
	}
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// receiver is an HTTP endpoint for alerts; told lists "kind status" of
// every event it received.
func receiver(t testing.TB) (url string, told func() []string) {
	var (
		mu     sync.Mutex
		events []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var e struct{ Kind, Status string }
		json.NewDecoder(req.Body).Decode(&e)
		mu.Lock()
		events = append(events, e.Kind+" "+e.Status)
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	return hook.URL, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(events) }
}

// A replication that fails is told once, and told again when it is back
// to normal, by the standby's serve.
func TestMemberAlerts(t *testing.T) {
	hook, told := receiver(t)
	r := newAutoRig(t, "off", "", hook)
	os.RemoveAll(filepath.Join(r.dir, "east/lake")) // the source is missing: every pass fails
	r.serve(t, "east", r.east.srv.URL)
	west := r.serve(t, "west", r.east.srv.URL)
	waitUntil(t, 30*time.Second, "the failing replication was not told", func() bool { return count(told(), "replication firing") == 1 }, west)
	os.MkdirAll(filepath.Join(r.dir, "east/lake"), 0o755)
	waitUntil(t, 30*time.Second, "the replication back to normal was not told", func() bool { return count(told(), "replication resolved") == 1 }, west)
	if n := count(told(), "replication firing"); n != 1 {
		t.Fatalf("told %d times while it lasted: %v", n, told())
	}
}

// A scheduled practice drill: the standby's serve runs drill-start, the
// standby's health checks and drill-stop, records the outcome in the
// witness and tells it; the primary keeps the lease throughout.
func TestPracticeDrill(t *testing.T) {
	hook, told := receiver(t)
	r := newAutoRigPractice(t, "off", "", "    practice: {every: 1h}\n", hook)
	east := r.serve(t, "east", r.east.srv.URL)
	waitUntil(t, 30*time.Second, "east never held the lease", func() bool { return r.holder() == "east" }, east)
	west := r.serve(t, "west", r.east.srv.URL)
	waitUntil(t, 60*time.Second, "no practice drill was told", func() bool { return count(told(), "practice succeeded") == 1 }, west)
	var pr autofail.PracticeRecord
	data, _ := os.ReadFile(filepath.Join(r.dir, "witness/practice/lakehouse.json"))
	if err := json.Unmarshal(data, &pr); err != nil || pr.Outcome != "succeeded" || !strings.HasSuffix(pr.DrillStart, " succeeded") ||
		!strings.HasSuffix(pr.DrillStop, " succeeded") || len(pr.Checks) != 1 || !strings.HasPrefix(pr.Checks[0], "ok app") {
		t.Fatalf("practice record: %+v (%v)", pr, err)
	}
	types := map[string]string{}
	for _, x := range r.executions("west") {
		types[x.Type] = x.State
	}
	if types["drill-start"] != plan.Succeeded || types["drill-stop"] != plan.Succeeded || r.holder() != "east" {
		t.Fatalf("executions %v, holder %s", types, r.holder())
	}
	// Once per period: no second drill right after the first.
	time.Sleep(2 * time.Second)
	if n := count(told(), "practice succeeded"); n != 1 || len(r.executions("west")) != 2 {
		t.Fatalf("%d drills told, %d executions", n, len(r.executions("west")))
	}
	_, out := tandem(t, []string{"EAST_APP=" + r.east.srv.URL, "WEST_APP=" + r.east.srv.URL}, "status", "--config", r.cfg)
	if !strings.Contains(out, "practice drills of lakehouse: every 1h0m0s; the last, ") || !strings.Contains(out, "in west: succeeded") {
		t.Fatalf("status:\n%s", out)
	}
}

// A plan run that is unfinished when the primary goes down: no second
// run, the old primary keeps the lease (nothing demotes it), and the
// decision says why.
func TestAutoFailoverDuringARun(t *testing.T) {
	hook, told := receiver(t)
	r := newAutoRig(t, "failover", "", hook)
	east, west := r.start(t, r.east.srv.URL)
	// A switchover someone started and left unfinished holds the plan lock.
	writeFile(t, filepath.Join(r.dir, "witness/plans/lakehouse/active.json"),
		`{"execution":"switchover-20261201T000000000Z","type":"switchover","home":"west","started":"2026-12-01T00:00:00Z"}`)
	r.east.srv.Close()
	waitUntil(t, 30*time.Second, "no withheld decision", func() bool {
		d := r.decision().Decision
		return d.State == autofail.Withheld && strings.Contains(d.Reason, "switchover-20261201T000000000Z is unfinished")
	}, west)
	time.Sleep(2 * time.Second)
	if r.holder() != "east" || len(r.executions("west")) != 0 || strings.Contains(east.out.String(), "demoted") {
		t.Fatalf("holder %s, %d executions; east:\n%s", r.holder(), len(r.executions("west")), east.out.String())
	}
	if count(told(), "auto_failover.withheld firing") != 1 {
		t.Fatalf("told %v", told())
	}
}

// A primary whose health flaps (down, up, down within min_down) is never
// failed over.
func TestAutoFailoverFlapping(t *testing.T) {
	var up atomic.Bool
	up.Store(true)
	flappy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer flappy.Close()
	r := newAutoRig(t, "failover", "")
	// min_down 3s: far longer than a down phase, even with observers
	// held up by a loaded machine.
	data, _ := os.ReadFile(r.cfg)
	os.WriteFile(r.cfg, []byte(strings.Replace(string(data), "min_down: 1s", "min_down: 3s", 1)), 0o644)
	_, west := r.start(t, flappy.URL)
	sawDown := false
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
		up.Store(!up.Load()) // 900ms down, 900ms up: down after two failures, back at once
		for range 18 {
			time.Sleep(50 * time.Millisecond)
			sawDown = sawDown || r.decision().Decision.State == autofail.Down
		}
	}
	if r.holder() != "east" || len(r.executions("west")) != 0 {
		t.Fatalf("a flapping primary was failed over: holder %s", r.holder())
	}
	if !sawDown {
		t.Fatalf("the standby never saw the primary down while it flapped:\n%s", west.out.String())
	}
}

// The primary's serve paused (SIGSTOP: cut off from everything) while
// its application is down: the standby fails over once the lease
// expires; resumed, the old primary acts as primary no more.
func TestAutoFailoverPausedPrimary(t *testing.T) {
	r := newAutoRig(t, "failover", "")
	east, west := r.start(t, r.east.srv.URL)
	waitUntil(t, 30*time.Second, "the standby never saw east healthy", func() bool { return r.decision().Decision.State == autofail.Healthy }, west)
	east.cmd.Process.Signal(syscall.SIGSTOP)
	r.east.srv.Close()
	waitUntil(t, 60*time.Second, "no failover while the primary was paused", func() bool { return r.holder() == "west" }, west)
	waitUntil(t, 60*time.Second, "the failover did not finish", func() bool {
		xs := r.executions("west")
		return len(xs) == 1 && xs[0].State == plan.Succeeded
	}, west)
	east.cmd.Process.Signal(syscall.SIGCONT)
	waitUntil(t, 30*time.Second, "the old primary did not say it is passive", func() bool {
		return strings.Contains(east.out.String(), "another region holds the lease: this region is passive")
	}, east)
	if r.holder() != "west" {
		t.Fatalf("the old primary took the lease back: %s", r.holder())
	}
}

// BenchmarkAutoFailover measures, from the moment the primary's
// application goes down to the failover's last step, each part: detection
// (until every observer agreed it was down), decision (min_down, until
// the standby triggered), the lease (until the standby held it: released
// by the old primary's serve, or expired when it is dark) and the rest of
// the plan.
//
//	go test -run '^$' -bench AutoFailover -benchtime 3x ./cmd/tandem
func BenchmarkAutoFailover(b *testing.B) {
	for _, dark := range []bool{false, true} {
		name := "primary serve alive"
		if dark {
			name = "primary dark (kill -9)"
		}
		b.Run(name, func(b *testing.B) {
			var detect, decide, leaseT, rest, total float64
			for range b.N {
				r := newAutoRig(b, "failover", "")
				east, west := r.start(b, r.east.srv.URL)
				waitUntil(b, 30*time.Second, "the standby never saw east healthy", func() bool { return r.decision().Decision.State == autofail.Healthy }, west)
				if dark {
					east.kill()
				}
				down := time.Now()
				r.east.srv.Close()
				waitUntil(b, 60*time.Second, "the failover did not finish", func() bool {
					xs := r.executions("west")
					return len(xs) == 1 && xs[0].State == plan.Succeeded
				}, west)
				x := r.executions("west")[0]
				var leased time.Time
				for _, g := range x.Groups {
					for _, s := range g.Steps {
						if s.ID == "lease.acquire" && s.Ended != nil {
							leased = *s.Ended
						}
					}
				}
				since := x.Trigger.Since
				detect += since.Sub(down).Seconds()
				decide += x.Decided.Sub(since).Seconds()
				leaseT += leased.Sub(x.Decided).Seconds()
				rest += x.Ended.Sub(leased).Seconds()
				total += x.Ended.Sub(down).Seconds()
				for _, s := range []*server{east, west} {
					s.stop()
				}
			}
			n := float64(b.N)
			b.ReportMetric(detect/n, "detect-s")
			b.ReportMetric(decide/n, "decide-s")
			b.ReportMetric(leaseT/n, "lease-s")
			b.ReportMetric(rest/n, "plan-s")
			b.ReportMetric(total/n, "total-s")
		})
	}
}

// A policy that asks for approval: the decision waits for a person; once
// approved, the standby's serve fails over.
func TestAutoFailoverApproval(t *testing.T) {
	hook, told := receiver(t)
	r := newAutoRig(t, "failover", "      approval: true\n", hook)
	east, west := r.start(t, r.east.srv.URL)
	apps := []string{"EAST_APP=" + r.east.srv.URL, "WEST_APP=" + r.east.srv.URL}
	if code, out := tandem(t, apps, "auto-failover", "approve", "--config", r.cfg); code != 1 || !strings.Contains(out, "awaits no approval") {
		t.Fatalf("an approval with nothing to approve: exit %d\n%s", code, out)
	}
	r.east.srv.Close()
	waitUntil(t, 30*time.Second, "no decision awaiting approval", func() bool { return r.decision().Decision.State == autofail.AwaitingApproval }, west)
	time.Sleep(2 * time.Second)
	if r.holder() != "east" || len(r.executions("west")) != 0 {
		t.Fatalf("failed over without approval: holder %s", r.holder())
	}
	if count(told(), "auto_failover.awaiting-approval firing") != 1 {
		t.Fatalf("told %v", told())
	}
	code, out := tandem(t, apps, "auto-failover", "approve", "--config", r.cfg)
	if code != 0 || !strings.Contains(out, "approved by ") {
		t.Fatalf("approve: exit %d\n%s", code, out)
	}
	waitUntil(t, 60*time.Second, "no failover after the approval", func() bool {
		xs := r.executions("west")
		return len(xs) == 1 && xs[0].State == plan.Succeeded && r.holder() == "west"
	}, west, east)
}

// scrape reads a serve's metrics, at the address its log names.
func scrape(t *testing.T, s *server) string {
	t.Helper()
	return get(t, s.url(t)+"/metrics")
}

// The primary's database stops, and its application's folder is gone:
// the standby's and the witness's sql and store checks see it, and the
// standby fails over.
func TestAutoFailoverDatabaseAndFolder(t *testing.T) {
	for _, what := range []string{"database stopped", "folder removed"} {
		t.Run(what, func(t *testing.T) {
			db := pgtest.Primary(t)
			r := newAutoRig(t, "failover", "")
			appDir := filepath.Join(r.dir, "east", "app")
			os.MkdirAll(appDir, 0o755)
			data, _ := os.ReadFile(r.cfg)
			checks := fmt.Sprintf(`[{name: db, sql: {driver: postgres, dsn: "%s", query: "select 1"}}, {name: app, store: {url: %s}}]`, db.DSN(), appDir)
			os.WriteFile(r.cfg, []byte(strings.Replace(string(data), `
      checks:
        - {name: app, http: {url: "${EAST_APP}"}}`, "\n      checks: "+checks, 1)), 0o644)
			east, west := r.start(t, r.east.srv.URL)
			waitUntil(t, 30*time.Second, "the standby never saw east healthy", func() bool { return r.decision().Decision.State == autofail.Healthy }, west)
			if what == "database stopped" {
				db.Stop()
			} else {
				// Renamed away at once: a removal races with the
				// observers' probes written into it.
				if err := os.Rename(appDir, appDir+".gone"); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, 60*time.Second, "no automatic failover", func() bool {
				xs := r.executions("west")
				return len(xs) == 1 && xs[0].State == plan.Succeeded && r.holder() == "west"
			}, east, west)
			want := map[string]string{"database stopped": "east db:", "folder removed": "east app:"}[what]
			if x := r.executions("west")[0]; !strings.Contains(x.Trigger.Reason, want) {
				t.Fatalf("the trigger does not name the failing check %q: %s", want, x.Trigger.Reason)
			}
		})
	}
}
