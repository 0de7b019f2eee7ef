package plan_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/member"
	_ "tandem/internal/member/all"
	"tandem/internal/objstore/local"
	. "tandem/internal/plan"
	"tandem/internal/state"
)

// build is the plan the members give (package member asks each kind).
func build(cfg *config.Config, pg *config.ProtectionGroup, typ, from, to string) (*Plan, error) {
	return member.Build(member.NewEnv(cfg, nil), pg, typ, from, to)
}

var ctx = context.Background()

const topology = `
regions:
  - {name: east, state: /tmp/e/.tandem}
  - {name: west, state: /tmp/w/.tandem}
replication:
  - {name: lake, from: {region: east, url: /tmp/e/lake}, to: {region: west, url: /tmp/w/lake}}
groups:
  - name: sales
    from: east
    to: west
    tables: [{name: gold, from: /tmp/e/t/gold, to: /tmp/w/t/gold}]
databases:
  - name: warehouse
    primary: {region: east, dsn: "postgres://e"}
    standby: {region: west, dsn: "postgres://w"}
aliases:
  - name: catalog
    driver: sqlite
    dsn: {east: /tmp/e.db, west: /tmp/w.db}
    names: {gold: {east: gold_1, west: gold_2}}
workflows:
  - name: etl
    activate: {script: {command: [true]}}
    deactivate: {script: {command: [true]}}
witness: {url: /tmp/witness}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    groups: [sales]
    databases: [warehouse]
    aliases: [catalog]
    workflows: [etl]
    steps:
      "replication.promote:lake": {timeout: 2m, retries: 2}
    user_groups:
      - name: dns
        after: aliases
        plans: [switchover, failover]
        steps:
          - {name: swap, http: {url: "http://127.0.0.1:1/dns"}, on_error: continue}
          - {name: ok, pause: true}
`

func load(t *testing.T) (*config.Config, *config.ProtectionGroup) {
	cfg, err := config.Parse([]byte(topology))
	if err != nil {
		t.Fatal(err)
	}
	pg, _ := cfg.FindProtectionGroup("lakehouse")
	return cfg, pg
}

func shape(p *Plan) string {
	var b strings.Builder
	for _, g := range p.Groups {
		fmt.Fprintf(&b, "%s:", g.Name)
		for _, s := range g.Steps {
			fmt.Fprintf(&b, " %s@%s", s.ID, s.Region)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestBuild(t *testing.T) {
	cfg, pg := load(t)
	for _, c := range []struct{ typ, from, to, want string }{
		{Switchover, "east", "west", `prechecks: check.lease@west check.replication:lake@west check.group:sales@west check.database:warehouse@west check.workflow:etl@west check.endpoint:user/dns/swap@west
quiesce: database.fence:warehouse@east workflow.deactivate:etl@east
drain: replication.sync:lake@west group.sync:sales@west database.catchup:warehouse@west
lease: lease.move@west
promote: replication.promote:lake@west group.finalize:sales@west database.promote:warehouse@west
aliases: aliases.switch:catalog@west
dns: user:dns/swap@west user:dns/ok@west
activate: workflow.activate:etl@west
`},
		{Failover, "east", "west", `prechecks: check.lease@west check.replication:lake@west check.group:sales@west check.database:warehouse@west check.workflow:etl@west check.endpoint:user/dns/swap@west
lease: lease.acquire@west
quiesce: database.fence:warehouse@east workflow.deactivate:etl@east
promote: replication.promote:lake@west group.finalize:sales@west database.promote:warehouse@west
aliases: aliases.switch:catalog@west
dns: user:dns/swap@west user:dns/ok@west
activate: workflow.activate:etl@west
`},
		{Failback, "west", "east", `prechecks: check.lease@east check.reinstated:warehouse@east check.workflow:etl@east
quiesce: workflow.deactivate:etl@east
reverse: replication.reverse:lake@east group.reverse:sales@east database.reinstate:warehouse@east
lease: lease.standby@west
`},
		{DrillStart, "east", "west", `prechecks: check.lease@west check.replication:lake@west check.group:sales@west check.database:warehouse@west check.workflow:etl@west
quiesce: drill.mark@west database.pause-replay:warehouse@west
promote: group.finalize:sales@west
`},
		{DrillStop, "east", "west", `prechecks: check.lease@west check.workflow:etl@west
reverse: database.resume-replay:warehouse@west drill.unmark@west
`},
	} {
		p, err := build(cfg, pg, c.typ, c.from, c.to)
		if err != nil {
			t.Fatal(err)
		}
		if got := shape(p); got != c.want {
			t.Errorf("%s:\n%s\nwant:\n%s", c.typ, got, c.want)
		}
	}
	p, _ := build(cfg, pg, Failover, "east", "west")
	if s := p.Step("replication.promote:lake"); s.Timeout != 2*time.Minute || s.Retries != 2 {
		t.Errorf("step settings not applied: %+v", s)
	}
	if s := p.Step("database.fence:warehouse"); s.OnError != "continue" {
		t.Errorf("failover fences the old primary only if it answers: %+v", s)
	}
	if s := p.Step("user:dns/ok"); !s.Pause() || s.Timeout != DefaultPause {
		t.Errorf("pause step: %+v", s)
	}
	if _, err := build(cfg, pg, "teleport", "east", "west"); err == nil {
		t.Error("unknown type accepted")
	}
	if _, err := build(cfg, pg, Switchover, "east", "east"); err == nil {
		t.Error("from == to accepted")
	}
}

// fake does what the test says each step does.
type fake struct {
	mu    sync.Mutex
	runs  map[string]int
	steps map[string]func(ctx context.Context, n int) error
}

func (f *fake) Run(ctx context.Context, p *Plan, s *Step, exec string, log io.Writer) error {
	f.mu.Lock()
	f.runs[s.ID]++
	n := f.runs[s.ID]
	do := f.steps[s.ID]
	f.mu.Unlock()
	fmt.Fprintf(log, "%s try %d\n", s.ID, n)
	if do != nil {
		return do(ctx, n)
	}
	return nil
}

func executor(t *testing.T, f *fake) *Executor {
	b, err := local.Open(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	st := state.Store{Bucket: b}
	return &Executor{Records: st.Sub("west").Sub("plans"), Lock: st.Sub("witness").Sub("plans"), Actions: f, Poll: 10 * time.Millisecond}
}

func states(x *Execution) map[string]string {
	m := map[string]string{}
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			m[s.ID] = s.State
		}
	}
	return m
}

func TestExecutor(t *testing.T) {
	cfg, pg := load(t)
	p, _ := build(cfg, pg, Failover, "east", "west")
	f := &fake{runs: map[string]int{}, steps: map[string]func(context.Context, int) error{
		// Fails twice, then works: with retries 2 it succeeds in one run.
		"replication.promote:lake": func(_ context.Context, n int) error {
			if n < 3 {
				return errors.New("flaky")
			}
			return nil
		},
		// Fails until the operator fixes it.
		"group.finalize:sales": func(_ context.Context, n int) error {
			if n == 1 {
				return errors.New("standby table unreadable")
			}
			return nil
		},
		"database.fence:warehouse": func(context.Context, int) error { return errors.New("old primary unreachable") },
		"user:dns/swap":            func(ctx context.Context, _ int) error { <-ctx.Done(); return ctx.Err() },
	}}
	p.Step("user:dns/swap").Timeout = 50 * time.Millisecond
	e := executor(t, f)
	decided := time.Now().Add(-time.Second)
	x, err := e.Run(ctx, p, decided)
	if !errors.Is(err, ErrStepFailed) || !strings.Contains(err.Error(), "group.finalize:sales failed: standby table unreadable") {
		t.Fatalf("run: %v", err)
	}
	got := states(x)
	if got["database.fence:warehouse"] != FailedIgnored || got["replication.promote:lake"] != Succeeded || got["group.finalize:sales"] != Failed || got["aliases.switch:catalog"] != Queued {
		t.Fatalf("states after the failure: %v", got)
	}
	if f.runs["replication.promote:lake"] != 3 {
		t.Fatalf("promote ran %d times", f.runs["replication.promote:lake"])
	}

	// A second run is refused while this one is unfinished.
	if _, err := e.Run(ctx, p, time.Now()); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), x.ID) {
		t.Fatalf("second run: %v", err)
	}
	// Resume refuses to pass a failed step silently.
	if _, err := e.Resume(ctx, p, x.ID, nil); err == nil || !strings.Contains(err.Error(), "tandem plan retry") {
		t.Fatalf("resume over a failed step: %v", err)
	}

	// Retry: the failed step runs again, the rest goes on; the swap step
	// times out (continue mode) and the pause waits for approval.
	done := make(chan error, 1)
	go func() {
		_, err := e.Retry(ctx, p, x.ID, "")
		done <- err
	}()
	waitFor(t, e, x.ID, func(x *Execution) bool { return states(x)["user:dns/ok"] == Waiting })
	if _, err := e.Approve(ctx, x.ID, "user:dns/ok", "ops@example"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	x, _, _ = e.Load(ctx, x.ID)
	got = states(x)
	if x.State != Succeeded || got["user:dns/swap"] != FailedIgnored || got["workflow.activate:etl"] != Succeeded {
		t.Fatalf("after retry: %s %v", x.State, got)
	}
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			if s.ID == "user:dns/swap" && !strings.Contains(s.Error, "no answer within") {
				t.Errorf("timeout not recorded: %+v", s)
			}
			if s.ID == "group.finalize:sales" && (s.Attempts != 2 || !strings.Contains(s.Log, "try 2")) {
				t.Errorf("finalize record: %+v", s)
			}
		}
	}
	if x.RTO < 1 || x.Ended == nil {
		t.Fatalf("RTO %v from %s to %v", x.RTO, x.Decided, x.Ended)
	}
	if f.runs["lease.acquire"] != 1 {
		t.Fatalf("a succeeded step ran again: %v", f.runs)
	}
	// Finished: the lock is free.
	f.steps = nil
	p.Step("user:dns/ok").Disabled = true
	x2, err := e.Run(ctx, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != x2.ID {
		t.Fatalf("list: %d %v", len(list), err)
	}
}

func waitFor(t *testing.T, e *Executor, id string, ok func(*Execution) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if x, _, err := e.Load(ctx, id); err == nil && ok(x) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// TestInterruptResume stops an execution in the middle of a step (as a
// crash would) and resumes it: the interrupted step runs again, the ones
// done do not.
func TestInterruptResume(t *testing.T) {
	cfg, pg := load(t)
	p, _ := build(cfg, pg, Switchover, "east", "west")
	p.Step("user:dns/ok").Disabled = true
	rctx, stop := context.WithCancel(ctx)
	f := &fake{runs: map[string]int{}, steps: map[string]func(context.Context, int) error{
		"lease.move": func(ctx context.Context, n int) error {
			if n == 1 {
				stop()
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		},
	}}
	e := executor(t, f)
	x, err := e.Run(rctx, p, time.Now())
	if err == nil || !strings.Contains(err.Error(), "plan resume") {
		t.Fatalf("interrupted run: %v", err)
	}
	x, _, _ = e.Load(ctx, x.ID)
	if s := states(x); s["lease.move"] != Running || s["group.sync:sales"] != Succeeded || x.State != Running {
		t.Fatalf("after interruption: %s %v", x.State, s)
	}
	// The plan changed: resume refuses.
	p2, _ := build(cfg, pg, Switchover, "east", "west")
	p2.Groups = p2.Groups[1:]
	if _, err := e.Resume(ctx, p2, x.ID, nil); err == nil || !strings.Contains(err.Error(), "no longer gives the plan") {
		t.Fatalf("resume with another plan: %v", err)
	}
	x, err = e.Resume(ctx, p, x.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := states(x); x.State != Succeeded || s["user:dns/ok"] != Skipped {
		t.Fatalf("after resume: %s %v", x.State, s)
	}
	if f.runs["lease.move"] != 2 || f.runs["group.sync:sales"] != 1 {
		t.Fatalf("runs: %v", f.runs)
	}
}

func TestCancelAndSkip(t *testing.T) {
	cfg, pg := load(t)
	p, _ := build(cfg, pg, Failover, "east", "west")
	f := &fake{runs: map[string]int{}, steps: map[string]func(context.Context, int) error{
		"lease.acquire": func(context.Context, int) error { return errors.New("held by east") },
	}}
	e := executor(t, f)
	x, err := e.Run(ctx, p, time.Now())
	if !errors.Is(err, ErrStepFailed) {
		t.Fatal(err)
	}
	if _, err := e.Skip(ctx, p, x.ID, "no.such.step"); err == nil {
		t.Fatal("skipped a step that does not exist")
	}
	// Skip the lease step; the run goes on to the pause, and a cancel
	// from another command stops it there.
	done := make(chan error, 1)
	go func() { _, err := e.Skip(ctx, p, x.ID, "lease.acquire"); done <- err }()
	waitFor(t, e, x.ID, func(x *Execution) bool { return states(x)["user:dns/ok"] == Waiting })
	if _, err := e.Cancel(ctx, x.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("canceled run: %v", err)
	}
	x, _, _ = e.Load(ctx, x.ID)
	if s := states(x); x.State != Canceled || s["lease.acquire"] != Skipped || s["user:dns/ok"] != Canceled || s["workflow.activate:etl"] != Canceled {
		t.Fatalf("after cancel: %s %v", x.State, s)
	}
	// A canceled run can be resumed (the repair status names): it takes
	// the lock again, and its pause asks for approval again.
	go func() { _, err := e.Resume(ctx, p, x.ID, nil); done <- err }()
	waitFor(t, e, x.ID, func(x *Execution) bool { return states(x)["user:dns/ok"] == Waiting })
	if _, err := e.Run(ctx, p, time.Now()); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second run while the resumed one runs: %v", err)
	}
	if _, err := e.Cancel(ctx, x.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("canceled again: %v", err)
	}
	if _, err := e.Run(ctx, p, time.Now()); err != nil && !errors.Is(err, ErrStepFailed) {
		t.Fatalf("a new run after cancel: %v", err)
	}
}

// TestStepJSON: a step's timeout reads as a duration in JSON, and both
// that and nanoseconds read back.
func TestStepJSON(t *testing.T) {
	s := NewStep(CheckLease, "", "west", "t", "stop")
	data, err := json.Marshal(s)
	if err != nil || !strings.Contains(string(data), `"timeout":"10m0s"`) {
		t.Fatalf("%s %v", data, err)
	}
	var back Step
	if err := json.Unmarshal(data, &back); err != nil || back.Timeout != DefaultTimeout || back.ID != s.ID {
		t.Fatalf("%+v %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"id":"x","timeout":5000000000}`), &back); err != nil || back.Timeout != 5*time.Second {
		t.Fatalf("nanoseconds: %+v %v", back, err)
	}
}
