package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"tandem/internal/daemon"
	"tandem/internal/member"
	"tandem/internal/plan"
)

// rpoHistory is what serve keeps of every member's lag, sampled every
// serve.rpo_every, for the dashboard's chart: in memory, an hour's worth
// per protection group (a restarted serve starts a new history).
type rpoHistory struct {
	env   *member.Env
	every time.Duration
	keep  int
	mu    sync.Mutex
	by    map[string][]rpoSample
}

type rpoSample struct {
	At   time.Time
	Lags []plan.MemberRPO
}

func newRPOHistory(env *member.Env) *rpoHistory {
	every := time.Duration(env.Cfg.Serve.RPOEvery)
	return &rpoHistory{env: env, every: every, keep: max(int(time.Hour/every), 2), by: map[string][]rpoSample{}}
}

func (h *rpoHistory) task() daemon.Task {
	return daemon.Task{Name: "rpo-history", Interval: h.every, NotReady: true, Run: h.round}
}

// round samples every protection group's members once.
func (h *rpoHistory) round(ctx context.Context) time.Duration {
	for i := range h.env.Cfg.ProtectionGroups {
		pg := &h.env.Cfg.ProtectionGroups[i]
		s := rpoSample{At: time.Now().UTC(), Lags: member.Lags(ctx, h.env, pg)}
		if ctx.Err() != nil {
			return 0
		}
		h.mu.Lock()
		all := append(h.by[pg.Name], s)
		if len(all) > h.keep {
			all = all[len(all)-h.keep:]
		}
		h.by[pg.Name] = all
		h.mu.Unlock()
	}
	return 0
}

// rpoPoint is one sample of one member.
type rpoPoint struct {
	At    time.Time `json:"at"`
	Lag   float64   `json:"lag"`
	Known bool      `json:"known"`
}

type rpoMember struct {
	plan.MemberRPO
	History []rpoPoint `json:"history"`
}

// rpo answers each member's latest lag against its target, with the
// samples serve kept.
func (a *api) rpo(w http.ResponseWriter, r *http.Request) error {
	pe, err := a.pg(r)
	if err != nil {
		return err
	}
	a.lags.mu.Lock()
	samples := a.lags.by[pe.pg.Name]
	a.lags.mu.Unlock()
	var members []*rpoMember
	index := map[string]*rpoMember{}
	for _, s := range samples {
		for _, l := range s.Lags {
			m := index[l.Member]
			if m == nil {
				m = &rpoMember{}
				index[l.Member] = m
				members = append(members, m)
			}
			m.MemberRPO = l // the latest
			m.History = append(m.History, rpoPoint{At: s.At, Lag: l.Lag, Known: l.Known})
		}
	}
	out := map[string]any{"protection_group": pe.pg.Name, "every_seconds": a.lags.every.Seconds(), "members": members}
	if len(samples) > 0 {
		out["sampled"] = samples[len(samples)-1].At
	}
	return daemon.WriteJSON(w, out)
}
