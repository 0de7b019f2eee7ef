// Package bucket is the member kind of bucket replication (replication[]
// in the configuration, replications in protection groups): a target
// bucket kept equal to a source bucket by package replicate, in the
// direction the region lease says, made writable at failover and turned
// around at failback.
package bucket

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/fence"
	"tandem/internal/location"
	"tandem/internal/member"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/replicate"
	"tandem/internal/runner"
	"tandem/internal/state"
)

// Step kinds.
const (
	Check   = "check.replication"
	Sync    = "replication.sync"
	Promote = "replication.promote"
	Reverse = "replication.reverse"
)

// Kind is the replication kind.
type Kind struct{}

var (
	_ member.Kind   = Kind{}
	_ member.Server = Kind{}
)

func init() { member.Register(Kind{}) }

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Sync, Promote, Reverse} }

// Reversed returns the replication running the other way.
func Reversed(r *Replication) *Replication {
	rr := *r
	rr.From, rr.To = r.To, r.From
	return &rr
}

// Current returns the replication in the direction the lease says.
func Current(ctx context.Context, env *member.Env, r *Replication) (*Replication, error) {
	rev, err := env.Reversed(ctx, refKey, r.Name, r.From.Region, r.To.Region)
	if err != nil || !rev {
		return r, err
	}
	return Reversed(r), nil
}

// Toward returns the replication copying into region to.
func Toward(r *Replication, to string) *Replication {
	if r.To.Region == to {
		return r
	}
	return Reversed(r)
}

// Resolve finds the replication named by nameOrURL as it runs now (its
// direction after a failover) and the state it is recorded in.
func Resolve(ctx context.Context, env *member.Env, nameOrURL string) (*Replication, state.Store, error) {
	r, err := Find(env.Cfg, nameOrURL)
	if err != nil {
		return nil, state.Store{}, ErrUnknown{err}
	}
	if r, err = Current(ctx, env, r); err != nil {
		return nil, state.Store{}, err
	}
	st, err := State(ctx, env, r)
	return r, st, err
}

// ErrUnknown is a replication the configuration does not have.
type ErrUnknown struct{ error }

func (e ErrUnknown) Unwrap() error { return e.error }

// PromoteTarget makes r's target writable (see replicate.Promote); st is
// its state, as the caller writes it. With afterTakeover (a plan's promote
// step, after the lease moved), the passes into the target are fenced by
// the lease already, whose new holder waited for them: nothing to wait for.
func PromoteTarget(ctx context.Context, env *member.Env, r *Replication, st state.Store, afterTakeover bool) (replicate.Promotion, error) {
	target, err := env.Open(ctx, r.To.Region, r.To.URL, true)
	if err != nil {
		return replicate.Promotion{}, err
	}
	grace, slack := env.Grace(refKey, r.Name), fence.StoreSlack
	if l, err := location.Parse(r.To.URL); err == nil && l.Scheme == "file" {
		slack = 0
	}
	if afterTakeover {
		grace, slack = 0, 0
	}
	prom, err := replicate.Promote(ctx, st, r.Name, target, grace, slack)
	if err == nil && r.ReadOnlyPrincipal != "" {
		// Writable for the region's own users again.
		err = objstore.Unprotect(ctx, target)
	}
	return prom, err
}

// State is a replication's folder in its target region's state: it lives
// in the standby region, so it is there when the primary is gone.
func State(ctx context.Context, env *member.Env, r *Replication) (state.Store, error) {
	st, err := env.RegionState(ctx, r.To.Region)
	if err != nil {
		return state.Store{}, err
	}
	return st.Sub("replication").Sub(r.Name), nil
}

// Open opens both ends of a replication, as given (see Current), and its
// state; its passes are fenced by the lease of its protection group.
func Open(ctx context.Context, env *member.Env, r *Replication, log *slog.Logger) (*replicate.Pair, error) {
	st, err := State(ctx, env, r)
	if err != nil {
		return nil, fmt.Errorf("replication %s: %w", r.Name, err)
	}
	src, err := env.Open(ctx, r.From.Region, r.From.URL, false)
	if err != nil {
		return nil, fmt.Errorf("replication %s: source: %w", r.Name, err)
	}
	dst, err := env.Open(ctx, r.To.Region, r.To.URL, true) // a missing target folder is created, as rclone does
	if err != nil {
		return nil, fmt.Errorf("replication %s: target: %w", r.Name, err)
	}
	return &replicate.Pair{
		Name: r.Name, Source: src, Target: dst,
		Delete: r.Delete, Exclude: Exclusions(env.Cfg, r),
		Transfers: r.Transfers, Retries: r.Retries, RetryBackoff: time.Duration(r.RetryBackoff),
		MultipartThreshold: int64(r.MultipartThreshold), PartSize: int64(r.PartSize),
		Mode: fs.FileMode(r.FileMode), IgnoreUnsupported: r.IgnoreUnsupported, ReadOnlyPrincipal: r.ReadOnlyPrincipal,
		State: &st, Log: log,
		Conditions: env.Conditions(refKey, r.Name, r.From.Region, r.To.Region),
	}, nil
}

// Steps: the watermark precheck, a last pass in a switchover's drain, the
// promotion, and the failback's pass back.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	var out []member.Placed
	add := func(group, kind, region, title, onError string) {
		out = append(out, member.Placed{Group: group, Step: plan.NewStep(kind, name, region, title, onError)})
	}
	switch p.Type {
	case plan.Switchover, plan.Failover, plan.DrillStart:
		add("prechecks", Check, p.To, "watermark within the RPO, no foreign writes in the replica", plan.WarnOnFailover(p.Type))
	}
	switch p.Type {
	case plan.Switchover:
		add("drain", Sync, p.To, "a last replication pass", "stop")
		add("promote", Promote, p.To, "stop replication and make the replica writable", "stop")
	case plan.Failover:
		add("promote", Promote, p.To, "stop replication and make the replica writable", "stop")
	case plan.Failback:
		add("reverse", Reverse, p.To, "replicate "+p.From+" back into "+p.To, "stop")
	}
	return out
}

func find(env *member.Env, name string) (*Replication, error) { return Find(env.Cfg, name) }

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	r, err := find(x.Env, x.Step.Member)
	if err != nil {
		return err
	}
	in := Toward(r, x.Step.Region) // the copy into the region the step acts on
	if x.Step.Kind == Check {
		return check(ctx, x, Toward(r, x.Plan.To))
	}
	state, err := State(ctx, x.Env, in)
	if err != nil {
		return err
	}
	switch x.Step.Kind {
	case Promote:
		prom, err := PromoteTarget(ctx, x.Env, in, x.ActingStore(state), true)
		if err != nil {
			return err
		}
		x.Printf("%s is writable; it holds every change made in %s before %s", in.To.URL, in.From.URL, when(prom.Watermark))
		if x.Plan.Type == plan.Switchover {
			// The old primary becomes the replica of the other direction.
			return demote(ctx, x, Reversed(in))
		}
		return nil
	case Reverse:
		if err := demote(ctx, x, in); err != nil {
			return err
		}
	}
	pair, err := Open(ctx, x.Env, in, x.Log)
	if err != nil {
		return err
	}
	if x.Step.Kind == Reverse {
		// The failback's pass runs before the lease names its target the
		// standby: it acts for the new primary.
		pair.Conditions = x.Conditions()
	}
	sum, err := pair.RunOnce(ctx)
	x.Printf("%s -> %s: %d objects (%d bytes) copied, %d unchanged, %d deleted, %d failed, %d foreign",
		sum.Source, sum.Target, sum.Objects, sum.Bytes, sum.Unchanged+sum.Adopted, sum.Deleted, sum.Failed, sum.Foreign)
	if err == nil && sum.Failed > 0 {
		err = fmt.Errorf("%d objects failed to copy (first: %v)", sum.Failed, sum.FailedObjects[0].Error)
	}
	return err
}

// demote makes the replica of r a replica again: its promotion, from an
// earlier role change, is removed.
func demote(ctx context.Context, x *member.Exec, r *Replication) error {
	st, err := State(ctx, x.Env, r)
	if err != nil {
		return err
	}
	st = x.ActingStore(st)
	if ok, err := st.Exists(ctx, "promoted.json"); err != nil || !ok {
		return err
	}
	if err := st.Bucket.Delete(ctx, st.Key("promoted.json")); err != nil {
		return err
	}
	x.Printf("%s is a replica of %s again", r.To.URL, r.From.URL)
	return nil
}

func when(t *time.Time) string {
	if t == nil {
		return "(no complete pass was recorded)"
	}
	return t.Format(time.RFC3339)
}

func check(ctx context.Context, x *member.Exec, in *Replication) error {
	st, err := State(ctx, x.Env, in)
	if err != nil {
		return err
	}
	status, err := replicate.LoadStatus(ctx, st, in.Name)
	if err != nil {
		return err
	}
	switch {
	case status.Promotion != nil:
		return member.Failed("%s was already promoted at %s", in.To.URL, status.Promotion.At.Format(time.RFC3339))
	case status.Watermark == nil:
		return member.Failed("replication %s never completed a pass into %s", in.Name, in.To.Region)
	}
	lag := time.Since(*status.Watermark)
	x.Printf("replication %s: watermark %s (%s ago, RPO %s)", in.Name, status.Watermark.Format(time.RFC3339), lag.Round(time.Second), time.Duration(in.RPO))
	if lag > time.Duration(in.RPO) {
		return member.Failed("replication %s is %s behind, beyond its RPO of %s", in.Name, lag.Round(100*time.Millisecond), time.Duration(in.RPO))
	}
	if lp := status.LastPass; lp != nil && lp.Foreign > 0 {
		return member.Failed("%s holds %d objects written there, not by replication (for example %v)", in.To.URL, lp.Foreign, lp.ForeignKeys)
	}
	return nil
}

// Serve runs each replication whose source is this serve's region, in
// the direction the lease says, every interval.
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	metrics := replicate.NewMetrics(s.Reg)
	for _, r := range Replications(s.Env.Cfg) {
		r := r
		if cur, err := Current(ctx, s.Env, &r); err == nil {
			if st, err := State(ctx, s.Env, cur); err == nil {
				if status, err := replicate.LoadStatus(ctx, st, r.Name); err == nil && status.Watermark != nil {
					metrics.SetWatermark(r.Name, *status.Watermark)
				}
			}
		}
		l := &loop{s: s, r: &r, metrics: metrics, log: s.Env.Log.With("pair", r.Name)}
		s.Task(daemon.Task{Name: "pair/" + r.Name, Interval: time.Duration(r.Interval), Run: l.round})
	}
	return nil
}

// loop is one replication under serve.
type loop struct {
	s       *member.Serving
	r       *Replication
	metrics *replicate.Metrics
	log     *slog.Logger
	pair    *replicate.Pair
	dir     string // from->to of pair
	said    string // the last "not ours" or "promoted" message logged
}

func (l *loop) round(ctx context.Context) time.Duration {
	cur, err := Current(ctx, l.s.Env, l.r)
	if err != nil {
		l.log.Error("read the region lease", "err", err)
		return 0
	}
	if ok, why := l.s.Ours(ctx, refKey, l.r.Name, cur.From.Region); !ok {
		l.once(why)
		return 0
	}
	if dir := cur.From.Region + "->" + cur.To.Region; l.pair == nil || dir != l.dir {
		p, err := Open(ctx, l.s.Env, cur, l.log)
		if err != nil {
			l.log.Error("open the pair; trying again next round", "err", err)
			return 0
		}
		p.Conditions = append(p.Conditions, l.s.Conditions...)
		if l.pair != nil {
			l.log.Info("the region lease turned the replication around", "source", p.Source.URL(), "target", p.Target.URL())
		}
		l.pair, l.dir = p, dir
	}
	sum, err := l.pair.RunOnce(ctx)
	if ctx.Err() != nil {
		return 0
	}
	l.metrics.Observe(sum, err)
	switch {
	case errors.Is(err, replicate.ErrPromoted):
		l.once("target promoted; replication waits for a role change: " + l.pair.Target.URL())
	case fence.Fenced(err):
		l.log.Warn("pass stopped: this tandem may no longer write into the target", "target", l.pair.Target.URL(), "err", err)
	case err != nil:
		l.said = ""
		l.log.Error("pass failed", "err", err)
		return min(time.Duration(l.r.Interval), 10*time.Second) // try again soon
	default:
		l.said = ""
		l.log.Info("pass done", "copied", sum.Objects, "bytes", sum.Bytes, "unchanged", sum.Unchanged,
			"deleted", sum.Deleted, "failed", sum.Failed, "pending", sum.Pending, "foreign", sum.Foreign,
			"seconds", sum.Seconds)
	}
	return 0
}

func (l *loop) once(msg string) {
	if l.said != msg {
		l.said = msg
		l.log.Info(msg)
	}
}

// Status is one replication in `tandem status`.
type Status struct {
	replicate.Status
	Source     string              `json:"source"`
	Target     string              `json:"target"`
	LagSeconds *float64            `json:"lag_seconds,omitempty"`
	RPOSeconds float64             `json:"rpo_seconds"`
	Health     string              `json:"health"` // ok, running, late, failing, interrupted, foreign-writes, never-ran, promoted, unreachable
	RetryQueue []replicate.Failure `json:"retry_queue,omitempty"`
	Error      string              `json:"error,omitempty"`
}

// Status reads the replication's records in the region it copies into.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	rep := member.Report{Kind: refKey, Member: name}
	r, err := find(env, name)
	var note string
	if err == nil {
		r, note = statusDirection(ctx, env, r)
	}
	var st state.Store
	if err == nil {
		st, err = State(ctx, env, r)
	}
	var s replicate.Status
	if err == nil {
		s, err = replicate.LoadStatus(ctx, st, r.Name)
	}
	var q []replicate.Failure
	if err == nil {
		q, err = replicate.LoadRetryQueue(ctx, st)
	}
	if err != nil {
		ps := Status{Status: replicate.Status{Pair: name}, Health: "unreachable", Error: err.Error()}
		rep.Health, rep.Attention, rep.Detail = ps.Health, true, ps
		rep.Lines = []string{"its records cannot be read: " + err.Error()}
		return rep
	}
	ps := Status{Status: s, Source: r.From.URL, Target: r.To.URL, RPOSeconds: time.Duration(r.RPO).Seconds(), RetryQueue: q}
	if s.Watermark != nil {
		lag := time.Since(*s.Watermark).Seconds()
		ps.LagSeconds = &lag
	}
	interrupted := s.Running != nil && !runner.Live(s.Running.Runner)
	switch {
	case s.Promotion != nil:
		ps.Health = "promoted"
	case interrupted:
		ps.Health = "interrupted"
	case s.LastPass == nil && s.Running != nil:
		ps.Health = "running"
	case s.LastPass == nil:
		ps.Health = "never-ran"
	case s.LastPass.Error != "" || len(q) > 0:
		ps.Health = "failing"
	case ps.LagSeconds == nil || *ps.LagSeconds > ps.RPOSeconds:
		ps.Health = "late"
	case s.LastPass.Foreign > 0:
		ps.Health = "foreign-writes"
	default:
		ps.Health = "ok"
	}
	rep.Health, rep.Detail = ps.Health, ps
	rep.Attention = ps.Health != "ok" && ps.Health != "running" && ps.Health != "promoted" || note != ""
	rep.Lines = statusLines(ps, interrupted)
	if note != "" {
		rep.Lines = append([]string{note}, rep.Lines...)
	}
	return rep
}

// statusDirection is the direction whose records status shows: the one the
// lease says or, when the witness does not answer, the newest.
func statusDirection(ctx context.Context, env *member.Env, r *Replication) (*Replication, string) {
	cur, err := Current(ctx, env, r)
	if err == nil {
		return cur, ""
	}
	d, note := member.NewestDirection(err, []*Replication{r, Reversed(r)}, func(d *Replication) (time.Time, bool) {
		st, err := State(ctx, env, d)
		if err != nil {
			return time.Time{}, false
		}
		s, err := replicate.LoadStatus(ctx, st, d.Name)
		if err != nil || s.LastPass == nil {
			return time.Time{}, false
		}
		return s.LastPass.Finished, true
	}, func(d *Replication) string { return d.From.Region + " -> " + d.To.Region })
	return d, note
}

// unsupportedList names skipped entries for a line of output.
func unsupportedList(us []objstore.Unsupported) string {
	parts := make([]string, len(us))
	for i, u := range us {
		parts[i] = u.Key + ": " + u.Kind
	}
	return strings.Join(parts, ", ")
}

func statusLines(s Status, interrupted bool) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	add("%s -> %s", s.Source, s.Target)
	if s.Watermark != nil {
		add("watermark  %s (lag %s, RPO target %s): every object created or changed in the source before it is in the target",
			s.Watermark.Local().Format("2006-01-02 15:04:05 MST"), (time.Duration(*s.LagSeconds) * time.Second).Round(time.Second), time.Duration(s.RPOSeconds)*time.Second)
	} else {
		add("watermark  none yet: no pass has copied everything it found")
	}
	if r := s.Running; r != nil && r.Runner != nil {
		if interrupted {
			add("INTERRUPTED a pass started %s by %s (pid %d) stopped without finishing; the next pass resumes it", r.Started.Local().Format("2006-01-02 15:04:05"), r.Runner.Host, r.Runner.PID)
		} else {
			add("running    a pass since %s (%s, pid %d)", r.Started.Local().Format("2006-01-02 15:04:05"), r.Runner.Host, r.Runner.PID)
		}
	}
	if p := s.LastPass; p != nil {
		add("last pass  %s, %.1fs: copied %d (%s), unchanged %d, already there %d, deleted %d, failed %d, pending %d",
			p.Started.Local().Format("2006-01-02 15:04:05"), p.Seconds, p.Objects, member.Bytes(p.Bytes), p.Unchanged, p.Adopted, p.Deleted, p.Failed, p.Pending)
		if p.Error != "" {
			add("error      %s", p.Error)
		}
		if p.Foreign > 0 {
			add("foreign    %d objects in the target did not come from the source (writes to a read-only replica): %v", p.Foreign, p.ForeignKeys)
		}
		if p.Unsupported > 0 {
			why := ""
			if p.Watermark == nil {
				why = ": no watermark while they are there (set ignore_unsupported to accept them)"
			}
			add("skipped    %d source entries are no regular files and were not copied (%s)%s", p.Unsupported, unsupportedList(p.UnsupportedSample), why)
		}
		if p.DeletesPending > 0 {
			add("deletes    %d objects deleted in the source are still in the target (delete: false), for example %v", p.DeletesPending, p.DeletesSample)
		}
	}
	for _, f := range s.RetryQueue {
		add("retrying   %s (attempt %d, next %s): %s", f.Key, f.Attempts, f.NextAttempt.Local().Format("15:04:05"), f.Error)
	}
	if p := s.Promotion; p != nil {
		add("promoted   %s by %s: the target is writable and tandem no longer replicates into it", p.At.Local().Format("2006-01-02 15:04:05 MST"), p.By)
	}
	return out
}

// RPO is the replication's rpo.
func (Kind) RPO(env *member.Env, name string) time.Duration {
	if r, err := Find(env.Cfg, name); err == nil {
		return time.Duration(r.RPO)
	}
	return 0
}

// Lag is how long ago the watermark was: every change older is in the
// target. Without a watermark it cannot tell.
func (Kind) Lag(ctx context.Context, env *member.Env, name string) (time.Duration, bool) {
	s, ok := Kind{}.Status(ctx, env, name).Detail.(Status)
	if !ok || s.LagSeconds == nil {
		return 0, false
	}
	return time.Duration(*s.LagSeconds * float64(time.Second)), true
}
