// Package group is the member kind of table groups (groups[] in the
// configuration and in protection groups): the Delta tables of a workflow,
// copied by package tablegroup as one unit at completed-run boundaries, in
// the direction the region lease says; finalized to the manifest at
// failover, rewound and synced back at failback.
package group

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/databricks"
	"tandem/internal/member"
	"tandem/internal/notify"
	"tandem/internal/plan"
	"tandem/internal/state"
	"tandem/internal/tablegroup"
)

// Step kinds.
const (
	Check    = "check.group"
	Sync     = "group.sync"
	Finalize = "group.finalize"
	Reverse  = "group.reverse"
)

// Kind is the table group kind.
type Kind struct{}

var (
	_ member.Kind   = Kind{}
	_ member.Server = Kind{}
)

func init() { member.Register(Kind{}) }

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Sync, Finalize, Reverse} }

// Reversed returns the group copying the other way.
func Reversed(g *Group) *Group {
	rg := *g
	rg.From, rg.To = g.To, g.From
	rg.Tables = nil
	for _, t := range g.Tables {
		rg.Tables = append(rg.Tables, Table{Name: t.Name, From: t.To, To: t.From})
	}
	return &rg
}

// Current returns the group in the direction the lease says.
func Current(ctx context.Context, env *member.Env, g *Group) (*Group, error) {
	rev, err := env.Reversed(ctx, refKey, g.Name, g.From, g.To)
	if err != nil || !rev {
		return g, err
	}
	return Reversed(g), nil
}

// Toward returns the group copying into region to.
func Toward(g *Group, to string) *Group {
	if g.To == to {
		return g
	}
	return Reversed(g)
}

// State is a group's folder in its target region's state.
func State(ctx context.Context, env *member.Env, g *Group) (state.Store, error) {
	st, err := env.RegionState(ctx, g.To)
	if err != nil {
		return state.Store{}, fmt.Errorf("group %s: %w", g.Name, err)
	}
	return st.Sub("groups").Sub(g.Name), nil
}

// Open opens a group's tables in both regions, as given (see Current),
// and its state in the target region; its writes are fenced by the lease
// of its protection group. With targetOnly, sources are not opened and
// missing target tables are not created (finalize runs without the
// primary).
func Open(ctx context.Context, env *member.Env, g *Group, targetOnly bool, log *slog.Logger) (*tablegroup.Group, error) {
	st, err := State(ctx, env, g)
	if err != nil {
		return nil, err
	}
	out := &tablegroup.Group{Name: g.Name, Workflow: g.Workflow != nil, State: st, Log: log,
		Conditions: env.Conditions(refKey, g.Name, g.From, g.To)}
	if w := g.Workflow; w != nil {
		out.RunIDRule = w.RunID
		// The cut reads the runs of the job in the region the group copies
		// from: after a role change, the job that runs there now.
		if d := w.Job(g.From); d != nil {
			out.Runs = &databricks.Client{Host: d.Host, Token: string(d.Token), JobID: d.JobID}
		} else if len(w.Databricks) > 0 {
			out.Runs = noJob{g.Name, g.From}
		}
	}
	for _, t := range g.Tables {
		tt := tablegroup.Table{Name: t.Name}
		if !targetOnly {
			if tt.Source, err = env.Open(ctx, g.From, t.From, false); err != nil {
				return nil, fmt.Errorf("group %s, table %s: source: %w", g.Name, t.Name, err)
			}
		}
		// A table's target folder is created on its first sync; finalize
		// only works on what is there.
		if tt.Target, err = env.Open(ctx, g.To, t.To, !targetOnly); err != nil {
			return nil, fmt.Errorf("group %s, table %s: target: %w", g.Name, t.Name, err)
		}
		out.Tables = append(out.Tables, tt)
	}
	return out, nil
}

// noJob is the run source of a group whose workflow runs on Databricks in
// other regions but not in the one it copies from now.
type noJob struct{ group, region string }

func (n noJob) Runs(context.Context) ([]tablegroup.Run, error) {
	return nil, fmt.Errorf("group %s has no Databricks job in %s, where it copies from now: set groups[].workflow.databricks.%s", n.group, n.region, n.region)
}

// Steps: the manifest precheck, a last sync in a switchover's drain, the
// finalize at promotion (and at drill-start), the failback's sync back.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	var out []member.Placed
	add := func(group, kind, title string) {
		out = append(out, member.Placed{Group: group, Step: plan.NewStep(kind, name, p.To, title, "stop")})
	}
	switch p.Type {
	case plan.Switchover:
		add("prechecks", Check, "a complete manifest to finalize to")
		add("drain", Sync, "a last sync to the last completed run")
		add("promote", Finalize, "finalize the tables to the last manifest and pause the sync")
	case plan.Failover:
		add("prechecks", Check, "a complete manifest to finalize to")
		add("promote", Finalize, "finalize the tables to the last manifest and pause the sync")
	case plan.DrillStart:
		add("prechecks", Check, "a complete manifest to finalize to")
		add("promote", Finalize, "bring the standby tables to the last manifest")
	case plan.Failback:
		add("reverse", Reverse, "move aside what "+p.To+" wrote after the last manifest, then sync back")
	}
	return out
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	gc, err := Find(x.Cfg, x.Step.Member)
	if err != nil {
		return err
	}
	in := Toward(gc, x.Step.Region)
	switch x.Step.Kind {
	case Check:
		return check(ctx, x, in)
	case Finalize:
		return finalize(ctx, x, in)
	case Reverse:
		return syncBack(ctx, x, in)
	}
	// Sync: the switchover's drain, acting for the old primary with the
	// group's own fence (source holds the lease, target is the standby).
	g, err := Open(ctx, x.Env, in, false, x.Log)
	if err != nil {
		return err
	}
	_, res, err := g.SyncRecorded(ctx, "plan "+x.Plan.Type)
	if err == nil {
		x.Printf("group %s at run %q: versions %v (unchanged %v)", gc.Name, res.Manifest.RunID, res.Manifest.Versions, res.Unchanged)
	}
	return err
}

func finalize(ctx context.Context, x *member.Exec, in *Group) error {
	g, err := Open(ctx, x.Env, in, true, x.Log)
	if err != nil {
		return err
	}
	g.Conditions = x.Conditions()
	fin, err := g.Finalize(ctx)
	for _, f := range fin {
		line := fmt.Sprintf("%s at version %d", f.Table, f.Version)
		if len(f.MovedAside) > 0 {
			line += fmt.Sprintf(" (%d log files of a sync that did not finish moved to %s)", len(f.MovedAside), f.MovedTo)
		}
		x.Printf("%s", line)
	}
	if err != nil {
		return err
	}
	m, _, _, err := tablegroup.LoadManifest(ctx, g.State)
	if err != nil {
		return err
	}
	x.Printf("group %s holds run %q (cut %s); syncs from %s are fenced by the lease", in.Name, m.RunID, m.CutTime.Format(time.RFC3339), in.From)
	if x.Plan.Type != plan.Switchover {
		return nil
	}
	// The old primary's tables become the standby's at this manifest (what
	// a run still writing there after the drain is moved aside), and start
	// the records of the direction that runs from now on.
	back, err := Open(ctx, x.Env, Reversed(in), true, x.Log)
	if err != nil {
		return err
	}
	back.Conditions = x.Conditions()
	moved, err := back.Rewind(ctx, m.Versions)
	if err != nil {
		return err
	}
	for _, f := range moved {
		if len(f.MovedAside) > 0 {
			x.Printf("%s in %s: %d log files written after run %q moved to %s", f.Table, in.From, len(f.MovedAside), m.RunID, f.MovedTo)
		}
	}
	if err := back.Seed(ctx, m); err != nil {
		return err
	}
	x.Printf("the records of %s -> %s start at run %q", in.To, in.From, m.RunID)
	return nil
}

// syncBack is the failback's: the last manifest of the forward direction
// says where the two regions agree; what the returning region wrote after
// it is moved aside, then the new primary's tables are copied back.
func syncBack(ctx context.Context, x *member.Exec, in *Group) error {
	fwdState, err := State(ctx, x.Env, Reversed(in))
	if err != nil {
		return err
	}
	m, _, ok, err := tablegroup.LoadManifest(ctx, fwdState)
	if err != nil {
		return err
	}
	g, err := Open(ctx, x.Env, in, false, x.Log)
	if err != nil {
		return err
	}
	// It acts for the new primary before the lease names the returning
	// region its standby.
	g.Conditions = x.Conditions()
	if ok {
		moved, err := g.Rewind(ctx, m.Versions)
		if err != nil {
			return err
		}
		for _, f := range moved {
			if len(f.MovedAside) > 0 {
				x.Printf("%s in %s: %d log files written after the last manifest (run %q) moved to %s", f.Table, in.To, len(f.MovedAside), m.RunID, f.MovedTo)
			}
		}
	}
	// The returning region has no record of the new primary's runs: the
	// first sync back takes the tables' latest versions.
	g.Workflow = false
	_, res, err := g.SyncRecorded(ctx, "plan failback: sync back")
	if err == nil {
		x.Printf("group %s synced back from %s: versions %v", in.Name, in.From, res.Manifest.Versions)
	}
	return err
}

func check(ctx context.Context, x *member.Exec, in *Group) error {
	st, err := State(ctx, x.Env, in)
	if err != nil {
		return err
	}
	m, _, ok, err := tablegroup.LoadManifest(ctx, st)
	if err != nil {
		return err
	}
	if !ok {
		return member.Failed("group %s has no manifest in %s: no complete run was synced", in.Name, in.To)
	}
	g, err := Open(ctx, x.Env, in, true, x.Log)
	if err != nil {
		return member.Failed("%v", err)
	}
	for _, t := range g.Tables {
		v, ok := m.Versions[t.Name]
		if !ok {
			return member.Failed("group %s: the manifest has no version of table %s", in.Name, t.Name)
		}
		latest, err := tablegroup.Latest(ctx, t.Target)
		if err != nil {
			return member.Failed("group %s, table %s in %s: %v", in.Name, t.Name, in.To, err)
		}
		if latest < v {
			return member.Failed("group %s, table %s in %s is at version %d, below the manifest's %d", in.Name, t.Name, in.To, latest, v)
		}
	}
	x.Printf("group %s: manifest of run %q, cut %s (%s ago), versions %v", in.Name, m.RunID, m.CutTime.Format(time.RFC3339), time.Since(m.CutTime).Truncate(time.Second), m.Versions)
	return nil
}

// Status is one group in `tandem status`.
type Status struct {
	Group string `json:"group"`
	// Manifest is what the standby holds; LastCompleted the newest run the
	// workflow reported.
	Manifest      *tablegroup.Manifest `json:"manifest,omitempty"`
	LastCompleted *tablegroup.Cut      `json:"last_completed,omitempty"`
	LastAttempt   *tablegroup.Attempt  `json:"last_attempt,omitempty"`
	// Corrupt lists attempt records that cannot be read.
	Corrupt []string `json:"corrupt_records,omitempty"`
	Health  string   `json:"health"` // ok, behind, running, failing, interrupted, never-synced, unreachable
	Error   string   `json:"error,omitempty"`
}

// Status reads the group's records in the region it copies into.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	rep := member.Report{Kind: refKey, Member: name}
	gs := Status{Group: name, Health: "never-synced"}
	gc, err := Find(env.Cfg, name)
	var note string
	if err == nil {
		gc, note = statusDirection(ctx, env, gc)
	}
	var st state.Store
	if err == nil {
		st, err = State(ctx, env, gc)
	}
	var m tablegroup.Manifest
	var ok bool
	if err == nil {
		m, _, ok, err = tablegroup.LoadManifest(ctx, st)
	}
	if err != nil {
		gs.Health, gs.Error = "unreachable", err.Error()
		rep.Health, rep.Attention, rep.Detail, rep.Lines = gs.Health, true, gs, []string{"its records cannot be read: " + err.Error()}
		return rep
	}
	if ok {
		gs.Manifest, gs.Health = &m, "ok"
	}
	g := &tablegroup.Group{Name: name, State: st}
	if cut, ok, err := g.LastCompleted(ctx); err == nil && ok {
		gs.LastCompleted = &cut
		if gs.Manifest != nil && gs.Manifest.RunID != cut.RunID {
			gs.Health = "behind"
		}
	}
	attempts, corrupt, err := g.Attempts(ctx)
	gs.Corrupt = corrupt
	if err == nil && len(attempts) > 0 {
		a := attempts[0]
		switch {
		case a.Interrupted():
			a.Status, gs.Health = "interrupted", "interrupted"
		case a.Status == "running":
			gs.Health = "running"
		case a.Status == "failed":
			gs.Health = "failing"
		}
		gs.LastAttempt = &a
	}
	rep.Health, rep.Detail = gs.Health, gs
	rep.Attention = gs.Health != "ok" && gs.Health != "running" || len(corrupt) > 0 || note != ""
	rep.Lines = statusLines(gs)
	if note != "" {
		rep.Lines = append([]string{note}, rep.Lines...)
	}
	return rep
}

// statusDirection is the direction whose records status shows: the one the
// lease says or, when the witness does not answer, the newest.
func statusDirection(ctx context.Context, env *member.Env, g *Group) (*Group, string) {
	cur, err := Current(ctx, env, g)
	if err == nil {
		return cur, ""
	}
	d, note := member.NewestDirection(err, []*Group{g, Reversed(g)}, func(d *Group) (time.Time, bool) {
		st, err := State(ctx, env, d)
		if err != nil {
			return time.Time{}, false
		}
		m, _, ok, err := tablegroup.LoadManifest(ctx, st)
		if err != nil || !ok {
			return time.Time{}, false
		}
		return m.Synced, true
	}, func(d *Group) string { return d.From + " -> " + d.To })
	return d, note
}

func statusLines(g Status) []string {
	var out []string
	if m := g.Manifest; m != nil {
		run := fmt.Sprintf("run %q", m.RunID)
		if m.RunID == "" {
			run = "the latest versions (" + m.Rule + ")"
		}
		out = append(out, fmt.Sprintf("standby holds %s (%s), cut %s, synced %s", run, Versions(m.Versions),
			m.CutTime.Local().Format("2006-01-02 15:04:05"), m.Synced.Local().Format("2006-01-02 15:04:05")))
	}
	if c := g.LastCompleted; c != nil && (g.Manifest == nil || g.Manifest.RunID != c.RunID) {
		out = append(out, fmt.Sprintf("last completed run %q (%s) is not in the standby yet", c.RunID, Versions(c.Versions)))
	}
	if a := g.LastAttempt; a != nil {
		line := fmt.Sprintf("last attempt %s: %s (%s)", a.Started.Local().Format("2006-01-02 15:04:05"), a.Status, a.Reason)
		if a.Status == "interrupted" && a.Runner != nil {
			line += fmt.Sprintf(": %s (pid %d) stopped without finishing it; the manifest of the last complete sync is in force", a.Runner.Host, a.Runner.PID)
		}
		if a.Error != "" {
			line += ": " + a.Error
		}
		out = append(out, line)
	}
	for _, c := range g.Corrupt {
		out = append(out, "unreadable record, skipped: "+c)
	}
	return out
}

// Versions prints table versions: bronze@4, gold@3.
func Versions(v map[string]int64) string {
	names := make([]string, 0, len(v))
	for n := range v {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s@%d", n, v[n])
	}
	return strings.Join(parts, ", ")
}

// Serve syncs each group whose source is this serve's region every
// interval, with retries and notifications, and takes completed runs over
// HTTP.
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	m := &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "group", Name: "sync_attempts_total",
			Help: "Group sync attempts, by status (succeeded, unchanged, failed)."}, []string{"group", "status"}),
		synced: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "group", Name: "cut_timestamp_seconds",
			Help: "Time of the run the standby holds (the manifest's cut)."}, []string{"group"}),
	}
	s.Reg.MustRegister(m.syncs, m.synced)
	for _, gc := range Groups(s.Env.Cfg) {
		gc := gc
		l := &loop{s: s, gc: &gc, m: m, log: s.Env.Log.With("group", gc.Name)}
		l.notifier, l.on = notify.FromConfig(gc.Notify)
		s.Task(daemon.Task{Name: "group/" + gc.Name, Interval: time.Duration(gc.Interval), Run: l.round})
	}
	s.Handle("POST /groups/{group}/complete", daemon.Handler(func(w http.ResponseWriter, r *http.Request) error {
		return complete(w, r, s)
	}))
	return nil
}

type metrics struct {
	syncs  *prometheus.CounterVec
	synced *prometheus.GaugeVec
}

type loop struct {
	s        *member.Serving
	gc       *Group
	m        *metrics
	log      *slog.Logger
	notifier notify.Notifier
	on       map[string]bool
	said     string
}

// round runs one scheduled sync with its retries and tells the owner.
func (l *loop) round(ctx context.Context) time.Duration {
	cur, err := Current(ctx, l.s.Env, l.gc)
	if err != nil {
		l.log.Error("read the region lease", "err", err)
		return 0
	}
	if ok, why := l.s.Ours(ctx, refKey, l.gc.Name, cur.From); !ok {
		if l.said != why {
			l.said = why
			l.log.Info(why)
		}
		return 0
	}
	l.said = ""
	g, err := Open(ctx, l.s.Env, cur, false, l.log)
	if err != nil {
		l.log.Error("open the group; trying again next round", "err", err)
		return 0
	}
	g.Conditions = append(g.Conditions, l.s.Conditions...)
	wait := time.Duration(l.gc.RetryWait)
	var last tablegroup.Attempt
	for attempt := 1; attempt <= max(1, l.gc.Retries); attempt++ {
		reason := "schedule"
		if attempt > 1 {
			reason = fmt.Sprintf("retry %d of %d", attempt-1, l.gc.Retries-1)
		}
		last, _, err = g.SyncRecorded(ctx, reason)
		if ctx.Err() != nil {
			return 0
		}
		l.m.syncs.WithLabelValues(g.Name, last.Status).Inc()
		if err == nil || errors.Is(err, tablegroup.ErrFenced) {
			break
		}
		l.log.Error("group sync failed", "attempt", attempt, "err", err)
		if attempt < l.gc.Retries {
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(wait):
			}
			wait *= 2
		}
	}
	if m, _, ok, _ := tablegroup.LoadManifest(ctx, g.State); ok {
		l.m.synced.WithLabelValues(g.Name).Set(float64(m.CutTime.UnixNano()) / 1e9)
	}
	var e notify.Event
	switch {
	case errors.Is(err, tablegroup.ErrFenced):
		l.log.Warn("group sync fenced: this tandem may no longer write into the standby", "err", err)
		return 0
	case err != nil && l.on["failure"]:
		e = notify.Event{Status: "failed", Error: err.Error(),
			Summary: fmt.Sprintf("group %s: sync failed after %d attempts; the standby still holds the last manifest", g.Name, max(1, l.gc.Retries))}
	case err == nil && last.Status == "succeeded" && l.on["success"]:
		e = notify.Event{Status: "succeeded", RunID: last.RunID, Versions: last.Versions,
			Summary: fmt.Sprintf("group %s: the standby now holds run %s", g.Name, last.RunID)}
	default:
		if err == nil {
			l.log.Info("group sync done", "status", last.Status, "run", last.RunID, "files", last.Files, "bytes", last.Bytes, "seconds", last.Seconds)
		}
		return 0
	}
	e.Kind, e.Group, e.Owner, e.Time = "group.sync", g.Name, l.gc.Owner, time.Now().UTC()
	if l.notifier != nil {
		if nerr := l.notifier.Notify(context.WithoutCancel(ctx), e); nerr != nil {
			l.log.Error("notification failed", "err", nerr)
		}
	}
	return 0
}

// complete records that a workflow run finished: the HTTP form of `tandem
// group complete`, for a workflow's last task. The run id comes as
// ?run_id= or in a JSON body {"run_id": "..."}.
func complete(w http.ResponseWriter, r *http.Request, s *member.Serving) error {
	if err := daemon.Authorize(r, s.Token); err != nil {
		return err
	}
	return CompleteHTTP(w, r, s.Env)
}

// CompleteHTTP answers a completed run of the group {group} (run_id as
// ?run_id= or a JSON body) with the cut it took; the caller has checked
// the token.
func CompleteHTTP(w http.ResponseWriter, r *http.Request, env *member.Env) error {
	name := r.PathValue("group")
	gc, err := Find(env.Cfg, name)
	if err != nil {
		return daemon.Error{Status: http.StatusNotFound, Err: err}
	}
	runID := r.URL.Query().Get("run_id")
	if runID == "" && r.Body != nil {
		var body struct {
			RunID string `json:"run_id"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		runID = body.RunID
	}
	if runID == "" {
		return daemon.Error{Status: http.StatusBadRequest, Err: errors.New("run_id is required")}
	}
	cur, err := Current(r.Context(), env, gc)
	if err != nil {
		return err
	}
	if gc.Workflow == nil || gc.Workflow.Job(cur.From) != nil {
		return daemon.Error{Status: http.StatusConflict, Err: fmt.Errorf("group %s does not take completed runs from its workflow's last task", name)}
	}
	g, err := Open(r.Context(), env, cur, false, env.Log)
	if err != nil {
		return err
	}
	cut, err := g.Complete(r.Context(), runID)
	if errors.Is(err, tablegroup.ErrRunRecut) {
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
	if err != nil {
		return err
	}
	return daemon.WriteJSON(w, cut)
}

// RPO: a group has no bound of its own (its runs come when the ETL ends).
func (Kind) RPO(*member.Env, string) time.Duration { return 0 }

// Lag is how long the newest completed run not in the standby has waited
// since its cut (0 when the standby holds the last completed run).
func (Kind) Lag(ctx context.Context, env *member.Env, name string) (time.Duration, bool) {
	s, ok := Kind{}.Status(ctx, env, name).Detail.(Status)
	switch {
	case !ok || s.Health == "unreachable":
		return 0, false
	case s.LastCompleted == nil || s.Manifest != nil && s.Manifest.RunID == s.LastCompleted.RunID:
		return 0, true
	}
	return time.Since(s.LastCompleted.Time), true
}
