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
// old holder has stopped before anyone else starts.
//
// Writers do not renew the lease: they hold grants (package fence) that
// last one grace (Grace, written into the record) from a read of it. A
// region that takes the lease from anyone (after an expiry, a release, or
// when it was never taken) waits fence.Takeover after it read the state it
// replaces, and revokes the old holder's writes under way in its stores,
// before it writes its own record, so every grant of the old holder's
// writers has run out and nothing they sent lands later; that is what
// makes a planned handover safe without waiting for a TTL. Writers carry the epoch, and a
// grant under another epoch fences them (Kleppmann's fencing token).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/state"
)

var (
	// ErrHeld: another region holds an unexpired lease.
	ErrHeld = errors.New("the lease is held by another region")
	// ErrFenced: the epoch moved on; the caller must stop acting as
	// primary. It is fence.ErrFenced: one sentinel for every fenced writer.
	ErrFenced = fence.ErrFenced
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
	// GraceMS is how long a writer's grant from one read of this record
	// lasts, in milliseconds (Grace of the holder's TTL).
	GraceMS int64 `json:"grace_ms,omitempty"`
}

// Grace is how long one confirmation of a lease with this TTL lets a
// writer write: a tenth of the TTL, between 10ms and 1s.
func Grace(ttl time.Duration) time.Duration {
	return min(max(ttl/10, 10*time.Millisecond), time.Second)
}

// grace of the record, or of ttl for records written before it was kept.
func (r Record) grace(ttl time.Duration) time.Duration {
	if r.GraceMS > 0 {
		return time.Duration(r.GraceMS) * time.Millisecond
	}
	return Grace(ttl)
}

// Expired reports whether the record's holder may no longer act at now:
// nobody holds it, or its expiry passed.
func (r Record) Expired(now time.Time) bool {
	return r.Holder == "" || !now.Before(r.Expires)
}

// State is how the record reads at now: "held", "expired" (the holder's
// expiry passed: no region acts as primary until one takes it) or
// "released".
func (r Record) State(now time.Time) string {
	switch {
	case r.Holder == "":
		return "released"
	case !now.Before(r.Expires):
		return "expired"
	}
	return "held"
}

// Describe is the one line every command prints for the record at now, so
// that an expired lease reads the same in lease show, status and the
// prechecks.
func (r Record) Describe(now time.Time) string {
	const stamp = "2006-01-02 15:04:05"
	standby := r.Standby
	if standby == "" {
		standby = "none"
	}
	switch r.State(now) {
	case "released":
		return fmt.Sprintf("held by nobody (RELEASED at %s by %s), epoch %d, standby %s: no region acts as primary",
			r.Expires.Local().Format(stamp), r.By, r.Epoch, standby)
	case "expired":
		return fmt.Sprintf("EXPIRED at %s, held by %s, epoch %d, standby %s (last renewed %s by %s): no region acts as primary",
			r.Expires.Local().Format(stamp), r.Holder, r.Epoch, standby, r.Renewed.Local().Format(stamp), r.By)
	}
	return fmt.Sprintf("held by %s, epoch %d, standby %s, expires %s (renewed %s by %s)",
		r.Holder, r.Epoch, standby, r.Expires.Local().Format(stamp), r.Renewed.Local().Format("15:04:05"), r.By)
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
	// OnChange, when set, is told by Keep of every new holder or epoch.
	OnChange func(Record)
	// Known is the newest record this region knew held before (kept in
	// its own state): Keep never takes a missing record for a lease never
	// taken when Known or a record it read since has an epoch.
	Known Record
	// Gone, when set, tells that a record's holder is known to be gone
	// (its process exited), so Acquire may take the lease before it
	// expires. A paused process is not gone.
	Gone func(Record) bool
	// Slack is how long a write may land after its grant ended in the
	// stores the holders write (fence.StoreSlack with S3, 0 for folders).
	Slack time.Duration
	// Revoke, when set, is called by Acquire when it takes the lease from
	// another holder, after the old holder's grants ran out and just
	// before the new record is written: it takes away, in the stores the
	// new holder will act on, the writes the old holder's writers have
	// under way (objstore.Revoker), so none of them lands afterwards.
	Revoke func(ctx context.Context) error

	mu        sync.Mutex
	deadline  time.Time // local: act as primary until then (renewals)
	confirmed time.Time // local: the last read that showed this region holding it, plus a grace
	epoch     int64
}

// set records the local deadline and epoch (zero: not primary) after a
// write of the record sent at sent.
func (l *Lease) set(sent time.Time, epoch int64) {
	l.mu.Lock()
	if epoch == 0 {
		l.deadline, l.confirmed = time.Time{}, time.Time{}
	} else {
		l.deadline, l.confirmed = sent.Add(l.TTL-l.Margin), sent.Add(Grace(l.TTL))
	}
	l.epoch = epoch
	l.mu.Unlock()
}

// confirm records a read, sent at sent, that showed rec.
func (l *Lease) confirm(sent time.Time, rec Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rec.Holder != l.Region || rec.Epoch != l.epoch || l.epoch == 0 {
		l.deadline, l.confirmed, l.epoch = time.Time{}, time.Time{}, 0
		return
	}
	l.confirmed = sent.Add(rec.grace(l.TTL))
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
// Taking it from another region (whose lease expired or was released), or
// taking it for the first time, increments the epoch and waits two graces
// after reading the state it replaces, so that writers acting for the old
// holder have stopped before the record names the new one; if the record
// changed meanwhile, it looks again. A lease held by another region and not
// expired gives an error wrapping ErrHeld that says until when.
func (l *Lease) Acquire(ctx context.Context) (Record, error) {
	l.defaults()
	for {
		sent := time.Now() // monotonic: the deadline counts from here
		var cur Record
		etag, err := l.Store.Load(ctx, l.name(), &cur)
		exists := err == nil
		if err != nil && !errors.Is(err, objstore.ErrNotExist) {
			return Record{}, err
		}
		next := cur
		switch now := l.Now().UTC(); {
		case exists && cur.Holder == l.Region:
			// Renewal: same epoch.
		case exists && !cur.Expired(now) && (l.Gone == nil || !l.Gone(cur)):
			return cur, fmt.Errorf("%w: %s holds %s (epoch %d) until %s", ErrHeld, cur.Holder, l.Group, cur.Epoch, cur.Expires.Format(time.RFC3339))
		default:
			// Free, released or expired: a new holder, a new epoch, once
			// the old holder's writers' grants ran out and what they had
			// under way was revoked.
			select {
			case <-ctx.Done():
				return Record{}, ctx.Err()
			case <-time.After(time.Until(sent.Add(fence.Takeover(cur.grace(l.TTL), l.Slack)))):
			}
			if l.Revoke != nil {
				if err := l.Revoke(ctx); err != nil {
					return Record{}, fmt.Errorf("%s cannot take %s: revoke the old holder's writes: %w", l.Region, l.Group, err)
				}
			}
			sent = time.Now()
			next.Epoch++
			next.Holder = l.Region
			next.Acquired = l.Now().UTC()
			next.Standby = l.Standby
		}
		now := l.Now().UTC()
		next.Group, next.Renewed, next.Expires = l.Group, now, now.Add(l.TTL)
		next.By = self()
		next.GraceMS = Grace(l.TTL).Milliseconds()
		_, err = l.Store.Save(ctx, l.name(), next, objstore.PutOptions{IfMatch: etag, IfAbsent: !exists})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue // someone else wrote: look again
		}
		if err != nil {
			return Record{}, err
		}
		l.set(sent, next.Epoch)
		return next, nil
	}
}

// self names this process in records.
func self() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s (pid %d)", host, os.Getpid())
}

// Primary reports whether this region may act as primary now, and under
// which epoch: it holds the lease, its local deadline has not passed, and
// a read of the record within the last grace showed it holding it (so a
// release by another process ends its role within a grace, before anyone
// can take over).
func (l *Lease) Primary() (epoch int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.epoch == 0 || !now.Before(l.deadline) || !now.Before(l.confirmed) {
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
	for {
		var cur Record
		etag, err := l.Store.Load(ctx, l.name(), &cur)
		if err != nil {
			return Record{}, err
		}
		if cur.Holder != l.Region {
			return cur, fmt.Errorf("%s does not hold %s (holder %q, epoch %d)", l.Region, l.Group, cur.Holder, cur.Epoch)
		}
		l.set(time.Time{}, 0) // stop acting first
		epoch := cur.Epoch
		cur.Holder, cur.Expires, cur.By = "", l.Now().UTC(), self()
		_, err = l.Store.Save(ctx, l.name(), cur, objstore.PutOptions{IfMatch: etag})
		if err == nil {
			return cur, nil
		}
		if !errors.Is(err, objstore.ErrPrecondition) {
			return Record{}, err
		}
		// The record changed meanwhile: a renewal by the holder's serve
		// (same holder, same epoch) is tried again; anything else means
		// the lease moved.
		var now Record
		if _, err := l.Store.Load(ctx, l.name(), &now); err != nil {
			return Record{}, err
		}
		if now.Holder != l.Region || now.Epoch != epoch {
			return now, fmt.Errorf("%s changed while releasing: %w", l.Group, ErrFenced)
		}
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
	}
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
func (l *Lease) Renew(ctx context.Context) (Record, error) { return l.renew(ctx, false) }

// Extend is Renew for a process acting for the holder while it works (a
// plan's step): it extends only a lease that has not expired, and fails
// with ErrFenced once it has (someone may be taking it over).
func (l *Lease) Extend(ctx context.Context) (Record, error) { return l.renew(ctx, true) }

func (l *Lease) renew(ctx context.Context, live bool) (Record, error) {
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
		if live && cur.Expired(now) {
			return cur, fmt.Errorf("%w: the lease of %s held by %s expired at %s: nobody renewed it (is `tandem serve --region %s` running?)", ErrFenced, l.Group, l.Region, cur.Expires.Format(time.RFC3339), l.Region)
		}
		cur.Renewed, cur.Expires, cur.By = now, now.Add(l.TTL), self()
		cur.GraceMS = Grace(l.TTL).Milliseconds()
		_, err = l.Store.Save(ctx, l.name(), cur, objstore.PutOptions{IfMatch: etag})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue
		}
		if err != nil {
			return Record{}, err
		}
		l.set(sent, cur.Epoch)
		return cur, nil
	}
}

// Keep holds the lease for l.Region until ctx ends: it reads the record
// every half grace, which keeps Primary true while the record names this
// region under the same epoch, and renews it every TTL/3. With first, it
// takes a lease that was never taken (the configured primary starting up),
// unless it saw the lease taken: a record that is gone after that was lost
// with its witness, and taking it again would start over at epoch 1 while
// another region may hold it. It never takes over a lease another region
// holds or held: that is a failover's decision. OnChange, when set, is
// called with each record whose holder or epoch differs from the last one
// seen.
func (l *Lease) Keep(ctx context.Context, first bool, log *slog.Logger) {
	l.defaults()
	holding := true
	var renewed time.Time
	var seen Record
	known, lost := l.Known, false // lost: the record's loss was said
	acting := false
	var fail failures // the witness failing, said once and then each minute
	for {
		var err error
		gone := false // the record is gone (err says so, once)
		sent := time.Now()
		cur, ok, serr := Show(ctx, l.Store, l.Group)
		switch {
		case serr != nil:
			err = serr
		case !ok && known.Epoch != 0:
			// Stop acting: the right cannot be confirmed. Said once.
			l.set(time.Time{}, 0)
			gone = true
			if !lost {
				err = fmt.Errorf("the record of lease %s is gone from the witness, though it was held (by %s, epoch %d): it is not taken as never taken; restore the witness, or if it is lost for good, take the lease with tandem lease acquire", l.Group, Who(known.Holder), known.Epoch)
			}
			lost = true
		case !ok && first:
			cur, err = l.Acquire(ctx)
			renewed, ok = time.Now(), err == nil
		case ok && cur.Holder == l.Region && (l.epoch0() != cur.Epoch || time.Since(renewed) >= l.TTL/3):
			cur, err = l.Renew(ctx)
			renewed = time.Now()
		case ok && cur.Holder == l.Region:
			l.confirm(sent, cur)
		case ok:
			l.set(time.Time{}, 0)
			err = fmt.Errorf("%w: %s holds %s (epoch %d), not %s", ErrFenced, Who(cur.Holder), l.Group, cur.Epoch, l.Region)
		}
		if serr == nil && ok {
			lost = false
			if cur.Epoch > known.Epoch {
				known = cur
			}
		}
		if serr == nil && ok && cur.Epoch != 0 && (cur.Holder != seen.Holder || cur.Epoch != seen.Epoch) {
			seen = cur
			if l.OnChange != nil {
				l.OnChange(cur)
			}
		}
		switch {
		case err == nil && ok && !holding:
			holding = true
			log.Info("holding the region lease again", "group", l.Group, "region", l.Region, "epoch", cur.Epoch)
		case errors.Is(err, ErrFenced) && holding:
			holding = false
			log.Warn("not acting as primary: another region holds the region lease", "group", l.Group, "region", l.Region, "err", err)
		}
		switch {
		case err != nil && gone:
			log.Error("read or renew the region lease", "group", l.Group, "region", l.Region, "err", err)
		case err != nil && !errors.Is(err, ErrFenced):
			if fail.note(err, sent) {
				log.Error("read or renew the region lease", "group", l.Group, "region", l.Region, "err", err,
					"failing_since", fail.since, "attempts", fail.n)
			}
		case serr == nil && fail.n > 0:
			log.Info("the witness answers again", "group", l.Group, "region", l.Region,
				"failing_since", fail.since, "attempts", fail.n)
			fail = failures{}
		}
		// A holder cut off from the witness stops acting as primary at
		// its deadline, before the lease expires for anyone else: say so.
		epoch, now := l.Primary()
		if acting && !now && err != nil && !errors.Is(err, ErrFenced) {
			log.Error("cut off from the witness: stopped acting as primary at the lease's local deadline, before it expires for the standby; its copies and syncs are fenced until the witness answers",
				"group", l.Group, "region", l.Region, "deadline", l.Deadline(), "err", err)
		}
		acting = now && epoch != 0
		select {
		case <-ctx.Done():
			return
		case <-time.After(Grace(l.TTL) / 2):
		}
	}
}

// failures is a run of failed rounds against the witness. The lease is
// read every half grace: a witness that stays down would fill the log with
// one line per round, hiding the rest at the moment an operator reads it.
type failures struct {
	n     int       // rounds failed in a row
	since time.Time // the first of them
	said  time.Time // when the failure was last logged
	last  string    // its error, as last logged
}

// note counts a failed round at now and says whether to log it: the first
// failure, a different error, and a reminder once a minute.
func (f *failures) note(err error, now time.Time) bool {
	if f.n == 0 {
		f.since = now
	}
	f.n++
	if f.n > 1 && err.Error() == f.last && now.Sub(f.said) < time.Minute {
		return false
	}
	f.said, f.last = now, err.Error()
	return true
}

// epoch0 is the epoch this Lease acts under, 0 when it does not.
func (l *Lease) epoch0() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// Want is what a writer acting for a region needs of a protection
// group's lease.
type Want struct {
	Group string
	// Holder must hold the lease. Before the lease is first taken,
	// Unleased says whether Holder may act (it is the configured primary).
	Holder   string
	Unleased bool
	// Standby, when set, must be the record's standby.
	Standby string
	// TTL of the protection group, for the grace of a lease never taken.
	TTL time.Duration
}

// Condition returns the fencing condition of w on the leases in st: a
// grant for one grace from each read while the lease is where w needs it,
// never past its expiry minus the margin.
func (w Want) Condition(st state.Store) fence.Condition {
	return func(ctx context.Context) (fence.Grant, error) {
		rec, ok, err := Show(ctx, st, w.Group)
		if err != nil {
			return fence.Grant{}, fmt.Errorf("read the lease of %s in the witness: %w", w.Group, err)
		}
		what := fmt.Sprintf("the lease of %s", w.Group)
		switch {
		case !ok && w.Unleased:
			return fence.Grant{For: Grace(w.TTL), What: what}, nil
		case !ok:
			return fence.Grant{}, fmt.Errorf("%w: no lease of %s was taken yet, and %s is not its configured primary", fence.ErrFenced, w.Group, w.Holder)
		case rec.Holder != w.Holder:
			return fence.Grant{}, fmt.Errorf("%w: %s holds the lease of %s (epoch %d), not %s", fence.ErrFenced, Who(rec.Holder), w.Group, rec.Epoch, w.Holder)
		case w.Standby != "" && rec.Standby != w.Standby:
			return fence.Grant{}, fmt.Errorf("%w: the standby of %s is %s, not %s (a failback makes it the standby again)", fence.ErrFenced, w.Group, Who(rec.Standby), w.Standby)
		}
		margin := time.Duration(0)
		if ttl := rec.Expires.Sub(rec.Renewed); ttl > 0 {
			margin = ttl / 3
		}
		left := time.Until(rec.Expires) - margin
		if left <= 0 {
			return fence.Grant{}, fmt.Errorf("the lease of %s held by %s (epoch %d) runs out at %s and was not renewed in time: nothing may act for %s (is `tandem serve --region %s` running?)",
				w.Group, rec.Holder, rec.Epoch, rec.Expires.Format(time.RFC3339), rec.Holder, rec.Holder)
		}
		return fence.Grant{Epoch: rec.Epoch, For: min(rec.grace(w.TTL), left), What: fmt.Sprintf("the lease of %s (epoch %d)", w.Group, rec.Epoch)}, nil
	}
}
