// Package integration is a small integration-platform instance on a
// loopback port, with the REST API shape of seed 003's: metadata export
// and import as asynchronous jobs (POST answers 202 with a job id and, for
// exports, a Location; GET polls NOT_STARTED, IN_PROGRESS, COMPLETED or
// FAILED; 409 while a job runs), integrations that are activated and
// deactivated, and their schedule parameters. The demo's two regions each
// run one, and the tests drive tandem's sync jobs, workflows and
// endpoints against it, failures included. Archives go to a Store both
// instances share, as the seed's object storage bucket.
package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Integration is one flow of an instance.
type Integration struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	// Pattern is SCHEDULED, POLLING, EVENT or STATELESS.
	Pattern string `json:"pattern"`
	// Status is ACTIVATED or CONFIGURED.
	Status string            `json:"status"`
	Params map[string]string `json:"scheduleParams,omitempty"`
}

// Store holds exported archives, by file name.
type Store struct {
	mu    sync.Mutex
	files map[string][]byte
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{files: map[string][]byte{}} }

// Fault makes jobs misbehave, for tests.
type Fault string

const (
	Healthy  Fault = ""
	FailJob  Fault = "fail"    // the job ends FAILED
	Never    Fault = "never"   // the job stays IN_PROGRESS
	Garbage  Fault = "garbage" // the status URL answers something that is not JSON
	Busy     Fault = "busy"    // the start answers 409 twice, then works
	Refuse   Fault = "refuse"  // the start answers 500
	BadParam Fault = "badparam"
)

type job struct {
	id, kind, status string
	polls            int
	archive          string
	fault            Fault
}

// Instance is one running instance.
type Instance struct {
	Name string
	URL  string // http://127.0.0.1:port
	// Token is the bearer token every request must carry.
	Token string
	// Polls is how many status reads a job takes to complete (default 2).
	Polls int

	mu           sync.Mutex
	store        *Store
	integrations map[string]*Integration
	jobs         map[string]*job
	next         int
	faults       map[string]Fault // export, import, params
	busy         int
	srv          *http.Server
	// Requests counts requests by method and path pattern.
	requests map[string]int
}

// Start runs an instance named name on a loopback port, sharing store.
func Start(name, token string, store *Store, flows ...Integration) (*Instance, error) {
	in := &Instance{Name: name, Token: token, Polls: 2, store: store, integrations: map[string]*Integration{},
		jobs: map[string]*job{}, next: 100, faults: map[string]Fault{}, requests: map[string]int{}}
	for _, f := range flows {
		in.integrations[f.ID] = &f
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	in.URL = "http://" + l.Addr().String()
	mux := http.NewServeMux()
	const common, api = "/ic/api/common/v1/", "/ic/api/integration/v1/integrations"
	mux.HandleFunc("POST "+common+"exportServiceInstanceArchive", in.auth(in.startExport))
	mux.HandleFunc("POST "+common+"importServiceInstanceArchive", in.auth(in.startImport))
	mux.HandleFunc("GET "+common+"exportServiceInstanceArchive/{id}", in.auth(in.jobStatus))
	mux.HandleFunc("GET "+common+"importServiceInstanceArchive/{id}", in.auth(in.jobStatus))
	mux.HandleFunc("GET "+api, in.auth(in.list))
	mux.HandleFunc("GET "+api+"/{id}", in.auth(in.get))
	mux.HandleFunc("POST "+api+"/{id}/activate", in.auth(in.setStatus("ACTIVATED")))
	mux.HandleFunc("POST "+api+"/{id}/deactivate", in.auth(in.setStatus("CONFIGURED")))
	mux.HandleFunc("GET "+api+"/{id}/schedule/parameters", in.auth(in.getParams))
	mux.HandleFunc("PUT "+api+"/{id}/schedule/parameters", in.auth(in.putParams))
	in.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go in.srv.Serve(l)
	return in, nil
}

// Close stops the instance.
func (in *Instance) Close() { in.srv.Close() }

// SetFault makes the next jobs of op (export, import, params) misbehave.
func (in *Instance) SetFault(op string, f Fault) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults[op] = f
	if f == Busy {
		in.busy = 2
	}
}

// Integrations returns a copy of the instance's flows, by id.
func (in *Instance) Integrations() map[string]Integration {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := map[string]Integration{}
	for id, f := range in.integrations {
		c := *f
		c.Params = maps.Clone(f.Params)
		out[id] = c
	}
	return out
}

// Set changes a flow (or adds it), as a person in the console would.
func (in *Instance) Set(f Integration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.integrations[f.ID] = &f
}

// Requests returns how many requests went to each route.
func (in *Instance) Requests() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.requests)
}

func (in *Instance) auth(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		in.requests[r.Method+" "+r.Pattern]++
		in.mu.Unlock()
		w.Header().Set("X-Instance", in.Name)
		if r.Header.Get("Authorization") != "Bearer "+in.Token {
			http.Error(w, `{"title":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (in *Instance) running() bool {
	for _, j := range in.jobs {
		if j.status == "NOT_STARTED" || j.status == "IN_PROGRESS" {
			return true
		}
	}
	return false
}

// start makes a job of kind, or answers why not.
func (in *Instance) start(w http.ResponseWriter, kind string) (*job, bool) {
	f := in.faults[kind]
	switch {
	case f == Busy && in.busy > 0:
		in.busy--
		writeJSON(w, http.StatusConflict, map[string]string{"title": "Import or Export job is already running"})
		return nil, false
	case f == Refuse:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"title": "Error communicating to the Registry or Storage"})
		return nil, false
	case in.running():
		writeJSON(w, http.StatusConflict, map[string]string{"title": "Import or Export job is already running"})
		return nil, false
	}
	in.next++
	j := &job{id: strconv.Itoa(in.next), kind: kind, status: "NOT_STARTED", fault: f}
	in.jobs[j.id] = j
	return j, true
}

func (in *Instance) startExport(w http.ResponseWriter, r *http.Request) {
	var req struct {
		JobName   string `json:"jobName"`
		Overwrite bool   `json:"overwrite"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	in.mu.Lock()
	defer in.mu.Unlock()
	name := req.JobName
	if name != "" {
		name += ".zip"
	}
	in.store.mu.Lock()
	_, exists := in.store.files[name]
	in.store.mu.Unlock()
	if name != "" && exists && !req.Overwrite {
		writeJSON(w, http.StatusConflict, map[string]string{"title": "file already exists: " + name})
		return
	}
	j, ok := in.start(w, "export")
	if !ok {
		return
	}
	if name == "" {
		name = "archive_Local_Suite_Instance-" + j.id + ".zip"
	}
	j.archive = name
	w.Header().Set("Location", in.URL+"/ic/api/common/v1/exportServiceInstanceArchive/"+j.id)
	writeJSON(w, http.StatusAccepted, map[string]string{"jobId": j.id, "location": "store", "status": j.status, "archiveFile": name})
}

func (in *Instance) startImport(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ArchiveFile string `json:"archiveFile"`
		Mode        string `json:"importActivateMode"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ArchiveFile == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"title": "archiveFile is required"})
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.store.mu.Lock()
	_, ok := in.store.files[req.ArchiveFile]
	in.store.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusConflict, map[string]string{"title": "archive file not found in storage: " + req.ArchiveFile})
		return
	}
	j, ok := in.start(w, "import")
	if !ok {
		return
	}
	j.archive = req.ArchiveFile
	writeJSON(w, http.StatusAccepted, map[string]string{"jobId": j.id, "status": j.status})
}

func (in *Instance) jobStatus(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	j := in.jobs[r.PathValue("id")]
	kind := "export"
	if strings.Contains(r.URL.Path, "import") {
		kind = "import"
	}
	if j == nil || j.kind != kind {
		writeJSON(w, http.StatusNotFound, map[string]string{"title": "no such job"})
		return
	}
	if j.fault == Garbage {
		w.Write([]byte("<html>maintenance</html>"))
		return
	}
	j.polls++
	switch {
	case j.status == "COMPLETED" || j.status == "FAILED":
	case j.fault == Never || j.polls < max(1, in.Polls):
		j.status = "IN_PROGRESS"
	case j.fault == FailJob:
		j.status = "FAILED"
	default:
		in.finish(j)
		j.status = "COMPLETED"
	}
	writeJSON(w, http.StatusOK, map[string]string{"jobId": j.id, "status": j.status, "archiveFile": j.archive})
}

// finish does a job's work: an export writes the archive, an import
// replaces the flows with the archive's, not activated (importOnly), but
// keeps the activation of flows it had.
func (in *Instance) finish(j *job) {
	in.store.mu.Lock()
	defer in.store.mu.Unlock()
	if j.kind == "export" {
		var flows []Integration
		for _, id := range slices.Sorted(maps.Keys(in.integrations)) {
			flows = append(flows, *in.integrations[id])
		}
		b, _ := json.Marshal(flows)
		in.store.files[j.archive] = b
		return
	}
	var flows []Integration
	json.Unmarshal(in.store.files[j.archive], &flows)
	next := map[string]*Integration{}
	for _, f := range flows {
		f.Status = "CONFIGURED"
		if old := in.integrations[f.ID]; old != nil {
			f.Status = old.Status
		}
		next[f.ID] = &f
	}
	in.integrations = next
}

func (in *Instance) list(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var items []Integration
	for _, id := range slices.Sorted(maps.Keys(in.integrations)) {
		items = append(items, *in.integrations[id])
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "totalResults": len(items)})
}

func (in *Instance) flow(w http.ResponseWriter, r *http.Request) *Integration {
	f := in.integrations[r.PathValue("id")]
	if f == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"title": "no integration " + r.PathValue("id")})
	}
	return f
}

func (in *Instance) get(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if f := in.flow(w, r); f != nil {
		writeJSON(w, http.StatusOK, f)
	}
}

func (in *Instance) setStatus(status string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		defer in.mu.Unlock()
		if f := in.flow(w, r); f != nil {
			f.Status = status
			writeJSON(w, http.StatusOK, f)
		}
	}
}

func (in *Instance) getParams(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if f := in.flow(w, r); f != nil {
		writeJSON(w, http.StatusOK, map[string]any{"parameters": f.Params})
	}
}

func (in *Instance) putParams(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f := in.flow(w, r)
	if f == nil {
		return
	}
	if in.faults["params"] == BadParam {
		writeJSON(w, http.StatusBadRequest, map[string]string{"title": "schedule parameter lastRun cannot be written while the integration is being edited"})
		return
	}
	var body struct {
		Parameters map[string]string `json:"parameters"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &body); err != nil || body.Parameters == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"title": fmt.Sprintf("the body is not {\"parameters\": {...}}: %.80s", b)})
		return
	}
	f.Params = body.Parameters
	writeJSON(w, http.StatusOK, map[string]any{"parameters": f.Params})
}
