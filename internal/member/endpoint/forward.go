package endpoint

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/lease"
	"tandem/internal/member"
)

var _ member.Server = Kind{}

// Serve runs, for every forward endpoint, the forwarder of this serve's
// region (of every region when serve has none).
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "endpoint", Name: "connections_total",
		Help: "Connections a forward endpoint took, by result (forwarded, refused: no region held the lease, failed: the target did not answer)."},
		[]string{"endpoint", "region", "result"})
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "endpoint", Name: "open_connections",
		Help: "Connections a forward endpoint is forwarding now."}, []string{"endpoint", "region"})
	s.Reg.MustRegister(conns, open)
	for _, e := range All(s.Env.Cfg) {
		if e.Forward == nil {
			continue
		}
		pg := s.Env.ProtectionGroupOf(refKey, e.Name)
		if pg == nil {
			s.Env.Log.Warn("endpoint is in no protection group: nothing forwards it", "endpoint", e.Name)
			continue
		}
		for region, addr := range e.Forward.Listen {
			if s.Region != "" && s.Region != region {
				continue
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("endpoint %s: forward.listen.%s: %w", e.Name, region, err)
			}
			f := &forwarder{env: s.Env, e: e, pg: pg, region: region, listener: l, links: map[*link]bool{},
				log:   s.Env.Log.With("endpoint", e.Name, "region", region),
				conns: conns.MustCurryWith(prometheus.Labels{"endpoint": e.Name, "region": region}),
				open:  open.WithLabelValues(e.Name, region)}
			go f.accept()
			context.AfterFunc(ctx, func() { l.Close(); f.cut("") })
			s.Task(daemon.Task{Name: "endpoint/" + e.Name + "/" + region, Interval: f.refreshEvery(), NotReady: true, Run: f.refresh})
			f.log.Info("forwarding to the lease holder's target", "listen", l.Addr().String())
		}
	}
	return nil
}

// forwarder takes connections on one region's listen address and forwards
// each to the target of the region its last read of the lease names. That
// read is trusted for one lease grace: a new holder takes the lease only a
// takeover (more than a grace) after the old one stopped renewing or
// released it, so a connection is never forwarded to a region after
// another holds the lease. Once the holder changes, or no read confirms it
// in time, the connections to the old holder are cut.
type forwarder struct {
	env      *member.Env
	e        Endpoint
	pg       *config.ProtectionGroup
	region   string
	listener net.Listener
	log      *slog.Logger
	conns    *prometheus.CounterVec
	open     prometheus.Gauge

	mu     sync.Mutex
	holder string    // "" while no region holds the lease
	until  time.Time // the holder is trusted until then
	links  map[*link]bool
	said   string
}

type link struct {
	client, upstream net.Conn
	region           string
}

func (f *forwarder) grace() time.Duration { return lease.Grace(time.Duration(f.pg.LeaseTTL)) }

func (f *forwarder) refreshEvery() time.Duration { return max(f.grace()/3, 10*time.Millisecond) }

// refresh reads the lease and cuts what it no longer allows.
func (f *forwarder) refresh(ctx context.Context) time.Duration {
	start := time.Now()
	rec, ok, err := f.env.Lease(ctx, f.pg.Name)
	f.mu.Lock()
	defer f.mu.Unlock()
	why := ""
	switch {
	case err != nil:
		why = fmt.Sprintf("the witness does not answer (%v): refusing connections", err)
		if time.Now().After(f.until) {
			f.holder = ""
		}
	case !ok || rec.Holder == "" || !start.Before(rec.Expires):
		why = "no region holds the lease of " + f.pg.Name + ": refusing connections"
		f.holder, f.until = "", time.Time{}
	default:
		f.holder, f.until = rec.Holder, start.Add(f.grace())
		why = "forwarding to " + rec.Holder
	}
	if why != f.said {
		f.said = why
		f.log.Info(why)
	}
	f.cutLocked(f.holder)
	return 0
}

// cut closes every connection to a region other than keep.
func (f *forwarder) cut(keep string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutLocked(keep)
}

func (f *forwarder) cutLocked(keep string) {
	for l := range f.links {
		if l.region != keep {
			l.client.Close()
			l.upstream.Close()
			delete(f.links, l)
		}
	}
}

// target is where a connection taken now goes ("" refuse).
func (f *forwarder) target() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holder == "" || !time.Now().Before(f.until) {
		return ""
	}
	return f.holder
}

func (f *forwarder) accept() {
	for {
		c, err := f.listener.Accept()
		if err != nil {
			return
		}
		go f.serve(c)
	}
}

func (f *forwarder) serve(c net.Conn) {
	region := f.target()
	if region == "" {
		f.conns.WithLabelValues("refused").Inc()
		c.Close()
		return
	}
	addr := f.e.Targets[region][0]
	up, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		f.conns.WithLabelValues("failed").Inc()
		f.log.Warn("the target does not answer", "target", addr, "err", err)
		c.Close()
		return
	}
	l := &link{client: c, upstream: up, region: region}
	f.mu.Lock()
	if f.holder != region || !time.Now().Before(f.until) { // the lease moved meanwhile
		f.mu.Unlock()
		f.conns.WithLabelValues("refused").Inc()
		c.Close()
		up.Close()
		return
	}
	f.links[l] = true
	f.mu.Unlock()
	f.conns.WithLabelValues("forwarded").Inc()
	f.open.Inc()
	defer f.open.Dec()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				// Every chunk, in either direction, goes through only while
				// the read of the lease still vouches for region: a serve
				// paused past its trust forwards nothing when it resumes.
				if f.target() != region {
					c.Close()
					up.Close()
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				return
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	c.Close()
	up.Close()
	f.mu.Lock()
	delete(f.links, l)
	f.mu.Unlock()
}
