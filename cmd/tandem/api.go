package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/member"
	"tandem/internal/plan"
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
	{"GET", "/api/v1/protection-groups/{pg}/lease", false, (*api).lease},
	{"GET", "/api/v1/protection-groups/{pg}/plans/{type}", false, (*api).plan},
	{"POST", "/api/v1/protection-groups/{pg}/plans/{type}/run", true, (*api).run},
	{"GET", "/api/v1/protection-groups/{pg}/executions", false, (*api).executions},
	{"GET", "/api/v1/protection-groups/{pg}/executions/{id}", false, (*api).execution},
	{"GET", "/api/v1/protection-groups/{pg}/executions/{id}/report", false, (*api).report},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/approve", true, (*api).approve},
	{"POST", "/api/v1/protection-groups/{pg}/executions/{id}/cancel", true, (*api).cancel},
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
}

// addAPI adds the API's handlers to s.
func addAPI(ctx context.Context, s *member.Serving, env *member.Env) {
	a := &api{ctx: ctx, env: env, token: string(env.Cfg.Serve.Token), reads: env.Cfg.Serve.ProtectReads}
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

// planType is the request's protection group and plan type.
func (a *api) planType(r *http.Request) (*planEnv, string, error) {
	pe, err := a.pg(r)
	if err != nil {
		return nil, "", err
	}
	typ := r.PathValue("type")
	if !slices.Contains(config.PlanTypes, typ) {
		return nil, "", notFound("unknown plan type %q (%s)", typ, strings.Join(config.PlanTypes, ", "))
	}
	return pe, typ, nil
}

func (a *api) plan(w http.ResponseWriter, r *http.Request) error {
	pe, typ, err := a.planType(r)
	if err != nil {
		return err
	}
	p, err := member.PlanNow(r.Context(), a.env, pe.pg, typ)
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
	pe, typ, err := a.planType(r)
	if err != nil {
		return err
	}
	p, err := member.PlanNow(r.Context(), a.env, pe.pg, typ)
	if err != nil {
		return daemon.Error{Status: http.StatusConflict, Err: err}
	}
	ex, err := pe.executor(r.Context(), p.Home)
	if err != nil {
		return err
	}
	started := make(chan string, 1)
	also := ex.OnChange
	ex.OnChange = func(x *plan.Execution) {
		select {
		case started <- x.ID:
		default:
		}
		if also != nil {
			also(x)
		}
	}
	ended := make(chan error, 1)
	go func() {
		_, err := ex.Run(a.ctx, p, decided)
		ended <- err
	}()
	select {
	case id := <-started:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(map[string]any{"execution": id, "type": typ, "from": p.From, "to": p.To})
	case err := <-ended:
		if errors.Is(err, plan.ErrBusy) {
			return daemon.Error{Status: http.StatusConflict, Err: err}
		}
		if err == nil {
			err = errors.New("the run ended before it started")
		}
		return err
	}
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
	var page bytes.Buffer
	if err := writeReport(&page, x, a.env.Cfg); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err = w.Write(page.Bytes())
	return err
}

// stepBody is the optional body of approve: the step, else every waiting
// one.
type stepBody struct {
	Step string `json:"step"`
	By   string `json:"by"`
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
	_, ex, x, err := a.find(r)
	if err != nil {
		return err
	}
	b, err := readStep(r)
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
	return daemon.WriteJSON(w, map[string]any{"execution": x.ID, "approved": orDefault(b.Step, "every waiting step")})
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
