// Package lease keeps the region lease of a protection group: a record in a
// witness location (any object store with conditional writes), changed only
// by compare-and-swap, that names the one region allowed to act as primary
// and a fencing epoch that grows with every change of holder.
//
// The holder acts as primary only until its own deadline: the moment it
// sent its last successful renewal, on its monotonic clock, plus the TTL
// minus a safety margin. Another region may take the lease only once the
// record's expiry (written by the holder: renewal time plus TTL) has passed
// on its own clock. As long as clocks differ by less than the margin, the
// old holder has stopped before anyone else starts. Writers carry the epoch,
// and Check refuses a stale one (Kleppmann's fencing token): a paused old
// holder that wakes up cannot publish.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/state"
)

var (
	// ErrHeld: another region holds an unexpired lease.
	ErrHeld = errors.New("the lease is held by another region")
	// ErrFenced: the epoch moved on; the caller must stop acting as
	// primary.
	ErrFenced = errors.New("fenced: a newer epoch exists")
)

// Record is the lease object.
type Record struct {
	Group    string    `json:"group"`
	Holder   string    `json:"holder"` // region; "" when released
	Epoch    int64     `json:"epoch"`
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
	By       string    `json:"by"` // host and pid of the holder's tandem
	// Standby is the region replication runs toward: the holder replicates
	// into it. Empty after a failover until a failback reinstates the old
	// primary as the standby.
	Standby string `json:"standby"`
}

// Lease is one region's handle on a protection group's lease.
type Lease struct {
	Store  state.Store // the witness location
	Group  string
	Region string
	TTL    time.Duration // default 30s
	Margin time.Duration // default TTL/3: bound on clock differences and pauses
	Now    func() time.Time
	// Standby is recorded when this region takes the lease (not when it
	// renews): the region it will replicate into, or "" after a failover.
	Standby string

	mu       sync.Mutex
	deadline time.Time // local: act as primary until then
	epoch    int64
}

// set records the local deadline and epoch (zero: not primary).
func (l *Lease) set(deadline time.Time, epoch int64) {
	l.mu.Lock()
	l.deadline, l.epoch = deadline, epoch
	l.mu.Unlock()
}

func (l *Lease) name() string { return l.Group + ".json" }

func (l *Lease) defaults() {
	if l.TTL <= 0 {
		l.TTL = 30 * time.Second
	}
	if l.Margin <= 0 {
		l.Margin = l.TTL / 3
	}
	if l.Now == nil {
		l.Now = time.Now
	}
}

// Show reads the record; ok is false when the lease was never taken.
func Show(ctx context.Context, st state.Store, group string) (r Record, ok bool, err error) {
	_, err = st.Load(ctx, group+".json", &r)
	if errors.Is(err, objstore.ErrNotExist) {
		return Record{}, false, nil
	}
	return r, err == nil, err
}

// Acquire takes the lease for l.Region, or renews it if l.Region holds it.
// Taking it from another region (whose lease expired or was released)
// increments the epoch. A lease held by another region and not expired
// gives an error wrapping ErrHeld that says until when.
func (l *Lease) Acquire(ctx context.Context) (Record, error) {
	l.defaults()
	for {
		sent := time.Now() // monotonic: the deadline counts from here
		now := l.Now().UTC()
		var cur Record
		etag, err := l.Store.Load(ctx, l.name(), &cur)
		exists := err == nil
		if err != nil && !errors.Is(err, objstore.ErrNotExist) {
			return Record{}, err
		}
		next := cur
		switch {
		case exists && cur.Holder == l.Region:
			// Renewal: same epoch.
		case exists && cur.Holder != "" && now.Before(cur.Expires):
			return cur, fmt.Errorf("%w: %s holds %s (epoch %d) until %s", ErrHeld, cur.Holder, l.Group, cur.Epoch, cur.Expires.Format(time.RFC3339))
		default:
			// Free, released or expired: a new holder, a new epoch.
			next.Epoch++
			next.Holder = l.Region
			next.Acquired = now
			next.Standby = l.Standby
		}
		host, _ := os.Hostname()
		next.Group, next.Renewed, next.Expires = l.Group, now, now.Add(l.TTL)
		next.By = fmt.Sprintf("%s (pid %d)", host, os.Getpid())
		_, err = l.Store.Save(ctx, l.name(), next, objstore.PutOptions{IfMatch: etag, IfAbsent: !exists})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue // someone else wrote: look again
		}
		if err != nil {
			return Record{}, err
		}
		l.set(sent.Add(l.TTL-l.Margin), next.Epoch)
		return next, nil
	}
}

// Primary reports whether this region may act as primary now, and under
// which epoch: it holds the lease and its local deadline has not passed.
func (l *Lease) Primary() (epoch int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epoch == 0 || !time.Now().Before(l.deadline) {
		return 0, false
	}
	return l.epoch, true
}

// Deadline is when this region must stop acting as primary unless it
// renews.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Release gives the lease up (a planned switchover): the other region may
// take it at once. Only the holder releases; the epoch stays, and the next
// holder's is higher.
func (l *Lease) Release(ctx context.Context) (Record, error) {
	l.defaults()
	var cur Record
	etag, err := l.Store.Load(ctx, l.name(), &cur)
	if err != nil {
		return Record{}, err
	}
	if cur.Holder != l.Region {
		return cur, fmt.Errorf("%s does not hold %s (holder %q, epoch %d)", l.Region, l.Group, cur.Holder, cur.Epoch)
	}
	l.set(time.Time{}, 0) // stop acting first
	cur.Holder, cur.Expires = "", l.Now().UTC()
	if _, err := l.Store.Save(ctx, l.name(), cur, objstore.PutOptions{IfMatch: etag}); err != nil {
		if errors.Is(err, objstore.ErrPrecondition) {
			return cur, fmt.Errorf("%s changed while releasing: %w", l.Group, ErrFenced)
		}
		return Record{}, err
	}
	return cur, nil
}

// Check is the fencing check a writer makes before it publishes: it fails
// with ErrFenced unless the witness still names epoch as current.
func Check(ctx context.Context, st state.Store, group string, epoch int64) error {
	r, ok, err := Show(ctx, st, group)
	if err != nil {
		return err
	}
	if !ok || r.Epoch != epoch || r.Holder == "" {
		return fmt.Errorf("%w: %s is at epoch %d (holder %q), this writer holds %d", ErrFenced, group, r.Epoch, r.Holder, epoch)
	}
	return nil
}

// SetStandby records standby as the region the holder replicates into (a
// failback reinstated it). Only while holder holds the lease; the epoch
// stays.
func SetStandby(ctx context.Context, st state.Store, group, holder, standby string) (Record, error) {
	for {
		var cur Record
		etag, err := st.Load(ctx, group+".json", &cur)
		if err != nil {
			return Record{}, err
		}
		if cur.Holder != holder {
			return cur, fmt.Errorf("%w: %s holds %s (epoch %d), not %s", ErrFenced, Who(cur.Holder), group, cur.Epoch, holder)
		}
		if cur.Standby == standby {
			return cur, nil
		}
		cur.Standby = standby
		_, err = st.Save(ctx, group+".json", cur, objstore.PutOptions{IfMatch: etag})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue
		}
		return cur, err
	}
}

// Who names a region in messages: "nobody" for none.
func Who(region string) string {
	if region == "" {
		return "nobody"
	}
	return region
}

// Renew extends the lease while l.Region holds it; it never takes a lease
// another region holds, held or released (ErrFenced).
func (l *Lease) Renew(ctx context.Context) (Record, error) {
	l.defaults()
	for {
		sent := time.Now()
		var cur Record
		etag, err := l.Store.Load(ctx, l.name(), &cur)
		if err != nil {
			return Record{}, err
		}
		if cur.Holder != l.Region {
			l.set(time.Time{}, 0)
			return cur, fmt.Errorf("%w: %s holds %s (epoch %d), not %s", ErrFenced, Who(cur.Holder), l.Group, cur.Epoch, l.Region)
		}
		now := l.Now().UTC()
		cur.Renewed, cur.Expires = now, now.Add(l.TTL)
		_, err = l.Store.Save(ctx, l.name(), cur, objstore.PutOptions{IfMatch: etag})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue
		}
		if err != nil {
			return Record{}, err
		}
		l.set(sent.Add(l.TTL-l.Margin), cur.Epoch)
		return cur, nil
	}
}

// Keep renews the lease every TTL/3 while l.Region holds it, until ctx
// ends. With first, it takes a lease that was never taken (the configured
// primary starting up). It never takes over a lease another region holds
// or held: that is a failover's decision.
func (l *Lease) Keep(ctx context.Context, first bool, log *slog.Logger) {
	l.defaults()
	holding := true
	for {
		var err error
		_, ok, serr := Show(ctx, l.Store, l.Group)
		switch {
		case serr != nil:
			err = serr
		case !ok && first:
			_, err = l.Acquire(ctx)
		case ok:
			_, err = l.Renew(ctx)
		}
		switch {
		case err == nil && ok && !holding:
			holding = true
			log.Info("holding the region lease again", "group", l.Group, "region", l.Region)
		case errors.Is(err, ErrFenced) && holding:
			holding = false
			log.Warn("not renewing the region lease: another region holds it", "group", l.Group, "region", l.Region, "err", err)
		case err != nil && !errors.Is(err, ErrFenced):
			log.Error("renew the region lease", "group", l.Group, "region", l.Region, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.TTL / 3):
		}
	}
}
