// Package alert tells a person what they must know about a protection
// group, through its notifiers (protection_groups[].notify: a webhook,
// email): a condition (a region down, a late or failing member, an
// automatic-failover decision withheld) is told once when it starts and
// once, resolved, when it ends, however many rounds see it meanwhile; an
// event (a plan run started, waiting for approval, failed, finished with
// its RTO; the lease changing hands) is told once.
//
// What is open is kept in the process: a serve that restarts tells a
// condition that still lasts once more.
package alert

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"tandem/internal/config"
	"tandem/internal/notify"
	"tandem/internal/plan"
)

// Alerts is one protection group's alerts from one process.
type Alerts struct {
	pg  string
	n   notify.Notifier
	log *slog.Logger

	mu   sync.Mutex
	open map[string]notify.Event
}

// New returns pg's alerts, or nil when pg has no notify setting (every
// method of a nil Alerts does nothing).
func New(pg *config.ProtectionGroup, log *slog.Logger) *Alerts {
	n, _ := notify.FromConfig(pg.Notify)
	if n == nil {
		return nil
	}
	return &Alerts{pg: pg.Name, n: n, log: log, open: map[string]notify.Event{}}
}

// Raise tells that condition key holds (kind, summary, details), unless it
// was told already and has not been resolved since.
func (a *Alerts) Raise(ctx context.Context, key, kind, summary string, details map[string]any) {
	if a == nil {
		return
	}
	a.mu.Lock()
	_, told := a.open[key]
	e := a.event(kind, "firing", summary, details)
	if !told {
		a.open[key] = e
	}
	a.mu.Unlock()
	if !told {
		a.send(ctx, e)
	}
}

// Resolve tells that condition key ended, if it was told.
func (a *Alerts) Resolve(ctx context.Context, key, summary string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	was, told := a.open[key]
	delete(a.open, key)
	a.mu.Unlock()
	if told {
		a.send(ctx, a.event(was.Kind, "resolved", summary, was.Details))
	}
}

// Tell tells an event once.
func (a *Alerts) Tell(ctx context.Context, kind, status, summary string, details map[string]any) {
	if a == nil {
		return
	}
	a.send(ctx, a.event(kind, status, summary, details))
}

func (a *Alerts) event(kind, status, summary string, details map[string]any) notify.Event {
	return notify.Event{Kind: kind, Status: status, Group: a.pg, Summary: summary, Time: time.Now().UTC(), Details: details}
}

// sendTimeout bounds one delivery: alerts are sent in line (a plan run's
// own, from its executor), so a notifier that does not answer costs a run
// at most this per event (a run tells three or four).
const sendTimeout = 5 * time.Second

func (a *Alerts) send(ctx context.Context, e notify.Event) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
	defer cancel()
	if err := a.n.Notify(ctx, e); err != nil {
		a.log.Error("alert not delivered", "kind", e.Kind, "status", e.Status, "err", err)
	}
}

// Plan returns an OnChange for a plan executor that tells a run started,
// waiting for approval, failed and finished (with its RTO).
func (a *Alerts) Plan(ctx context.Context) func(*plan.Execution) {
	if a == nil {
		return func(*plan.Execution) {}
	}
	var (
		mu   sync.Mutex
		told = map[string]bool{}
	)
	once := func(key string) bool {
		mu.Lock()
		defer mu.Unlock()
		if told[key] {
			return false
		}
		told[key] = true
		return true
	}
	return func(x *plan.Execution) {
		details := map[string]any{"execution": x.ID, "type": x.Type, "from": x.From, "to": x.To}
		if x.Trigger != nil {
			details["trigger"] = x.Trigger.Reason
		}
		if once(x.ID + "/started") {
			a.Tell(ctx, "plan."+x.Type, "started", x.Type+" "+x.ID+" started: "+x.From+" -> "+x.To, details)
		}
		for _, g := range x.Groups {
			for _, s := range g.Steps {
				if s.State == plan.Waiting && once(x.ID+"/waiting/"+s.ID) {
					a.Tell(ctx, "plan."+x.Type, "waiting", x.Type+" "+x.ID+" waits for approval of "+s.ID, details)
				}
			}
		}
		switch {
		case x.State == plan.Succeeded && once(x.ID+"/end"):
			details["rto_seconds"] = x.RTO
			a.Tell(ctx, "plan."+x.Type, "succeeded", x.Type+" "+x.ID+" succeeded: "+x.To+" is primary", details)
		case (x.State == plan.Failed || x.State == plan.Canceled) && x.Ended != nil && once(x.ID+"/end"):
			details["error"] = x.Error
			a.Tell(ctx, "plan."+x.Type, x.State, x.Type+" "+x.ID+" "+x.State+": "+x.Error, details)
		}
	}
}
