package tablegroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/delta"
	"tandem/internal/delta/deltatest"
	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	"tandem/internal/objstore/storetest"
	"tandem/internal/state"
)

var ctx = context.Background()

// workload stands for an ETL workflow: three real tables whose commits are
// revealed run by run.
type workload struct {
	t        *testing.T
	testdata string
	src, dst map[string]string // table -> folder
	golden   map[string]string
}

func newWorkload(t *testing.T) *workload {
	testdataDir := deltatest.Dir(t)
	w := &workload{t: t, src: map[string]string{}, dst: map[string]string{}, golden: map[string]string{
		"bronze": "basic-with-inserts-deletes-checkpoint", // 0..13, checkpoint 10
		"silver": "dv-with-columnmapping",                 // 0..15, deletion vectors
		"gold":   "snapshot-repartitioned",                // 0..5
	}, testdata: testdataDir}
	for name, g := range w.golden {
		w.src[name], w.dst[name] = t.TempDir(), t.TempDir()
		// Data files first; the log is revealed by reveal.
		root := filepath.Join(testdataDir, g)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			rel, _ := filepath.Rel(root, p)
			if err != nil || d.IsDir() || strings.HasPrefix(rel, "_delta_log") {
				return err
			}
			return copyFile(p, filepath.Join(w.src[name], rel))
		})
	}
	return w
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Dir(to), 0o755)
	return os.WriteFile(to, data, 0o644)
}

// reveal publishes the table's log up to version v, as its writer would.
func (w *workload) reveal(versions map[string]int64) {
	for name, v := range versions {
		logDir := filepath.Join(w.testdata, w.golden[name], "_delta_log")
		entries, _ := os.ReadDir(logDir)
		for _, e := range entries {
			var n int64 = -1
			fmt.Sscanf(e.Name(), "%020d", &n)
			if e.IsDir() {
				n = 0 // _sidecars
			}
			if n >= 0 && n <= v {
				filepath.WalkDir(filepath.Join(logDir, e.Name()), func(p string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						rel, _ := filepath.Rel(logDir, p)
						return copyFile(p, filepath.Join(w.src[name], "_delta_log", rel))
					}
					return err
				})
			}
		}
	}
}

func (w *workload) group(workflow bool, stateDir string, wrap func(objstore.Bucket) objstore.Bucket) *Group {
	stb, _ := local.Open(stateDir, true)
	g := &Group{Name: "sales", Workflow: workflow, State: state.Store{Bucket: stb}.Sub("groups").Sub("sales")}
	for _, name := range []string{"bronze", "silver", "gold"} {
		src, _ := local.Open(w.src[name], false)
		dst, _ := local.Open(w.dst[name], false)
		var target objstore.Bucket = dst
		if wrap != nil && name == "silver" {
			target = wrap(dst)
		}
		g.Tables = append(g.Tables, Table{Name: name, Source: src, Target: target})
	}
	return g
}

// standby checks that every table in the standby is at its version of the
// cut, with the source's files of that version.
func (w *workload) standby(want map[string]int64) {
	w.t.Helper()
	for name, v := range want {
		src, _ := local.Open(w.src[name], false)
		dst, _ := local.Open(w.dst[name], false)
		st, _ := delta.Open(ctx, src)
		dt, err := delta.Open(ctx, dst)
		if err != nil {
			w.t.Fatalf("%s: %v", name, err)
		}
		if dt.Log.Latest != v {
			w.t.Fatalf("%s: the standby is at version %d, want %d", name, dt.Log.Latest, v)
		}
		a, _ := st.Snapshot(ctx, v)
		b, err := dt.Snapshot(ctx, v)
		if err != nil || len(a.Files) != len(b.Files) {
			w.t.Fatalf("%s@%d: standby snapshot differs (%v)", name, v, err)
		}
		for k := range a.Files {
			if _, err := dst.Stat(ctx, k.Path); err != nil {
				w.t.Fatalf("%s@%d: %v", name, v, err)
			}
		}
	}
}

var (
	run1 = map[string]int64{"bronze": 3, "silver": 5, "gold": 2}
	run2 = map[string]int64{"bronze": 11, "silver": 12, "gold": 4}
	run3 = map[string]int64{"bronze": 13, "silver": 15, "gold": 5}
)

// TestOnlyCompletedRuns: a run in flight is never copied; the standby holds
// the last completed run of every table.
func TestOnlyCompletedRuns(t *testing.T) {
	w := newWorkload(t)
	g := w.group(true, t.TempDir(), nil)
	if _, err := g.Sync(ctx); !errors.Is(err, ErrNoCompletedRun) {
		t.Fatalf("sync before any run: %v", err)
	}
	w.reveal(run1)
	if _, err := g.Complete(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	w.reveal(run2) // run 2 is in flight: written, not complete
	res, err := g.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.RunID != "run-1" || res.Manifest.Versions["silver"] != 5 {
		t.Fatalf("manifest %+v", res.Manifest)
	}
	w.standby(run1)
	if again, err := g.Sync(ctx); err != nil || !again.Unchanged {
		t.Fatalf("second sync of the same run: %+v, %v", again, err)
	}
	if _, err := g.Complete(ctx, "run-2"); err != nil {
		t.Fatal(err)
	}
	if res, err = g.Sync(ctx); err != nil || res.Manifest.RunID != "run-2" {
		t.Fatalf("%+v, %v", res.Manifest, err)
	}
	w.standby(run2)
}

// TestInterruptedSyncThenFinalize: a sync that dies partway, at every
// possible write, leaves the previous manifest in force; finalize brings
// every table back to it, keeping what it moves aside; a later sync
// converges.
func TestInterruptedSyncThenFinalize(t *testing.T) {
	for n := int64(0); ; n += 3 {
		w := newWorkload(t)
		stateDir := t.TempDir()
		w.reveal(run1)
		if _, err := w.group(true, stateDir, nil).Complete(ctx, "run-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := w.group(true, stateDir, nil).Sync(ctx); err != nil {
			t.Fatal(err)
		}
		w.reveal(run3)
		if _, err := w.group(true, stateDir, nil).Complete(ctx, "run-3"); err != nil {
			t.Fatal(err)
		}
		broken := w.group(true, stateDir, func(b objstore.Bucket) objstore.Bucket { return storetest.NewFailAfter(b, n) })
		res, err := broken.Sync(ctx)
		if err == nil {
			if res.Manifest.RunID != "run-3" || n < 3 {
				t.Fatalf("after %d writes: %+v", n, res.Manifest)
			}
			w.standby(run3)
			return
		}
		g := w.group(true, stateDir, nil)
		m, _, _, _ := LoadManifest(ctx, g.State)
		if m.RunID != "run-1" {
			t.Fatalf("after %d writes the manifest is %s, want run-1 still", n, m.RunID)
		}
		// Failover: the standby becomes every table at run 1.
		fin, err := g.Finalize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w.standby(run1)
		if n > 0 && len(fin[0].MovedAside) == 0 {
			t.Fatalf("after %d writes: bronze had nothing to move aside: %+v", n, fin)
		}
		for _, f := range fin {
			for _, k := range f.MovedAside {
				if _, err := os.Stat(filepath.Join(w.dst[f.Table], f.MovedTo, k)); err != nil {
					t.Fatalf("moved-aside %s of %s is not kept: %v", k, f.Table, err)
				}
			}
		}
		// Finalize again changes nothing; a new sync converges.
		if fin, err := g.Finalize(ctx); err != nil || len(fin[0].MovedAside)+len(fin[1].MovedAside)+len(fin[2].MovedAside) != 0 {
			t.Fatalf("second finalize: %+v, %v", fin, err)
		}
		if res, err := g.Sync(ctx); err != nil || res.Manifest.RunID != "run-3" {
			t.Fatalf("sync after finalize: %+v, %v", res.Manifest, err)
		}
		w.standby(run3)
	}
}

func TestStandaloneTablesAndRestoredSource(t *testing.T) {
	w := newWorkload(t)
	stateDir := t.TempDir()
	w.reveal(run2)
	g := w.group(false, stateDir, nil)
	res, err := g.Sync(ctx)
	if err != nil || res.Manifest.Rule != "latest" {
		t.Fatalf("%+v, %v", res, err)
	}
	w.standby(run2)
	// A workflow completion may not go back in time.
	wf := w.group(true, stateDir, nil)
	if _, err := wf.Complete(ctx, "run-2"); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(w.src["gold"], "_delta_log", fmt.Sprintf("%020d.json", 4)))
	if _, err := wf.Complete(ctx, "run-2b"); err == nil || !strings.Contains(err.Error(), "table gold is at version 3, older than run run-2 recorded (4)") {
		t.Fatalf("completion going backwards: %v", err)
	}
}

func TestFinalizeWithoutManifest(t *testing.T) {
	w := newWorkload(t)
	if _, err := w.group(true, t.TempDir(), nil).Finalize(ctx); err == nil || !strings.Contains(err.Error(), "no manifest") {
		t.Fatalf("finalize without a manifest: %v", err)
	}
}

func TestAttemptRecords(t *testing.T) {
	w := newWorkload(t)
	stateDir := t.TempDir()
	w.reveal(run1)
	g := w.group(true, stateDir, nil)
	if _, err := g.Complete(ctx, "run-1"); err != nil {
		t.Fatal(err)
	}
	// A process that crashed mid-attempt left a running record.
	stale := Attempt{ID: "20260101T000000.000000000Z", Group: "sales", Status: "running", Reason: "schedule"}
	if _, err := g.State.Save(ctx, "attempts/"+stale.ID+".json", stale, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _, err := g.SyncRecorded(ctx, "manual")
	if err != nil || a.Status != "succeeded" || a.RunID != "run-1" || a.Files == 0 || a.Seconds <= 0 {
		t.Fatalf("attempt %+v, %v", a, err)
	}
	// A failing attempt is recorded as failed, with its error.
	broken := w.group(true, stateDir, func(b objstore.Bucket) objstore.Bucket { return storetest.NewFailAfter(b, 0) })
	w.reveal(run2)
	broken.Complete(ctx, "run-2")
	if a, _, err := broken.SyncRecorded(ctx, "schedule"); err == nil || a.Status != "failed" || !strings.Contains(a.Error, "went dark") {
		t.Fatalf("failing attempt %+v, %v", a, err)
	}
	// A corrupt record is reported and skipped; it blocks nothing.
	if err := os.WriteFile(filepath.Join(stateDir, "groups", "sales", "attempts", "20250101T000000.000000000Z.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.SyncRecorded(ctx, "manual"); err != nil {
		t.Fatalf("a corrupt attempt record blocked a sync: %v", err)
	}
	all, corrupt, err := g.Attempts(ctx)
	if err != nil || len(all) != 4 || len(corrupt) != 1 || !strings.Contains(corrupt[0], "20250101T000000.000000000Z.json") {
		t.Fatalf("%d attempts, corrupt %q, %v", len(all), corrupt, err)
	}
	all = all[1:] // the unchanged sync just made
	if all[0].Status != "failed" || all[1].Status != "succeeded" || all[2].Status != "interrupted" {
		t.Fatalf("statuses %s %s %s", all[0].Status, all[1].Status, all[2].Status)
	}
	for _, a := range all {
		if a.Status == "running" {
			t.Fatalf("a record stayed in progress: %+v", a)
		}
	}
}

// TestFence: a sync writes only under the epoch it started with. The
// conditions here are a stand-in for the lease; the lease itself is tested
// with them in cmd/tandem and members.
func TestFence(t *testing.T) {
	w := newWorkload(t)
	stateDir := t.TempDir()
	w.reveal(run1)
	g := w.group(true, stateDir, nil)
	var epoch atomic.Int64
	epoch.Store(4)
	var refuse atomic.Pointer[string]
	g.Conditions = []fence.Condition{func(context.Context) (fence.Grant, error) {
		if why := refuse.Load(); why != nil {
			return fence.Grant{}, fmt.Errorf("%w: %s", fence.ErrFenced, *why)
		}
		return fence.Grant{Epoch: epoch.Load(), For: 20 * time.Millisecond, What: "the test lease"}, nil
	}}
	g.Complete(ctx, "run-1")
	res, err := g.Sync(ctx)
	if err != nil || res.Manifest.Epoch != 4 {
		t.Fatalf("%+v %v", res.Manifest, err)
	}
	w.reveal(run2)
	g.Complete(ctx, "run-2")
	// The standby takes over while the sync copies silver (bronze is
	// done): that write fails, and nothing of silver or gold is written.
	later := map[string]string{"silver": w.dst["silver"], "gold": w.dst["gold"]}
	before := listAll(t, later)
	slow := w.group(true, stateDir, func(b objstore.Bucket) objstore.Bucket {
		return &onPut{Bucket: b, f: func() { epoch.Store(5); time.Sleep(30 * time.Millisecond) }}
	})
	slow.Conditions = g.Conditions
	epoch.Store(4)
	if _, err := slow.Sync(ctx); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "from epoch 4 to 5") {
		t.Fatalf("sync across a lease change: %v", err)
	}
	if m, _, _, _ := LoadManifest(ctx, g.State); m.RunID != "run-1" || m.Epoch != 4 {
		t.Fatalf("the manifest moved: %+v", m)
	}
	if after := listAll(t, later); !slices.Equal(after, before) {
		t.Fatalf("a fenced sync wrote %d files after the lease moved", len(after)-len(before))
	}
	why := "west holds the lease"
	refuse.Store(&why)
	if _, err := g.Sync(ctx); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "west holds") {
		t.Fatalf("fenced sync: %v", err)
	}
}

// onPut calls f before every Put passes through: the lease moves while a
// sync copies.
type onPut struct {
	objstore.Bucket
	f func()
}

func (o *onPut) GatesWrites() bool { return objstore.GatesWrites(o.Bucket) }
func (o *onPut) Put(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	o.f()
	return o.Bucket.Put(ctx, key, r, size, opts)
}

func listAll(t *testing.T, dirs map[string]string) []string {
	t.Helper()
	var out []string
	for _, name := range slices.Sorted(maps.Keys(dirs)) {
		filepath.WalkDir(dirs[name], func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}
