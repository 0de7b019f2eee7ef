package tablegroup

import (
	"errors"
	"strings"
	"testing"

	"tandem/internal/delta"
	"tandem/internal/etl"
	"tandem/internal/objstore/local"
	"tandem/internal/state"
)

// etlGroup is a group of two tables an ETL workflow writes, with commits
// that name their run (commitInfo.job, as Databricks writes it).
func etlGroup(t *testing.T, rule string) (*Group, map[string]*etl.Table) {
	t.Helper()
	g := &Group{Name: "sales", Workflow: true, RunIDRule: rule}
	st, _ := local.Open(t.TempDir(), true)
	g.State = state.Store{Bucket: st}.Sub("groups").Sub("sales")
	tables := map[string]*etl.Table{}
	for i, name := range []string{"bronze", "gold"} {
		src, _ := local.Open(t.TempDir(), true)
		dst, _ := local.Open(t.TempDir(), true)
		tb, err := etl.Create(ctx, src, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		tables[name] = tb
		g.Tables = append(g.Tables, Table{Name: name, Source: src, Target: dst})
	}
	return g, tables
}

// TestCompleteCutsOnce: completing a run again with the same versions is
// a no-op; once the next run wrote, it is refused, and the recorded cut
// stays what the next sync publishes.
func TestCompleteCutsOnce(t *testing.T) {
	g, tables := etlGroup(t, "")
	tables["bronze"].Append(ctx, "run-5", 1, 10)
	tables["gold"].Append(ctx, "run-5", 1, 10)
	first, err := g.Complete(ctx, "run-5")
	if err != nil {
		t.Fatal(err)
	}
	again, err := g.Complete(ctx, "run-5") // a retried task
	if err != nil || again.Versions["bronze"] != first.Versions["bronze"] {
		t.Fatalf("same completion twice: %+v, %v", again, err)
	}
	tables["bronze"].Append(ctx, "run-6", 1, 10) // the next run started
	_, err = g.Complete(ctx, "run-5")            // a webhook delivered late
	if !errors.Is(err, ErrRunRecut) || !strings.Contains(err.Error(), "run run-5 was cut at bronze@1, gold@1") || !strings.Contains(err.Error(), "bronze@2") {
		t.Fatalf("re-cut of run-5: %v", err)
	}
	res, err := g.Sync(ctx)
	if err != nil || res.Manifest.RunID != "run-5" || res.Manifest.Versions["bronze"] != 1 {
		t.Fatalf("the sync after a refused re-cut: %+v, %v", res.Manifest, err)
	}
}

// TestCompleteCutsAtTheRunsOwnCommits: with commits that name their run,
// a completion reported after the next run began writing cuts each table
// at the completed run's last commit, and a table the run did not write
// stays before the next run's commits.
func TestCompleteCutsAtTheRunsOwnCommits(t *testing.T) {
	g, tables := etlGroup(t, "job")
	for _, r := range []string{"run-1", "run-1"} {
		tables["bronze"].Append(ctx, r, 1, 10)
	}
	tables["gold"].Append(ctx, "run-1", 1, 10)
	if _, err := g.Complete(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	tables["bronze"].Append(ctx, "run-2", 1, 10) // v3
	tables["bronze"].Append(ctx, "run-3", 1, 10) // v4: run 3 started before run 2 was reported
	tables["gold"].Append(ctx, "run-3", 1, 10)   // v2: run 2 did not write gold
	cut, err := g.Complete(ctx, "run-2")
	if err != nil {
		t.Fatal(err)
	}
	if cut.Versions["bronze"] != 3 || cut.Versions["gold"] != 1 || cut.Rule != "push:job" {
		t.Fatalf("cut of run-2 = %+v, want bronze@3 (its own last commit), gold@1 (before run-3's)", cut)
	}
	res, err := g.Sync(ctx)
	if err != nil || res.Manifest.Versions["bronze"] != 3 {
		t.Fatalf("%+v %v", res.Manifest, err)
	}
	for name, want := range map[string]int64{"bronze": 3, "gold": 1} {
		l, err := delta.ListLog(ctx, g.Tables[map[string]int{"bronze": 0, "gold": 1}[name]].Target)
		if err != nil || l.Latest != want {
			t.Fatalf("%s in the standby at %d (%v), want %d", name, l.Latest, err, want)
		}
	}
}

func TestRunIDs(t *testing.T) {
	meta := `{"run_id": 42}`
	for _, c := range []struct {
		rule string
		a    delta.Action
		want string
	}{
		{"job", delta.Action{CommitInfo: &delta.CommitInfo{Job: &delta.Job{JobRunID: "7"}}}, "7"},
		{"user_metadata", delta.Action{CommitInfo: &delta.CommitInfo{UserMetadata: "nightly-3"}}, "nightly-3"},
		{"user_metadata", delta.Action{CommitInfo: &delta.CommitInfo{UserMetadata: meta}}, "42"},
		{"txn", delta.Action{Txn: &delta.Txn{AppID: "run-9", Version: 1}}, "run-9"},
		{"txn:etl", delta.Action{Txn: &delta.Txn{AppID: "etl", Version: 12}}, "12"},
	} {
		if got := RunIDs([]delta.Action{c.a}, c.rule); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %v, want %s", c.rule, got, c.want)
		}
	}
	if got := RunIDs([]delta.Action{{Txn: &delta.Txn{AppID: "other", Version: 1}}}, "txn:etl"); len(got) != 0 {
		t.Errorf("another app's txn named a run: %v", got)
	}
}

// TestFinalizeReportsWhatTheTablesAre: finalize says the version each
// table is at, and fails, naming the table, when one is below its
// manifest's version (its log lost commits).
func TestFinalizeReportsWhatTheTablesAre(t *testing.T) {
	g, tables := etlGroup(t, "")
	tables["bronze"].Append(ctx, "run-1", 1, 10)
	tables["bronze"].Append(ctx, "run-1", 1, 10)
	tables["gold"].Append(ctx, "run-1", 1, 10)
	if _, err := g.Complete(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	fin, err := g.Finalize(ctx)
	if err != nil || fin[0].Version != 2 || fin[1].Version != 1 {
		t.Fatalf("%+v %v", fin, err)
	}
	// The standby's bronze loses its last commit.
	if err := g.Tables[0].Target.Delete(ctx, "_delta_log/00000000000000000002.json"); err != nil {
		t.Fatal(err)
	}
	fin, err = g.Finalize(ctx)
	if err == nil || !strings.Contains(err.Error(), "table bronze") || !strings.Contains(err.Error(), "is at version 1, below version 2 of the manifest") {
		t.Fatalf("finalize over a table behind its manifest: %v", err)
	}
	if len(fin) == 0 || fin[0].Version != 1 {
		t.Fatalf("finalize reported %+v, not the version the table is at", fin)
	}
}
