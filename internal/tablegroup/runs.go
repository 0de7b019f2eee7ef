package tablegroup

import (
	"context"
	"fmt"
	"time"

	"tandem/internal/delta"
)

// Run is one run of the workflow that writes a group's tables.
type Run struct {
	ID     string
	Start  time.Time
	End    time.Time // zero while running
	Status string    // success, failed, running
}

// RunSource lists the workflow's recent runs (a job scheduler's API).
type RunSource interface {
	Runs(ctx context.Context) ([]Run, error)
}

// cutFromRuns cuts every table at the end of the last successful run R:
// the newest version whose commits were all made by runs that ended by R's
// end (R itself, earlier runs, and failed runs that R built on), or, when
// no run can be found for a commit, were made no later than R's end.
// Commits of a run in flight, or of any run that ended after R, are left
// for a later cut. A commit is attributed by commitInfo.job (the job run
// id, else the task run id); without one, by its in-commit timestamp or,
// failing that, the log file's time, against the runs' start and end. The
// time rule is the weaker one and the cut says when it was used.
func (g *Group) cutFromRuns(ctx context.Context) (Cut, error) {
	runs, err := g.Runs.Runs(ctx)
	if err != nil {
		return Cut{}, fmt.Errorf("group %s: list workflow runs: %w", g.Name, err)
	}
	byID := map[string]Run{}
	var last Run
	for _, r := range runs {
		byID[r.ID] = r
		if r.Status == "success" && r.End.After(last.End) {
			last = r
		}
	}
	if last.ID == "" {
		return Cut{}, fmt.Errorf("group %s: %w among the %d runs the scheduler lists", g.Name, ErrNoCompletedRun, len(runs))
	}
	prev, _, _, err := LoadManifest(ctx, g.State)
	if err != nil {
		return Cut{}, err
	}
	cut := Cut{RunID: last.ID, Versions: map[string]int64{}, Time: last.End, Rule: "runs:id"}
	for _, t := range g.Tables {
		tb, from, _, err := g.since(ctx, t, prev.Versions)
		if err != nil {
			return Cut{}, err
		}
		v := from
		for next := from + 1; next <= tb.Log.Latest; next++ {
			f, ok := tb.Log.Commit(next)
			if !ok {
				break
			}
			actions, err := tb.CommitActions(ctx, next)
			if err != nil {
				return Cut{}, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
			}
			run, when, found := attribute(actions, f, byID, runs)
			if !when.IsZero() {
				cut.Rule = "runs:time"
			}
			if found && (run.End.IsZero() || run.End.After(last.End)) || !found && when.After(last.End) {
				break // in flight, or after the last successful run
			}
			v = next
		}
		if v < 0 {
			return Cut{}, fmt.Errorf("group %s: %w: table %s has no commit made by run %s's end", g.Name, ErrNoCompletedRun, t.Name, last.ID)
		}
		cut.Versions[t.Name] = v
	}
	return cut, nil
}

// attribute finds the run that made a commit. when is the commit's time
// when the run was found by time, or no run was found; it is zero when the
// run was found by id.
func attribute(actions []delta.Action, f delta.LogFile, byID map[string]Run, runs []Run) (run Run, when time.Time, found bool) {
	for _, a := range actions {
		ci := a.CommitInfo
		if ci == nil {
			continue
		}
		if ci.Job != nil {
			for _, id := range []string{string(ci.Job.JobRunID), string(ci.Job.RunID)} {
				if r, ok := byID[id]; ok && id != "" {
					return r, time.Time{}, true
				}
			}
		}
		if ci.InCommitTimestamp != nil {
			when = time.UnixMilli(*ci.InCommitTimestamp)
		}
	}
	if when.IsZero() {
		when = f.ModTime
	}
	for _, r := range runs {
		if !when.Before(r.Start) && (r.End.IsZero() || !when.After(r.End)) {
			return r, when, true
		}
	}
	return Run{}, when, false
}
