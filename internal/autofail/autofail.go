// Package autofail fails a protection group over by itself when its
// primary region is down, decided with a witness.
//
// Every `serve --region R` and every witness observer (`serve --witness`,
// run on a machine outside both regions) runs the health checks of every
// region and records what it saw in the witness (health/<observer>.json).
// The standby's serve decides (Decide): the primary counts as down only
// when the standby itself and every witness observer that reported lately
// see it down, for min_down; a standby that loses sight of the primary
// while a witness still sees it, or that hears from no witness, does
// nothing but say so. The policy (protection_groups[].auto_failover) then
// decides whether the failover runs: its mode, windows, and the least time
// between two automatic runs. A triggered failover runs the protection
// group's failover plan through the durable executor, with the reason in
// its execution record. The old primary's serve, if it still runs, reads
// the decision in the witness and releases the lease it holds (it demotes
// itself), so the failover need not wait for the lease to expire; cut off
// from the witness, it stops acting as primary by the lease's deadline.
package autofail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/alert"
	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/health"
	"tandem/internal/member"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/state"
)

// Roles of observers.
const (
	RoleRegion  = "region"  // a region's serve
	RoleWitness = "witness" // serve --witness, outside both regions
)

// Observation is what one observer saw of every region, kept in the
// witness.
type Observation struct {
	Observer string          `json:"observer"`
	Role     string          `json:"role"`
	At       time.Time       `json:"at"`
	Interval float64         `json:"interval_seconds"`
	Regions  []health.Report `json:"regions"`
}

// stale reports whether o is too old to count at now: three of its rounds
// missed.
func (o Observation) stale(now time.Time) bool {
	return now.Sub(o.At) > 3*time.Duration(o.Interval*float64(time.Second))+2*time.Second
}

// region returns o's report of region.
func (o Observation) region(name string) (health.Report, bool) {
	for _, r := range o.Regions {
		if r.Region == name {
			return r, true
		}
	}
	return health.Report{}, false
}

// downSince is when a report's region went down: the earliest moment one
// of its checks went down.
func downSince(r health.Report) time.Time {
	var since time.Time
	for _, c := range r.Checks {
		if c.Down && (since.IsZero() || c.Since.Before(since)) {
			since = c.Since
		}
	}
	return since
}

func observations(w state.Store) state.Store { return w.Sub("health") }
func decisions(w state.Store) state.Store    { return w.Sub("auto") }

// LoadObservations reads every observer's record from the witness.
func LoadObservations(ctx context.Context, w state.Store) ([]Observation, error) {
	st := observations(w)
	var out []Observation
	for info, err := range st.Bucket.List(ctx, st.Prefix) {
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(info.Key, st.Prefix)
		if !strings.HasSuffix(name, ".json") || strings.Contains(name, "/") {
			continue
		}
		var o Observation
		if _, err := st.Load(ctx, name, &o); err != nil {
			continue // written meanwhile or corrupt: the next round reads it
		}
		out = append(out, o)
	}
	return out, nil
}

// States of a decision.
const (
	Healthy   = "healthy"   // the primary is up, as the standby sees it
	Unknown   = "unknown"   // the standby has not observed yet
	Suspect   = "suspect"   // the standby sees it down; no agreement
	Down      = "down"      // agreed, for less than min_down
	Withheld  = "withheld"  // agreed, and the policy does not run a failover now
	Triggered = "triggered" // the failover runs (or ran)
	// AwaitingApproval: agreed, the policy allows it, and asks a person.
	AwaitingApproval = "awaiting-approval"
)

// Decision is the standby's verdict on a protection group's primary.
type Decision struct {
	ProtectionGroup string    `json:"protection_group"`
	Primary         string    `json:"primary"`
	Standby         string    `json:"standby"`
	State           string    `json:"state"`
	Reason          string    `json:"reason"`
	At              time.Time `json:"at"`
	// Since is when every observer agreed that the primary was down.
	Since     time.Time `json:"since,omitzero"`
	Observers []string  `json:"observers,omitempty"`
	Checks    []string  `json:"checks,omitempty"`
	// Epoch is the lease epoch of the primary the decision is about.
	Epoch int64 `json:"epoch"`
}

// Record is a protection group's automatic-failover record in the witness
// (auto/<pg>.json): the last decision and the last automatic run.
type Record struct {
	Decision Decision `json:"decision"`
	// Approval is a person's approval of failing over the primary of one
	// lease epoch (tandem auto-failover approve).
	Approval  *Approval `json:"approval,omitempty"`
	LastRun   time.Time `json:"last_run,omitzero"`
	Execution string    `json:"execution,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
}

// Approval is who approved an automatic failover, when, of which epoch.
type Approval struct {
	By    string    `json:"by"`
	At    time.Time `json:"at"`
	Epoch int64     `json:"epoch"`
}

// Approve records a person's approval of the failover pg's standby
// awaits: it holds for the lease epoch of the decision only, so it cannot
// fail over a later primary. by names who approved.
func Approve(ctx context.Context, w state.Store, pg, by string) (Record, error) {
	return updateRecord(ctx, w, pg, func(rec *Record) error {
		if rec.Decision.State != AwaitingApproval {
			state := rec.Decision.State
			if state == "" {
				state = "no decision yet"
			}
			return fmt.Errorf("the automatic failover of %s awaits no approval (its decision: %s)", pg, state)
		}
		rec.Approval = &Approval{By: by, At: time.Now().UTC(), Epoch: rec.Decision.Epoch}
		return nil
	})
}

// updateRecord applies change to pg's record in the witness by
// compare-and-swap, reading it again when another writer came first (the
// standby's serve and a person approving). An error from change is
// returned and nothing is written.
func updateRecord(ctx context.Context, w state.Store, pg string, change func(*Record) error) (Record, error) {
	for {
		rec, etag, err := LoadRecord(ctx, w, pg)
		if err != nil {
			return rec, err
		}
		if err := change(&rec); err != nil {
			return rec, err
		}
		_, err = decisions(w).Save(ctx, pg+".json", rec, objstore.PutOptions{IfMatch: etag, IfAbsent: etag == ""})
		if !errors.Is(err, objstore.ErrPrecondition) || ctx.Err() != nil {
			return rec, err
		}
	}
}

// LoadRecord reads pg's record; a missing one is the zero Record.
func LoadRecord(ctx context.Context, w state.Store, pg string) (Record, string, error) {
	var r Record
	etag, err := decisions(w).Load(ctx, pg+".json", &r)
	if errors.Is(err, objstore.ErrNotExist) {
		return Record{}, "", nil
	}
	return r, etag, err
}

// Facts are what a decision is made of.
type Facts struct {
	Now              time.Time
	Primary, Standby string
	// Epoch is the lease epoch of the primary.
	Epoch        int64
	Observations []Observation
	// Last is the protection group's automatic-failover record.
	Last Record
	// Busy is the plan run that is unfinished, if any.
	Busy string
	// Lags are what a failover now would lose of each member that can
	// say (for max_lag).
	Lags []plan.MemberRPO
	// Approved: a person approved failing over this primary's epoch.
	Approved bool
	// Hint is what the approve command printed needs (--config).
	Hint string
}

// Decide is the standby's verdict on pg's primary, from the observations
// in the witness, the last automatic run, the plan run under way, the
// members' lag and a person's approval.
func Decide(pg *config.ProtectionGroup, f Facts) Decision {
	now, primary, standby, epoch, obs, last := f.Now, f.Primary, f.Standby, f.Epoch, f.Observations, f.Last
	d := Decision{ProtectionGroup: pg.Name, Primary: primary, Standby: standby, At: now.UTC(), Epoch: epoch}
	set := func(state, format string, args ...any) Decision {
		d.State, d.Reason = state, fmt.Sprintf(format, args...)
		return d
	}
	var own *health.Report
	var witnesses []Observation
	for _, o := range obs {
		switch {
		case o.Role == RoleRegion && o.Observer == standby && !o.stale(now):
			if r, ok := o.region(primary); ok {
				own = &r
			}
		case o.Role == RoleWitness && !o.stale(now):
			witnesses = append(witnesses, o)
		}
	}
	if own == nil {
		return set(Unknown, "%s's serve has no recent observation of %s", standby, primary)
	}
	if !own.Down {
		return set(Healthy, "%s sees %s up", standby, primary)
	}
	d.Observers = []string{standby}
	d.Checks = failing(standby, *own)
	since := downSince(*own)
	if len(witnesses) == 0 {
		return set(Suspect, "%s sees %s down (%s), but no witness observer has reported lately: an outage cannot be told from a partition that isolates %s; no failover, alerting only",
			standby, primary, strings.Join(d.Checks, "; "), standby)
	}
	for _, w := range witnesses {
		r, ok := w.region(primary)
		if !ok || len(r.Checks) == 0 {
			return set(Suspect, "%s sees %s down, but the witness observer %s does not watch it: no failover", standby, primary, w.Observer)
		}
		if !r.Down {
			return set(Suspect, "%s sees %s down (%s), but the witness observer %s still sees it up: %s may be cut off from it; no failover, alerting only",
				standby, primary, strings.Join(d.Checks, "; "), w.Observer, standby)
		}
		d.Observers = append(d.Observers, w.Observer)
		d.Checks = append(d.Checks, failing(w.Observer, r)...)
		if s := downSince(r); s.After(since) {
			since = s
		}
	}
	d.Since = since.UTC()
	a := pg.AutoFailover
	if wait := time.Duration(a.MinDown) - now.Sub(since); wait > 0 {
		return set(Down, "%s and %s see %s down since %s; failover after %s down (min_down), in %s",
			standby, strings.Join(d.Observers[1:], ", "), primary, since.UTC().Format(time.RFC3339), time.Duration(a.MinDown), wait.Round(time.Second))
	}
	switch {
	case a.Mode == "alert-only":
		return set(Withheld, "%s is down (agreed by %s since %s); mode alert-only: run the failover yourself if you want it", primary, strings.Join(d.Observers, ", "), since.UTC().Format(time.RFC3339))
	case in(a.Blocked, now):
		return set(Withheld, "%s is down, but now (%s UTC) is in a blocked window: no automatic failover", primary, now.UTC().Format("Mon 15:04"))
	case len(a.Allowed) > 0 && !in(a.Allowed, now):
		return set(Withheld, "%s is down, but now (%s UTC) is in no allowed window: no automatic failover", primary, now.UTC().Format("Mon 15:04"))
	case !last.LastRun.IsZero() && last.Decision.Epoch == epoch:
		return set(Withheld, "%s is down, and an automatic failover against it already ran at %s (%s: %s): tandem tries once per outage; see tandem plan executions",
			primary, last.LastRun.UTC().Format(time.RFC3339), last.Execution, last.Outcome)
	case f.Busy != "":
		return set(Withheld, "%s is down, but the plan run %s is unfinished: one plan at a time; finish or cancel it (tandem plan executions)", primary, f.Busy)
	case !last.LastRun.IsZero() && now.Sub(last.LastRun) < time.Duration(a.MinInterval):
		return set(Withheld, "%s is down, but an automatic failover ran at %s (%s): the next may run from %s (min_interval)",
			primary, last.LastRun.UTC().Format(time.RFC3339), last.Execution, last.LastRun.Add(time.Duration(a.MinInterval)).UTC().Format(time.RFC3339))
	}
	if a.MaxLag > 0 {
		for _, l := range f.Lags {
			switch {
			case l.Unit != "":
				// max_lag is a time: counted lags (bytes, events) have
				// their own bounds, in their prechecks.
			case !l.Known:
				return set(Withheld, "%s is down, but how much %s would lose cannot be told (no watermark, or its records cannot be read): max_lag %s withholds it", primary, l.Member, time.Duration(a.MaxLag))
			case l.Lag > time.Duration(a.MaxLag).Seconds():
				return set(Withheld, "%s is down, but a failover now would lose %s of %s, more than max_lag %s", primary, time.Duration(l.Lag*float64(time.Second)).Round(time.Second), l.Member, time.Duration(a.MaxLag))
			}
		}
	}
	if a.Approval && !f.Approved {
		return set(AwaitingApproval, "%s is down: seen by %s since %s; the policy asks a person to approve the failover: tandem auto-failover approve %s",
			primary, strings.Join(d.Observers, " and "), since.UTC().Format(time.RFC3339), f.Hint)
	}
	return set(Triggered, "%s is down: seen by %s since %s (%s)", primary, strings.Join(d.Observers, " and "), since.UTC().Format(time.RFC3339), strings.Join(d.Checks, "; "))
}

func in(ws []config.Window, t time.Time) bool {
	return slices.ContainsFunc(ws, func(w config.Window) bool { return w.Contains(t) })
}

// failing names the checks down in r, as observer saw them.
func failing(observer string, r health.Report) []string {
	var out []string
	for _, c := range r.Checks {
		if c.Down && c.Last != nil {
			who := ""
			if observer != "" {
				who = observer + ": "
			}
			out = append(out, fmt.Sprintf("%s%s %s: %s (%d failures in a row)", who, r.Region, c.Name, c.Last.Detail, c.Failures))
		}
	}
	return out
}

// Observer runs the health checks of every region that has them and
// records them in the witness as observer (a region's name, or a witness
// observer's), with metrics in reg. It returns no task when no region has
// checks.
func Observer(env *member.Env, observer, role string, reg prometheus.Registerer) (daemon.Task, bool) {
	var monitors []*health.Monitor
	interval := time.Duration(0)
	for _, r := range env.Cfg.Regions {
		if len(r.Health.Checks) == 0 {
			continue
		}
		monitors = append(monitors, health.New(r.Name, r.Health, env))
		if iv := time.Duration(r.Health.Interval); interval == 0 || iv < interval {
			interval = iv
		}
	}
	if len(monitors) == 0 {
		return daemon.Task{}, false
	}
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "health", Name: "check_up",
		Help: "1 while the check's last result passed, as this serve saw it."}, []string{"region", "check"})
	down := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "health", Name: "region_down",
		Help: "1 while a check of the region failed its configured failures in a row, as this serve saw it."}, []string{"region"})
	reg.MustRegister(up, down)
	log := env.Log.With("observer", observer)
	last := make([]health.Report, len(monitors)) // each monitor's previous round
	return daemon.Task{
		Name: "health/" + observer, Interval: interval, NotReady: true,
		Run: func(ctx context.Context) time.Duration {
			o := Observation{Observer: observer, Role: role, Interval: interval.Seconds()}
			for k, m := range monitors {
				was := last[k]
				r := m.RunOnce(ctx)
				last[k] = r
				o.Regions = append(o.Regions, r)
				down.WithLabelValues(r.Region).Set(b2f(r.Down))
				for i, c := range r.Checks {
					up.WithLabelValues(r.Region, c.Name).Set(b2f(c.Last != nil && c.Last.OK))
					if i < len(was.Checks) && c.Down != was.Checks[i].Down {
						log.Warn("health check changed", "region", r.Region, "check", c.Name, "down", c.Down, "detail", c.Last.Detail)
					}
				}
			}
			o.At = time.Now().UTC()
			if w, err := env.Witness(ctx); err != nil {
				log.Error("record the health observation: the witness does not answer", "err", err)
			} else if _, err := observations(w).Save(ctx, observer+".json", o, objstore.PutOptions{}); err != nil {
				log.Error("record the health observation in the witness", "err", err)
			}
			return 0
		},
	}, true
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Decider is the automatic failover of the protection groups region
// belongs to whose mode is not off: as their standby it decides and runs
// the failover; as their primary it demotes itself when the standby
// triggered one against it.
func Decider(s *member.Serving, region string) []daemon.Task {
	var tasks []daemon.Task
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		if pg.AutoFailover.Mode == "off" || (region != pg.Primary && region != pg.Standby) {
			continue
		}
		d := &decider{s: s, pg: pg, region: region, log: s.Env.Log.With("group", pg.Name, "region", region), alerts: alert.New(pg, s.Env.Log)}
		// One series per state: 1 for the decision in force, so that a
		// dashboard shows what was decided (and the log and the alerts
		// say why).
		for _, st := range []string{Healthy, Unknown, Suspect, Down, Withheld, AwaitingApproval, Triggered} {
			s.Reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "auto_failover", Name: "decision",
				Help:        "1 for the state of this region's last automatic-failover decision (healthy, unknown, suspect, down, withheld, awaiting-approval, triggered).",
				ConstLabels: prometheus.Labels{"group": pg.Name, "region": region, "state": st}},
				func() float64 { return b2f(d.last.Load() != nil && d.last.Load().State == st) }))
		}
		interval := time.Second
		for _, r := range s.Env.Cfg.Regions {
			if iv := time.Duration(r.Health.Interval); len(r.Health.Checks) > 0 && iv < interval {
				interval = iv
			}
		}
		tasks = append(tasks, daemon.Task{Name: "auto-failover/" + pg.Name, Interval: interval, NotReady: true, Run: d.round})
	}
	return tasks
}

type decider struct {
	s       *member.Serving
	pg      *config.ProtectionGroup
	region  string
	log     *slog.Logger
	alerts  *alert.Alerts
	last    atomic.Pointer[Decision]
	running atomic.Bool
}

// watchOther alerts while this region's serve sees the protection group's
// other region down.
func (d *decider) watchOther(ctx context.Context, obs []Observation) {
	other := d.pg.Primary
	if other == d.region {
		other = d.pg.Standby
	}
	for _, o := range obs {
		if o.Role != RoleRegion || o.Observer != d.region || o.stale(time.Now()) {
			continue
		}
		r, ok := o.region(other)
		switch {
		case !ok:
		case r.Down:
			d.alerts.Raise(ctx, "region/"+other, "region.down", fmt.Sprintf("%s sees %s down: %s", d.region, other, strings.Join(failing("", r), "; ")), map[string]any{"region": other, "observer": d.region})
		default:
			d.alerts.Resolve(ctx, "region/"+other, fmt.Sprintf("%s sees %s up again", d.region, other))
		}
	}
}

// seesDown reports whether this region's latest view has primary down:
// only then is it worth reading the members' records for their lag.
func (d *decider) seesDown(obs []Observation, primary string) bool {
	for _, o := range obs {
		if r, ok := o.region(primary); ok && o.Role == RoleRegion && o.Observer == d.region && r.Down {
			return true
		}
	}
	return false
}

// tell alerts on a change of decision: a condition while the decision is
// suspect, down or withheld, resolved when it changes; an event when a
// failover is triggered.
func (d *decider) tell(ctx context.Context, prev *Decision, dec Decision) {
	if prev != nil && prev.State != dec.State {
		d.alerts.Resolve(ctx, "decision/"+prev.State, fmt.Sprintf("automatic failover of %s: no longer %s: %s", d.pg.Name, prev.State, dec.Reason))
	}
	details := map[string]any{"region": dec.Primary, "observers": dec.Observers, "checks": dec.Checks, "since": dec.Since}
	switch dec.State {
	case Suspect, Down, Withheld, AwaitingApproval:
		d.alerts.Raise(ctx, "decision/"+dec.State, "auto_failover."+dec.State, "automatic failover of "+d.pg.Name+": "+dec.Reason, details)
	case Triggered:
		d.alerts.Tell(ctx, "auto_failover", "triggered", "automatic failover of "+d.pg.Name+": "+dec.Reason, details)
	}
}

func (d *decider) round(ctx context.Context) time.Duration {
	env := d.s.Env
	w, err := env.Witness(ctx)
	if err != nil {
		d.log.Error("automatic failover: the witness does not answer; deciding nothing", "err", err)
		return 0
	}
	rec, ok, err := env.Lease(ctx, d.pg.Name)
	if err != nil || !ok {
		return 0
	}
	last, _, err := LoadRecord(ctx, w, d.pg.Name)
	if err != nil {
		d.log.Error("automatic failover: read its record in the witness", "err", err)
		return 0
	}
	obs, err := LoadObservations(ctx, w)
	if err != nil {
		d.log.Error("automatic failover: read the observations in the witness", "err", err)
		return 0
	}
	d.watchOther(ctx, obs)
	if rec.Holder == d.region {
		// The standby triggered a failover against this region under
		// this epoch: stop acting as primary now.
		// Only once its failover run holds the plan lock: a run that
		// could not start must not leave the group without a primary.
		if ld := last.Decision; ld.State == Triggered && ld.Primary == d.region && ld.Epoch == rec.Epoch &&
			last.Outcome == "running" && last.Execution != "" && activeRun(ctx, w, d.pg.Name) == last.Execution {
			if done, err := d.s.Demote(ctx, d.pg.Name); err != nil {
				d.log.Error("automatic failover: release the lease to the standby", "err", err)
			} else if done {
				d.log.Warn("demoted: the standby and the witness agree that this region is down, and the standby fails over; the lease is released", "reason", ld.Reason)
				d.alerts.Tell(ctx, "auto_failover", "demoted", d.region+" released the lease of "+d.pg.Name+" to the standby, which fails over: "+ld.Reason, nil)
			}
		}
		return 0
	}
	if rec.Holder == "" || rec.Standby != d.region || d.running.Load() {
		// Released (a plan runs); or this region is not the lease's
		// standby (after a failover the old primary is none until a
		// failback reinstates it: it never fails back by itself).
		return 0
	}
	facts := Facts{Now: time.Now(), Primary: rec.Holder, Standby: d.region, Epoch: rec.Epoch, Observations: obs, Last: last,
		Busy: activeRun(ctx, w, d.pg.Name), Approved: last.Approval != nil && last.Approval.Epoch == rec.Epoch, Hint: env.Hint(d.pg)}
	if d.pg.AutoFailover.MaxLag > 0 && d.seesDown(obs, rec.Holder) {
		facts.Lags = member.Lags(ctx, env, d.pg)
	}
	dec := Decide(d.pg, facts)
	prev := d.last.Swap(&dec)
	if prev == nil || prev.State != dec.State {
		lvl := slog.LevelInfo
		if dec.State != Healthy {
			lvl = slog.LevelWarn
		}
		d.log.Log(ctx, lvl, "automatic failover: "+dec.State, "reason", dec.Reason)
		d.tell(ctx, prev, dec)
	}
	if prev != nil && prev.State == dec.State && dec.State != Triggered {
		return 0
	}
	if _, err := updateRecord(ctx, w, d.pg.Name, func(r *Record) error {
		r.Decision = dec
		if dec.State == Triggered {
			r.LastRun, r.Execution, r.Outcome = dec.At, "", "running"
		}
		return nil
	}); err != nil {
		d.log.Error("automatic failover: record the decision in the witness", "err", err)
		return 0
	}
	if dec.State == Triggered {
		d.running.Store(true)
		go d.failover(context.WithoutCancel(ctx), dec)
	}
	return 0
}

// failover runs the failover plan for dec and records its outcome.
func (d *decider) failover(ctx context.Context, dec Decision) {
	defer d.running.Store(false)
	env := d.s.Env
	outcome, id := "", ""
	x, err := runPlan(ctx, env, d.pg, plan.Failover, dec.At, d.log, func(p *plan.Plan, ex *plan.Executor) error {
		if p.From != dec.Primary || p.To != d.region {
			return fmt.Errorf("the lease moved meanwhile (%s -> %s): nothing to fail over", p.From, p.To)
		}
		p.Trigger = &plan.Trigger{Reason: dec.Reason, Region: dec.Primary, Since: dec.Since, Observers: dec.Observers, Checks: dec.Checks}
		d.log.Warn("automatic failover: running the failover plan", "reason", dec.Reason)
		// Name the run in the record once it holds the plan lock: the
		// old primary demotes itself only then.
		tell, named := ex.OnChange, false
		ex.OnChange = func(x *plan.Execution) {
			if !named {
				named = true
				d.record(ctx, func(r *Record) { r.Execution = x.ID })
			}
			if tell != nil {
				tell(x)
			}
		}
		return nil
	})
	switch {
	case x != nil && err == nil:
		outcome, id = "succeeded", x.ID
		d.log.Warn("automatic failover succeeded", "execution", x.ID, "rto_seconds", x.RTO)
	case x != nil:
		outcome, id = "failed: "+err.Error(), x.ID
		d.log.Error("automatic failover failed", "execution", x.ID, "err", err)
	default:
		outcome = "not run: " + err.Error()
		d.log.Error("automatic failover did not run", "err", err)
	}
	d.record(ctx, func(r *Record) { r.Execution, r.Outcome = id, outcome })
}

// record changes pg's automatic-failover record in the witness.
func (d *decider) record(ctx context.Context, change func(*Record)) {
	w, err := d.s.Env.Witness(ctx)
	if err == nil {
		_, err = updateRecord(ctx, w, d.pg.Name, func(r *Record) error { change(r); return nil })
	}
	if err != nil {
		d.log.Error("automatic failover: record in the witness", "err", err)
	}
}

// runPlan runs pg's plan of typ, in the direction the lease says now,
// through the durable executor, decided at at. prepare, when set, sees the
// plan and the executor first and may refuse (nothing runs) or adjust
// them.
func runPlan(ctx context.Context, env *member.Env, pg *config.ProtectionGroup, typ string, at time.Time, log *slog.Logger,
	prepare func(*plan.Plan, *plan.Executor) error) (*plan.Execution, error) {
	p, err := member.PlanNow(ctx, env, pg, typ)
	if err != nil {
		return nil, err
	}
	ex, err := member.Executor(ctx, env, pg, p.Home, log)
	if err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(p, ex); err != nil {
			return nil, err
		}
	}
	return ex.Run(ctx, p, at)
}

// activeRun is the plan run of pg that holds the plan lock, "" when none
// (or the witness cannot tell).
func activeRun(ctx context.Context, w state.Store, pg string) string {
	var a struct{ Execution string }
	if _, err := w.Sub("plans").Sub(pg).Load(ctx, "active.json", &a); err != nil {
		return ""
	}
	return a.Execution
}
