package tablegroup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"tandem/internal/delta"
	"tandem/internal/objstore"
	"tandem/internal/state"
)

// ErrRunRecut: a run already completed with other versions; a run is cut
// once.
var ErrRunRecut = errors.New("the run was already completed")

// keepRuns is how many completed runs are remembered (runs/).
const keepRuns = 200

// Complete records that a workflow run finished. The cut is each table's
// version at the run's end: with a RunIDRule, the run's own last commit
// (so a next run that already started is never included); without one,
// the latest version now, so it must run as the workflow's last task,
// before the next run starts. A run is cut once: completing it again with
// the same versions is a no-op, with other versions it is refused
// (ErrRunRecut). Versions never go backwards.
func (g *Group) Complete(ctx context.Context, runID string) (Cut, error) {
	if runID == "" {
		return Cut{}, fmt.Errorf("group %s: a run id is required", g.Name)
	}
	guard := g.guard("complete " + runID)
	if err := guard.Check(ctx); err != nil {
		return Cut{}, err
	}
	st := guard.Store(g.State)
	prev, _, err := g.LastCompleted(ctx)
	if err != nil {
		return Cut{}, err
	}
	cut, err := g.runCut(ctx, runID, prev)
	if err != nil {
		return Cut{}, err
	}
	// A run is cut once: the last completed run, or one remembered in runs/.
	record := runRecord(runID)
	for {
		var last Cut
		etag, err := st.Load(ctx, "completed.json", &last)
		if err != nil && !errors.Is(err, objstore.ErrNotExist) {
			return Cut{}, err
		}
		if last.RunID == runID {
			return last, sameCut(g.Name, last, cut)
		}
		var done Cut
		if _, err := st.Load(ctx, record, &done); err == nil {
			return done, sameCut(g.Name, done, cut)
		} else if !errors.Is(err, objstore.ErrNotExist) {
			return Cut{}, err
		}
		for table, v := range last.Versions {
			if cut.Versions[table] < v {
				return Cut{}, fmt.Errorf("group %s: table %s is at version %d, older than run %s recorded (%d): was the table restored or replaced?",
					g.Name, table, cut.Versions[table], last.RunID, v)
			}
		}
		_, err = st.Save(ctx, "completed.json", cut, objstore.PutOptions{IfMatch: etag, IfAbsent: etag == ""})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue // another completion landed first: check again
		}
		if err != nil {
			return Cut{}, err
		}
		if _, err := st.Save(ctx, record, cut, objstore.PutOptions{}); err != nil {
			return Cut{}, err
		}
		pruneRuns(context.WithoutCancel(ctx), st)
		return cut, nil
	}
}

// LastCompleted is the newest completed run recorded (ok is false before
// the first).
func (g *Group) LastCompleted(ctx context.Context) (Cut, bool, error) {
	var c Cut
	_, err := g.State.Load(ctx, "completed.json", &c)
	if errors.Is(err, objstore.ErrNotExist) {
		return Cut{}, false, nil
	}
	return c, err == nil, err
}

func runRecord(runID string) string { return "runs/" + url.PathEscape(runID) + ".json" }

func sameCut(group string, done, now Cut) error {
	if maps.Equal(done.Versions, now.Versions) {
		return nil
	}
	return fmt.Errorf("group %s: %w: run %s was cut at %s on %s, and would now be cut at %s; a run is cut once: report the next run under its own id",
		group, ErrRunRecut, done.RunID, versionList(done.Versions), done.Time.Format(time.RFC3339), versionList(now.Versions))
}

func versionList(v map[string]int64) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(v)) {
		parts = append(parts, fmt.Sprintf("%s@%d", n, v[n]))
	}
	return strings.Join(parts, ", ")
}

// runCut is the cut of run runID: every table's latest version, or with a
// RunIDRule the run's own last commit in each table after the previous
// cut (a table the run did not write stays where it was before the next
// run's first commit).
func (g *Group) runCut(ctx context.Context, runID string, prev Cut) (Cut, error) {
	if g.RunIDRule == "" {
		cut, err := g.latest(ctx)
		cut.RunID, cut.Rule = runID, "push"
		return cut, err
	}
	cut := Cut{RunID: runID, Versions: map[string]int64{}, Time: time.Now().UTC(), Rule: "push:" + g.RunIDRule}
	for _, t := range g.Tables {
		tb, from, ok, err := g.since(ctx, t, prev.Versions)
		if err != nil {
			return Cut{}, err
		}
		own, beforeOther := int64(-1), tb.Log.Latest
		for v := from + 1; v <= tb.Log.Latest; v++ {
			if _, ok := tb.Log.Commit(v); !ok {
				continue
			}
			actions, err := tb.CommitActions(ctx, v)
			if err != nil {
				return Cut{}, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
			}
			ids := RunIDs(actions, g.RunIDRule)
			switch {
			case slices.Contains(ids, runID):
				own = v
			case len(ids) > 0 && own < 0 && beforeOther == tb.Log.Latest:
				beforeOther = v - 1 // another run's commit before any of this run's
			}
		}
		switch {
		case own >= 0:
			cut.Versions[t.Name] = own
		case ok:
			cut.Versions[t.Name] = from
		default:
			cut.Versions[t.Name] = beforeOther
		}
		if cut.Versions[t.Name] < 0 {
			return Cut{}, fmt.Errorf("group %s: %w: table %s has no commit before run %s ended", g.Name, ErrNoCompletedRun, t.Name, runID)
		}
	}
	return cut, nil
}

// since opens a table's source log and returns the version a cut reads
// from: the previous cut's (ok), or the one before the oldest in the log.
func (g *Group) since(ctx context.Context, t Table, prev map[string]int64) (tb *delta.Table, from int64, ok bool, err error) {
	tb, err = delta.Open(ctx, t.Source)
	if err != nil {
		return nil, 0, false, fmt.Errorf("group %s, table %s: source: %w", g.Name, t.Name, err)
	}
	from, ok = prev[t.Name]
	if !ok {
		from = tb.Log.Oldest - 1
	}
	return tb, from, ok, nil
}

// RunIDs are the run ids a commit names under rule: job (commitInfo.job's
// jobRunId and runId), txn (every txn action's appId), txn:APP (the
// version of APP's txn action), user_metadata (commitInfo.userMetadata, or
// its run_id when it is a JSON object).
func RunIDs(actions []delta.Action, rule string) []string {
	var out []string
	app, byVersion := strings.CutPrefix(rule, "txn:")
	for _, a := range actions {
		switch {
		case a.CommitInfo != nil && rule == "job" && a.CommitInfo.Job != nil:
			for _, id := range []string{string(a.CommitInfo.Job.JobRunID), string(a.CommitInfo.Job.RunID)} {
				if id != "" {
					out = append(out, id)
				}
			}
		case a.CommitInfo != nil && rule == "user_metadata" && a.CommitInfo.UserMetadata != "":
			var m struct {
				RunID json.RawMessage `json:"run_id"`
			}
			um := a.CommitInfo.UserMetadata
			if json.Unmarshal([]byte(um), &m) == nil && len(m.RunID) > 0 {
				var id string
				if json.Unmarshal(m.RunID, &id) != nil {
					id = string(m.RunID) // a number
				}
				out = append(out, id)
			} else {
				out = append(out, um)
			}
		case a.Txn != nil && rule == "txn":
			out = append(out, a.Txn.AppID)
		case a.Txn != nil && byVersion && a.Txn.AppID == app:
			out = append(out, strconv.FormatInt(a.Txn.Version, 10))
		}
	}
	return out
}

func pruneRuns(ctx context.Context, st state.Store) {
	var keys []string
	for info, err := range st.Bucket.List(ctx, st.Key("runs/")) {
		if err != nil {
			return
		}
		keys = append(keys, info.Key)
	}
	if len(keys) <= keepRuns {
		return
	}
	// Oldest first by modification time: run ids need not sort.
	type rec struct {
		key string
		t   time.Time
	}
	var all []rec
	for _, k := range keys {
		if info, err := st.Bucket.Stat(ctx, k); err == nil {
			all = append(all, rec{k, info.ModTime})
		}
	}
	slices.SortFunc(all, func(a, b rec) int { return a.t.Compare(b.t) })
	for _, r := range all[:max(0, len(all)-keepRuns)] {
		st.Bucket.Delete(ctx, r.key)
	}
}

// Latest is a table's latest version (-1 when it has no log yet).
func Latest(ctx context.Context, table objstore.Bucket) (int64, error) {
	l, err := delta.ListLog(ctx, table)
	if errors.Is(err, delta.ErrNotDeltaTable) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	return l.Latest, nil
}
