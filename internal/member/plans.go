package member

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"tandem/internal/alert"
	"tandem/internal/config"
	"tandem/internal/fence"
	"tandem/internal/hook"
	"tandem/internal/lease"
	"tandem/internal/objstore"
	"tandem/internal/plan"
)

// ErrPrecheck marks a precondition a plan found broken.
var ErrPrecheck = errors.New("precheck failed")

// Failed is a broken precondition: an error wrapping ErrPrecheck.
func Failed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPrecheck, fmt.Sprintf(format, args...))
}

// Build generates a protection group's plan of type typ from region from
// toward region to, asking every kind for its members' steps.
func Build(env *Env, pg *config.ProtectionGroup, typ, from, to string) (*plan.Plan, error) {
	return plan.Build(pg, typ, from, to, func(p *plan.Plan) []plan.Placed {
		var out []plan.Placed
		for _, k := range Kinds() {
			for _, m := range pg.Members(k.Name()) {
				for _, ps := range k.Steps(env, p, m) {
					out = append(out, plan.Placed{Group: ps.Group, Step: ps.Step})
				}
			}
		}
		return out
	})
}

func init() { config.RegisterCheck(checkStepIDs) }

// checkStepIDs reports a protection group's step settings whose id is no
// step of any of its plans, in either direction: a mistyped id would
// otherwise be ignored.
func checkStepIDs(ck *config.Check) {
	cfg := ck.Config()
	env := NewEnv(cfg, nil)
	for i := range cfg.ProtectionGroups {
		pg := &cfg.ProtectionGroups[i]
		if len(pg.Steps) == 0 {
			continue
		}
		ids, ok := stepIDs(env, pg)
		if !ok {
			continue // the group has other errors, reported already
		}
		for id := range pg.Steps {
			if !slices.Contains(ids, id) {
				ck.Bad(fmt.Sprintf("protection_groups[%d].steps.%s", i, id), "no plan of %s has a step with this id%s (tandem plan show lists them)",
					pg.Name, config.Suggest(id, ids))
			}
		}
	}
}

// stepIDs lists the ids of every step of pg's plans.
func stepIDs(env *Env, pg *config.ProtectionGroup) (ids []string, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	for _, typ := range config.PlanTypes {
		for _, dir := range [][2]string{{pg.Primary, pg.Standby}, {pg.Standby, pg.Primary}} {
			p, err := Build(env, pg, typ, dir[0], dir[1])
			if err != nil {
				return nil, false
			}
			for _, g := range p.Groups {
				for _, st := range g.Steps {
					ids = append(ids, st.ID)
				}
			}
		}
	}
	return ids, true
}

// Steps performs the steps of plans: it implements plan.Actions, handing
// each member step to its kind and doing the protection group's own
// (lease, drills, user steps and their prechecks).
type Steps struct {
	Env *Env
}

var (
	_ plan.Actions = (*Steps)(nil)
	_ plan.Holder  = (*Steps)(nil)
)

// Run does step st of plan p.
func (s *Steps) Run(ctx context.Context, p *plan.Plan, st *plan.Step, exec string, w io.Writer) error {
	pg, err := s.Env.Cfg.FindProtectionGroup(p.ProtectionGroup)
	if err != nil {
		return err
	}
	x := &Exec{Env: s.Env, Plan: p, PG: pg, Step: st, Execution: exec, Out: w, For: actsFor(p, st)}
	k := ofStep(st.Kind)
	if !strings.HasPrefix(st.Kind, "check.") && !strings.HasPrefix(st.Kind, "lease.") && st.Kind != plan.UserStep {
		// The guard: a step acts only while the region it acts for holds
		// the lease; a run resumed after the lease moved changes nothing.
		if _, err := s.Env.Holds(ctx, pg, x.For); err != nil {
			return fmt.Errorf("%w: this step of the %s no longer applies", err, p.Type)
		}
	}
	if k != nil {
		return k.Do(ctx, x)
	}
	switch st.Kind {
	case plan.CheckLease:
		return s.checkLease(ctx, x)
	case plan.CheckEndpoint:
		return s.checkUserStep(ctx, x)
	case plan.LeaseMove:
		return s.leaseMove(ctx, x)
	case plan.LeaseAcquire:
		return s.leaseAcquire(ctx, x)
	case plan.LeaseStandby:
		return s.leaseStandby(ctx, x)
	case plan.DrillMark, plan.DrillUnmark:
		return s.drill(ctx, x)
	case plan.UserStep:
		return hook.Run(ctx, st.User.Action, x.Data(st.Region, nil), w)
	}
	return fmt.Errorf("unknown step kind %q", st.Kind)
}

// actsFor is the region a step acts for. In a switchover, the old primary
// quiesces and drains while it holds the lease (steps in those groups and
// the prechecks), and the new one does the rest once it took it; a
// failover acts for the new primary from the start (the lease is its first
// step); failbacks and drills act for the primary, which keeps the lease.
func actsFor(p *plan.Plan, st *plan.Step) string {
	switch p.Type {
	case plan.Failover:
		return p.To
	case plan.Switchover:
		if g := p.GroupOf(st.ID); g == "quiesce" || g == "drain" || g == "prechecks" {
			return p.From
		}
		return p.To
	}
	return p.From
}

// Data is what the templates of an action see.
func (x *Exec) Data(region string, vars map[string]string) hook.Data {
	return hook.Data{Plan: x.Plan.Type, Execution: x.Execution, From: x.Plan.From, To: x.Plan.To, Region: region, Vars: vars}
}

func (s *Steps) drill(ctx context.Context, x *Exec) error {
	drills, err := s.Env.Drills(ctx, x.Step.Region)
	if err != nil {
		return err
	}
	name := x.PG.Name + ".json"
	if x.Step.Kind == plan.DrillUnmark {
		x.Printf("replication and syncs into %s resume", x.Step.Region)
		return drills.Bucket.Delete(ctx, drills.Key(name))
	}
	_, err = drills.Save(ctx, name, Drill{Execution: x.Execution, Started: time.Now().UTC()}, objstore.PutOptions{IfAbsent: true})
	if errors.Is(err, objstore.ErrPrecondition) {
		var d Drill
		if _, err := drills.Load(ctx, name, &d); err != nil || d.Execution != x.Execution {
			return fmt.Errorf("a drill (execution %s) is already in progress in %s", d.Execution, x.Step.Region)
		}
		err = nil
	}
	if err != nil {
		return err
	}
	// Copies that were writing into the standby stop, and what they had
	// under way is taken away.
	if err := fence.Settle(ctx, lease.Grace(time.Duration(x.PG.LeaseTTL)), s.Env.Slack(x.PG)); err != nil {
		return err
	}
	if _, err := s.Env.RevokeRegion(ctx, x.PG, x.Step.Region); err != nil {
		return err
	}
	x.Printf("replication and syncs into %s are paused for the drill", x.Step.Region)
	return nil
}

// checkUserStep: a user step's endpoint answers.
func (s *Steps) checkUserStep(ctx context.Context, x *Exec) error {
	_, name, _ := strings.Cut(x.Step.Member, "/")
	group, step, _ := strings.Cut(name, "/")
	for _, ug := range x.PG.UserGroups {
		for _, us := range ug.Steps {
			if ug.Name == group && us.Name == step {
				region := us.Region
				if region == "" {
					region = x.Plan.To
				}
				if err := hook.Reachable(ctx, us.Action, x.Data(region, nil)); err != nil {
					return Failed("step %s/%s: %v", group, step, err)
				}
				x.Printf("step %s/%s: its endpoint answers", group, step)
				return nil
			}
		}
	}
	return fmt.Errorf("no user step %s", name)
}

// PlanNow builds a plan of typ for pg in the direction the lease says now:
// from the region that holds it (or last held it, when released), toward
// the other. A witness that does not answer is an error.
func PlanNow(ctx context.Context, env *Env, pg *config.ProtectionGroup, typ string) (*plan.Plan, error) {
	from, err := PrimaryNow(ctx, env, pg)
	if err != nil {
		return nil, err
	}
	return Build(env, pg, typ, from, other(pg, from))
}

// PrimaryNow is the region the lease says is primary: its holder, the last
// holder of a released lease, or the configured primary of a lease never
// taken.
func PrimaryNow(ctx context.Context, env *Env, pg *config.ProtectionGroup) (string, error) {
	rec, ok, err := env.Lease(ctx, pg.Name)
	switch {
	case err != nil:
		return "", fmt.Errorf("the witness, which says which region is primary: %w", err)
	case ok && rec.Holder != "":
		return rec.Holder, nil
	case ok && rec.Standby != "":
		return other(pg, rec.Standby), nil // released: the last holder
	}
	return pg.Primary, nil
}

// Executor is the plan executor of pg whose records live in home's state
// (the region primary at the end of the plan), locked in the witness.
func Executor(ctx context.Context, env *Env, pg *config.ProtectionGroup, home string, log *slog.Logger) (*plan.Executor, error) {
	st, err := env.RegionState(ctx, home)
	if err != nil {
		return nil, err
	}
	w, err := env.Witness(ctx)
	if err != nil {
		return nil, err
	}
	return &plan.Executor{
		Records: st.Sub("plans").Sub(pg.Name),
		Lock:    w.Sub("plans").Sub(pg.Name),
		Actions: &Steps{Env: env},
		Log:     log,
		Hint:    env.Hint(pg),
		// The protection group's alerts: a run started, waiting for
		// approval, failed, finished.
		OnChange: alert.New(pg, env.Log).Plan(ctx),
		Measure:  func(ctx context.Context) []plan.MemberRPO { return Lags(ctx, env, pg) },
	}, nil
}
