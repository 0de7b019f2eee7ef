package syncjob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/fence"
	"tandem/internal/hook"
	"tandem/internal/member"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/state"
)

// Step kinds.
const (
	Check = "check.sync_job"
	Run   = "sync_job.run"
)

func init() { member.Register(Kind{}) }

// Kind is the sync job kind.
type Kind struct{}

var (
	_ member.Kind   = Kind{}
	_ member.Server = Kind{}
	_ member.Lagger = Kind{}
)

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Run} }

// Attempt is one run of a job, recorded in the state of the region it
// synced into.
type Attempt struct {
	Job     string    `json:"job"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Reason  string    `json:"reason"` // schedule, retry, a plan's execution
	Epoch   int64     `json:"epoch"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Seconds float64   `json:"seconds"`
	// Status is succeeded, failed or fenced (the lease moved: nothing
	// after that was started).
	Status string       `json:"status"`
	Error  string       `json:"error,omitempty"`
	Steps  []StepResult `json:"steps"`
}

// StepResult is one action of an attempt.
type StepResult struct {
	Name    string  `json:"name"`
	Region  string  `json:"region"`
	Status  string  `json:"status"` // succeeded, failed, not-run
	Seconds float64 `json:"seconds"`
	// Log is the end of what the action printed and answered.
	Log string `json:"log,omitempty"`
}

// keepAttempts is how many attempt records a job keeps.
const keepAttempts = 200

// records is the job's folder in region's state.
func records(ctx context.Context, env *member.Env, job, region string) (state.Store, error) {
	st, err := env.RegionState(ctx, region)
	return st.Sub("sync_jobs").Sub(job), err
}

// run performs one attempt of j from the primary from into the standby
// to, each action checked against g just before it starts, and records
// it (through g) in to's state. The previous good sync stays the last good
// one unless every action succeeded.
func run(ctx context.Context, env *member.Env, j *Job, from, to, reason string, g *fence.Guard, log io.Writer) (Attempt, error) {
	a := Attempt{Job: j.Name, From: from, To: to, Reason: reason, Started: time.Now().UTC(), Status: "succeeded"}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(j.Timeout))
	defer cancel()
	outputs := map[string]hook.Output{}
	var err error
	for _, s := range j.Steps {
		region := map[string]string{"primary": from, "standby": to}[s.In]
		r := StepResult{Name: s.Name, Region: region, Status: "not-run"}
		if err != nil {
			a.Steps = append(a.Steps, r)
			continue
		}
		if err = g.Check(ctx); err != nil {
			a.Status = "fenced"
			if !fence.Fenced(err) {
				a.Status = "failed"
			}
			err = fmt.Errorf("step %s: %w", s.Name, err)
			a.Steps = append(a.Steps, r)
			continue
		}
		a.Epoch = g.Epoch()
		var out bytes.Buffer
		started := time.Now()
		d := hook.Data{Plan: "sync", Execution: a.Started.Format(time.RFC3339), From: from, To: to, Region: region,
			Vars: j.Vars[region], Epoch: a.Epoch, Steps: outputs}
		o, serr := hook.RunOutput(ctx, s.Action, d, io.MultiWriter(log, &out))
		r.Seconds = time.Since(started).Seconds()
		r.Log = tail(out.String(), 4<<10)
		if serr != nil {
			r.Status, a.Status = "failed", "failed"
			err = fmt.Errorf("step %s (in the %s %s): %w", s.Name, s.In, region, serr)
		} else {
			r.Status = "succeeded"
			outputs[s.Name] = o
		}
		a.Steps = append(a.Steps, r)
	}
	a.Ended = time.Now().UTC()
	a.Seconds = a.Ended.Sub(a.Started).Seconds()
	if err != nil {
		a.Error = err.Error()
	}
	if a.Status == "fenced" {
		return a, err // the standby's records are not this writer's any more
	}
	if rerr := record(context.WithoutCancel(ctx), env, a, g); rerr != nil && err == nil {
		err = fmt.Errorf("record the sync in %s: %w", to, rerr)
	}
	return a, err
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// record saves the attempt, and makes it the last good one if it
// succeeded.
func record(ctx context.Context, env *member.Env, a Attempt, g *fence.Guard) error {
	st, err := records(ctx, env, a.Job, a.To)
	if err != nil {
		return err
	}
	st = g.Store(st)
	if _, err := st.Save(ctx, "attempts/"+a.Started.Format("20060102T150405.000000000Z")+".json", a, objstore.PutOptions{}); err != nil {
		return err
	}
	if a.Status == "succeeded" {
		if _, err := st.Save(ctx, "last.json", a, objstore.PutOptions{}); err != nil {
			return err
		}
	}
	st.Prune(ctx, "attempts", keepAttempts)
	return nil
}

// view is what a region's records say of a job.
type view struct {
	Last, LastGood *Attempt
}

// load reads region's records of job.
func load(ctx context.Context, env *member.Env, job, region string) (view, error) {
	var v view
	st, err := records(ctx, env, job, region)
	if err != nil {
		return v, err
	}
	var good Attempt
	if _, err := st.Load(ctx, "last.json", &good); err == nil {
		v.LastGood = &good
	} else if !errors.Is(err, objstore.ErrNotExist) {
		return v, err
	}
	var newest string
	for info, err := range st.Bucket.List(ctx, st.Key("attempts/")) {
		if err != nil {
			return v, err
		}
		newest = info.Key
	}
	if newest != "" {
		var a Attempt
		if _, err := st.Load(ctx, strings.TrimPrefix(newest, st.Prefix), &a); err == nil {
			v.Last = &a
		}
	}
	return v, nil
}

// direction is where j syncs now: from the lease holder into the standby
// the lease names (before any lease: the configured regions). to is ""
// when there is no standby (after a failover, until a failback).
func direction(ctx context.Context, env *member.Env, pg *config.ProtectionGroup) (from, to string, err error) {
	rec, ok, err := env.Lease(ctx, pg.Name)
	switch {
	case err != nil:
		return "", "", err
	case !ok:
		return pg.Primary, pg.Standby, nil
	}
	return rec.Holder, rec.Standby, nil
}

// Steps: a precheck that the standby's last good sync is within max_age;
// a switchover runs a last sync while the old primary still holds the
// lease.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	switch p.Type {
	case plan.Switchover:
		return []member.Placed{
			{Group: "prechecks", Step: plan.NewStep(Check, name, p.To, "the standby's last good sync is within max_age", "stop")},
			{Group: "drain", Step: plan.NewStep(Run, name, p.From, "a last sync from "+p.From+" into "+p.To, "stop")},
		}
	case plan.Failover:
		return []member.Placed{{Group: "prechecks", Step: plan.NewStep(Check, name, p.To, "the standby's last good sync is within max_age (what the failover loses)", "continue")}}
	}
	return nil
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	j := Find(x.Cfg, x.Step.Member)
	if x.Step.Kind == Run {
		a, err := run(ctx, x.Env, j, x.Plan.From, x.Plan.To, "execution "+x.Execution, x.Guard(), x.Out)
		if err == nil {
			x.Printf("sync job %s: %s into %s in %.1fs", j.Name, a.Status, a.To, a.Seconds)
		}
		return err
	}
	v, err := load(ctx, x.Env, j.Name, x.Plan.To)
	switch {
	case err != nil:
		return member.Failed("sync job %s: the records in %s cannot be read: %v", j.Name, x.Plan.To, err)
	case v.LastGood == nil:
		return member.Failed("sync job %s has never synced into %s: nothing of it is in the standby", j.Name, x.Plan.To)
	}
	age := time.Since(v.LastGood.Started)
	if age > time.Duration(j.MaxAge) {
		return member.Failed("sync job %s: the last good sync into %s started %s ago, beyond max_age %s", j.Name, x.Plan.To, age.Round(time.Second), time.Duration(j.MaxAge))
	}
	x.Printf("sync job %s: the last good sync into %s started %s ago (max_age %s)", j.Name, x.Plan.To, age.Round(time.Second), time.Duration(j.MaxAge))
	return nil
}

// Status is the job's health from the standby's records: the age of the
// last good sync against max_age, and the last attempt.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	j := Find(env.Cfg, name)
	rep := member.Report{Kind: refKey, Member: name, Health: "ok"}
	detail := map[string]any{"sync_job": name, "every": time.Duration(j.Every).String(), "max_age": time.Duration(j.MaxAge).String()}
	region, note := recordsRegion(ctx, env, name)
	if note != "" {
		rep.Lines = append(rep.Lines, note)
	}
	detail["standby"] = region
	v, err := load(ctx, env, name, region)
	switch {
	case err != nil:
		rep.Health, rep.Attention = "unreachable", true
		rep.Lines = append([]string{fmt.Sprintf("the records in %s cannot be read: %v", region, err)}, rep.Lines...)
	case v.LastGood == nil && v.Last == nil:
		rep.Health = "never-ran"
		rep.Lines = append([]string{"never synced into " + region}, rep.Lines...)
	default:
		var lines []string
		if v.LastGood != nil {
			age := time.Since(v.LastGood.Started)
			detail["last_good"], detail["age_seconds"] = v.LastGood.Started, age.Seconds()
			lines = append(lines, fmt.Sprintf("last good sync %s ago (%s -> %s), max_age %s", age.Round(time.Second), v.LastGood.From, v.LastGood.To, time.Duration(j.MaxAge)))
			if age > time.Duration(j.MaxAge) {
				rep.Health, rep.Attention = "late", true
			}
		} else {
			lines = append(lines, "no good sync yet into "+region)
		}
		if l := v.Last; l != nil {
			detail["last_attempt"] = l
			if l.Status != "succeeded" {
				rep.Health, rep.Attention = "failing", true
				lines = append(lines, fmt.Sprintf("last attempt %s: %s: %s; the standby keeps the last good sync", l.Started.Local().Format("2006-01-02 15:04:05"), l.Status, l.Error))
			}
		}
		rep.Lines = append(lines, rep.Lines...)
	}
	detail["health"] = rep.Health
	rep.Detail = detail
	return rep
}

// recordsRegion is the region whose records of job status reads: the
// standby the lease names, and a note when that is not plain (no
// standby, no witness).
func recordsRegion(ctx context.Context, env *member.Env, job string) (region, note string) {
	pg := env.ProtectionGroupOf(refKey, job)
	if pg == nil {
		return "", ""
	}
	_, to, err := direction(ctx, env, pg)
	switch {
	case err != nil:
		region = newest(ctx, env, job, pg)
		return region, fmt.Sprintf("the witness does not answer: showing the newest records, of %s", region)
	case to == "":
		return pg.Standby, "no standby now (after a failover): nothing syncs until a failback"
	}
	return to, ""
}

// newest is the region whose records of job were written last.
func newest(ctx context.Context, env *member.Env, job string, pg *config.ProtectionGroup) string {
	best, when := pg.Standby, time.Time{}
	for _, r := range []string{pg.Standby, pg.Primary} {
		if v, err := load(ctx, env, job, r); err == nil && v.Last != nil && v.Last.Started.After(when) {
			best, when = r, v.Last.Started
		}
	}
	return best
}

// RPO is the job's max_age.
func (Kind) RPO(env *member.Env, name string) time.Duration {
	if j := Find(env.Cfg, name); j != nil {
		return time.Duration(j.MaxAge)
	}
	return 0
}

// Lag is the age of the standby's last good sync: what a failover now
// would lose of the job.
func (Kind) Lag(ctx context.Context, env *member.Env, name string) (time.Duration, bool) {
	region, _ := recordsRegion(ctx, env, name)
	v, err := load(ctx, env, name, region)
	if err != nil || v.LastGood == nil {
		return 0, false
	}
	return time.Since(v.LastGood.Started), true
}

// Serve runs every job in the lease holder's serve every interval, and
// sooner again after a failure.
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "sync_job", Name: "attempts_total",
		Help: "Sync job attempts, by status (succeeded, failed, fenced)."}, []string{"job", "status"})
	good := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "sync_job", Name: "last_success_timestamp_seconds",
		Help: "Start of the last good sync this serve ran."}, []string{"job"})
	s.Reg.MustRegister(attempts, good)
	all := All(s.Env.Cfg)
	for i := range all {
		j := &all[i]
		pg := s.Env.ProtectionGroupOf(refKey, j.Name)
		if pg == nil {
			s.Env.Log.Warn("sync job is in no protection group: nothing runs it", "sync_job", j.Name)
			continue
		}
		l := &loop{s: s, j: j, pg: pg, attempts: attempts, good: good, log: s.Env.Log.With("sync_job", j.Name)}
		s.Task(daemon.Task{Name: "sync_job/" + j.Name, Interval: time.Duration(j.Every), Run: l.round})
	}
	return nil
}

type loop struct {
	s          *member.Serving
	j          *Job
	pg         *config.ProtectionGroup
	attempts   *prometheus.CounterVec
	good       *prometheus.GaugeVec
	log        *slog.Logger
	said       string
	failedLast bool
}

func (l *loop) round(ctx context.Context) time.Duration {
	from, to, err := direction(ctx, l.s.Env, l.pg)
	why := ""
	switch {
	case err != nil:
		why = fmt.Sprintf("the witness does not answer: %v", err)
	case to == "":
		why = "no standby to sync into (after a failover, until a failback)"
	default:
		if ok, w := l.s.Ours(ctx, refKey, l.j.Name, from); !ok {
			why = w
		}
	}
	if why != "" {
		if why != l.said {
			l.said = why
			l.log.Info(why)
		}
		return 0
	}
	l.said = ""
	reason := "schedule"
	if l.failedLast {
		reason = "retry"
	}
	conds := append(l.s.Env.Conditions(refKey, l.j.Name, from, to), l.s.Conditions...)
	g := fence.New(fmt.Sprintf("sync job %s from %s into %s", l.j.Name, from, to), conds...)
	a, err := run(ctx, l.s.Env, l.j, from, to, reason, g, io.Discard)
	if ctx.Err() != nil {
		return 0
	}
	l.attempts.WithLabelValues(l.j.Name, a.Status).Inc()
	l.failedLast = err != nil && a.Status != "fenced"
	switch {
	case a.Status == "fenced":
		l.log.Warn("sync job fenced: this region no longer holds the lease", "err", err)
	case err != nil:
		l.log.Error("sync job failed; the standby keeps its last good sync", "err", err, "retry_in", time.Duration(l.j.RetryWait))
		return time.Duration(l.j.RetryWait)
	default:
		l.good.WithLabelValues(l.j.Name).Set(float64(a.Started.UnixNano()) / 1e9)
		l.log.Info("sync job done", "from", from, "to", to, "seconds", a.Seconds)
	}
	return 0
}
