package autofail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"tandem/internal/alert"
	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/health"
	"tandem/internal/member"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/state"
)

// PracticeRecord is a protection group's last practice run, kept in the
// witness (practice/<pg>.json).
type PracticeRecord struct {
	At         time.Time `json:"at"`
	Standby    string    `json:"standby"`
	DrillStart string    `json:"drill_start"` // execution id and state
	Checks     []string  `json:"checks"`      // the standby's health checks during the drill
	DrillStop  string    `json:"drill_stop"`
	Outcome    string    `json:"outcome"` // succeeded, or what failed
}

func practices(w state.Store) state.Store { return w.Sub("practice") }

// LoadPractice reads pg's last practice run; a missing one is zero.
func LoadPractice(ctx context.Context, env *member.Env, pg string) (PracticeRecord, error) {
	var r PracticeRecord
	w, err := env.Witness(ctx)
	if err != nil {
		return r, err
	}
	if _, err := practices(w).Load(ctx, pg+".json", &r); err != nil && !errors.Is(err, objstore.ErrNotExist) {
		return r, err
	}
	return r, nil
}

// Practice adds, for every protection group of region with a practice
// schedule, a task that runs its drill when one is due: from the region
// the lease names as standby, every Every, within the window.
func Practice(s *member.Serving, region string) {
	for i := range s.Env.Cfg.ProtectionGroups {
		pg := &s.Env.Cfg.ProtectionGroups[i]
		if pg.Practice == nil || (region != pg.Primary && region != pg.Standby) {
			continue
		}
		p := &practice{s: s, pg: pg, region: region, log: s.Env.Log.With("group", pg.Name, "region", region), alerts: alert.New(pg, s.Env.Log)}
		interval := min(10*time.Second, max(time.Second, time.Duration(pg.Practice.Every)/10))
		s.Task(daemon.Task{Name: "practice/" + pg.Name, Interval: interval, NotReady: true, Run: p.round})
	}
}

type practice struct {
	s      *member.Serving
	pg     *config.ProtectionGroup
	region string
	log    *slog.Logger
	alerts *alert.Alerts
}

func (p *practice) round(ctx context.Context) time.Duration {
	env := p.s.Env
	rec, ok, err := env.Lease(ctx, p.pg.Name)
	if err != nil || !ok || rec.Standby != p.region || rec.Expired(time.Now()) {
		return 0 // the standby's serve practices, while a primary holds the lease
	}
	last, err := LoadPractice(ctx, env, p.pg.Name)
	if err != nil {
		p.log.Error("practice: read its record in the witness", "err", err)
		return 0
	}
	now := time.Now()
	if !last.At.IsZero() && now.Sub(last.At) < time.Duration(p.pg.Practice.Every) {
		return 0
	}
	if w := p.pg.Practice.Window; w != nil && !w.Contains(now) {
		return 0
	}
	p.run(ctx, rec.Holder)
	return 0
}

// run drills the standby: drill-start, its health checks, drill-stop.
func (p *practice) run(ctx context.Context, primary string) {
	env := p.s.Env
	r := PracticeRecord{At: time.Now().UTC(), Standby: p.region}
	// Record first: a serve that dies during the drill does not start
	// another one at once; status shows the drill it left.
	r.Outcome = "running"
	if err := p.save(ctx, r); err != nil {
		p.log.Error("practice: record it in the witness", "err", err)
		return
	}
	p.log.Info("practice: a scheduled drill of the standby starts")
	started, err := p.plan(ctx, plan.DrillStart)
	r.DrillStart = started
	if err == nil {
		if reg := env.Cfg.Region(p.region); reg != nil && len(reg.Health.Checks) > 0 {
			rep := health.New(p.region, reg.Health, env).RunOnce(ctx)
			for _, c := range rep.Checks {
				mark := "ok"
				if !c.Last.OK {
					mark, err = "FAILED", errors.Join(err, fmt.Errorf("check %s: %s", c.Name, c.Last.Detail))
				}
				r.Checks = append(r.Checks, fmt.Sprintf("%s %s: %s", mark, c.Name, c.Last.Detail))
			}
		}
	}
	// Stop the drill whatever happened, if it started.
	stopped, serr := p.plan(ctx, plan.DrillStop)
	r.DrillStop = stopped
	err = errors.Join(err, serr)
	r.Outcome = "succeeded"
	status := "succeeded"
	if err != nil {
		r.Outcome, status = "failed: "+err.Error(), "failed"
	}
	if serr := p.save(context.WithoutCancel(ctx), r); serr != nil {
		p.log.Error("practice: record its outcome in the witness", "err", serr)
	}
	summary := fmt.Sprintf("practice drill of %s (standby %s, primary %s): %s; drill-start %s, drill-stop %s; checks: %s",
		p.pg.Name, p.region, primary, r.Outcome, r.DrillStart, r.DrillStop, strings.Join(r.Checks, "; "))
	if err != nil {
		p.log.Error("practice: the drill failed", "outcome", r.Outcome)
	} else {
		p.log.Info("practice: the drill succeeded")
	}
	p.alerts.Tell(ctx, "practice", status, summary, map[string]any{"drill_start": r.DrillStart, "drill_stop": r.DrillStop, "checks": r.Checks})
}

// plan runs a plan of typ through the durable executor and says how it
// ended ("ID state").
func (p *practice) plan(ctx context.Context, typ string) (string, error) {
	x, err := runPlan(ctx, p.s.Env, p.pg, typ, time.Now(), p.log, nil)
	if x == nil {
		return "not run", err
	}
	return x.ID + " " + x.State, err
}

func (p *practice) save(ctx context.Context, r PracticeRecord) error {
	w, err := p.s.Env.Witness(ctx)
	if err != nil {
		return err
	}
	_, err = practices(w).Save(ctx, p.pg.Name+".json", r, objstore.PutOptions{})
	return err
}
