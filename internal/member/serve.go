package member

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
// acts as primary and under which epoch. It returns, per protection group,
// a channel that receives when the lease changes hands (for KeepPassive).
func (s *Serving) KeepLeases(ctx context.Context, region string) (map[string]chan struct{}, error) {
	wake := map[string]chan struct{}{}
	if len(s.Env.Cfg.ProtectionGroups) == 0 {
		return wake, nil
	}
	primary := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "primary",
		Help: "1 while this tandem holds the protection group's lease and acts as primary."}, []string{"group", "region"})
	epoch := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "epoch",
		Help: "The fencing epoch this tandem acts under (0 when not primary)."}, []string{"group", "region"})
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		if region != pg.Primary && region != pg.Standby {
			continue
		}
		ch := make(chan struct{}, 1)
		wake[pg.Name] = ch
		other := pg.Primary
		if region == pg.Primary {
			other = pg.Standby
		}
		l, err := s.Env.NewLease(ctx, pg, region, other)
		if err != nil {
			return nil, err
		}
		l.OnChange = func(lease.Record) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		// A first round before anything runs, so that the region's copies
		// start knowing its role: a lease this region still holds is
		// renewed (nobody took it over while serve was down).
		if rec, ok, err := lease.Show(ctx, l.Store, pg.Name); err == nil && ok && rec.Holder == region {
			if _, err := l.Renew(ctx); err != nil {
				s.Env.Log.Warn("renew the region lease", "group", pg.Name, "region", region, "err", err)
			}
		}
		go l.Keep(ctx, region == pg.Primary, s.Env.Log)
		s.Reg.MustRegister(
			gaugeFunc(primary, pg.Name, region, func() float64 {
				if _, ok := l.Primary(); ok {
					return 1
				}
				return 0
			}),
			gaugeFunc(epoch, pg.Name, region, func() float64 { e, _ := l.Primary(); return float64(e) }))
	}
	return wake, nil
}

// gaugeFunc is a gauge computed when scraped, with v's name and help.
func gaugeFunc(v *prometheus.GaugeVec, group, region string, f func() float64) prometheus.Collector {
	desc := make(chan *prometheus.Desc, 1)
	v.Describe(desc)
	d := <-desc
	return &computed{desc: d, labels: []string{group, region}, f: f}
}

type computed struct {
	desc   *prometheus.Desc
	labels []string
	f      func() float64
}

func (c *computed) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *computed) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, c.f(), c.labels...)
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
	s.Conditions = append(s.Conditions, lease.Want{Group: region, Holder: self, TTL: lockTTL}.Condition(st))
	return nil
}

// lockTTL is how long a serve lock lasts without renewal.
const lockTTL = 10 * time.Second
