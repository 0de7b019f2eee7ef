package plan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/runner"
	"tandem/internal/state"
)

// Step and execution states.
const (
	Queued        = "queued"
	Running       = "running"
	Succeeded     = "succeeded"
	Failed        = "failed"
	FailedIgnored = "failed-ignored"
	TimedOut      = "timed-out"
	Skipped       = "skipped"
	Canceled      = "canceled"
	Waiting       = "waiting-for-approval"
)

var (
	// ErrBusy: another execution of the protection group is not finished.
	ErrBusy = errors.New("another plan execution is not finished")
	// ErrStepFailed: the execution stopped on a failed step.
	ErrStepFailed = errors.New("a step failed")
)

// Actions does what steps of each kind do. Run must be idempotent: a step
// is run again when its execution is resumed after a crash.
type Actions interface {
	Run(ctx context.Context, p *Plan, s *Step, execution string, log io.Writer) error
}

// Holder is implemented by Actions that hold something for as long as a
// run goes on in this process (package member keeps the region lease the
// run acts for): Begin is called when a run starts or resumes, and the
// returned end when it stops, whatever the outcome.
type Holder interface {
	Begin(ctx context.Context, p *Plan) (end func())
}

// Execution is the durable record of one plan run.
type Execution struct {
	ID              string `json:"id"`
	Type            string `json:"type"`
	ProtectionGroup string `json:"protection_group"`
	From            string `json:"from"`
	To              string `json:"to"`
	Home            string `json:"home"`
	State           string `json:"state"`
	// Decided is when the run was asked for: RTO counts from here.
	Decided time.Time  `json:"decided"`
	Ended   *time.Time `json:"ended,omitempty"`
	// RTO is from the decision until the last step succeeded, in seconds.
	RTO    float64        `json:"rto_seconds,omitempty"`
	Error  string         `json:"error,omitempty"`
	Runner *runner.Runner `json:"runner,omitempty"`
	// Trigger says why tandem started the run by itself (automatic
	// failover); nil for a run a person asked for.
	Trigger *Trigger `json:"trigger,omitempty"`
	// RPO is what each member's standby lacked at the decision (measured
	// while the first steps run): a failover loses it, a switchover
	// drains it first.
	RPO    []MemberRPO   `json:"rpo,omitempty"`
	Groups []GroupRecord `json:"groups"`
}

// MemberRPO is one member's lag at a run's decision.
type MemberRPO struct {
	Member string `json:"member"` // "replication lake"
	// Lag is how long the oldest change not yet in the standby had waited
	// (0: none waited), or with Unit what the standby lacked counted in
	// it (WAL bytes, events); Known is false when the member could not
	// tell.
	Lag   float64 `json:"lag"`
	Known bool    `json:"known"`
	// Target is the member's RPO bound in the same unit (0: none set).
	Target float64 `json:"target,omitempty"`
	// Unit is "" for seconds, else "bytes" or "events".
	Unit string `json:"unit,omitempty"`
}

// GroupRecord is a group's state.
type GroupRecord struct {
	Name  string        `json:"name"`
	State string        `json:"state"`
	Steps []*StepRecord `json:"steps"`
}

// StepRecord is a step's state, with its output.
type StepRecord struct {
	ID       string     `json:"id"`
	Title    string     `json:"title"`
	Region   string     `json:"region"`
	State    string     `json:"state"`
	Attempts int        `json:"attempts,omitempty"`
	Started  *time.Time `json:"started,omitempty"`
	Ended    *time.Time `json:"ended,omitempty"`
	Log      string     `json:"log,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// Seconds is how long the step took.
func (r *StepRecord) Seconds() float64 {
	if r.Started == nil || r.Ended == nil {
		return 0
	}
	return r.Ended.Sub(*r.Started).Seconds()
}

// control is what other commands ask of a running execution.
type control struct {
	Cancel   bool     `json:"cancel,omitempty"`
	Approved []string `json:"approved,omitempty"`
	// By is who approved each step, and when.
	By map[string]string `json:"by,omitempty"`
}

// active is the lock: at most one unfinished execution per protection
// group, kept in the witness so that both regions see it.
type active struct {
	Execution string    `json:"execution"`
	Type      string    `json:"type"`
	Home      string    `json:"home"`
	Started   time.Time `json:"started"`
}

// Executor runs plans and keeps their records.
type Executor struct {
	// Records is the plan folder in the Home region's state.
	Records state.Store
	// Lock is the protection group's folder in the witness.
	Lock    state.Store
	Actions Actions
	Log     *slog.Logger
	// Poll is how often approvals and cancels are looked for (default 1s).
	Poll time.Duration
	// OnChange, when set, is called after every change of the record.
	OnChange func(*Execution)
	// Hint is put in the commands tandem prints for a person to run next
	// (`--config tandem.yaml`), so they can be pasted as printed.
	Hint string
	// Measure, when set, gives the members' lag at a new run's decision
	// (Execution.RPO). It runs beside the first steps; the run waits for it
	// before it ends.
	Measure func(context.Context) []MemberRPO
}

// Command is a command a person runs next, as it can be pasted:
// `tandem plan retry --config F ID`.
func (e *Executor) Command(verb string, args ...string) string {
	parts := []string{"tandem", "plan", verb}
	if e.Hint != "" {
		parts = append(parts, e.Hint)
	}
	return "`" + strings.Join(append(parts, args...), " ") + "`"
}

const maxLog = 16 << 10

func (e *Executor) poll() time.Duration {
	if e.Poll <= 0 {
		return time.Second
	}
	return e.Poll
}

func (e *Executor) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

func (e *Executor) execs() state.Store { return e.Records.Sub("executions") }
func (e *Executor) ctrl() state.Store  { return e.Records.Sub("control") }

// Run starts a new execution of p, decided at decided, and runs it to the
// end, to a failed step, or until ctx ends (then it can be resumed).
func (e *Executor) Run(ctx context.Context, p *Plan, decided time.Time) (*Execution, error) {
	x := &Execution{
		ID:   p.Type + "-" + decided.UTC().Format("20060102T150405.000Z"),
		Type: p.Type, ProtectionGroup: p.ProtectionGroup, From: p.From, To: p.To, Home: p.Home,
		State: Running, Decided: decided.UTC(), Trigger: p.Trigger,
	}
	x.ID = strings.ReplaceAll(x.ID, ".", "")
	for _, g := range p.Groups {
		gr := GroupRecord{Name: g.Name, State: Queued}
		for _, s := range g.Steps {
			gr.Steps = append(gr.Steps, &StepRecord{ID: s.ID, Title: s.Title, Region: s.Region, State: Queued})
		}
		x.Groups = append(x.Groups, gr)
	}
	if err := e.lock(ctx, x); err != nil {
		return nil, err
	}
	r := &run{e: e, p: p, x: x}
	r.x.Runner = runner.Self()
	etag, err := e.execs().Save(ctx, x.ID+".json", x, objstore.PutOptions{IfAbsent: true})
	if err != nil {
		e.unlock(context.WithoutCancel(ctx), x.ID)
		return nil, fmt.Errorf("record execution %s: %w", x.ID, err)
	}
	r.etag = etag
	if e.Measure != nil {
		r.measured = make(chan struct{})
		go func() {
			defer close(r.measured)
			rpo := e.Measure(ctx)
			r.set(func() { r.x.RPO = rpo })
		}()
	}
	return x, r.run(ctx)
}

func (e *Executor) lock(ctx context.Context, x *Execution) error {
	a := active{Execution: x.ID, Type: x.Type, Home: x.Home, Started: x.Decided}
	for {
		_, err := e.Lock.Save(ctx, "active.json", a, objstore.PutOptions{IfAbsent: true})
		if !errors.Is(err, objstore.ErrPrecondition) {
			return err
		}
		var cur active
		etag, err := e.Lock.Load(ctx, "active.json", &cur)
		if errors.Is(err, objstore.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		// A lock left by an execution that ended is stale.
		if old, _, err := e.Load(ctx, cur.Execution); err == nil && (old.State == Succeeded || old.State == Canceled || old.Ended != nil) {
			if _, err := e.Lock.Save(ctx, "active.json", a, objstore.PutOptions{IfMatch: etag}); err == nil {
				return nil
			}
			continue
		}
		return fmt.Errorf("%w: %s (%s, started %s, records in %s) must be resumed, retried, skipped or canceled first",
			ErrBusy, cur.Execution, cur.Type, cur.Started.Format(time.RFC3339), cur.Home)
	}
}

func (e *Executor) unlock(ctx context.Context, id string) {
	var cur active
	etag, err := e.Lock.Load(ctx, "active.json", &cur)
	if err != nil || cur.Execution != id {
		return
	}
	if err := e.Lock.Bucket.Delete(ctx, e.Lock.Key("active.json")); err != nil {
		e.log().Warn("release the plan lock", "execution", id, "err", err, "etag", etag)
	}
}

// Load reads an execution's record.
func (e *Executor) Load(ctx context.Context, id string) (*Execution, string, error) {
	var x Execution
	etag, err := e.execs().Load(ctx, id+".json", &x)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, "", fmt.Errorf("no execution %s in %s", id, e.execs().URL(""))
	}
	return &x, etag, err
}

// List returns the executions, newest first.
func (e *Executor) List(ctx context.Context) ([]*Execution, error) {
	st := e.execs()
	var out []*Execution
	for o, err := range st.Bucket.List(ctx, st.Prefix) {
		if err != nil {
			return nil, err
		}
		id, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, st.Prefix), ".json")
		if !ok || strings.Contains(id, "/") {
			continue
		}
		x, _, err := e.Load(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Decided.After(out[j].Decided) })
	return out, nil
}

// Resume continues an execution that stopped: killed, interrupted, or
// waiting. p is the plan rebuilt from the configuration; it must have the
// steps the execution recorded. With fix, failed steps are first changed
// (retry: queued again; skip: skipped).
func (e *Executor) Resume(ctx context.Context, p *Plan, id string, fix func(*Execution) error) (*Execution, error) {
	x, etag, err := e.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case x.State == Succeeded:
		return x, fmt.Errorf("execution %s already succeeded", id)
	case runner.Live(x.Runner):
		return x, fmt.Errorf("execution %s is being run by %s (pid %d); cancel it or wait", id, x.Runner.Host, x.Runner.PID)
	}
	if err := sameSteps(p, x); err != nil {
		return x, err
	}
	if x.Ended != nil {
		// It ended (canceled, or stopped in its prechecks): continuing it
		// takes the lock again, if no other run holds it.
		if err := e.lock(ctx, x); err != nil {
			return x, err
		}
		// The cancel that ended it, and approvals given before, are
		// spent: pauses ask again.
		if err := e.setControl(ctx, id, func(c *control) { *c = control{} }); err != nil {
			return x, err
		}
		x.Ended = nil
		for _, g := range x.Groups {
			for _, s := range g.Steps {
				if s.State == Canceled {
					s.State = Queued
				}
			}
		}
	}
	if fix != nil {
		if err := fix(x); err != nil {
			return x, err
		}
	}
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			if s.State == Failed || s.State == TimedOut {
				return x, fmt.Errorf("execution %s: step %s %s (%s): %s runs it again, %s goes on without it",
					id, s.ID, s.State, s.Error, e.Command("retry", id), e.Command("skip", id, s.ID))
			}
		}
	}
	x.State, x.Error, x.Runner = Running, "", runner.Self()
	r := &run{e: e, p: p, x: x, etag: etag}
	if err := r.save(ctx); err != nil {
		return x, err
	}
	return x, r.run(ctx)
}

// Retry puts the failed and timed-out steps (or only stepID) back in the
// queue and resumes.
func (e *Executor) Retry(ctx context.Context, p *Plan, id, stepID string) (*Execution, error) {
	return e.Resume(ctx, p, id, func(x *Execution) error {
		return change(x, stepID, []string{Failed, TimedOut}, Queued)
	})
}

// Skip marks a failed, timed-out or queued step skipped and resumes.
func (e *Executor) Skip(ctx context.Context, p *Plan, id, stepID string) (*Execution, error) {
	if stepID == "" {
		return nil, errors.New("skip needs the step's id")
	}
	return e.Resume(ctx, p, id, func(x *Execution) error {
		return change(x, stepID, []string{Failed, TimedOut, Queued, Waiting}, Skipped)
	})
}

func change(x *Execution, stepID string, from []string, to string) error {
	n := 0
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			if (stepID == "" || s.ID == stepID) && slices.Contains(from, s.State) {
				s.State, s.Error = to, s.Error+" (was "+s.State+")"
				if to == Queued {
					s.Error = ""
				}
				n++
			} else if s.ID == stepID {
				return fmt.Errorf("step %s is %s, not %s", stepID, s.State, strings.Join(from, " or "))
			}
		}
	}
	if n == 0 {
		if stepID != "" {
			return fmt.Errorf("execution %s has no step %s", x.ID, stepID)
		}
		return fmt.Errorf("execution %s has no %s step", x.ID, strings.Join(from, " or "))
	}
	return nil
}

// Cancel stops an execution: a running one at its next poll (its running
// steps are interrupted), a stopped one at once. It releases the lock.
func (e *Executor) Cancel(ctx context.Context, id string) (*Execution, error) {
	x, etag, err := e.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	if x.State == Succeeded || x.Ended != nil {
		return x, fmt.Errorf("execution %s already ended (%s)", id, x.State)
	}
	if runner.Live(x.Runner) {
		return x, e.setControl(ctx, id, func(c *control) { c.Cancel = true })
	}
	now := time.Now().UTC()
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			if s.State == Queued || s.State == Running || s.State == Waiting {
				s.State = Canceled
			}
		}
	}
	x.State, x.Ended = Canceled, &now
	if _, err := e.execs().Save(ctx, id+".json", x, objstore.PutOptions{IfMatch: etag}); err != nil {
		return x, err
	}
	e.unlock(ctx, id)
	return x, nil
}

// Approve approves a pause step (or every waiting one).
func (e *Executor) Approve(ctx context.Context, id, stepID, by string) (*Execution, error) {
	x, _, err := e.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			if (stepID == "" || s.ID == stepID) && (s.State == Waiting || s.State == Queued) {
				ids = append(ids, s.ID)
			}
		}
	}
	if stepID != "" && len(ids) == 0 {
		return x, fmt.Errorf("execution %s has no step %s waiting or queued", id, stepID)
	}
	return x, e.setControl(ctx, id, func(c *control) {
		for _, s := range ids {
			if !slices.Contains(c.Approved, s) {
				c.Approved = append(c.Approved, s)
				if c.By == nil {
					c.By = map[string]string{}
				}
				c.By[s] = by + " at " + time.Now().UTC().Format(time.RFC3339)
			}
		}
	})
}

func (e *Executor) setControl(ctx context.Context, id string, f func(*control)) error {
	for {
		var c control
		etag, err := e.ctrl().Load(ctx, id+".json", &c)
		if err != nil && !errors.Is(err, objstore.ErrNotExist) {
			return err
		}
		f(&c)
		_, err = e.ctrl().Save(ctx, id+".json", c, objstore.PutOptions{IfMatch: etag, IfAbsent: etag == ""})
		if !errors.Is(err, objstore.ErrPrecondition) {
			return err
		}
	}
}

func (e *Executor) control(ctx context.Context, id string) control {
	var c control
	if _, err := e.ctrl().Load(ctx, id+".json", &c); err != nil && !errors.Is(err, objstore.ErrNotExist) {
		e.log().Warn("read plan control", "execution", id, "err", err)
	}
	return c
}

func sameSteps(p *Plan, x *Execution) error {
	var have, want []string
	for _, g := range p.Groups {
		for _, s := range g.Steps {
			have = append(have, g.Name+"/"+s.ID)
		}
	}
	for _, g := range x.Groups {
		for _, s := range g.Steps {
			want = append(want, g.Name+"/"+s.ID)
		}
	}
	if !slices.Equal(have, want) {
		return fmt.Errorf("the configuration no longer gives the plan execution %s started with (steps now %v, then %v): cancel it and start a new run", x.ID, have, want)
	}
	return nil
}
