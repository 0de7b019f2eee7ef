// Package daemon runs tandem's long-lived work under `tandem serve`: one
// loop per replication pair, and an HTTP server with Prometheus metrics,
// health endpoints and the replication status.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tandem/internal/replicate"
	"tandem/internal/tablegroup"
)

// Job is one replication pair and how often it runs.
type Job struct {
	Pair     *replicate.Pair
	Interval time.Duration
	// Reopen, when set, opens the pair again in the direction the region
	// lease says now; it is called after a pass that failed or found the
	// target promoted, so a role change turns the loop around.
	Reopen func(ctx context.Context) (*replicate.Pair, error)
}

// Daemon runs jobs until Close.
type Daemon struct {
	Jobs   []Job
	Groups []GroupJob
	Listen string
	Log    *slog.Logger
	// Status returns the document served at /status.
	Status func(ctx context.Context) (any, error)
	// Token, when set, is required as a bearer token by the endpoints that
	// change state (POST).
	Token string
	// Collectors are more metrics to serve (for example the leases this
	// tandem keeps).
	Collectors []prometheus.Collector

	reg     *prometheus.Registry
	metrics *replicate.Metrics
	groups  *groupMetrics
	srv     *http.Server
	addr    net.Addr
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	started map[string]bool // pairs that finished a first pass
}

// Open starts the HTTP server and the loops.
func (d *Daemon) Open(ctx context.Context) error {
	d.reg = prometheus.NewRegistry()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.reg.MustRegister(d.Collectors...)
	d.metrics = replicate.NewMetrics(d.reg)
	d.groups = newGroupMetrics(d.reg)
	d.started = map[string]bool{}
	for _, j := range d.Jobs {
		if st, err := replicate.LoadStatus(ctx, *j.Pair.State, j.Pair.Name); err == nil && st.Watermark != nil {
			d.metrics.SetWatermark(j.Pair.Name, *st.Watermark)
		}
	}

	l, err := net.Listen("tcp", d.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", d.Listen, err)
	}
	d.addr = l.Addr()
	d.srv = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second}
	go d.srv.Serve(l)

	ctx, d.cancel = context.WithCancel(ctx)
	for _, j := range d.Jobs {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.loop(ctx, j)
		}()
	}
	for i := range d.Groups {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.groupLoop(ctx, i)
		}()
	}
	d.Log.Info("serving", "addr", d.addr.String(), "pairs", len(d.Jobs), "groups", len(d.Groups))
	return nil
}

// Addr is the address the HTTP server listens on.
func (d *Daemon) Addr() string { return d.addr.String() }

// Wait blocks until every loop ended (Close, or every target promoted when
// there are no groups).
func (d *Daemon) Wait() { d.wg.Wait() }

// Close stops the loops (a running pass is canceled; its copies are
// abandoned without leaving partial objects) and the HTTP server.
func (d *Daemon) Close(ctx context.Context) error {
	d.cancel()
	d.wg.Wait()
	return d.srv.Shutdown(ctx)
}

func (d *Daemon) loop(ctx context.Context, j Job) {
	pair := j.Pair
	log := d.Log.With("pair", pair.Name)
	waiting := false // for a role change after a promotion
	for {
		sum, err := pair.RunOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		d.metrics.Observe(sum, err)
		d.mu.Lock()
		d.started[pair.Name] = true
		d.mu.Unlock()
		switch {
		case errors.Is(err, replicate.ErrPromoted) && j.Reopen == nil:
			log.Warn("target promoted; replication into it has stopped for good", "target", pair.Target.URL())
			return
		case errors.Is(err, replicate.ErrPromoted):
			if !waiting {
				log.Warn("target promoted; replication waits for a role change", "target", pair.Target.URL())
				waiting = true
			}
		case err != nil:
			log.Error("pass failed", "err", err)
		default:
			log.Info("pass done", "copied", sum.Objects, "bytes", sum.Bytes, "unchanged", sum.Unchanged,
				"deleted", sum.Deleted, "failed", sum.Failed, "pending", sum.Pending, "foreign", sum.Foreign,
				"seconds", sum.Seconds)
		}
		if err != nil && j.Reopen != nil {
			if p, rerr := j.Reopen(ctx); rerr != nil {
				log.Error("reopen the pair", "err", rerr)
			} else if p.Source.URL() != pair.Source.URL() || p.Target.URL() != pair.Target.URL() {
				log.Info("the region lease turned the replication around", "source", p.Source.URL(), "target", p.Target.URL())
				pair, waiting = p, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(j.Interval):
		}
	}
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "tandem is healthy")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		ready := len(d.started) == len(d.Jobs)+len(d.Groups)
		d.mu.Unlock()
		if !ready {
			http.Error(w, "tandem is starting: not every pair and group has finished a first pass", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "tandem is ready")
	})
	mux.Handle("POST /groups/{group}/complete", handler(d.completeRun))
	mux.Handle("GET /status", handler(func(w http.ResponseWriter, r *http.Request) error {
		if d.Status == nil {
			return errors.New("no status source")
		}
		doc, err := d.Status(r.Context())
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(doc)
	}))
	return mux
}

// completeRun records that a workflow run finished: the HTTP form of
// 'tandem group complete', for a workflow's last task. The run id comes as
// ?run_id= or in a JSON body {"run_id": "..."}.
func (d *Daemon) completeRun(w http.ResponseWriter, r *http.Request) error {
	if d.Token != "" && r.Header.Get("Authorization") != "Bearer "+d.Token {
		return httpError{http.StatusUnauthorized, errors.New("a bearer token is required (serve.token)")}
	}
	name := r.PathValue("group")
	var group *tablegroup.Group
	d.mu.Lock()
	for i := range d.Groups {
		if d.Groups[i].Group.Name == name {
			group = d.Groups[i].Group
		}
	}
	d.mu.Unlock()
	if group == nil {
		return httpError{http.StatusNotFound, fmt.Errorf("no group named %q", name)}
	}
	runID := r.URL.Query().Get("run_id")
	if runID == "" && r.Body != nil {
		var body struct {
			RunID string `json:"run_id"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		runID = body.RunID
	}
	if runID == "" {
		return httpError{http.StatusBadRequest, errors.New("run_id is required")}
	}
	if !group.Workflow || group.Runs != nil {
		return httpError{http.StatusConflict, fmt.Errorf("group %s does not take completed runs from its workflow's last task", name)}
	}
	cut, err := group.Complete(r.Context(), runID)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(cut)
}

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	err    error
}

func (e httpError) Error() string { return e.err.Error() }

// handler turns an error into one JSON error document.
type handler func(http.ResponseWriter, *http.Request) error

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		status := http.StatusInternalServerError
		var he httpError
		if errors.As(err, &he) {
			status = he.status
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
	}
}
