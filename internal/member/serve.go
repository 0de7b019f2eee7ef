package member

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/alert"
	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/fence"
	"tandem/internal/lease"
	"tandem/internal/runner"
)

// Server is a kind with work under `tandem serve`: loops (copies, syncs),
// metrics, HTTP handlers.
type Server interface {
	// Serve adds the kind's work for every configured member to s.
	Serve(ctx context.Context, s *Serving) error
}

// Serving is what a kind adds its serve work to.
type Serving struct {
	Env *Env
	// Region is the region this serve runs in (serve --region); "" runs
	// every member's copies in whatever direction the lease says, as a
	// single tandem for both regions does.
	Region string
	// Reg registers the kind's metrics.
	Reg prometheus.Registerer
	// Token is serve.token: handlers that change state require it.
	Token string
	// Conditions fence every write this serve makes, besides each
	// member's own (the serve lock of LockRegion).
	Conditions []fence.Condition

	Tasks    []daemon.Task
	Handlers map[string]http.Handler

	leases sync.Map // protection group -> *atomic.Pointer[lease.Lease] kept by KeepLeases
}

// Demote releases the lease of protection group pg if this serve holds
// it: the region stops acting as primary at once, and a failover need not
// wait for the lease to expire (automatic failover). It reports whether it
// released anything.
func (s *Serving) Demote(ctx context.Context, pg string) (bool, error) {
	v, ok := s.leases.Load(pg)
	if !ok {
		return false, nil
	}
	l := v.(*atomic.Pointer[lease.Lease]).Load()
	if l == nil {
		return false, nil
	}
	if _, held := l.Primary(); !held {
		return false, nil
	}
	if _, err := l.Release(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// Task adds a loop.
func (s *Serving) Task(t daemon.Task) { s.Tasks = append(s.Tasks, t) }

// Handle adds an HTTP route.
func (s *Serving) Handle(pattern string, h http.Handler) {
	if s.Handlers == nil {
		s.Handlers = map[string]http.Handler{}
	}
	s.Handlers[pattern] = h
}

// Ours reports whether a copy of member (of kind) out of source is this
// serve's part, and if not why: the region that holds the lease (the source
// of every copy) runs its copies, so two regions' serve processes never run
// the same one, and a region that lost the lease runs none. Without Region,
// every copy is.
func (s *Serving) Ours(ctx context.Context, kind, member, source string) (bool, string) {
	if s.Region == "" {
		return true, ""
	}
	if s.Region != source {
		return false, fmt.Sprintf("%s copies out of %s: not this region's part", member, source)
	}
	pg := s.Env.ProtectionGroupOf(kind, member)
	if pg == nil {
		return true, ""
	}
	rec, ok, err := s.Env.Lease(ctx, pg.Name)
	switch {
	case err != nil:
		return false, fmt.Sprintf("%s: the witness does not answer: %v", member, err)
	case !ok && source == pg.Primary, ok && rec.Holder == source:
		return true, ""
	}
	return false, fmt.Sprintf("%s holds the lease of %s, not %s: %s waits", lease.Who(rec.Holder), pg.Name, source, member)
}

// KeepLeases keeps, until ctx ends, the lease of every protection group
// region belongs to (lease.Keep: renewed while region holds it, taken when
// never taken by the configured primary) and exports whether this tandem
// acts as primary and under which epoch. A witness that does not answer
// does not stop serve: it is tried again until it answers. It returns, per
// protection group, a channel that receives when the lease changes hands
// (for KeepPassive).
func (s *Serving) KeepLeases(ctx context.Context, region string) map[string]chan struct{} {
	wake := map[string]chan struct{}{}
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		if region != pg.Primary && region != pg.Standby {
			continue
		}
		ch := make(chan struct{}, 1)
		wake[pg.Name] = ch
		var held atomic.Pointer[lease.Lease]
		s.leases.Store(pg.Name, &held)
		al := alert.New(pg, s.Env.Log)
		primary := func() (int64, bool) {
			if l := held.Load(); l != nil {
				return l.Primary()
			}
			return 0, false
		}
		labels := prometheus.Labels{"group": pg.Name, "region": region}
		s.Reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "primary", ConstLabels: labels,
				Help: "1 while this tandem holds the protection group's lease and acts as primary."}, func() float64 {
				if _, ok := primary(); ok {
					return 1
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "epoch", ConstLabels: labels,
				Help: "The fencing epoch this tandem acts under (0 when not primary)."}, func() float64 {
				e, _ := primary()
				return float64(e)
			}))
		start := func() error {
			l, err := s.Env.NewLease(ctx, pg, region, other(pg, region))
			if err != nil {
				return err
			}
			prev := ""
			// What this region saw of the lease before, and from now on,
			// so that a record lost with its witness is never read as a
			// lease never taken (lease.Lease.Known).
			l.Known = s.Env.KnownLease(ctx, region, pg.Name)
			l.OnChange = func(rec lease.Record) {
				go s.Env.NoteLease(ctx, region, pg.Name, rec) // not in the way of a renewal
				if prev != "" && rec.Holder == region {
					al.Tell(ctx, "lease", "changed", fmt.Sprintf("%s holds the lease of %s (epoch %d), after %s", region, pg.Name, rec.Epoch, prev),
						map[string]any{"holder": region, "epoch": rec.Epoch, "before": prev})
				}
				prev = lease.Who(rec.Holder)
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			// A first round before anything runs, so that the region's
			// copies start knowing its role: a lease this region still
			// holds is renewed (nobody took it over while serve was down).
			if rec, ok, err := lease.Show(ctx, l.Store, pg.Name); err == nil && ok && rec.Holder == region {
				if _, err := l.Renew(ctx); err != nil {
					s.Env.Log.Warn("renew the region lease", "group", pg.Name, "region", region, "err", err)
				}
			}
			held.Store(l)
			go l.Keep(ctx, region == pg.Primary, s.Env.Log)
			return nil
		}
		err := start()
		if err == nil {
			continue
		}
		s.Env.Log.Error("the witness does not answer: serving without the lease until it does", "group", pg.Name, "region", region, "err", err)
		go func() {
			for start() != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(pg.LeaseTTL) / 3):
				}
			}
			s.Env.Log.Info("the witness answers again", "group", pg.Name, "region", region)
		}()
	}
	return wake
}

// other is the region of pg that is not region.
func other(pg *config.ProtectionGroup, region string) string {
	if region == pg.Primary {
		return pg.Standby
	}
	return pg.Primary
}

// LockRegion makes this serve the only one acting for region: it takes a
// lock in the region's own state (a lease named after the region, held by
// this process) and keeps it. A second serve for the same region waits,
// saying so, until the first one's lock expires. Every write this serve
// makes is fenced by the lock too (s.Conditions), so a first serve that was
// paused past the lock's TTL changes nothing when it wakes up.
func (s *Serving) LockRegion(ctx context.Context, region string) error {
	st, err := s.Env.RegionState(ctx, region)
	if err != nil {
		return err
	}
	st = st.Sub("serve")
	host, _ := os.Hostname()
	self := fmt.Sprintf("%s/%d", host, os.Getpid())
	l := &lease.Lease{Store: st, Group: region, Region: self, TTL: lockTTL, Gone: func(r lease.Record) bool {
		// A serve on this host whose process exited holds nothing.
		h, pid, ok := strings.Cut(r.Holder, "/")
		n, err := strconv.Atoi(pid)
		return ok && err == nil && h == host && !runner.Live(&runner.Runner{Host: h, PID: n, Beat: time.Now()})
	}}
	said := false
	for {
		rec, err := l.Acquire(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, lease.ErrHeld) {
			return fmt.Errorf("take the serve lock of %s: %w", region, err)
		}
		if !said {
			s.Env.Log.Warn("another tandem serve acts for this region; waiting until it stops", "region", region, "other", rec.Holder, "until", rec.Expires)
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockTTL / 3):
		}
	}
	go l.Keep(ctx, false, s.Env.Log)
	// The lock names this process as its holder: a lock another serve took
	// fences on the holder. Its epoch is dropped from the grant, for the
	// epoch a Guard pins is the protection group's lease's (with it, a
	// writer would carry the lock's epoch and miss a lease that went away
	// and came back while it was paused).
	lock := lease.Want{Group: region, Holder: self, TTL: lockTTL}.Condition(st)
	s.Conditions = append(s.Conditions, func(ctx context.Context) (fence.Grant, error) {
		g, err := lock(ctx)
		g.Epoch = 0
		return g, err
	})
	return nil
}

// lockTTL is how long a serve lock lasts without renewal.
const lockTTL = 10 * time.Second
