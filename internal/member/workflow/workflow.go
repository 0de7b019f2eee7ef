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
}

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
	out := []member.Placed{{Group: "prechecks", Step: plan.NewStep(Check, name, p.To, "the workflow's endpoints answer", plan.WarnOnFailover(p.Type))}}
	add := func(group, kind, region, title, onError string) {
		out = append(out, member.Placed{Group: group, Step: plan.NewStep(kind, name, region, title, onError)})
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

// Passivate deactivates the workflow in a region that lost the lease.
func (Kind) Passivate(ctx context.Context, env *member.Env, pg *config.ProtectionGroup, name, region string, w io.Writer) error {
	wf := Find(env.Cfg, name)
	data := hook.Data{Plan: "passive", From: region, Region: region, Vars: wf.Vars[region]}
	var out bytes.Buffer
	if err := hook.Run(ctx, wf.Deactivate, data, &out); err != nil {
		return fmt.Errorf("workflow %s in %s: deactivate: %w (%s)", name, region, err, strings.TrimSpace(out.String()))
	}
	fmt.Fprintf(w, "workflow %s is paused in %s\n", name, region)
	return nil
}

// Status: workflows keep no records; the passive duties of serve report
// whether the old primary's were paused.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	return member.Report{Kind: refKey, Member: name, Health: "ok",
		Lines:  []string{"activated in the primary by plans, paused in a region that lost the lease by its serve"},
		Detail: map[string]any{"workflow": name, "health": "ok"}}
}
