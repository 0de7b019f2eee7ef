package members

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/lease"
	"tandem/internal/plan"
)

// guard is the fencing check of a built-in step: it acts only while the
// region it acts for holds the lease. In a switchover, the old primary
// quiesces and drains while it holds it, and the new one promotes once it
// took it; a failover acts for the new primary from the start (the lease is
// its first step); failbacks and drills leave the lease where it is. Steps
// that move the lease, and user steps, are not guarded.
func (s *Steps) guard(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, st *plan.Step) error {
	if strings.HasPrefix(st.Kind, "lease.") || st.Kind == plan.UserStep {
		return nil
	}
	want := p.From
	switch {
	case p.Type == plan.Failover:
		want = p.To
	case p.Type == plan.Switchover && !slices.Contains([]string{plan.WorkflowDeactivate, plan.DatabaseFence, plan.DatabaseCatchup, plan.ReplicationSync, plan.GroupSync}, st.Kind):
		want = p.To
	}
	if _, err := s.holds(ctx, pg, want); err != nil {
		return fmt.Errorf("%w: this step of the %s no longer applies", err, p.Type)
	}
	return nil
}

// holds returns the epoch under which region holds pg's lease (before any
// lease: the configured primary, at epoch 0), or an error wrapping
// lease.ErrFenced.
func (s *Steps) holds(ctx context.Context, pg *config.ProtectionGroup, region string) (int64, error) {
	leases, err := Leases(ctx, s.Cfg)
	if err != nil {
		return 0, err
	}
	rec, ok, err := lease.Show(ctx, leases, pg.Name)
	switch {
	case err != nil:
		return 0, err
	case !ok && region == pg.Primary:
		return 0, nil
	case !ok || rec.Holder != region:
		return 0, fmt.Errorf("%w: %s holds the lease of %s (epoch %d), not %s", lease.ErrFenced, lease.Who(rec.Holder), pg.Name, rec.Epoch, region)
	}
	return rec.Epoch, nil
}

// leaseMove is the switchover's handover: the old primary releases, the
// new one takes the lease with the old one as its standby.
func (s *Steps) leaseMove(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, w io.Writer) error {
	leases, err := Leases(ctx, s.Cfg)
	if err != nil {
		return err
	}
	rec, ok, err := lease.Show(ctx, leases, pg.Name)
	if err != nil {
		return err
	}
	if ok && rec.Holder == p.From {
		old := &lease.Lease{Store: leases, Group: pg.Name, Region: p.From, TTL: time.Duration(pg.LeaseTTL)}
		if _, err := old.Release(ctx); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s released the lease (epoch %d)\n", p.From, rec.Epoch)
	}
	l := &lease.Lease{Store: leases, Group: pg.Name, Region: p.To, TTL: time.Duration(pg.LeaseTTL), Standby: p.From}
	rec, err = l.Acquire(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s holds the lease, epoch %d, standby %s\n", p.To, rec.Epoch, rec.Standby)
	return nil
}

// leaseAcquire is the failover's: wait for the old primary's lease to
// expire (it stops acting before that), then take it with no standby.
func (s *Steps) leaseAcquire(ctx context.Context, p *plan.Plan, pg *config.ProtectionGroup, w io.Writer) error {
	leases, err := Leases(ctx, s.Cfg)
	if err != nil {
		return err
	}
	l := &lease.Lease{Store: leases, Group: pg.Name, Region: p.To, TTL: time.Duration(pg.LeaseTTL)}
	cur, ok, err := lease.Show(ctx, leases, pg.Name)
	if err != nil {
		return err
	}
	if ok && cur.Holder == p.To {
		fmt.Fprintf(w, "%s already holds the lease (epoch %d)\n", p.To, cur.Epoch)
		return nil
	}
	said := false
	for {
		rec, err := l.Acquire(ctx)
		if err == nil {
			fmt.Fprintf(w, "%s holds the lease, epoch %d; %s is fenced\n", p.To, rec.Epoch, p.From)
			return nil
		}
		if !errors.Is(err, lease.ErrHeld) {
			return err
		}
		if !said {
			fmt.Fprintf(w, "%s's lease expires at %s; waiting\n", rec.Holder, rec.Expires.Format(time.RFC3339))
			said = true
		}
		wait := min(max(time.Until(rec.Expires)+50*time.Millisecond, 50*time.Millisecond), time.Second)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; gave up waiting: %v", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// holderFence lets a pass publish while region holds the lease: the
// failback's reverse pass runs before the lease names its target standby.
func (s *Steps) holderFence(region string, pg *config.ProtectionGroup) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) { return s.holds(ctx, pg, region) }
}
