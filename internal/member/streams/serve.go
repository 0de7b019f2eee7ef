package streams

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/fence"
	"tandem/internal/member"
	"tandem/internal/objstore"
	"tandem/internal/stream"
	"tandem/produce"
)

type metrics struct {
	processed, duplicates, copied *prometheus.CounterVec
	position, lag, processing     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"stream", "region"}
	m := &metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "stream", Name: "processed_total",
			Help: "Events this serve delivered that took effect in the sink."}, labels),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "stream", Name: "duplicates_absorbed_total",
			Help: "Events this serve delivered that the sink had applied already."}, labels),
		copied: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "stream", Name: "replicated_total",
			Help: "Events the catch-up copied into the region."}, labels),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "stream", Name: "position",
			Help: "The region's position in its log that the sink records."}, labels),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "stream", Name: "lag_events",
			Help: "Events in the region's log after its position."}, labels),
		processing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "stream", Name: "processing",
			Help: "1 while this serve delivers the region's events to the sink."}, labels),
	}
	reg.MustRegister(m.processed, m.duplicates, m.copied, m.position, m.lag, m.processing)
	return m
}

// Serve processes each stream in the region holding the lease, keeps the
// other region's position, catches the regions up with each other (in the
// holder's serve) and takes events over HTTP.
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	m := newMetrics(s.Reg)
	all := All(s.Env.Cfg)
	for i := range all {
		st := &all[i]
		pg := s.Env.ProtectionGroupOf(refKey, st.Name)
		if pg == nil {
			s.Env.Log.Warn("stream is in no protection group: nothing processes it", "stream", st.Name)
			continue
		}
		for _, r := range st.regionNames() {
			if s.Region != "" && s.Region != r {
				continue
			}
			p := &processing{s: s, st: st, pg: pg, region: r, m: m, log: s.Env.Log.With("stream", st.Name, "region", r)}
			s.Task(daemon.Task{Name: "stream/" + st.Name + "/" + r, Interval: 200 * time.Millisecond, Run: p.round})
		}
		c := &catchUp{s: s, st: st, pg: pg, m: m, log: s.Env.Log.With("stream", st.Name)}
		s.Task(daemon.Task{Name: "stream/" + st.Name + "/catch-up", Interval: time.Second, Run: c.round})
	}
	in := &ingest{s: s, producers: map[string]*produce.Producer{}}
	s.Handle("POST /streams/{stream}/events", daemon.Handler(in.serve))
	return nil
}

// processing is one region's part of a stream: deliver while the region
// holds the lease, follow otherwise.
type processing struct {
	s      *member.Serving
	st     *Stream
	pg     *config.ProtectionGroup
	region string
	m      *metrics
	log    *slog.Logger
	said   string
}

func (p *processing) say(msg string, args ...any) {
	if p.said != msg {
		p.said = msg
		p.log.Info(msg, args...)
	}
}

func (p *processing) round(ctx context.Context) time.Duration {
	env, st, r := p.s.Env, p.st, p.region
	h, _, err := holder(ctx, env, p.pg)
	if err != nil {
		p.say("the witness does not answer: waiting", "err", err)
		return 0
	}
	l, err := openLog(ctx, st, r)
	if err != nil {
		p.say("the region's broker does not answer: trying again", "err", err)
		return time.Second
	}
	defer l.Close()
	sk, err := OpenSink(ctx, st, env.Grace(refKey, st.Name))
	if err != nil {
		p.say("the sink does not answer: trying again", "err", err)
		return time.Second
	}
	defer sk.Close()
	labels := prometheus.Labels{"stream": st.Name, "region": r}
	stopLag := p.watchLag(ctx, l, sk)
	defer stopLag()
	if h != r {
		p.m.processing.With(labels).Set(0)
		p.say("following: " + h + " processes the stream")
		return p.follow(ctx, l, sk, h)
	}
	conds := append(env.ActingFor(p.pg, r), p.s.Conditions...)
	pr := &stream.Processor{Region: r, Log: l, Sink: sk, Consumer: st.Consumer(r), Batch: st.Batch,
		Guard: fence.New(fmt.Sprintf("stream %s processing in %s", st.Name, r), conds...),
		Delivered: func(res stream.Result, pos int64) {
			p.m.processed.With(labels).Add(float64(res.Applied))
			p.m.duplicates.With(labels).Add(float64(res.Duplicates))
			p.m.position.With(labels).Set(float64(pos))
		}}
	p.m.processing.With(labels).Set(1)
	p.say("processing")
	err = pr.Run(ctx)
	p.m.processing.With(labels).Set(0)
	switch {
	case ctx.Err() != nil:
	case fence.Refused(err):
		p.say("processing stops: "+err.Error(), "epoch", pr.Guard.Epoch())
	case err != nil:
		p.log.Error("delivery failed; trying again (nothing after the failed event is delivered before it)", "err", err)
		p.said = ""
		return time.Second
	}
	return 0
}

// watchLag sets the region's lag gauge every second, from its stream's
// head and its position in the sink, until the returned func is called.
func (p *processing) watchLag(ctx context.Context, l stream.Log, sk *stream.Sink) func() {
	lag := p.m.lag.With(prometheus.Labels{"stream": p.st.Name, "region": p.region})
	return daemon.Every(ctx, time.Second, func(ctx context.Context) {
		h, err := l.Head(ctx)
		pos, err2 := sk.Position(ctx, p.st.Consumer(p.region))
		if err == nil && err2 == nil {
			lag.Set(float64(max(h-pos, 0)))
		}
	})
}

// follow keeps the region's position until the lease changes hands.
func (p *processing) follow(ctx context.Context, l stream.Log, sk *stream.Sink, h string) time.Duration {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- stream.Follow(fctx, p.region, l, sk, p.st.Consumer(p.region), p.st.Batch) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				p.log.Warn("following the processing region", "err", err)
			}
			return time.Second
		case <-time.After(250 * time.Millisecond):
		}
		if now, _, err := holder(ctx, p.s.Env, p.pg); err != nil || now != h {
			cancel()
			<-done
			return time.Millisecond
		}
		if pos, err := sk.Position(ctx, p.st.Consumer(p.region)); err == nil {
			p.m.position.With(prometheus.Labels{"stream": p.st.Name, "region": p.region}).Set(float64(pos))
		}
	}
}

// catchUp runs the stream's mirror in the serve of the region holding the
// lease (or in a serve of both regions).
type catchUp struct {
	s    *member.Serving
	st   *Stream
	pg   *config.ProtectionGroup
	m    *metrics
	log  *slog.Logger
	logs [2]stream.Log
	said string
	// ms is the catch-up record as saved under etag (kept between rounds:
	// it holds the events' data read so far).
	ms   *stream.MirrorState
	etag string
}

func (c *catchUp) close() {
	for i, l := range c.logs {
		if l != nil {
			l.Close()
			c.logs[i] = nil
		}
	}
}

func (c *catchUp) round(ctx context.Context) time.Duration {
	env, st := c.s.Env, c.st
	h, _, err := holder(ctx, env, c.pg)
	if err != nil || (c.s.Region != "" && c.s.Region != h) {
		c.close()
		return 0
	}
	regions := st.regionNames()
	for i, r := range regions {
		if c.logs[i] == nil {
			if c.logs[i], err = openLog(ctx, st, r); err != nil {
				if c.said != err.Error() {
					c.said = err.Error()
					c.log.Warn("catch-up waits for the region's broker", "region", r, "err", err)
				}
				return 0
			}
		}
	}
	if c.ms == nil {
		if c.ms, c.etag, err = loadMirror(ctx, env, st); err != nil {
			c.log.Error("read the catch-up record", "err", err)
			return 0
		}
	}
	ms := c.ms
	before, copied := fmt.Sprint(ms.Cursor), maps.Clone(ms.Copied)
	mi := &stream.Mirror{Regions: [2]string{regions[0], regions[1]}, Logs: c.logs, After: time.Duration(st.CatchUpAfter), State: ms}
	n, err := mi.Round(ctx)
	if err != nil {
		c.log.Warn("catch-up", "err", err)
		c.close()
	}
	if n == 0 && before == fmt.Sprint(ms.Cursor) {
		return 0
	}
	for _, r := range regions {
		c.m.copied.With(prometheus.Labels{"stream": st.Name, "region": r}).Add(float64(ms.Copied[r] - copied[r]))
	}
	store, err := mirrorStore(ctx, env)
	if err == nil {
		g := fence.New("the catch-up of stream "+st.Name+" acting for "+h, append(env.ActingFor(c.pg, h), c.s.Conditions...)...)
		c.etag, err = g.Store(store).Save(ctx, st.Name+".json", ms, objstore.PutOptions{IfMatch: c.etag, IfAbsent: c.etag == ""})
	}
	if err != nil {
		// The events copied are in the other log: the next round, from
		// the record as saved, reads them there and matches them.
		c.log.Warn("save the catch-up record", "err", err)
		c.ms = nil
		return 0
	}
	if n > 0 {
		c.log.Info("caught up", "events", n)
	}
	return 0
}

// ingest takes events over HTTP and produces them to both regions.
type ingest struct {
	s         *member.Serving
	mu        sync.Mutex
	producers map[string]*produce.Producer
}

func (in *ingest) serve(w http.ResponseWriter, r *http.Request) error {
	if err := daemon.Authorize(r, in.s.Token); err != nil {
		return err
	}
	st := Find(in.s.Env.Cfg, r.PathValue("stream"))
	if st == nil {
		return daemon.Error{Status: http.StatusNotFound, Err: fmt.Errorf("no stream named %q", r.PathValue("stream"))}
	}
	id := r.Header.Get("Idempotency-Key")
	if id == "" {
		id = r.URL.Query().Get("id")
	}
	if id == "" {
		return daemon.Error{Status: http.StatusBadRequest, Err: errors.New("an event needs an id that a retry repeats: send it as the Idempotency-Key header or ?id=")}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		return daemon.Error{Status: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("the event's body: %w (at most 1 MiB)", err)}
	}
	p, err := in.producer(r.Context(), st)
	if err != nil {
		return err
	}
	res, err := p.Send(r.Context(), id, data)
	if err != nil {
		return daemon.Error{Status: http.StatusBadGateway, Err: err}
	}
	return daemon.WriteJSON(w, res)
}

func (in *ingest) producer(ctx context.Context, st *Stream) (*produce.Producer, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if p := in.producers[st.Name]; p != nil {
		return p, nil
	}
	p, err := produce.Open(ctx, st.Targets())
	if err != nil {
		return nil, err
	}
	in.producers[st.Name] = p
	return p, nil
}

func isNotExist(err error) bool { return errors.Is(err, objstore.ErrNotExist) }
