package member

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/lease"
	"tandem/internal/plan"
	"tandem/internal/runner"
)

// Role is a protection group in `tandem status`: who is primary, the plan
// run that is not finished, and what each region did to stay passive.
type Role struct {
	ProtectionGroup string        `json:"protection_group"`
	Lease           *lease.Record `json:"lease,omitempty"`
	// LeaseState is Lease's State: held, expired or released.
	LeaseState string `json:"lease_state,omitempty"`
	// Expired: the lease's holder may no longer act (expired or released).
	Expired    bool   `json:"expired,omitempty"`
	Error      string `json:"error,omitempty"`
	Unfinished string `json:"unfinished_execution,omitempty"`
	// LastRun is the newest plan run, when it did not succeed: what it
	// left undone and the command that goes on.
	LastRun *LastRun    `json:"last_run,omitempty"`
	Passive []Passivity `json:"passive,omitempty"`
	Health  string      `json:"health"`
	hint    string      // --config (and --protection-group) for printed commands
}

// LastRun is a plan run that did not succeed.
type LastRun struct {
	Execution string    `json:"execution"`
	Type      string    `json:"type"`
	State     string    `json:"state"` // failed, canceled, interrupted, running
	Decided   time.Time `json:"decided"`
	Error     string    `json:"error,omitempty"`
	// Changed: steps beyond the prechecks succeeded (something moved).
	Changed bool `json:"changed"`
	// NotDone are the steps that did not succeed, with their state.
	NotDone []string `json:"not_done,omitempty"`
	// Repair is the command that goes on from where it stopped.
	Repair string `json:"repair,omitempty"`
}

// Status is the whole status: `tandem status --json` and serve's /status.
// Members are listed under their section's key (replication, groups, ...).
type Status struct {
	ProtectionGroups []Role
	Members          []Report
	// Parts are what registered status parts add (RegisterStatus).
	Parts []Part
	// Attention: something needs a person.
	Attention bool
}

// Part is a part of the status that no member kind owns (the regions'
// health and the automatic-failover decisions): under Key in the JSON,
// Lines in the human form.
type Part struct {
	Key       string
	Title     string
	Detail    any
	Lines     []string
	Attention bool
}

var parts []func(ctx context.Context, env *Env) (Part, bool)

// RegisterStatus adds a part to every status; f reports false when it has
// nothing to show.
func RegisterStatus(f func(ctx context.Context, env *Env) (Part, bool)) { parts = append(parts, f) }

// MarshalJSON keeps one list per kind, under its section key.
func (s Status) MarshalJSON() ([]byte, error) {
	doc := map[string]any{"protection_groups": s.ProtectionGroups}
	for _, k := range Kinds() {
		list := []any{}
		for _, r := range s.Members {
			if r.Kind == k.Name() {
				list = append(list, r.Detail)
			}
		}
		doc[k.Section().Key] = list
	}
	for _, p := range s.Parts {
		doc[p.Key] = p.Detail
	}
	doc["attention"] = s.Attention
	return json.Marshal(doc)
}

// CollectStatus reads every protection group's lease and every member's
// records. It never fails as a whole: what it cannot read is reported.
func CollectStatus(ctx context.Context, env *Env) Status {
	ctx = Reading(ctx)
	var s Status
	for i := range env.Cfg.ProtectionGroups {
		r := role(ctx, env, i)
		s.Attention = s.Attention || r.Health != "ok"
		s.ProtectionGroups = append(s.ProtectionGroups, r)
	}
	for _, k := range Kinds() {
		for _, m := range env.Cfg.Names(k.Section().Key) {
			rep := k.Status(ctx, env, m)
			rep.Kind, rep.Member, rep.Noun = k.Name(), m, k.Section().Noun
			s.Attention = s.Attention || rep.Attention
			s.Members = append(s.Members, rep)
		}
	}
	for _, f := range parts {
		if p, ok := f(ctx, env); ok {
			s.Attention = s.Attention || p.Attention
			s.Parts = append(s.Parts, p)
		}
	}
	return s
}

func role(ctx context.Context, env *Env, i int) Role {
	pg := &env.Cfg.ProtectionGroups[i]
	r := Role{ProtectionGroup: pg.Name, Health: "ok", hint: env.Hint(pg)}
	rec, ok, err := env.Lease(ctx, pg.Name)
	switch {
	case err != nil:
		r.Error, r.Health = err.Error(), "witness-unreachable"
	case !ok:
		r.Health = "never-taken"
	default:
		r.Lease = &rec
		r.Expired, r.LeaseState = rec.Expired(time.Now()), rec.State(time.Now())
		switch {
		case r.Expired:
			r.Health = "no-primary"
		case rec.Standby == "":
			r.Health = "no-standby"
		}
	}
	if w, err := env.Witness(ctx); err == nil {
		var a struct{ Execution string }
		if _, err := w.Sub("plans").Sub(pg.Name).Load(ctx, "active.json", &a); err == nil {
			r.Unfinished = a.Execution
			if r.Health == "ok" {
				r.Health = "plan-unfinished"
			}
		}
	}
	if lr := lastRun(ctx, env, pg); lr != nil {
		r.LastRun = lr
		if r.Health == "ok" && (lr.Changed || lr.State == "running") {
			r.Health = "plan-" + lr.State
		}
	}
	for _, region := range []string{pg.Primary, pg.Standby} {
		if p, ok, err := env.LoadPassivity(ctx, pg.Name, region); err == nil && ok && r.Lease != nil && p.Epoch == r.Lease.Epoch {
			r.Passive = append(r.Passive, p)
			if !p.Done && r.Health == "ok" {
				r.Health = "not-passive"
			}
		}
	}
	return r
}

// lastRun reads both regions' plan records and returns the newest run if
// it did not succeed (nil otherwise, or when none can be read).
func lastRun(ctx context.Context, env *Env, pg *config.ProtectionGroup) *LastRun {
	var newest *plan.Execution
	for _, region := range []string{pg.Primary, pg.Standby} {
		st, err := env.RegionState(ctx, region)
		if err != nil {
			continue
		}
		ex := &plan.Executor{Records: st.Sub("plans").Sub(pg.Name)}
		list, err := ex.List(ctx)
		if err == nil && len(list) > 0 && (newest == nil || list[0].Decided.After(newest.Decided)) {
			newest = list[0]
		}
	}
	if newest == nil || newest.State == plan.Succeeded {
		return nil
	}
	x := newest
	lr := &LastRun{Execution: x.ID, Type: x.Type, State: x.State, Decided: x.Decided, Error: x.Error}
	hint := &plan.Executor{Hint: env.Hint(pg)}
	lr.Changed, lr.NotDone = Undone(x)
	switch {
	case x.State == plan.Running && !runner.Live(x.Runner):
		lr.State, lr.Repair = "interrupted", hint.Command("resume", x.ID)
	case x.State == plan.Running:
		lr.Repair = ""
	case x.State == plan.Failed && x.Ended == nil:
		lr.Repair = hint.Command("retry", x.ID) + " (or skip a step, or cancel)"
	default: // canceled, or ended in its prechecks
		lr.Repair = hint.Command("resume", x.ID)
	}
	return lr
}

// Undone says what a run that did not succeed left: whether a step beyond
// the prechecks succeeded (something changed), and the steps not done, each
// with its region and state.
func Undone(x *plan.Execution) (changed bool, notDone []string) {
	for _, g := range x.Groups {
		for _, st := range g.Steps {
			switch {
			case st.State == plan.Succeeded && g.Name != "prechecks":
				changed = true
			case st.State != plan.Succeeded && st.State != plan.Skipped && st.State != plan.FailedIgnored:
				notDone = append(notDone, fmt.Sprintf("%s (%s) %s", st.ID, st.Region, st.State))
			}
		}
	}
	return changed, notDone
}

// Print writes the human form of s.
func (s Status) Print(w io.Writer) {
	for _, r := range s.ProtectionGroups {
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "protection group %s: the witness does not answer: %s\n", r.ProtectionGroup, r.Error)
		case r.Lease == nil:
			fmt.Fprintf(w, "protection group %s: the lease was never taken\n", r.ProtectionGroup)
		default:
			l := r.Lease
			fmt.Fprintf(w, "protection group %s: lease %s\n", r.ProtectionGroup, l.Describe(time.Now()))
			if l.Holder != "" && l.Standby == "" {
				fmt.Fprintf(w, "  no standby: nothing is replicated until a failback (tandem plan run %s failback)\n", r.hint)
			}
		}
		if r.Unfinished != "" {
			fmt.Fprintf(w, "  plan execution %s is not finished: tandem plan executions %s %s\n", r.Unfinished, r.hint, r.Unfinished)
		}
		if lr := r.LastRun; lr != nil && (lr.Changed || lr.State == "interrupted") {
			fmt.Fprintf(w, "  the last plan run, %s (%s), is %s after it changed things; not done: %s\n", lr.Execution, lr.Type, strings.ToUpper(lr.State), join(lr.NotDone))
			if lr.Repair != "" {
				fmt.Fprintf(w, "  to go on from where it stopped: %s\n", strings.Trim(lr.Repair, "`"))
			}
		}
		for _, p := range r.Passive {
			if p.Done {
				fmt.Fprintf(w, "  %s is passive since %s (epoch %d): %s\n", p.Region, p.Since.Local().Format("2006-01-02 15:04:05"), p.Epoch, join(p.Log))
			} else {
				fmt.Fprintf(w, "  %s is NOT passive yet (its serve retries): %s", p.Region, join(p.Errors))
				if len(p.Log) > 0 {
					fmt.Fprintf(w, "; done: %s", join(p.Log))
				}
				fmt.Fprintln(w)
			}
		}
	}
	for _, rep := range s.Members {
		fmt.Fprintf(w, "%s %s: %s\n", rep.Noun, rep.Member, rep.Health)
		for _, l := range rep.Lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, p := range s.Parts {
		fmt.Fprintf(w, "%s\n", p.Title)
		for _, l := range p.Lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

func join(lines []string) string {
	if len(lines) == 0 {
		return "nothing to do"
	}
	out := lines[0]
	for _, l := range lines[1:] {
		out += "; " + l
	}
	return out
}

// NewestDirection is the direction a member's status shows when the
// witness does not answer (err): of dirs (configured first), the one whose
// records were written last, as when says, with a note saying so. It lets
// status work during the incident that took the witness's region away.
func NewestDirection[D any](err error, dirs []D, when func(D) (time.Time, bool), label func(D) string) (D, string) {
	best, found := dirs[0], false
	var newest time.Time
	for _, d := range dirs {
		if t, ok := when(d); ok && (!found || t.After(newest)) {
			best, newest, found = d, t, true
		}
	}
	if !found {
		return best, fmt.Sprintf("the witness does not answer (%v): showing the configured direction", err)
	}
	return best, fmt.Sprintf("the witness does not answer: showing the newest records, of %s (%v)", label(best), err)
}
