package tablegroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"tandem/internal/objstore"
)

// Attempt is the record of one group sync attempt, kept in the standby
// region under attempts/.
type Attempt struct {
	ID       string           `json:"id"`
	Group    string           `json:"group"`
	Reason   string           `json:"reason"` // schedule, retry, manual
	Status   string           `json:"status"` // running, succeeded, unchanged, failed, interrupted
	Started  time.Time        `json:"started"`
	Finished time.Time        `json:"finished,omitzero"`
	By       string           `json:"by"`
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

// SyncRecorded runs Sync and records the attempt as it starts and when it
// ends. Attempts a crashed process left "running" are first marked
// interrupted, so no record stays in progress.
func (g *Group) SyncRecorded(ctx context.Context, reason string) (Attempt, Result, error) {
	if err := g.resolveInterrupted(ctx); err != nil {
		return Attempt{}, Result{}, err
	}
	host, _ := os.Hostname()
	start := time.Now().UTC()
	a := Attempt{
		ID: start.Format("20060102T150405.000000000Z"), Group: g.Name, Reason: reason,
		Status: "running", Started: start, By: fmt.Sprintf("%s (pid %d)", host, os.Getpid()),
	}
	name := "attempts/" + a.ID + ".json"
	if _, err := g.State.Save(ctx, name, a, objstore.PutOptions{IfAbsent: true}); err != nil {
		return a, Result{}, err
	}
	res, err := g.Sync(ctx)
	a.Finished = time.Now().UTC()
	a.Seconds = a.Finished.Sub(a.Started).Seconds()
	a.RunID, a.Versions = res.Manifest.RunID, res.Manifest.Versions
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
	if _, serr := g.State.Save(context.WithoutCancel(ctx), name, a, objstore.PutOptions{}); serr != nil && err == nil {
		err = serr
	}
	g.pruneAttempts(context.WithoutCancel(ctx))
	return a, res, err
}

// Attempts returns the recorded attempts, newest first.
func (g *Group) Attempts(ctx context.Context) ([]Attempt, error) {
	var out []Attempt
	for info, err := range g.State.Bucket.List(ctx, g.State.Key("attempts/")) {
		if err != nil {
			return nil, err
		}
		var a Attempt
		if _, err := g.State.Load(ctx, strings.TrimPrefix(info.Key, g.State.Prefix), &a); err != nil {
			if errors.Is(err, objstore.ErrNotExist) {
				continue
			}
			return nil, err
		}
		out = append(out, a)
	}
	slices.Reverse(out) // ids sort by start time
	return out, nil
}

func (g *Group) resolveInterrupted(ctx context.Context) error {
	all, err := g.Attempts(ctx)
	if err != nil {
		return err
	}
	for _, a := range all {
		if a.Status != "running" {
			continue
		}
		a.Status = "interrupted"
		a.Finished = time.Now().UTC()
		a.Error = "the process stopped before the attempt ended; the manifest of the last complete sync stayed in force"
		if _, err := g.State.Save(ctx, "attempts/"+a.ID+".json", a, objstore.PutOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func (g *Group) pruneAttempts(ctx context.Context) {
	var keys []string
	for info, err := range g.State.Bucket.List(ctx, g.State.Key("attempts/")) {
		if err != nil {
			return
		}
		keys = append(keys, info.Key)
	}
	for len(keys) > keepAttempts {
		g.State.Bucket.Delete(ctx, keys[0])
		keys = keys[1:]
	}
}
