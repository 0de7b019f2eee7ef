// Package workflow is the member kind of scheduled workflows (workflows[]
// in the configuration and in protection groups): jobs active in the
// primary region and paused in the standby, activated in the new primary
// at failover and switchover, and deactivated in a region that lost the
// lease (Passive), through HTTP, SQL or script actions (package hook).
package workflow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"tandem/internal/config"
	"tandem/internal/hook"
	"tandem/internal/member"
	"tandem/internal/plan"
)

// Workflow is a scheduled job to activate in the primary region and to
// keep paused in the standby.
type Workflow struct {
	Name       string        `yaml:"name" json:"name"`
	Activate   config.Action `yaml:"activate" json:"activate"`
	Deactivate config.Action `yaml:"deactivate" json:"deactivate"`
	// Vars per region, for the templates (.Vars.job_id).
	Vars map[string]map[string]string `yaml:"vars" json:"vars,omitempty"`
	// Class says where the workflow may run. scheduled (the default),
	// polling and event (it subscribes to events) run in one region only:
	// paused in the standby, activated in the new primary by plans, and
	// paused by the serve of a region that lost the lease before anything
	// else. stateless runs wherever it is active: plans activate it in the
	// new primary and nothing pauses it.
	Class string `yaml:"class" json:"class,omitempty"`
	// State, when set, reads whether the workflow is active in a region:
	// prechecks and status then catch it active in both regions.
	State *State `yaml:"state" json:"state,omitempty"`
}

// State is an action (http or script) whose answer says whether the
// workflow is active: the value at Field of its JSON answer (or its whole
// output, trimmed, without Field) is one of Active.
type State struct {
	config.Action `yaml:",inline"`
	Field         string   `yaml:"field" json:"field,omitempty"`
	Active        []string `yaml:"active" json:"active"`
}

// Classes of workflows.
var Classes = []string{"scheduled", "polling", "event", "stateless"}

// single reports whether the workflow may run in one region only.
func (w *Workflow) single() bool { return w.Class != "stateless" }

const (
	sectionKey = "workflows"
	refKey     = "workflows"
)

// Step kinds.
const (
	Check      = "check.workflow"
	Activate   = "workflow.activate"
	Deactivate = "workflow.deactivate"
)

// All returns the configured workflows.
func All(c *config.Config) []Workflow { return config.Get[[]Workflow](c, sectionKey) }

// Find returns the named workflow, or nil.
func Find(c *config.Config, name string) *Workflow { return config.Find[Workflow](c, sectionKey, name) }

// MemberName is its name.
func (w Workflow) MemberName() string { return w.Name }

func init() { member.Register(Kind{}) }

// section is the kind's configuration section.
func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "workflow",
		New: func() any { return new([]Workflow) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Workflow) {
				if w := &(*v.(*[]Workflow))[i]; w.Class == "" {
					w.Class = "scheduled"
				}
			}
		},
		Validate: func(ck *config.Check, v any) {
			seen := map[string]bool{}
			for i, w := range *v.(*[]Workflow) {
				f := fmt.Sprintf("%s[%d]", sectionKey, i)
				ck.Name(f+".name", "workflow", w.Name, seen)
				ck.Action(f+".activate", w.Activate, false)
				ck.Action(f+".deactivate", w.Deactivate, false)
				for r := range w.Vars {
					ck.Region(f+".vars."+r, r)
				}
				if !slices.Contains(Classes, w.Class) {
					ck.Bad(f+".class", "%q is not one of %s", w.Class, strings.Join(Classes, ", "))
				}
				if st := w.State; st != nil {
					ck.Action(f+".state", st.Action, false)
					if st.SQL != nil {
						ck.Bad(f+".state", "must be http or script: its answer says whether the workflow is active")
					}
					if len(st.Active) == 0 {
						ck.Bad(f+".state.active", "required: the answers that mean active (ACTIVATED, true, ...)")
					}
				}
			}
		},
		Names: config.NamesOf[Workflow],
	}
}

// Kind is the workflow kind.
type Kind struct{}

var (
	_ member.Kind    = Kind{}
	_ member.Passive = Kind{}
)

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Activate, Deactivate} }

// Steps: its endpoints answer; a switchover pauses it in the old primary
// and a failover tries to; both activate it in the new primary; a
// failback keeps it paused in the returning region.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	title := "the workflow's endpoints answer"
	wf := Find(env.Cfg, name)
	if wf.State != nil && wf.single() {
		title += " and it is not active in both regions"
	}
	out := []member.Placed{{Group: "prechecks", Step: plan.NewStep(Check, name, p.To, title, plan.WarnOnFailover(p.Type))}}
	add := func(group, kind, region, title, onError string) {
		out = append(out, member.Placed{Group: group, Step: plan.NewStep(kind, name, region, title, onError)})
	}
	if !wf.single() {
		if p.Type == plan.Switchover || p.Type == plan.Failover {
			add("activate", Activate, p.To, "activate the stateless workflow in the new primary (it stays active in "+p.From+")", "stop")
		}
		return out
	}
	switch p.Type {
	case plan.Switchover:
		add("quiesce", Deactivate, p.From, "pause the workflow in the old primary", "stop")
		add("activate", Activate, p.To, "activate the workflow in the new primary", "stop")
	case plan.Failover:
		add("quiesce", Deactivate, p.From, "pause the workflow in the old primary, if it answers", "continue")
		add("activate", Activate, p.To, "activate the workflow in the new primary", "stop")
	case plan.Failback:
		add("quiesce", Deactivate, p.To, "keep the workflow paused in the returning region", "stop")
	}
	return out
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	wf := Find(x.Cfg, x.Step.Member)
	switch x.Step.Kind {
	case Check:
		return check(ctx, x, wf)
	case Activate:
		return hook.Run(ctx, wf.Activate, x.Data(x.Step.Region, wf.Vars[x.Step.Region]), x.Out)
	default:
		return hook.Run(ctx, wf.Deactivate, x.Data(x.Step.Region, wf.Vars[x.Step.Region]), x.Out)
	}
}

func check(ctx context.Context, x *member.Exec, wf *Workflow) error {
	p := x.Plan
	var errs []error
	if wf.State != nil && wf.single() {
		active, err := activeIn(ctx, x.Env, wf)
		if err != nil {
			errs = append(errs, member.Failed("workflow %s: %v", wf.Name, err))
		}
		if len(active) > 1 {
			errs = append(errs, member.Failed("workflow %s (%s) is active in %s: it must run in one region only; pause it in the region that does not hold the lease",
				wf.Name, wf.Class, strings.Join(active, " and ")))
		} else if err == nil {
			x.Printf("workflow %s is active in %s", wf.Name, orNone(active))
		}
	}
	for _, c := range []struct {
		what   string
		a      config.Action
		region string
	}{{"activate", wf.Activate, p.To}, {"deactivate", wf.Deactivate, p.From}} {
		if p.Type == plan.Failback {
			c.region = p.To
		}
		if err := hook.Reachable(ctx, c.a, x.Data(c.region, wf.Vars[c.region])); err != nil {
			errs = append(errs, member.Failed("workflow %s, %s in %s: %v", wf.Name, c.what, c.region, err))
		} else {
			x.Printf("workflow %s: %s in %s answers", wf.Name, c.what, c.region)
		}
	}
	return errors.Join(errs...)
}

func orNone(regions []string) string {
	if len(regions) == 0 {
		return "no region"
	}
	return strings.Join(regions, ", ")
}

// activeIn reads in which regions the workflow is active (with
// wf.State). A region whose state cannot be read is in the error.
func activeIn(ctx context.Context, env *member.Env, wf *Workflow) ([]string, error) {
	var active []string
	var errs []error
	regions := slices.Sorted(maps.Keys(wf.Vars))
	if pg := env.ProtectionGroupOf(refKey, wf.Name); pg != nil {
		regions = []string{pg.Primary, pg.Standby}
	}
	for _, r := range regions {
		ok, err := wf.activeIn(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("its state in %s cannot be read: %w", r, err))
		} else if ok {
			active = append(active, r)
		}
	}
	return active, errors.Join(errs...)
}

func (wf *Workflow) activeIn(ctx context.Context, region string) (bool, error) {
	st := wf.State
	v, err := hook.Answer(ctx, st.Action, hook.Data{Plan: "state", Region: region, Vars: wf.Vars[region]}, st.Field)
	if err != nil {
		return false, err
	}
	return slices.Contains(st.Active, fmt.Sprint(v)), nil
}

// Passivate deactivates the workflow in a region that lost the lease (a
// stateless one keeps running).
func (Kind) Passivate(ctx context.Context, env *member.Env, pg *config.ProtectionGroup, name, region string, w io.Writer) error {
	wf := Find(env.Cfg, name)
	if !wf.single() {
		return nil
	}
	data := hook.Data{Plan: "passive", From: region, Region: region, Vars: wf.Vars[region]}
	var out bytes.Buffer
	if err := hook.Run(ctx, wf.Deactivate, data, &out); err != nil {
		return fmt.Errorf("workflow %s in %s: deactivate: %w (%s)", name, region, err, strings.TrimSpace(out.String()))
	}
	fmt.Fprintf(w, "workflow %s is paused in %s\n", name, region)
	return nil
}

// Status: with a state action, where the workflow is active (active in
// both regions needs a person); without, what keeps it in one region.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	wf := Find(env.Cfg, name)
	rep := member.Report{Kind: refKey, Member: name, Health: "ok"}
	detail := map[string]any{"workflow": name, "class": wf.Class}
	switch {
	case !wf.single():
		rep.Lines = []string{"stateless: activated in the new primary by plans, never paused"}
	case wf.State == nil:
		rep.Lines = []string{wf.Class + ": activated in the primary by plans, paused in a region that lost the lease by its serve"}
	default:
		active, err := activeIn(ctx, env, wf)
		detail["active_in"] = active
		switch {
		case len(active) > 1:
			rep.Health, rep.Attention = "active-in-both", true
			rep.Lines = []string{fmt.Sprintf("%s workflow active in %s: it must run in one region only", wf.Class, strings.Join(active, " and "))}
		case err != nil:
			rep.Health, rep.Attention = "unknown", true
			rep.Lines = []string{fmt.Sprintf("%s workflow active in %s; %v", wf.Class, orNone(active), err)}
		default:
			rep.Lines = []string{fmt.Sprintf("%s workflow active in %s", wf.Class, orNone(active))}
		}
	}
	detail["health"] = rep.Health
	rep.Detail = detail
	return rep
}
