package etl

import (
	"context"
	"testing"

	"tandem/internal/delta"
	"tandem/internal/objstore/local"
)

// TestTablesAreDelta writes a table through every operation and reads it
// back with the delta package.
func TestTablesAreDelta(t *testing.T) {
	ctx := context.Background()
	b, _ := local.Open(t.TempDir(), false)
	tb, err := Create(ctx, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return tb.Append(ctx, "r1", 3, 100) },
		func() error { return tb.Update(ctx, "r1", 100) },
		func() error { return tb.Optimize(ctx, "r2", 300) },
		func() error { return tb.Vacuum(ctx) },
		func() error { return tb.Append(ctx, "r3", 1, 10) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	dt, err := delta.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := dt.Snapshot(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := tb.Live()
	if snap.Version != 4 || len(snap.Files) != files || files != 2 {
		t.Fatalf("version %d with %d files, want 4 with %d", snap.Version, len(snap.Files), files)
	}
	for k := range snap.Files {
		if _, err := b.Stat(ctx, k.Path); err != nil {
			t.Fatalf("live file %s: %v", k.Path, err)
		}
	}
	acts, _ := dt.CommitActions(ctx, 3)
	if acts[0].CommitInfo == nil || acts[0].CommitInfo.Job == nil || acts[0].CommitInfo.Job.JobRunID != "r2" {
		t.Fatalf("commit 3 info %+v", acts[0].CommitInfo)
	}
}

// TestOpenContinues: a table opened again goes on from its latest version
// with its live files.
func TestOpenContinues(t *testing.T) {
	ctx := context.Background()
	b, _ := local.Open(t.TempDir(), false)
	tb, err := Create(ctx, b, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Append(ctx, "r1", 2, 10); err != nil {
		t.Fatal(err)
	}
	again, err := Open(ctx, b, 2)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := again.Live(); again.Version != 1 || f != 2 {
		t.Fatalf("opened at version %d with %d files", again.Version, f)
	}
	if err := again.Update(ctx, "r2", 10); err != nil {
		t.Fatal(err)
	}
	dt, _ := delta.Open(ctx, b)
	snap, err := dt.Snapshot(ctx, -1)
	if err != nil || snap.Version != 2 || len(snap.Files) != 2 {
		t.Fatalf("after the update: %v %v", snap, err)
	}
}
