package tablegroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/runner"
	"tandem/internal/state"
)

// Attempt is the record of one group sync attempt, kept in the standby
// region under attempts/.
type Attempt struct {
	ID       string    `json:"id"`
	Group    string    `json:"group"`
	Reason   string    `json:"reason"` // schedule, retry, manual, plan ...
	Status   string    `json:"status"` // running, succeeded, unchanged, failed, interrupted
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	By       string    `json:"by"`
	// Runner beats while the attempt runs: a running attempt whose runner
	// is not live was interrupted (see Interrupted).
	Runner *runner.Runner `json:"runner,omitempty"`
	// Epoch of the region lease the attempt wrote under.
	Epoch    int64            `json:"epoch,omitempty"`
	RunID    string           `json:"run_id,omitempty"`
	Versions map[string]int64 `json:"versions,omitempty"`
	Files    int64            `json:"files_copied"`
	Bytes    int64            `json:"bytes_copied"`
	// Seconds per phase: plan, data, log (summed over tables), and total.
	PlanSeconds float64 `json:"plan_seconds"`
	DataSeconds float64 `json:"data_seconds"`
	LogSeconds  float64 `json:"log_seconds"`
	Seconds     float64 `json:"seconds"`
	Error       string  `json:"error,omitempty"`
}

// keepAttempts is how many attempt records stay in the standby.
const keepAttempts = 200

// SyncRecorded runs Sync and records the attempt as it starts, while it
// runs (a heartbeat) and when it ends. Attempts a crashed process left
// "running" are first marked interrupted, so no record stays in progress.
// The records are written through the sync's guard: a fenced sync leaves
// none in the standby.
func (g *Group) SyncRecorded(ctx context.Context, reason string) (Attempt, Result, error) {
	guard := g.guard("sync")
	if err := guard.Check(ctx); err != nil {
		return Attempt{}, Result{}, err
	}
	st := guard.Store(g.State)
	if err := g.resolveInterrupted(ctx, st); err != nil {
		return Attempt{}, Result{}, err
	}
	host, _ := os.Hostname()
	start := time.Now().UTC()
	a := Attempt{
		ID: start.Format("20060102T150405.000000000Z"), Group: g.Name, Reason: reason,
		Status: "running", Started: start, By: fmt.Sprintf("%s (pid %d)", host, os.Getpid()),
		Runner: runner.Self(), Epoch: guard.Epoch(),
	}
	name := "attempts/" + a.ID + ".json"
	if _, err := st.Save(ctx, name, a, objstore.PutOptions{IfAbsent: true}); err != nil {
		return a, Result{}, err
	}
	var mu sync.Mutex
	stop := runner.Beat(ctx, func(ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		a.Runner.Beat = time.Now().UTC()
		if _, err := st.Save(ctx, name, a, objstore.PutOptions{}); err != nil && ctx.Err() == nil && g.Log != nil {
			g.Log.Warn("heartbeat of the group sync", "group", g.Name, "err", err)
		}
	})
	res, err := g.sync(ctx, guard)
	stop()
	a.Finished = time.Now().UTC()
	a.Seconds = a.Finished.Sub(a.Started).Seconds()
	a.RunID, a.Versions, a.Runner = res.Manifest.RunID, res.Manifest.Versions, nil
	for _, t := range res.Tables {
		a.Files += t.Files
		a.Bytes += t.Bytes + t.LogBytes
		a.PlanSeconds += t.PlanSeconds
		a.DataSeconds += t.DataSeconds
		a.LogSeconds += t.LogSeconds
	}
	switch {
	case err != nil:
		a.Status, a.Error = "failed", err.Error()
	case res.Unchanged:
		a.Status = "unchanged"
	default:
		a.Status = "succeeded"
	}
	// Record the end even if the caller's context was canceled.
	if _, serr := st.Save(context.WithoutCancel(ctx), name, a, objstore.PutOptions{}); serr != nil && err == nil {
		err = serr
	}
	st.Prune(context.WithoutCancel(ctx), "attempts", keepAttempts)
	return a, res, err
}

// Interrupted reports whether a running attempt's process is gone: it
// shows as interrupted in status at once.
func (a Attempt) Interrupted() bool {
	return a.Status == "running" && !runner.Live(a.Runner)
}

// Attempts returns the recorded attempts, newest first. A record that
// cannot be read is reported in corrupt (its key and why) and skipped: it
// never blocks later syncs.
func (g *Group) Attempts(ctx context.Context) (out []Attempt, corrupt []string, err error) {
	for info, err := range g.State.Bucket.List(ctx, g.State.Key("attempts/")) {
		if err != nil {
			return nil, corrupt, err
		}
		var a Attempt
		if _, err := g.State.Load(ctx, strings.TrimPrefix(info.Key, g.State.Prefix), &a); err != nil {
			if errors.Is(err, objstore.ErrNotExist) {
				continue
			}
			corrupt = append(corrupt, err.Error())
			continue
		}
		out = append(out, a)
	}
	slices.Reverse(out) // ids sort by start time
	return out, corrupt, nil
}

func (g *Group) resolveInterrupted(ctx context.Context, st state.Store) error {
	all, corrupt, err := g.Attempts(ctx)
	if err != nil {
		return err
	}
	for _, c := range corrupt {
		if g.Log != nil {
			g.Log.Warn("skipped an attempt record that cannot be read", "group", g.Name, "err", c)
		}
	}
	for _, a := range all {
		if a.Status != "running" || runner.Live(a.Runner) {
			continue
		}
		a.Status, a.Runner = "interrupted", nil
		a.Finished = time.Now().UTC()
		a.Error = "the process stopped before the attempt ended; the manifest of the last complete sync stayed in force"
		if _, err := st.Save(ctx, "attempts/"+a.ID+".json", a, objstore.PutOptions{}); err != nil {
			return err
		}
	}
	return nil
}
