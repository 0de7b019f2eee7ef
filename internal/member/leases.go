package member

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tandem/internal/config"
	"tandem/internal/lease"
	"tandem/internal/objstore"
	"tandem/internal/plan"
)

// NewLease is region's handle on pg's lease, standby the region it
// replicates into when it takes it. Taking it over revokes the writes the
// old holder's writers have under way in region's stores (RevokeRegion).
func (e *Env) NewLease(ctx context.Context, pg *config.ProtectionGroup, region, standby string) (*lease.Lease, error) {
	w, err := e.WitnessFor(ctx, pg, region, false)
	if err != nil {
		return nil, err
	}
	leases := w.Sub("leases")
	return &lease.Lease{Store: leases, Group: pg.Name, Region: region, TTL: time.Duration(pg.LeaseTTL), Standby: standby,
		Slack: e.Slack(pg),
		Revoke: func(ctx context.Context) error {
			n, err := e.RevokeRegion(ctx, pg, region)
			if n > 0 {
				e.Log.Warn("took away writes the old holder had under way", "group", pg.Name, "region", region, "writes", n)
			}
			return err
		}}, nil
}

// RevokeRegion takes away, in region's state and in every location of
// pg's members in region, the writes other processes have under way
// (objstore.Revoke), so that a writer held up past its grant lands nothing.
// It returns how many it took away.
func (e *Env) RevokeRegion(ctx context.Context, pg *config.ProtectionGroup, region string) (int, error) {
	st, err := e.RegionState(ctx, region)
	if err != nil {
		return 0, err
	}
	n, err := objstore.Revoke(ctx, st.Bucket)
	if err != nil {
		return n, err
	}
	for _, l := range e.Cfg.Locations(pg, region) {
		b, err := e.Open(ctx, region, l.URL, false)
		if errors.Is(err, objstore.ErrNotExist) {
			continue // nothing was ever written there
		}
		if err != nil {
			return n, err
		}
		m, err := objstore.Revoke(ctx, b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Holds returns the epoch under which region holds pg's lease (before any
// lease: the configured primary, at epoch 0), or an error wrapping
// lease.ErrFenced.
func (e *Env) Holds(ctx context.Context, pg *config.ProtectionGroup, region string) (int64, error) {
	rec, ok, err := e.Lease(ctx, pg.Name)
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

// Begin keeps, while a run of p goes on in this process, the lease of the
// region the run acts for, as long as that region holds it (see keep): a
// plan at work for a region is that region at work, whether or not its
// serve runs. A failover keeps only the new primary's (never the
// lost one's); a switchover the old primary's until the handover, then the
// new one's; failbacks and drills the primary's.
func (s *Steps) Begin(ctx context.Context, p *plan.Plan) (end func()) {
	pg, err := s.Env.Cfg.FindProtectionGroup(p.ProtectionGroup)
	if err != nil {
		return func() {}
	}
	regions := []string{p.From}
	switch p.Type {
	case plan.Failover:
		regions = []string{p.To}
	case plan.Switchover:
		regions = []string{p.From, p.To}
	}
	keep := func(ctx context.Context, renew func(*lease.Lease, context.Context) (lease.Record, error)) {
		for _, region := range regions {
			rec, ok, err := s.Env.Lease(ctx, pg.Name)
			if err != nil || !ok || rec.Holder != region {
				continue
			}
			if l, err := s.Env.NewLease(ctx, pg, region, ""); err == nil {
				renew(l, ctx)
			}
		}
	}
	// Starting (or resuming) the run is the decision that the region acts:
	// its own lease is renewed even if it expired meanwhile (nobody else
	// took it); from then on, only while it has not expired.
	keep(ctx, (*lease.Lease).Renew)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(pg.LeaseTTL) / 3):
			}
			keep(ctx, (*lease.Lease).Extend)
		}
	}()
	return func() { cancel(); <-done }
}

// leaseMove is the switchover's handover: the old primary releases, the
// new one takes the lease with the old one as its standby (once every
// writer of the old one stopped: lease.Acquire waits for that).
func (s *Steps) leaseMove(ctx context.Context, x *Exec) error {
	p := x.Plan
	rec, ok, err := s.Env.Lease(ctx, x.PG.Name)
	if err != nil {
		return err
	}
	if ok && rec.Holder == p.From {
		old, err := s.Env.NewLease(ctx, x.PG, p.From, "")
		if err != nil {
			return err
		}
		if _, err := old.Release(ctx); err != nil {
			return err
		}
		x.Printf("%s released the lease (epoch %d)", p.From, rec.Epoch)
	}
	l, err := s.Env.NewLease(ctx, x.PG, p.To, p.From)
	if err != nil {
		return err
	}
	rec, err = l.Acquire(ctx)
	if err != nil {
		return err
	}
	x.Printf("%s holds the lease, epoch %d, standby %s", p.To, rec.Epoch, rec.Standby)
	return nil
}

// leaseAcquire is the failover's: wait for the old primary's lease to
// expire (it stops acting before that), then take it with no standby.
func (s *Steps) leaseAcquire(ctx context.Context, x *Exec) error {
	p := x.Plan
	l, err := s.Env.NewLease(ctx, x.PG, p.To, "")
	if err != nil {
		return err
	}
	cur, ok, err := lease.Show(ctx, l.Store, x.PG.Name)
	if err != nil {
		return err
	}
	if ok && cur.Holder == p.To {
		x.Printf("%s already holds the lease (epoch %d)", p.To, cur.Epoch)
		return nil
	}
	said := false
	for {
		rec, err := l.Acquire(ctx)
		if err == nil {
			x.Printf("%s holds the lease, epoch %d; %s is fenced", p.To, rec.Epoch, p.From)
			return nil
		}
		if !errors.Is(err, lease.ErrHeld) {
			return err
		}
		if !said {
			x.Printf("%s's lease expires at %s; waiting", rec.Holder, rec.Expires.Format(time.RFC3339))
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

// leaseStandby is the failback's: the returning region is the standby.
func (s *Steps) leaseStandby(ctx context.Context, x *Exec) error {
	leases, err := s.Env.Leases(ctx)
	if err != nil {
		return err
	}
	rec, err := lease.SetStandby(ctx, leases, x.PG.Name, x.Plan.From, x.Plan.To)
	if err == nil {
		x.Printf("%s holds %s (epoch %d) and replicates into %s", rec.Holder, x.PG.Name, rec.Epoch, rec.Standby)
	}
	return err
}

// checkLease: the witness answers and the lease is where the plan expects.
func (s *Steps) checkLease(ctx context.Context, x *Exec) error {
	p, pg := x.Plan, x.PG
	rec, ok, err := s.Env.Lease(ctx, pg.Name)
	if err != nil {
		return Failed("the witness does not answer: %v", err)
	}
	holder := pg.Primary // before any lease: the configured primary
	if ok {
		holder = rec.Holder
		x.Printf("lease of %s: %s", pg.Name, rec.Describe(time.Now()))
	} else {
		x.Printf("lease of %s was never taken: %s is the configured primary", pg.Name, pg.Primary)
	}
	switch p.Type {
	case plan.Failover:
		if holder == p.To {
			return Failed("%s already holds the lease of %s: there is nothing to fail over", p.To, pg.Name)
		}
		if ok && rec.Holder == p.From && time.Now().Before(rec.Expires) {
			x.Printf("%s's lease runs until %s: the failover waits for it", p.From, rec.Expires.Format(time.RFC3339))
		}
	case plan.Failback:
		if holder != p.From {
			return Failed("%s does not hold the lease of %s (%s does): a failback runs from the primary", p.From, pg.Name, lease.Who(holder))
		}
		if ok && rec.Standby == p.To {
			return Failed("%s is already the standby of %s", p.To, p.From)
		}
	default:
		if holder != p.From {
			return Failed("%s is expected to hold the lease of %s, but %s does", p.From, pg.Name, lease.Who(holder))
		}
		if ok && rec.Standby != p.To {
			return Failed("%s is not the standby of %s (the standby is %s): run a failback first", p.To, p.From, lease.Who(rec.Standby))
		}
	}
	return nil
}
