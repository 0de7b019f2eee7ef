// Package daemon runs tandem's long-lived work under `tandem serve`: one
// loop per task (a replication pair, a table group, a lease, the passive
// duties of a region that lost it), and an HTTP server with Prometheus
// metrics, health endpoints, the status document and the handlers the
// member kinds add. It knows no kind: package member and its kinds give it
// tasks and handlers.
package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Task is work done in a loop: Run, then wait Interval (or less, when
// Run asks for it), until the daemon closes.
type Task struct {
	// Name identifies the task in logs and readiness ("pair/photos").
	Name     string
	Interval time.Duration
	// Run does one round. It returns how long to wait before the next
	// round (0: Interval).
	Run func(ctx context.Context) time.Duration
	// NotReady: this task does not hold /-/ready back (a lease keeper).
	NotReady bool
	// Wake, when set, starts the next round at once.
	Wake <-chan struct{}
}

// Daemon runs tasks until Close.
type Daemon struct {
	Tasks  []Task
	Listen string
	Log    *slog.Logger
	// Registry holds every metric to serve; Open adds Go and process
	// metrics.
	Registry *prometheus.Registry
	// Status returns the document served at /status.
	Status func(ctx context.Context) (any, error)
	// Handlers are more routes ("POST /groups/{group}/complete").
	Handlers map[string]http.Handler

	srv     *http.Server
	addr    net.Addr
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	started map[string]bool // tasks that finished a first round
}

// Open starts the HTTP server and the loops.
func (d *Daemon) Open(ctx context.Context) error {
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	d.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l, err := net.Listen("tcp", d.Listen)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", d.Listen, err)
	}
	d.addr = l.Addr()
	d.srv = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second}
	go d.srv.Serve(l)

	ctx, d.cancel = context.WithCancel(ctx)
	d.run(ctx)
	d.Log.Info("serving", "addr", d.addr.String(), "tasks", len(d.Tasks))
	return nil
}

func (d *Daemon) run(ctx context.Context) {
	if d.started == nil {
		d.started = map[string]bool{}
	}
	for _, t := range d.Tasks {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.loop(ctx, t)
		}()
	}
}

// RunTasks runs tasks in loops, without an HTTP server, until ctx ends;
// the returned wait blocks until every loop stopped.
func RunTasks(ctx context.Context, tasks []Task) (wait func()) {
	d := &Daemon{Tasks: tasks}
	d.run(ctx)
	return d.wg.Wait
}

// Addr is the address the HTTP server listens on.
func (d *Daemon) Addr() string { return d.addr.String() }

// Close stops the loops (a running round is canceled; copies in flight
// are abandoned without leaving partial objects) and the HTTP server.
func (d *Daemon) Close(ctx context.Context) error {
	d.cancel()
	d.wg.Wait()
	return d.srv.Shutdown(ctx)
}

func (d *Daemon) loop(ctx context.Context, t Task) {
	for {
		wait := t.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		d.mu.Lock()
		d.started[t.Name] = true
		d.mu.Unlock()
		if wait <= 0 {
			wait = t.Interval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-t.Wake:
		}
	}
}

func (d *Daemon) ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, t := range d.Tasks {
		if !t.NotReady && !d.started[t.Name] {
			return false
		}
	}
	return true
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "tandem is healthy")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !d.ready() {
			http.Error(w, "tandem is starting: not every pair and group has finished a first round", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "tandem is ready")
	})
	mux.Handle("GET /status", Handler(func(w http.ResponseWriter, r *http.Request) error {
		if d.Status == nil {
			return errors.New("no status source")
		}
		doc, err := d.Status(r.Context())
		if err != nil {
			return err
		}
		return WriteJSON(w, doc)
	}))
	for pattern, h := range d.Handlers {
		mux.Handle(pattern, h)
	}
	return mux
}

// WriteJSON writes v as the JSON answer.
func WriteJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Error is an error with its HTTP status.
type Error struct {
	Status int
	Err    error
}

func (e Error) Error() string { return e.Err.Error() }
func (e Error) Unwrap() error { return e.Err }

// Handler turns an error into one JSON error document with its status.
type Handler func(http.ResponseWriter, *http.Request) error

func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		status := http.StatusInternalServerError
		var he Error
		if errors.As(err, &he) {
			status = he.Status
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
	}
}

// Authorize fails with 401 unless r carries token as its bearer token,
// compared in constant time. An empty token allows every request.
func Authorize(r *http.Request, token string) error {
	if token == "" {
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return Error{http.StatusUnauthorized, errors.New("a valid bearer token is required (serve.token)")}
	}
	return nil
}

// Every runs f now and then every d in its own goroutine, until the
// returned stop is called (stop waits for a running f to return).
func Every(ctx context.Context, d time.Duration, f func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
	}()
	return func() { cancel(); <-done }
}
