package members

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/config"
	"tandem/internal/hook"
	"tandem/internal/lease"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/postgres"
	"tandem/internal/replicate"
	"tandem/internal/tablegroup"
)

// Steps does the built-in and user steps of plans: it implements
// plan.Actions. Every step is idempotent.
type Steps struct {
	Cfg *config.Config
	Log *slog.Logger
}

var _ plan.Actions = (*Steps)(nil)

func (s *Steps) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Run does step st of plan p.
func (s *Steps) Run(ctx context.Context, p *plan.Plan, st *plan.Step, exec string, w io.Writer) error {
	pg, err := s.Cfg.FindProtectionGroup(p.ProtectionGroup)
	if err != nil {
		return err
	}
	if strings.HasPrefix(st.Kind, "check.") {
		return s.check(ctx, p, pg, st, w)
	}
	if err := s.guard(ctx, p, pg, st); err != nil {
		return err
	}
	switch st.Kind {
	case plan.LeaseMove:
		return s.leaseMove(ctx, p, pg, w)
	case plan.LeaseAcquire:
		return s.leaseAcquire(ctx, p, pg, w)
	case plan.LeaseStandby:
		leases, err := Leases(ctx, s.Cfg)
		if err != nil {
			return err
		}
		rec, err := lease.SetStandby(ctx, leases, pg.Name, p.From, p.To)
		if err == nil {
			fmt.Fprintf(w, "%s holds %s (epoch %d) and replicates into %s\n", rec.Holder, pg.Name, rec.Epoch, rec.Standby)
		}
		return err

	case plan.ReplicationSync, plan.ReplicationPromote, plan.ReplicationReverse:
		return s.replication(ctx, p, st, w)
	case plan.GroupSync, plan.GroupFinalize, plan.GroupReverse:
		return s.group(ctx, p, st, w)
	case plan.DatabaseFence, plan.DatabaseCatchup, plan.DatabasePromote, plan.DatabaseReinstate, plan.DatabasePause, plan.DatabaseResume:
		return s.database(ctx, p, st, w)

	case plan.DrillMark, plan.DrillUnmark:
		rs, err := RegionState(ctx, s.Cfg, st.Region)
		if err != nil {
			return err
		}
		drills := rs.Sub("drills")
		if st.Kind == plan.DrillUnmark {
			fmt.Fprintf(w, "replication and syncs into %s resume\n", st.Region)
			return drills.Bucket.Delete(ctx, drills.Key(pg.Name+".json"))
		}
		_, err = drills.Save(ctx, pg.Name+".json", Drill{Execution: exec, Started: time.Now().UTC()}, objstore.PutOptions{IfAbsent: true})
		if errors.Is(err, objstore.ErrPrecondition) {
			var d Drill
			if _, err := drills.Load(ctx, pg.Name+".json", &d); err != nil || d.Execution != exec {
				return fmt.Errorf("a drill (execution %s) is already in progress in %s", d.Execution, st.Region)
			}
			err = nil
		}
		fmt.Fprintf(w, "replication and syncs into %s are paused for the drill\n", st.Region)
		return err

	case plan.AliasesSwitch:
		return s.switchAliases(ctx, st, w)
	case plan.WorkflowActivate, plan.WorkflowDeactivate:
		wf := s.Cfg.FindWorkflow(st.Member)
		a := wf.Activate
		if st.Kind == plan.WorkflowDeactivate {
			a = wf.Deactivate
		}
		return hook.Run(ctx, a, s.data(p, exec, st.Region, wf.Vars[st.Region]), w)
	case plan.UserStep:
		return hook.Run(ctx, st.User.Action, s.data(p, exec, st.Region, nil), w)
	}
	return fmt.Errorf("unknown step kind %q", st.Kind)
}

func (s *Steps) data(p *plan.Plan, exec, region string, vars map[string]string) hook.Data {
	return hook.Data{Plan: p.Type, Execution: exec, From: p.From, To: p.To, Region: region, Vars: vars}
}

// toward returns the replication copying into region to.
func toward(r *config.Replication, to string) *config.Replication {
	if r.To.Region == to {
		return r
	}
	return Reverse(r)
}

func (s *Steps) replication(ctx context.Context, p *plan.Plan, st *plan.Step, w io.Writer) error {
	r, err := s.Cfg.FindReplication(st.Member)
	if err != nil {
		return err
	}
	in := toward(r, st.Region) // the copy into the region the step acts on
	state, err := PairState(ctx, s.Cfg, in)
	if err != nil {
		return err
	}
	switch st.Kind {
	case plan.ReplicationPromote:
		prom, err := replicate.Promote(ctx, state, in.Name, in.To.URL)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s is writable; it holds every change made in %s before %s\n", in.To.URL, in.From.URL, when(prom.Watermark))
		if p.Type == plan.Switchover {
			// The old primary becomes the replica of the other direction.
			return s.demote(ctx, Reverse(in), w)
		}
		return nil
	case plan.ReplicationReverse:
		if err := s.demote(ctx, in, w); err != nil {
			return err
		}
		fallthrough
	default:
		pair, err := OpenPair(ctx, s.Cfg, in, s.log())
		if err != nil {
			return err
		}
		if st.Kind == plan.ReplicationReverse {
			pg, _ := s.Cfg.FindProtectionGroup(p.ProtectionGroup)
			f := s.holderFence(in.From.Region, pg)
			pair.Fence = func(ctx context.Context) error { _, err := f(ctx); return err }
		}
		sum, err := pair.RunOnce(ctx)
		fmt.Fprintf(w, "%s -> %s: %d objects (%d bytes) copied, %d unchanged, %d deleted, %d failed, %d foreign\n",
			sum.Source, sum.Target, sum.Objects, sum.Bytes, sum.Unchanged+sum.Adopted, sum.Deleted, sum.Failed, sum.Foreign)
		if err == nil && sum.Failed > 0 {
			err = fmt.Errorf("%d objects failed to copy (first: %v)", sum.Failed, sum.FailedObjects[0].Error)
		}
		return err
	}
}

// demote makes the replica of r a replica again: its promotion, from an
// earlier role change, is removed.
func (s *Steps) demote(ctx context.Context, r *config.Replication, w io.Writer) error {
	state, err := PairState(ctx, s.Cfg, r)
	if err != nil {
		return err
	}
	if ok, err := state.Exists(ctx, "promoted.json"); err != nil || !ok {
		return err
	}
	if err := state.Bucket.Delete(ctx, state.Key("promoted.json")); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s is a replica of %s again\n", r.To.URL, r.From.URL)
	return nil
}

func when(t *time.Time) string {
	if t == nil {
		return "(no complete pass was recorded)"
	}
	return t.Format(time.RFC3339)
}

// towardGroup returns the group copying into region to.
func towardGroup(g *config.Group, to string) *config.Group {
	if g.To == to {
		return g
	}
	return ReverseGroup(g)
}

func (s *Steps) group(ctx context.Context, p *plan.Plan, st *plan.Step, w io.Writer) error {
	gc, err := s.Cfg.FindGroup(st.Member)
	if err != nil {
		return err
	}
	in := towardGroup(gc, st.Region)
	switch st.Kind {
	case plan.GroupFinalize:
		g, err := OpenGroup(ctx, s.Cfg, in, true, s.log())
		if err != nil {
			return err
		}
		fin, err := g.Finalize(ctx)
		for _, f := range fin {
			fmt.Fprintf(w, "%s at version %d", f.Table, f.Version)
			if len(f.MovedAside) > 0 {
				fmt.Fprintf(w, " (%d log files of a sync that did not finish moved to %s)", len(f.MovedAside), f.MovedTo)
			}
			fmt.Fprintln(w)
		}
		if err != nil {
			return err
		}
		m, _, _, err := tablegroup.LoadManifest(ctx, g.State)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "group %s holds run %q (cut %s); syncs from %s are fenced by the lease\n", gc.Name, m.RunID, m.CutTime.Format(time.RFC3339), in.From)
		if p.Type != plan.Switchover {
			return nil
		}
		// The old primary's tables become the standby's at this manifest
		// (what a run still writing there after the drain is moved aside),
		// and start the records of the direction that runs from now on.
		back, err := OpenGroup(ctx, s.Cfg, ReverseGroup(in), true, s.log())
		if err != nil {
			return err
		}
		moved, err := back.Rewind(ctx, m.Versions)
		if err != nil {
			return err
		}
		for _, f := range moved {
			if len(f.MovedAside) > 0 {
				fmt.Fprintf(w, "%s in %s: %d log files written after run %q moved to %s\n", f.Table, in.From, len(f.MovedAside), m.RunID, f.MovedTo)
			}
		}
		if err := back.Seed(ctx, m); err != nil {
			return err
		}
		fmt.Fprintf(w, "the records of %s -> %s start at run %q\n", in.To, in.From, m.RunID)
		return nil
	case plan.GroupReverse:
		// The last manifest of the forward direction says where the two
		// regions agree; what the returning region wrote after it is
		// moved aside, then the new primary's tables are copied back.
		fwdState, err := GroupState(ctx, s.Cfg, ReverseGroup(in))
		if err != nil {
			return err
		}
		m, _, ok, err := tablegroup.LoadManifest(ctx, fwdState)
		if err != nil {
			return err
		}
		g, err := OpenGroup(ctx, s.Cfg, in, false, s.log())
		if err != nil {
			return err
		}
		if ok {
			moved, err := g.Rewind(ctx, m.Versions)
			if err != nil {
				return err
			}
			for _, f := range moved {
				if len(f.MovedAside) > 0 {
					fmt.Fprintf(w, "%s in %s: %d log files written after the last manifest (run %q) moved to %s\n", f.Table, in.To, len(f.MovedAside), m.RunID, f.MovedTo)
				}
			}
		}
		// The returning region has no record of the new primary's runs:
		// the first sync back takes the tables' latest versions.
		g.Workflow = false
		pg, _ := s.Cfg.FindProtectionGroup(p.ProtectionGroup)
		g.Fence = s.holderFence(in.From, pg)
		res, err := g.Sync(ctx)
		if err == nil {
			fmt.Fprintf(w, "group %s synced back from %s: versions %v\n", gc.Name, in.From, res.Manifest.Versions)
		}
		return err
	default: // GroupSync
		g, err := OpenGroup(ctx, s.Cfg, in, false, s.log())
		if err != nil {
			return err
		}
		_, res, err := g.SyncRecorded(ctx, "plan "+p.Type)
		if err == nil {
			fmt.Fprintf(w, "group %s at run %q: versions %v (unchanged %v)\n", gc.Name, res.Manifest.RunID, res.Manifest.Versions, res.Unchanged)
		}
		return err
	}
}

func (s *Steps) database(ctx context.Context, p *plan.Plan, st *plan.Step, w io.Writer) error {
	d := s.Cfg.FindDatabase(st.Member)
	if d == nil {
		return fmt.Errorf("unknown database %q", st.Member)
	}
	side, _ := d.Side(st.Region)
	dsn := string(side.DSN)
	switch st.Kind {
	case plan.DatabaseFence:
		lsn, err := postgres.Fence(ctx, dsn)
		if err == nil {
			fmt.Fprintf(w, "%s (%s) refuses writes; WAL ends at %s\n", d.Name, st.Region, lsn)
		}
		return err
	case plan.DatabaseCatchup:
		old, _ := d.Side(p.From)
		ps, err := postgres.Check(ctx, string(old.DSN))
		if err != nil {
			return err
		}
		if !ps.ReadOnly {
			return fmt.Errorf("%s in %s is not fenced: the standby cannot catch up with a primary that still writes", d.Name, p.From)
		}
		if err := postgres.WaitReplay(ctx, dsn, ps.LSN); err != nil {
			return err
		}
		fmt.Fprintf(w, "the standby in %s replayed up to %s\n", st.Region, ps.LSN)
		return nil
	case plan.DatabasePromote:
		if err := postgres.Promote(ctx, dsn); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s in %s is primary and accepts writes\n", d.Name, st.Region)
		return nil
	case plan.DatabaseReinstate:
		ss, err := postgres.Following(ctx, dsn, int64(d.MaxLag))
		if err != nil {
			return err
		}
		if err := postgres.Unfence(ctx, dsn); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s in %s streams from the primary, replayed %s\n", d.Name, st.Region, ss.LSN)
		return nil
	case plan.DatabasePause:
		return postgres.PauseReplay(ctx, dsn)
	default: // DatabaseResume
		return postgres.ResumeReplay(ctx, dsn)
	}
}

func (s *Steps) switchAliases(ctx context.Context, st *plan.Step, w io.Writer) error {
	a := s.Cfg.FindAliases(st.Member)
	dsn, err := s.aliasDSN(a, st.Region)
	if err != nil {
		return err
	}
	var list []catalog.Alias
	for name, per := range a.Names {
		target, ok := per[st.Region]
		if !ok {
			return fmt.Errorf("aliases %s: %s has no name in region %s", a.Name, name, st.Region)
		}
		list = append(list, catalog.Alias{Alias: name, Target: target, Region: st.Region})
	}
	if err := catalog.Switch(ctx, a.Driver, dsn, a.Switch, list); err != nil {
		return fmt.Errorf("aliases %s: %w", a.Name, err)
	}
	fmt.Fprintf(w, "%d aliases of %s point at %s\n", len(list), a.Name, st.Region)
	return nil
}

// aliasDSN is the catalog readers of region use.
func (s *Steps) aliasDSN(a *config.Aliases, region string) (string, error) {
	if dsn, ok := a.DSN[region]; ok {
		return string(dsn), nil
	}
	if d := s.Cfg.FindDatabase(a.Database); d != nil {
		if side, ok := d.Side(region); ok {
			return string(side.DSN), nil
		}
	}
	return "", fmt.Errorf("aliases %s: no catalog for region %s (set dsn.%s or database)", a.Name, region, region)
}
