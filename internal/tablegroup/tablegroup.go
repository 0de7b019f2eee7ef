// Package tablegroup keeps a group of Delta tables (a workflow's bronze,
// silver and gold) consistent in the standby region: all of them at the
// versions of one completed workflow run, never half a run. A group sync
// copies each table to its cut, then writes the group manifest by
// compare-and-swap in the standby region. The manifest is the only truth
// about what the standby holds; finalize makes every table exactly its
// manifest version at failover.
package tablegroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"tandem/internal/delta"
	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/progress"
	"tandem/internal/state"
	"tandem/internal/tablesync"
)

var (
	// ErrNoCompletedRun: a workflow group has no completed run to sync yet.
	ErrNoCompletedRun = errors.New("no completed workflow run recorded")
	// ErrFenced: the region lease no longer lets this tandem write.
	ErrFenced = fence.ErrFenced
)

// guard is the fence of one operation of the group: every write it makes
// (table files, commits, records) goes through it.
func (g *Group) guard(op string) *fence.Guard {
	return fence.New(fmt.Sprintf("group %s (%s)", g.Name, op), g.Conditions...)
}

// Table is one table of a group.
type Table struct {
	Name           string
	Source, Target objstore.Bucket
}

// Group is a set of tables copied as one unit.
type Group struct {
	Name   string
	Tables []Table
	// Workflow groups take their cut from completed runs: from Runs (a job
	// scheduler) when set, else from runs reported by Complete. Others
	// take the tables' latest versions at each sync.
	Workflow bool
	Runs     RunSource
	// RunIDRule says how commits name the run that made them (job, txn,
	// txn:APP, user_metadata; see RunIDs); with it, Complete cuts each
	// table at the completed run's own last commit.
	RunIDRule string
	// Conditions are what a write by this handle needs (for a sync: the
	// region lease held by the source region with the target as standby,
	// no drill in the target). Every operation writes through a fence.Guard
	// made of them, under the epoch it started with; nil: unfenced.
	Conditions []fence.Condition
	// State is the group's folder in the standby region's state location.
	State     state.Store
	Transfers int
	Log       *slog.Logger
	// Progress, when set, counts a sync's files across its tables.
	Progress *progress.Counters
}

// Cut is a version per table that together form one consistent state.
type Cut struct {
	RunID    string           `json:"run_id,omitempty"`
	Versions map[string]int64 `json:"versions"`
	Time     time.Time        `json:"time"`
	// Rule says how the cut was found: "push" (the workflow called
	// complete), "latest" (no workflow), "runs:id" (commits matched to the
	// scheduler's runs by run id), "runs:time" (some only by time).
	Rule string `json:"rule"`
}

// Manifest records what the standby holds: every table at its version of
// one cut.
type Manifest struct {
	Group    string           `json:"group"`
	RunID    string           `json:"run_id,omitempty"`
	Versions map[string]int64 `json:"versions"`
	CutTime  time.Time        `json:"cut_time"`
	Rule     string           `json:"rule"`
	Synced   time.Time        `json:"synced"`
	// Epoch of the region lease the sync ran under (0 without a protection
	// group).
	Epoch int64 `json:"epoch"`
}

// latest reads every table's latest version in the source.
func (g *Group) latest(ctx context.Context) (Cut, error) {
	cut := Cut{Versions: map[string]int64{}, Time: time.Now().UTC(), Rule: "latest"}
	for _, t := range g.Tables {
		l, err := delta.ListLog(ctx, t.Source)
		if err != nil {
			return Cut{}, fmt.Errorf("group %s, table %s: source: %w", g.Name, t.Name, err)
		}
		cut.Versions[t.Name] = l.Latest
	}
	return cut, nil
}

// CurrentCut is the cut a sync would copy now.
func (g *Group) CurrentCut(ctx context.Context) (Cut, error) {
	if !g.Workflow {
		return g.latest(ctx)
	}
	if g.Runs != nil {
		return g.cutFromRuns(ctx)
	}
	var cut Cut
	if _, err := g.State.Load(ctx, "completed.json", &cut); errors.Is(err, objstore.ErrNotExist) {
		return Cut{}, fmt.Errorf("group %s: %w: the workflow's last task runs 'tandem group complete'", g.Name, ErrNoCompletedRun)
	} else if err != nil {
		return Cut{}, err
	}
	return cut, nil
}

// LoadManifest reads the group's manifest; ok is false before the first
// sync.
func LoadManifest(ctx context.Context, st state.Store) (m Manifest, etag string, ok bool, err error) {
	etag, err = st.Load(ctx, "manifest.json", &m)
	if errors.Is(err, objstore.ErrNotExist) {
		return Manifest{}, "", false, nil
	}
	return m, etag, err == nil, err
}

// Result is what a group sync did.
type Result struct {
	Group    string                      `json:"group"`
	Manifest Manifest                    `json:"manifest"`
	Tables   map[string]tablesync.Result `json:"tables"`
	Seconds  float64                     `json:"seconds"`
	// Unchanged: the cut was already the manifest; nothing was copied.
	Unchanged bool `json:"unchanged"`
}

// Sync copies every table to the current cut, then writes the manifest.
// A sync interrupted before the manifest leaves the previous manifest in
// force (finalize restores the tables to it).
func (g *Group) Sync(ctx context.Context) (Result, error) {
	return g.sync(ctx, g.guard("sync"))
}

func (g *Group) sync(ctx context.Context, guard *fence.Guard) (Result, error) {
	start := time.Now()
	res := Result{Group: g.Name, Tables: map[string]tablesync.Result{}}
	if err := guard.Check(ctx); err != nil {
		return res, err
	}
	cut, err := g.CurrentCut(ctx)
	if err != nil {
		return res, err
	}
	prev, etag, ok, err := LoadManifest(ctx, g.State)
	if err != nil {
		return res, err
	}
	if ok && prev.RunID == cut.RunID && maps.Equal(prev.Versions, cut.Versions) {
		res.Manifest, res.Unchanged = prev, true
		return res, nil
	}
	if g.Progress != nil {
		g.Progress.Reset()
	}
	for i, t := range g.Tables {
		v, ok := cut.Versions[t.Name]
		if !ok {
			return res, fmt.Errorf("group %s: the cut of run %s has no version for table %s (was it added to the group after the run?)", g.Name, cut.RunID, t.Name)
		}
		s := &tablesync.Sync{Source: t.Source, Target: guard.Bucket(t.Target), Transfers: g.Transfers, Log: g.Log,
			Progress: g.Progress, More: i < len(g.Tables)-1}
		r, err := s.Run(ctx, v)
		if err != nil {
			return res, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
		}
		res.Tables[t.Name] = r
	}
	// Publish only under the epoch the sync started with.
	if err := guard.Check(ctx); err != nil {
		return res, err
	}
	m := Manifest{Group: g.Name, RunID: cut.RunID, Versions: cut.Versions, CutTime: cut.Time, Rule: cut.Rule, Synced: time.Now().UTC(), Epoch: guard.Epoch()}
	if _, err := guard.Store(g.State).Save(ctx, "manifest.json", m, objstore.PutOptions{IfMatch: etag, IfAbsent: etag == ""}); err != nil {
		if errors.Is(err, objstore.ErrPrecondition) {
			return res, fmt.Errorf("group %s: another tandem wrote the manifest during this sync: %w", g.Name, err)
		}
		return res, err
	}
	res.Manifest = m
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// Planned is what a group sync would do now (a dry run): the cut it would
// copy, the manifest in force, and per table what it would copy.
type Planned struct {
	Group     string                           `json:"group"`
	Cut       Cut                              `json:"cut"`
	Manifest  *Manifest                        `json:"manifest,omitempty"`
	Unchanged bool                             `json:"unchanged"`
	Tables    map[string]tablesync.PlanSummary `json:"tables,omitempty"`
}

// Plan reports what Sync would copy now, reading both regions and writing
// nothing.
func (g *Group) Plan(ctx context.Context) (Planned, error) {
	out := Planned{Group: g.Name}
	cut, err := g.CurrentCut(ctx)
	if err != nil {
		return out, err
	}
	out.Cut = cut
	prev, _, ok, err := LoadManifest(ctx, g.State)
	if err != nil {
		return out, err
	}
	if ok {
		out.Manifest = &prev
		if prev.RunID == cut.RunID && maps.Equal(prev.Versions, cut.Versions) {
			out.Unchanged = true
			return out, nil
		}
	}
	out.Tables = map[string]tablesync.PlanSummary{}
	for _, t := range g.Tables {
		v, ok := cut.Versions[t.Name]
		if !ok {
			return out, fmt.Errorf("group %s: the cut of run %s has no version for table %s", g.Name, cut.RunID, t.Name)
		}
		ps, err := tablesync.Plan(ctx, t.Source, t.Target, v)
		if err != nil {
			return out, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
		}
		out.Tables[t.Name] = ps
	}
	return out, nil
}

// Seed makes m the group's manifest and last completed run, replacing what
// the records held. A switchover calls it for the direction that starts
// running: the new standby's tables are exactly m (the last sync before the
// handover copied them), and the records left there from before an earlier
// role change describe a history that was moved aside.
func (g *Group) Seed(ctx context.Context, m Manifest) error {
	st := g.guard("seed").Store(g.State)
	cut := Cut{RunID: m.RunID, Versions: m.Versions, Time: m.CutTime, Rule: m.Rule}
	if _, err := st.Save(ctx, "completed.json", cut, objstore.PutOptions{}); err != nil {
		return err
	}
	m.Group = g.Name
	_, err := st.Save(ctx, "manifest.json", m, objstore.PutOptions{})
	return err
}

// Finalized is what finalize did to one table.
type Finalized struct {
	Table   string `json:"table"`
	Version int64  `json:"version"`
	// MovedAside lists the log files beyond the manifest, now kept in
	// MovedTo inside the table.
	MovedAside []string `json:"moved_aside,omitempty"`
	MovedTo    string   `json:"moved_to,omitempty"`
}

// Finalize makes every table in the standby exactly its manifest version:
// commits and checkpoints beyond it (published by an interrupted sync) are
// moved aside, newest first, never deleted. It reads only the standby
// region.
func (g *Group) Finalize(ctx context.Context) ([]Finalized, error) {
	m, _, ok, err := LoadManifest(ctx, g.State)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("group %s: no manifest in %s: the standby holds no complete run of this group", g.Name, g.State.URL("manifest.json"))
	}
	return g.Rewind(ctx, m.Versions)
}

// Rewind makes every table in the target exactly its version in versions:
// log files beyond it are moved aside, newest first, never deleted. A
// table with no log at all is left alone. It reads only the target region.
func (g *Group) Rewind(ctx context.Context, versions map[string]int64) ([]Finalized, error) {
	guard := g.guard("rewind")
	if err := guard.Check(ctx); err != nil {
		return nil, err
	}
	var out []Finalized
	for _, t := range g.Tables {
		v, ok := versions[t.Name]
		if !ok {
			return out, fmt.Errorf("group %s: the manifest has no version for table %s", g.Name, t.Name)
		}
		f := Finalized{Table: t.Name, Version: v}
		l, err := delta.ListLog(ctx, t.Target)
		if err != nil {
			return out, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
		}
		var beyond []string
		for _, lf := range l.Files {
			if lf.Version > v && lf.Kind != delta.SidecarFile {
				beyond = append(beyond, lf.Key)
			}
		}
		if len(beyond) > 0 {
			slices.Sort(beyond)
			f.MovedTo, err = tablesync.MoveAside(ctx, guard.Bucket(t.Target), beyond)
			if err != nil {
				return out, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
			}
			f.MovedAside = beyond
			if l, err = delta.ListLog(ctx, t.Target); err != nil {
				return out, fmt.Errorf("group %s, table %s: %w", g.Name, t.Name, err)
			}
		}
		// Report what the table is at, not what it should be at.
		f.Version = l.Latest
		out = append(out, f)
		if l.Latest < v {
			return out, fmt.Errorf("group %s: table %s in %s is at version %d, below version %d of the manifest: its log lost commits; sync it again from the source (tandem table sync --full-resync) before it is read",
				g.Name, t.Name, t.Target.URL(), l.Latest, v)
		}
	}
	return out, nil
}
