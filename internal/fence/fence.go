// Package fence is the one fencing rule every writer of tandem keeps:
// a process acting for a region writes only while it can show, from a
// recent read, that the authorities it depends on still allow it (the
// protection group's lease held by that region under the epoch it started
// with, no promotion of its target, no drill in it).
//
// The rule, for one write:
//
//  1. A Guard holds a grant from its Conditions: read at monotonic time s,
//     valid until s + For, where For is at most the grace the authority
//     publishes (lease.Grace; DefaultGrace without a lease) and never past
//     the lease's own expiry minus its margin.
//  2. Just before the one step that makes a write visible (the rename of a
//     finished temporary file, the single PUT request, the multipart
//     completion, a delete), the store calls the Guard's gate, which
//     refuses unless the grant is still valid; a grant close to running out
//     is renewed in the background, so writes rarely wait.
//  3. The store itself refuses a write that was held up past its grant: a
//     gated S3 request is presigned to expire when the grant ends (within
//     StoreSlack); a folder stages every write in a staging folder of the
//     writer's that objstore.Revoke takes away, and a multipart upload can
//     be aborted the same way.
//  4. Every change of authority that stops writers (a lease changing hands
//     or being released, a promotion, a drill) takes effect only Takeover
//     after the old authority stopped granting, and after the stores it
//     concerns were revoked: a new lease holder waits and revokes before it
//     writes its record; promote and drill-start do so before they return.
//
// Any grant a stale writer still holds was read before the change, so it
// ran out at most one grace after it. A write whose gate passed then either
// reached its store in time, is refused by the store (expired, or its
// staging revoked), or was already visible before the change took effect.
// A paused writer that resumes after the change is fenced at its next gate.
// The Guard also reports a write that returned later than the store's own
// bound allows (ErrLate), with its key: an S3 request stalled after it
// arrived may have landed after the takeover; nothing is claimed that
// cannot be proven. (A folder's staged write that succeeded always landed
// before the revocation.)
//
// Monotonic clocks carry the argument across processes: durations, not wall
// times, except for a lease's expiry, which the lease's margin covers.
package fence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"tandem/internal/objstore"
)

var (
	// ErrFenced: an authority no longer lets this writer write (the lease
	// moved, the target was promoted, a drill started). It is final for the
	// Guard: a fenced Guard never writes again.
	ErrFenced = errors.New("fenced")
	// ErrUnconfirmed: the authority could not be read in time (the witness
	// is unreachable); nothing was written. A later Check may succeed.
	ErrUnconfirmed = errors.New("cannot confirm the right to write")
	// ErrLate: a write returned later than its grant allowed; it may have
	// landed after another region took over.
	ErrLate = errors.New("a write may have landed after its grant ran out")
)

// DefaultGrace bounds a grant when no lease says otherwise.
const DefaultGrace = time.Second

// StoreSlack bounds how long after its grant ends a gated write may still
// land in a store that enforces the grant's end itself (S3 counts a
// presigned request's expiry in whole seconds), with room for the store's
// clock to be a little behind.
const StoreSlack = objstore.StoreSlack

// Takeover is how long a change that stops writers (a lease changing
// hands, a promotion, a drill) waits, after the moment the old authority
// stopped granting, before the change takes effect: every grant of the old
// writers (at most one grace, from a read before the change) has ended,
// and every write a store checks the grant of has landed or been refused
// (slack: StoreSlack when an S3 store is involved, 0 for folders). Writes
// held up in a store that cannot check (a folder) are revoked after the
// wait (objstore.Revoke).
func Takeover(grace, slack time.Duration) time.Duration {
	return max(2*grace, grace+slack)
}

// Settle waits Takeover(grace, slack).
func Settle(ctx context.Context, grace, slack time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(Takeover(grace, slack)):
		return nil
	}
}

// Grant is what one Condition allows.
type Grant struct {
	// Epoch is the lease epoch the condition names (0 for conditions that
	// have none). A Guard pins the first non-zero epoch it sees; a grant
	// with another one fences it.
	Epoch int64
	// For is how long, from the moment the read was sent, the grant holds.
	For time.Duration
	// What names the authority in messages ("the lease of dr (epoch 3)").
	What string
}

// A Condition reads one authority and returns its grant, or an error
// wrapping ErrFenced when the authority no longer allows the writer.
// Other errors are taken as "cannot confirm now".
type Condition func(ctx context.Context) (Grant, error)

// Guard is one writer's right to write, under one epoch. It is safe for
// concurrent use by the writer's goroutines. Make one per pass or sync:
// its epoch is pinned at the first confirmation.
type Guard struct {
	what  string
	conds []Condition
	// Timeout bounds one confirmation (default 10s).
	Timeout time.Duration

	mu         sync.Mutex
	epoch      int64
	until      time.Time     // monotonic
	grace      time.Duration // the last grant's For: the refresh horizon
	fenced     error         // final
	lastErr    error         // of the last failed confirmation
	refreshing chan struct{} // closed when the running refresh ends
}

// New returns a Guard for a writer described by what ("replication photos
// into west") that needs every condition.
func New(what string, conds ...Condition) *Guard {
	return &Guard{what: what, conds: conds, Timeout: 10 * time.Second}
}

// Epoch is the epoch the Guard is pinned to (0 before its first
// confirmation or without a lease).
func (g *Guard) Epoch() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.epoch
}

// Check returns nil while the writer may write: it holds a valid grant,
// renewing it when it is close to running out. It fails with ErrFenced
// (final) or ErrUnconfirmed.
func (g *Guard) Check(ctx context.Context) error {
	_, err := g.allow(ctx)
	return err
}

// confirmAttempts is how many confirmations a write waits for before it
// gives up with ErrUnconfirmed: a read slower than the grant (a loaded
// machine, a slow store) or a witness that fails once is tried again.
const confirmAttempts = 4

// allow returns until when the current grant holds.
func (g *Guard) allow(ctx context.Context) (time.Time, error) {
	if g == nil {
		return time.Time{}, nil
	}
	for attempt := 0; ; attempt++ {
		g.mu.Lock()
		if g.fenced != nil {
			err := g.fenced
			g.mu.Unlock()
			return time.Time{}, err
		}
		now := time.Now()
		if now.Before(g.until) {
			until := g.until
			if g.until.Sub(now) < g.grace/2 {
				g.refreshLocked()
			}
			g.mu.Unlock()
			return until, nil
		}
		if attempt == confirmAttempts {
			err := g.lastErr
			g.mu.Unlock()
			if err == nil {
				err = errors.New("the grant ran out while it was being confirmed")
			}
			return time.Time{}, fmt.Errorf("%s: %w: %w", g.what, ErrUnconfirmed, err)
		}
		failed := attempt > 0 && g.lastErr != nil
		done := g.refreshLocked()
		g.mu.Unlock()
		if failed {
			// Give a witness that failed a moment before asking again.
			done = afterDone(done, time.Duration(attempt)*50*time.Millisecond)
		}
		select {
		case <-done:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// afterDone is closed once done is and d has passed.
func afterDone(done chan struct{}, d time.Duration) chan struct{} {
	out := make(chan struct{})
	go func() {
		<-done
		time.Sleep(d)
		close(out)
	}()
	return out
}

// refreshLocked starts a confirmation unless one runs, and returns the
// channel closed when it ends. g.mu is held.
func (g *Guard) refreshLocked() chan struct{} {
	if g.refreshing != nil {
		return g.refreshing
	}
	done := make(chan struct{})
	g.refreshing = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), g.Timeout)
		defer cancel()
		sent := time.Now()
		grant, err := g.confirm(ctx)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.refreshing = nil
		switch {
		case errors.Is(err, ErrFenced):
			g.fenced, g.until = fmt.Errorf("%s: %w", g.what, err), time.Time{}
		case err != nil:
			g.lastErr = err
		case g.epoch != 0 && grant.Epoch != 0 && grant.Epoch != g.epoch:
			g.fenced = fmt.Errorf("%s: %w: %s moved from epoch %d to %d while this writer ran", g.what, ErrFenced, grant.What, g.epoch, grant.Epoch)
			g.until = time.Time{}
		case grant.For <= 0:
			g.lastErr = fmt.Errorf("%s allows no more writes (its expiry is too close)", grant.What)
		default:
			if grant.Epoch != 0 {
				g.epoch = grant.Epoch
			}
			g.until, g.grace, g.lastErr = sent.Add(grant.For), grant.For, nil
		}
	}()
	return done
}

// confirm asks every condition at once; the grant is the shortest, and
// any fencing answer wins over other errors.
func (g *Guard) confirm(ctx context.Context) (Grant, error) {
	grants := make([]Grant, len(g.conds))
	errs := make([]error, len(g.conds))
	var wg sync.WaitGroup
	for i, c := range g.conds {
		wg.Go(func() { grants[i], errs[i] = c(ctx) })
	}
	wg.Wait()
	out := Grant{For: DefaultGrace, What: g.what}
	var failed error
	for i, gr := range grants {
		switch err := errs[i]; {
		case errors.Is(err, ErrFenced):
			return Grant{}, err
		case err != nil:
			failed = cmp.Or(failed, err)
			continue
		}
		if gr.Epoch != 0 {
			out.Epoch, out.What = gr.Epoch, gr.What
		}
		out.For = min(out.For, gr.For)
	}
	if failed != nil {
		return Grant{}, failed
	}
	return out, nil
}

// landed checks a write that passed its gate with a grant valid until
// until: it must have returned within one grace of it, or within bound
// (objstore.LateBound: the store itself kept it from landing later than a
// takeover), whichever is longer. Any takeover waits at least that long
// after the grant ran out (Takeover), so such a write is no stale write.
func (g *Guard) landed(key string, until time.Time, bound time.Duration) error {
	if g == nil || until.IsZero() {
		return nil
	}
	g.mu.Lock()
	grace := g.grace
	g.mu.Unlock()
	if late := time.Since(until); late > max(grace, bound) {
		return fmt.Errorf("%s: %w: %s returned %s after its grant ran out (paused?); treat it as written by a stale writer",
			g.what, ErrLate, key, late.Round(time.Millisecond))
	}
	return nil
}

// Fenced reports whether err means that a writer must stop for good: an
// authority fenced it, a write returned too late, or the store refused a
// write that was held up (objstore.ErrRevoked).
func Fenced(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrLate) || errors.Is(err, objstore.ErrRevoked)
}

// Refused reports whether a guard refused a write: fenced, late, or
// unconfirmed. A writer stops at the first such error instead of retrying
// object by object.
func Refused(err error) bool { return Fenced(err) || errors.Is(err, ErrUnconfirmed) }
