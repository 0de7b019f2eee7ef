package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/member"
	"tandem/internal/member/bucket"
	"tandem/internal/member/group"
	"tandem/internal/plan"
	"tandem/internal/runner"
	"tandem/internal/web"
)

// route is one endpoint of serve's HTTP API (docs/openapi.yaml describes
// each; a test keeps the two the same).
type route struct {
	method, path string
	// change: the request changes state, and needs serve.token.
	change bool
	handle func(a *api, w http.ResponseWriter, r *http.Request) error
}

// apiRoutes are the API's endpoints, under /api/v1.
var apiRoutes = []route{
	{"GET", "/api/v1/status", false, (*api).status},
	{"GET", "/api/v1/protection-groups", false, (*api).groups},
	{"GET", "/api/v1/protection-groups/{pg}/overview", false, (*api).overview},
	{"GET", "/api/v1/protection-groups/{pg}/lease", false, (*api).lease},
	{"GET", "/api/v1/protection-groups/{pg}/rpo", false, (*api).rpo},
	{"GET", "/api/v1/protection-groups/{pg}/plans/{type}", false, (*api).plan},
	{"GET", "/api/v1/protection-groups/{pg}/plans/{type}/prechecks", false, (*api).prechecks},
	{"POST", "/api/v1/protection-groups/{pg}/plans/{type}/run", true, (*api).run},
	{"GET", "/api/v1/protection-groups/{pg}/history", false, (*api).history},
	{"GET", "/api/v1/protection-groups/{pg}/executions", false, (*api).executions},
	{"GET", "/api/v1/protection-groups/{pg}/executions/{id}", false, (*api).execution},
	{"GET", "/api/v1/protection-groups/{pg}/executions/{id}/report", false, (*api).report},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/approve", true, (*api).approve},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/cancel", true, (*api).cancel},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/retry", true, (*api).cont},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/skip", true, (*api).cont},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/resume", true, (*api).cont},
	{"POST", "/api/v1/replications/{name}/promote", true, (*api).promote},
	{"POST", "/api/v1/groups/{group}/complete", true, (*api).complete},
}

// api serves apiRoutes for one serve.
type api struct {
	env *member.Env
	// ctx is serve's: a run started through the API lives as long as serve
	// (stopped with it, it can be resumed).
	ctx context.Context
	// token guards every change, and every read when reads is set.
	token string
	reads bool
	// lags is each protection group's lag history.
	lags *rpoHistory

	mu     sync.Mutex
	last   member.Status // the status overview read, at most statusAge old
	lastAt time.Time
}

// statusAge is how long overview answers from one read of the status
// (pages open in several browsers, refreshing, read it once).
const statusAge = 2 * time.Second

// collect is the status, read at most every statusAge.
func (a *api) collect(ctx context.Context) member.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.lastAt) > statusAge {
		a.last, a.lastAt = member.CollectStatus(context.WithoutCancel(ctx), a.env), time.Now()
	}
	return a.last
}

// addAPI adds the API's handlers and the dashboard (package web) to s, and
// with sample the task that keeps
// the members' lag history (not in a witness observer's serve).
func addAPI(ctx context.Context, s *member.Serving, env *member.Env, sample bool) {
	a := &api{ctx: ctx, env: env, token: string(env.Cfg.Serve.Token), reads: env.Cfg.Serve.ProtectReads, lags: newRPOHistory(env)}
	for pattern, h := range web.Routes() {
		s.Handle(pattern, h)
	}
	if sample && len(env.Cfg.ProtectionGroups) > 0 {
		s.Task(a.lags.task())
	}
	for _, rt := range apiRoutes {
		s.Handle(rt.method+" "+rt.path, daemon.Handler(func(w http.ResponseWriter, r *http.Request) error {
			if rt.change || a.reads {
				if err := daemon.Authorize(r, a.token); err != nil {
					return err
				}
			}
			return rt.handle(a, w, r)
		}))
	}
}

func notFound(format string, args ...any) error {
	return daemon.Error{Status: http.StatusNotFound, Err: fmt.Errorf(format, args...)}
}

// pg is the request's protection group.
func (a *api) pg(r *http.Request) (*planEnv, error) {
	name := r.PathValue("pg")
	pg, err := a.env.Cfg.FindProtectionGroup(name)
	if err != nil {
		return nil, notFound("%v", err)
	}
	return &planEnv{cfg: a.env.Cfg, env: a.env, pg: pg}, nil
}

// execution is the request's execution of its protection group.
func (a *api) find(r *http.Request) (*planEnv, *plan.Executor, *plan.Execution, error) {
	pe, err := a.pg(r)
	if err != nil {
		return nil, nil, nil, err
	}
	ex, x, err := pe.find(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, nil, nil, notFound("protection group %s has no execution %q", pe.pg.Name, r.PathValue("id"))
	}
	return pe, ex, x, nil
}

func (a *api) status(w http.ResponseWriter, r *http.Request) error {
	return daemon.WriteJSON(w, member.CollectStatus(r.Context(), a.env))
}

// memberView is a member's status in the form a person reads.
type memberView struct {
	Kind      string   `json:"kind"`
	Member    string   `json:"member"`
	Noun      string   `json:"noun"`
	Health    string   `json:"health"`
	Attention bool     `json:"attention"`
	Lines     []string `json:"lines"`
	Detail    any      `json:"detail,omitempty"`
}

type partView struct {
	Title     string   `json:"title"`
	Lines     []string `json:"lines"`
	Attention bool     `json:"attention"`
}

// overview is what the dashboard shows of one protection group: its role
// (lease, witness, unfinished run), its members' status as status prints
// it, and the parts no member owns (regions' health, automatic failover).
func (a *api) overview(w http.ResponseWriter, r *http.Request) error {
	pe, err := a.pg(r)
	if err != nil {
		return err
	}
	st := a.collect(r.Context())
	out := map[string]any{"protection_group": pe.pg.Name, "primary": pe.pg.Primary, "standby": pe.pg.Standby,
		"lease_ttl_seconds": time.Duration(pe.pg.LeaseTTL).Seconds(), "rto_seconds": time.Duration(pe.pg.RTO).Seconds(), "read": a.lastAt.UTC()}
	for _, role := range st.ProtectionGroups {
		if role.ProtectionGroup == pe.pg.Name {
			out["role"] = role
		}
	}
	ours := map[string]bool{}
	for _, k := range member.Kinds() {
		for _, m := range pe.pg.Members(k.Section().Ref) {
			ours[k.Name()+"/"+m] = true
		}
	}
	members := []memberView{}
	for _, rep := range st.Members {
		if ours[rep.Kind+"/"+rep.Member] {
			members = append(members, memberView{rep.Kind, rep.Member, rep.Noun, rep.Health, rep.Attention, rep.Lines, rep.Detail})
		}
	}
	parts := []partView{}
	for _, p := range st.Parts {
		parts = append(parts, partView{p.Title, p.Lines, p.Attention})
	}
	out["members"], out["parts"] = members, parts
	return daemon.WriteJSON(w, out)
}

func (a *api) groups(w http.ResponseWriter, r *http.Request) error {
	var out []map[string]any
	for _, pg := range a.env.Cfg.ProtectionGroups {
		out = append(out, map[string]any{"name": pg.Name, "primary": pg.Primary, "standby": pg.Standby})
	}
	return daemon.WriteJSON(w, out)
}

func (a *api) lease(w http.ResponseWriter, r *http.Request) error {
	pe, err := a.pg(r)
	if err != nil {
		return err
	}
	rec, ok, err := a.env.Lease(r.Context(), pe.pg.Name)
	if err != nil {
		return daemon.Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("the witness does not answer: %w", err)}
	}
	if !ok {
		return daemon.WriteJSON(w, map[string]any{"taken": false, "configured_primary": pe.pg.Primary})
	}
	return daemon.WriteJSON(w, map[string]any{"taken": true, "lease": rec})
}

// planNow is the request's protection group and the plan of its type as
// the topology gives it now (409 when none can be built now).
func (a *api) planNow(r *http.Request) (*planEnv, *plan.Plan, error) {
	pe, err := a.pg(r)
	if err != nil {
		return nil, nil, err
	}
	typ := r.PathValue("type")
	if !slices.Contains(config.PlanTypes, typ) {
		return nil, nil, notFound("unknown plan type %q (%s)", typ, strings.Join(config.PlanTypes, ", "))
	}
	p, err := member.PlanNow(r.Context(), a.env, pe.pg, typ)
	if err != nil {
		return nil, nil, daemon.Error{Status: http.StatusConflict, Err: err}
	}
	return pe, p, nil
}

func (a *api) plan(w http.ResponseWriter, r *http.Request) error {
	_, p, err := a.planNow(r)
	if err != nil {
		return err
	}
	return daemon.WriteJSON(w, p)
}

// run starts a plan run in serve and answers 202 with its execution once
// it has started; a run of the group that is not finished answers 409 and
// starts nothing (two people pressing "failover" get one run).
func (a *api) run(w http.ResponseWriter, r *http.Request) error {
	decided := time.Now()
	pe, p, err := a.planNow(r)
	if err != nil {
		return err
	}
	ex, err := pe.executor(r.Context(), p.Home)
	if err != nil {
		return err
	}
	return a.start(w, ex, func(ctx context.Context) error {
		_, err := ex.Run(ctx, p, decided)
		return err
	}, map[string]any{"type": p.Type, "from": p.From, "to": p.To})
}

// start runs f in serve (it lives as long as serve: stopped with it, the
// run can be resumed) and answers 202 with the execution once f changed
// its record; f ending first answers its error, 409 when it refused to
// start (another run unfinished, nothing to retry).
func (a *api) start(w http.ResponseWriter, ex *plan.Executor, f func(context.Context) error, also map[string]any) error {
	started := make(chan string, 1)
	before := ex.OnChange
	ex.OnChange = func(x *plan.Execution) {
		select {
		case started <- x.ID:
		default:
		}
		if before != nil {
			before(x)
		}
	}
	ended := make(chan error, 1)
	go func() { ended <- f(a.ctx) }()
	select {
	case id := <-started:
		out := map[string]any{"execution": id}
		maps.Copy(out, also)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(out)
	case err := <-ended:
		if err == nil {
			err = errors.New("the run ended before it started")
		}
		if errors.Is(err, context.Canceled) {
			return err
		}
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
}

// cont continues an execution in serve: retry (the failed steps, or
// {"step": ...}), skip ({"step": ...}, required) or resume, as `tandem plan`
// does. It answers 202 once the execution runs again.
func (a *api) cont(w http.ResponseWriter, r *http.Request) error {
	pe, ex, x, b, err := a.findStep(r)
	if err != nil {
		return err
	}
	action := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	if action == "skip" && b.Step == "" {
		return daemon.Error{Status: http.StatusBadRequest, Err: errors.New(`skip needs the step: {"step": "STEP"} (its id, as the execution lists it)`)}
	}
	return a.continueRun(w, pe, ex, x, action, b.Step, map[string]any{})
}

// continueRun runs x on in serve: action is retry, skip (of step) or
// resume; the 202 answer carries also.
func (a *api) continueRun(w http.ResponseWriter, pe *planEnv, ex *plan.Executor, x *plan.Execution, action, step string, also map[string]any) error {
	p, err := member.Build(a.env, pe.pg, x.Type, x.From, x.To)
	if err != nil {
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
	also["action"] = action
	return a.start(w, ex, func(ctx context.Context) error {
		var err error
		switch action {
		case "retry":
			_, err = ex.Retry(ctx, p, x.ID, step)
		case "skip":
			_, err = ex.Skip(ctx, p, x.ID, step)
		default:
			_, err = ex.Resume(ctx, p, x.ID, nil)
		}
		return err
	}, also)
}

// prechecks runs a plan's prechecks now and answers their results (200
// whether they pass or not: "ok" says).
func (a *api) prechecks(w http.ResponseWriter, r *http.Request) error {
	pe, p, err := a.planNow(r)
	if err != nil {
		return err
	}
	return daemon.WriteJSON(w, runPrechecks(r.Context(), pe, p))
}

// promote makes a replica writable, as `tandem bucket promote` does.
func (a *api) promote(w http.ResponseWriter, r *http.Request) error {
	rep, st, err := bucket.Resolve(r.Context(), a.env, r.PathValue("name"))
	if errors.As(err, new(bucket.ErrUnknown)) {
		return notFound("%v", err)
	}
	if err != nil {
		return err
	}
	prom, err := bucket.PromoteTarget(r.Context(), a.env, rep, st, false)
	if err != nil {
		return err
	}
	return daemon.WriteJSON(w, map[string]any{"replication": rep.Name, "target": rep.To.URL, "promotion": prom})
}

// complete records a workflow run's completion, as `tandem group
// complete` does.
func (a *api) complete(w http.ResponseWriter, r *http.Request) error {
	return group.CompleteHTTP(w, r, a.env)
}

func (a *api) executions(w http.ResponseWriter, r *http.Request) error {
	pe, err := a.pg(r)
	if err != nil {
		return err
	}
	all, errs := pe.executions(r.Context())
	slices.SortFunc(all, func(a, b *plan.Execution) int { return b.Decided.Compare(a.Decided) })
	return daemon.WriteJSON(w, map[string]any{"executions": all, "unreadable": errs})
}

func (a *api) execution(w http.ResponseWriter, r *http.Request) error {
	_, _, x, err := a.find(r)
	if err != nil {
		return err
	}
	return daemon.WriteJSON(w, x)
}

func (a *api) report(w http.ResponseWriter, r *http.Request) error {
	_, _, x, err := a.find(r)
	if err != nil {
		return err
	}
	return writeHTML(w, func(page io.Writer) error { return writeReport(page, x, a.env.Cfg) })
}

// history is the page of every drill and failover (tandem report
// --history).
func (a *api) history(w http.ResponseWriter, r *http.Request) error {
	pe, err := a.pg(r)
	if err != nil {
		return err
	}
	return writeHTML(w, func(page io.Writer) error { return writeHistory(r.Context(), page, pe) })
}

// writeHTML answers the page f writes, or f's error as JSON.
func writeHTML(w http.ResponseWriter, f func(io.Writer) error) error {
	var page bytes.Buffer
	if err := f(&page); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := w.Write(page.Bytes())
	return err
}

// stepBody is the optional body of approve: the step, else every waiting
// one.
type stepBody struct {
	Step string `json:"step"`
	By   string `json:"by"`
}

// findStep is the request's execution and its optional body.
func (a *api) findStep(r *http.Request) (*planEnv, *plan.Executor, *plan.Execution, stepBody, error) {
	pe, ex, x, err := a.find(r)
	if err != nil {
		return nil, nil, nil, stepBody{}, err
	}
	b, err := readStep(r)
	return pe, ex, x, b, err
}

func readStep(r *http.Request) (stepBody, error) {
	var b stepBody
	if r.ContentLength == 0 {
		return b, nil
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<16)).Decode(&b); err != nil {
		return b, daemon.Error{Status: http.StatusBadRequest, Err: fmt.Errorf("the body is not {\"step\": ..., \"by\": ...}: %w", err)}
	}
	return b, nil
}

func (a *api) approve(w http.ResponseWriter, r *http.Request) error {
	pe, ex, x, b, err := a.findStep(r)
	if err != nil {
		return err
	}
	by := "the HTTP API from " + r.RemoteAddr
	if b.By != "" {
		by = b.By + " (through the HTTP API from " + r.RemoteAddr + ")"
	}
	if x, err = ex.Approve(r.Context(), x.ID, b.Step, by); err != nil {
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
	out := map[string]any{"execution": x.ID, "approved": cmp.Or(b.Step, "every waiting step")}
	if !runner.Live(x.Runner) {
		// Nobody runs it (the tandem that waited is gone): serve goes on
		// with it, as `tandem plan approve` does.
		out["resumed"] = true
		return a.continueRun(w, pe, ex, x, "resume", "", out)
	}
	return daemon.WriteJSON(w, out)
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request) error {
	_, ex, x, err := a.find(r)
	if err != nil {
		return err
	}
	if x, err = ex.Cancel(r.Context(), x.ID); err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
	return daemon.WriteJSON(w, map[string]any{"execution": x.ID, "state": x.State})
}
