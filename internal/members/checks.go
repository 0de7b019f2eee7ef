package members

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/delta"
	"tandem/internal/hook"
	"tandem/internal/lease"
	"tandem/internal/plan"
	"tandem/internal/postgres"
	"tandem/internal/replicate"
	"tandem/internal/tablegroup"
)

// ErrPrecheck marks a precondition a plan found broken.
var ErrPrecheck = errors.New("precheck failed")

func failed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPrecheck, fmt.Sprintf(format, args...))
}

// check runs one precheck; what it found goes to w, a broken precondition
// is an error wrapping ErrPrecheck.
func (s *Steps) check(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, st *plan.Step, w io.Writer) error {
	switch st.Kind {
	case plan.CheckLease:
		return s.checkLease(ctx, p, pg, w)
	case plan.CheckReplication:
		r, err := s.Cfg.FindReplication(st.Member)
		if err != nil {
			return err
		}
		in := toward(r, p.To)
		state, err := PairState(ctx, s.Cfg, in)
		if err != nil {
			return err
		}
		status, err := replicate.LoadStatus(ctx, state, in.Name)
		if err != nil {
			return err
		}
		switch {
		case status.Promotion != nil:
			return failed("%s was already promoted at %s", in.To.URL, status.Promotion.At.Format(time.RFC3339))
		case status.Watermark == nil:
			return failed("replication %s never completed a pass into %s", in.Name, in.To.Region)
		}
		lag := time.Since(*status.Watermark)
		fmt.Fprintf(w, "replication %s: watermark %s (%s ago, RPO %s)\n", in.Name, status.Watermark.Format(time.RFC3339), lag.Round(time.Second), time.Duration(in.RPO))
		if lag > time.Duration(in.RPO) {
			return failed("replication %s is %s behind, beyond its RPO of %s", in.Name, lag.Round(100*time.Millisecond), time.Duration(in.RPO))
		}
		if lp := status.LastPass; lp != nil && lp.Foreign > 0 {
			return failed("%s holds %d objects written there, not by replication (for example %v)", in.To.URL, lp.Foreign, lp.ForeignKeys)
		}
		return nil
	case plan.CheckGroup:
		gc, err := s.Cfg.FindGroup(st.Member)
		if err != nil {
			return err
		}
		in := towardGroup(gc, p.To)
		state, err := GroupState(ctx, s.Cfg, in)
		if err != nil {
			return err
		}
		m, _, ok, err := tablegroup.LoadManifest(ctx, state)
		if err != nil {
			return err
		}
		if !ok {
			return failed("group %s has no manifest in %s: no complete run was synced", gc.Name, p.To)
		}
		g, err := OpenGroup(ctx, s.Cfg, in, true, s.log())
		if err != nil {
			return failed("%v", err)
		}
		for _, t := range g.Tables {
			v, ok := m.Versions[t.Name]
			if !ok {
				return failed("group %s: the manifest has no version of table %s", gc.Name, t.Name)
			}
			l, err := delta.ListLog(ctx, t.Target)
			if err != nil {
				return failed("group %s, table %s in %s: %v", gc.Name, t.Name, p.To, err)
			}
			if l.Latest < v {
				return failed("group %s, table %s in %s is at version %d, below the manifest's %d", gc.Name, t.Name, p.To, l.Latest, v)
			}
		}
		fmt.Fprintf(w, "group %s: manifest of run %q, cut %s (%s ago), versions %v\n", gc.Name, m.RunID, m.CutTime.Format(time.RFC3339), time.Since(m.CutTime).Truncate(time.Second), m.Versions)
		return nil
	case plan.CheckDatabase:
		d := s.Cfg.FindDatabase(st.Member)
		standby, _ := d.Side(p.To)
		ss, err := postgres.Check(ctx, string(standby.DSN))
		if err != nil {
			return failed("database %s in %s: %v", d.Name, p.To, err)
		}
		if !ss.InRecovery {
			return failed("database %s in %s is not a standby (not in recovery)", d.Name, p.To)
		}
		fmt.Fprintf(w, "database %s in %s: standby at %s, %d bytes received and not replayed, streaming %v\n", d.Name, p.To, ss.LSN, ss.Lag, ss.Streaming)
		if p.Type != plan.Switchover {
			return nil
		}
		primary, _ := d.Side(p.From)
		ps, err := postgres.Check(ctx, string(primary.DSN))
		if err != nil {
			return failed("database %s in %s (the primary) does not answer: %v", d.Name, p.From, err)
		}
		behind, err := postgres.Behind(ctx, string(standby.DSN), ps.LSN)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "database %s: the standby is %d bytes behind the primary (at most %d)\n", d.Name, behind, int64(d.MaxLag))
		if behind > int64(d.MaxLag) {
			return failed("database %s: the standby is %d bytes behind, more than max_lag %d", d.Name, behind, int64(d.MaxLag))
		}
		return nil
	case plan.CheckReinstated:
		d := s.Cfg.FindDatabase(st.Member)
		side, _ := d.Side(p.To)
		ss, err := postgres.Following(ctx, string(side.DSN), int64(d.MaxLag))
		if err != nil {
			return failed("database %s in %s: %v", d.Name, p.To, err)
		}
		fmt.Fprintf(w, "database %s in %s follows the primary, at %s\n", d.Name, p.To, ss.LSN)
		return nil
	case plan.CheckEndpoint:
		return s.checkEndpoint(ctx, p, pg, st, w)
	}
	return fmt.Errorf("unknown check %q", st.Kind)
}

func (s *Steps) checkLease(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, w io.Writer) error {
	leases, err := Leases(ctx, s.Cfg)
	if err != nil {
		return failed("the witness: %v", err)
	}
	rec, ok, err := lease.Show(ctx, leases, pg.Name)
	if err != nil {
		return failed("the witness does not answer: %v", err)
	}
	holder := pg.Primary // before any lease: the configured primary
	if ok {
		holder = rec.Holder
		fmt.Fprintf(w, "lease of %s: holder %s, epoch %d, standby %s, expires %s\n", pg.Name, lease.Who(rec.Holder), rec.Epoch, lease.Who(rec.Standby), rec.Expires.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "lease of %s was never taken: %s is the configured primary\n", pg.Name, pg.Primary)
	}
	switch p.Type {
	case plan.Failover:
		if holder == p.To {
			return failed("%s already holds the lease of %s: there is nothing to fail over", p.To, pg.Name)
		}
		if ok && rec.Holder == p.From && time.Now().Before(rec.Expires) {
			fmt.Fprintf(w, "%s's lease runs until %s: the failover waits for it\n", p.From, rec.Expires.Format(time.RFC3339))
		}
	case plan.Failback:
		if holder != p.From {
			return failed("%s does not hold the lease of %s (%s does): a failback runs from the primary", p.From, pg.Name, lease.Who(holder))
		}
		if ok && rec.Standby == p.To {
			return failed("%s is already the standby of %s", p.To, p.From)
		}
	default:
		if holder != p.From {
			return failed("%s is expected to hold the lease of %s, but %s does", p.From, pg.Name, lease.Who(holder))
		}
		if ok && rec.Standby != p.To {
			return failed("%s is not the standby of %s (the standby is %s): run a failback first", p.To, p.From, lease.Who(rec.Standby))
		}
	}
	return nil
}

func (s *Steps) checkEndpoint(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, st *plan.Step, w io.Writer) error {
	kind, name, _ := strings.Cut(st.Member, "/")
	if kind == "workflow" {
		wf := s.Cfg.FindWorkflow(name)
		var errs []error
		for _, c := range []struct {
			what   string
			a      config.Action
			region string
		}{{"activate", wf.Activate, p.To}, {"deactivate", wf.Deactivate, p.From}} {
			if p.Type == plan.Failback {
				c.region = p.To
			}
			if err := hook.Reachable(ctx, c.a, s.data(p, "", c.region, wf.Vars[c.region])); err != nil {
				errs = append(errs, failed("workflow %s, %s in %s: %v", name, c.what, c.region, err))
			} else {
				fmt.Fprintf(w, "workflow %s: %s in %s answers\n", name, c.what, c.region)
			}
		}
		return errors.Join(errs...)
	}
	group, step, _ := strings.Cut(name, "/")
	for _, ug := range pg.UserGroups {
		for _, us := range ug.Steps {
			if ug.Name == group && us.Name == step {
				region := us.Region
				if region == "" {
					region = p.To
				}
				if err := hook.Reachable(ctx, us.Action, s.data(p, "", region, nil)); err != nil {
					return failed("step %s/%s: %v", group, step, err)
				}
				fmt.Fprintf(w, "step %s/%s: its endpoint answers\n", group, step)
				return nil
			}
		}
	}
	return fmt.Errorf("no user step %s", name)
}
