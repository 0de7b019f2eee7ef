package tablesync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tandem/internal/delta"
	"tandem/internal/delta/deltatest"
	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/objstore/storetest"
)

var ctx = context.Background()

func testdata(t *testing.T) string { return deltatest.Dir(t) }

func tables(t *testing.T) []string {
	var found []string
	filepath.WalkDir(testdata(t), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "_delta_log" {
			found = append(found, filepath.Dir(p))
			return filepath.SkipDir
		}
		return err
	})
	return found
}

func bucket(t *testing.T, dir string) objstore.Bucket {
	t.Helper()
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// same checks that the target's snapshot at v equals the source's, and
// that every live file is at the target with the source's bytes.
func same(t *testing.T, src, dst objstore.Bucket, v int64) {
	t.Helper()
	st, err := delta.Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	dt, err := delta.Open(ctx, dst)
	if err != nil {
		t.Fatalf("target is not a Delta table: %v", err)
	}
	a, err := st.Snapshot(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dt.Snapshot(ctx, v)
	if err != nil {
		t.Fatalf("target at %d: %v", v, err)
	}
	if a.Metadata.ID != b.Metadata.ID || a.Metadata.SchemaString != b.Metadata.SchemaString ||
		a.Protocol.MinReaderVersion != b.Protocol.MinReaderVersion || len(a.Files) != len(b.Files) || len(a.Txns) != len(b.Txns) {
		t.Fatalf("version %d: target snapshot differs: %d files vs %d", v, len(b.Files), len(a.Files))
	}
	for k, f := range a.Files {
		if g, ok := b.Files[k]; !ok || g.Size != f.Size {
			t.Fatalf("version %d: file %s missing from the target's snapshot", v, k.Path)
		}
		sb, _, err1 := objstore.ReadAll(ctx, src, k.Path)
		db, _, err2 := objstore.ReadAll(ctx, dst, k.Path)
		if err1 != nil || err2 != nil || !bytes.Equal(sb, db) {
			t.Fatalf("version %d: %s differs at the target (%v, %v)", v, k.Path, err1, err2)
		}
	}
}

// skipped are tables that cannot be synced, and why (see the delta
// package's tests for the reader's side).
var skipped = map[string]error{
	"canonicalized-paths-normal-a":                                   delta.ErrOutsideTable,
	"canonicalized-paths-normal-b":                                   delta.ErrOutsideTable,
	"canonicalized-paths-special-a":                                  delta.ErrOutsideTable,
	"canonicalized-paths-special-b":                                  delta.ErrOutsideTable,
	"data-reader-absolute-paths-escaped-chars":                       delta.ErrOutsideTable,
	"deltalog-invalid-protocol-version":                              delta.ErrUnsupported,
	"deltalog-state-reconstruction-from-checkpoint-missing-metadata": delta.ErrCorrupt,
	"deltalog-state-reconstruction-from-checkpoint-missing-protocol": delta.ErrCorrupt,
	"deltalog-state-reconstruction-without-metadata":                 delta.ErrCorrupt,
	"deltalog-state-reconstruction-without-protocol":                 delta.ErrCorrupt,
	"versions-not-contiguous":                                        delta.ErrNotReconstructable,
}

// TestEveryTable syncs every table in testdata to every version in turn,
// incrementally, and checks the target at each step: its snapshot equals
// the source's and every live file has the source's bytes. A version that
// cannot be synced must fail with the reader's documented error, or with
// ErrSourceMissing when the source really lacks a live file; either way
// the target publishes nothing of it.
func TestEveryTable(t *testing.T) {
	synced := 0
	for _, dir := range tables(t) {
		name := filepath.Base(dir)
		src := bucket(t, dir)
		st, err := delta.Open(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		dst := bucket(t, t.TempDir())
		s := &Sync{Source: src, Target: dst}
		all := true
		for v := st.Log.Oldest; v <= st.Log.Latest; v++ {
			before := latest(t, dst)
			res, err := s.Run(ctx, v)
			if err == nil {
				same(t, src, dst, v)
				// A second sync to the same version copies nothing.
				if again, err := s.Run(ctx, v); err != nil || again.Files != 0 || again.LogFiles != 0 {
					t.Fatalf("%s@%d: rerun copied %+v, %v", name, v, again, err)
				}
				_ = res
				continue
			}
			all = false
			switch {
			case errors.Is(err, ErrSourceMissing):
				if !sourceLacksLiveFile(t, st, v) {
					t.Errorf("%s@%d: %v, but every live file is in the source", name, v, err)
				}
			case skipped[name] != nil && errors.Is(err, skipped[name]):
			default:
				t.Errorf("%s@%d: %v", name, v, err)
			}
			if after := latest(t, dst); after != before {
				t.Errorf("%s@%d: a failed sync moved the target from %d to %d", name, v, before, after)
			}
		}
		if all {
			synced++
		}
	}
	if synced < 75 {
		t.Fatalf("only %d tables synced at every version", synced)
	}
	t.Logf("%d tables synced at every version", synced)
}

func latest(t *testing.T, b objstore.Bucket) int64 {
	l, err := delta.ListLog(ctx, b)
	if errors.Is(err, delta.ErrNotDeltaTable) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return l.Latest
}

func sourceLacksLiveFile(t *testing.T, st *delta.Table, v int64) bool {
	snap, err := st.Snapshot(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	for k := range snap.Files {
		if _, err := st.Bucket.Stat(ctx, k.Path); errors.Is(err, objstore.ErrNotExist) {
			return true
		}
	}
	return false
}

func dataKeys(t *testing.T, b objstore.Bucket) map[string]bool {
	out := map[string]bool{}
	for info, err := range b.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Key, delta.LogDir) {
			out[info.Key] = true
		}
	}
	return out
}

// TestIncrementalCopiesOnlyLiveFiles: a sync from version a to b copies the
// files live at b that the target lacks, never files added and removed in
// between.
func TestIncrementalCopiesOnlyLiveFiles(t *testing.T) {
	src := bucket(t, filepath.Join(testdata(t), "basic-with-inserts-deletes-checkpoint"))
	st, _ := delta.Open(ctx, src)
	dst := bucket(t, t.TempDir())
	s := &Sync{Source: src, Target: dst}
	if _, err := s.Run(ctx, 0); err != nil {
		t.Fatal(err)
	}
	res, err := s.Run(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := st.Snapshot(ctx, 0)
	last, _ := st.Snapshot(ctx, -1)
	want := map[string]bool{}
	for k := range first.Files {
		want[k.Path] = true
	}
	newFiles := 0
	for k := range last.Files {
		if !want[k.Path] {
			newFiles++
		}
		want[k.Path] = true
	}
	if got := dataKeys(t, dst); len(got) != len(want) {
		t.Fatalf("target holds %d data files, want %d (live at 0 or at %d)", len(got), len(want), last.Version)
	}
	if res.Files != int64(newFiles) {
		t.Fatalf("second sync copied %d files, want %d", res.Files, newFiles)
	}
	all := map[string]bool{}
	for v := int64(0); v <= last.Version; v++ {
		snap, _ := st.Snapshot(ctx, v)
		for k := range snap.Files {
			all[k.Path] = true
		}
	}
	if len(all) <= len(want) {
		t.Fatalf("the table adds and removes no file in between (%d vs %d): a useless test", len(all), len(want))
	}
}

func TestDivergence(t *testing.T) {
	src := bucket(t, filepath.Join(testdata(t), "snapshot-data3"))
	dstDir := t.TempDir()
	dst := bucket(t, dstDir)
	s := &Sync{Source: src, Target: dst}
	if _, err := s.Run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Target ahead of the requested version.
	if _, err := s.Run(ctx, 1); !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "newer than 1") {
		t.Fatalf("sync backwards: %v", err)
	}
	// A commit at the target that is not the source's.
	p := filepath.Join(dstDir, "_delta_log", "00000000000000000002.json")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, append(data, []byte(`{"commitInfo":{"operation":"written in the standby"}}`+"\n")...), 0o644)
	_, err := s.Run(ctx, 3)
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "commit 2") {
		t.Fatalf("diverged target: %v", err)
	}
	if latest(t, dst) != 2 {
		t.Fatal("a diverged target was advanced")
	}
}

func TestSourceLogCleanedUp(t *testing.T) {
	dir := deltatest.Copy(t, "basic-with-inserts-deletes-checkpoint")
	src := bucket(t, dir)
	dst := bucket(t, t.TempDir())
	s := &Sync{Source: src, Target: dst}
	if _, err := s.Run(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Log retention removes commits the target still needs; a checkpoint
	// at 10 remains.
	for v := 3; v < 10; v++ {
		os.Remove(filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", v)))
	}
	_, err := s.Run(ctx, -1)
	if !errors.Is(err, ErrResyncNeeded) || !strings.Contains(err.Error(), "commit 3") {
		t.Fatalf("sync after log cleanup: %v", err)
	}
	// A fresh target syncs from the checkpoint.
	fresh := bucket(t, t.TempDir())
	if _, err := (&Sync{Source: src, Target: fresh}).Run(ctx, -1); err != nil {
		t.Fatal(err)
	}
	st, _ := delta.Open(ctx, src)
	same(t, src, fresh, st.Log.Latest)
}

// TestInterruptedSyncConverges stops a sync after every possible number of
// writes, checks that the target never shows the new version with a file
// missing, and that a rerun converges.
func TestInterruptedSyncConverges(t *testing.T) {
	src := bucket(t, filepath.Join(testdata(t), "dv-with-columnmapping"))
	st, _ := delta.Open(ctx, src)
	for n := int64(0); ; n++ {
		target := storetest.NewFailAfter(bucket(t, t.TempDir()), n)
		_, err := (&Sync{Source: src, Target: target, Transfers: 1}).Run(ctx, -1)
		if err == nil {
			if n < 5 {
				t.Fatalf("the sync finished within %d writes", n)
			}
			same(t, src, target.Bucket, st.Log.Latest)
			return
		}
		// Whatever was published is a valid table at its newest version,
		// or nothing: data first, log last.
		if v := latest(t, target.Bucket); v == st.Log.Latest {
			same(t, src, target.Bucket, v)
		}
		target.N.Store(1 << 30)
		if _, err := (&Sync{Source: src, Target: target}).Run(ctx, -1); err != nil {
			t.Fatalf("rerun after %d writes: %v", n, err)
		}
		same(t, src, target.Bucket, st.Log.Latest)
	}
}

// TestS3 syncs a table with deletion vectors into S3 and from there into
// another folder.
func TestS3(t *testing.T) {
	srv := s3test.Shared(t)
	s3b, err := s3store.Open(ctx, srv.NewBucket(t), "warehouse/gold", srv.Options())
	if err != nil {
		t.Fatal(err)
	}
	src := bucket(t, filepath.Join(testdata(t), "dv-with-columnmapping"))
	st, _ := delta.Open(ctx, src)
	if _, err := (&Sync{Source: src, Target: s3b}).Run(ctx, 12); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Sync{Source: src, Target: s3b}).Run(ctx, -1); err != nil {
		t.Fatal(err)
	}
	same(t, src, s3b, st.Log.Latest)
	back := bucket(t, t.TempDir())
	if _, err := (&Sync{Source: s3b, Target: back}).Run(ctx, -1); err != nil {
		t.Fatal(err)
	}
	same(t, src, back, st.Log.Latest)
}

// TestHostileLogPaths: a source log whose add, remove or deletion vector
// paths climb out of the table, or point into its _delta_log/, fails the
// sync with the commit and the path named, and nothing is written outside
// the target table, on folders and on S3.
func TestHostileLogPaths(t *testing.T) {
	srv := s3test.Shared(t)
	hostile := []string{
		`{"add":{"path":"ROOT/../../outside/x.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"../outside/x.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"_delta_log/00000000000000000099.json","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"%2e%2e/%2e%2e/outside/y.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"ok.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true,"deletionVector":{"storageType":"p","pathOrInlineDv":"ROOT/../../outside/dv.bin","offset":1,"sizeInBytes":10,"cardinality":1}}}`,
		`{"add":{"path":"%2E%2E/outside/z.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"a/%2e%2e/%2e%2e/%2e%2e/outside/w.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"add":{"path":"file:///tmp/outside/abs.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`,
		`{"remove":{"path":"ROOT/../outside/r.parquet","deletionTimestamp":1,"dataChange":true}}`,
	}
	// Paths that only look like a way out (no store tandem writes to
	// resolves them as one) or that no store takes: kept inside the table
	// when the source has them, or refused, never written outside it.
	lookalikes := map[string]string{ // the path in the log: the key it names
		`..\\..\\outside\\x.parquet`:           `..\..\outside\x.parquet`,
		"．．/．．/outside/u.parquet":              "．．/．．/outside/u.parquet",
		"‥/outside/v.parquet":                  "‥/outside/v.parquet",
		strings.Repeat("k", 1100) + ".parquet": strings.Repeat("k", 1100) + ".parquet",
		"a%0Ab.parquet":                        "a\nb.parquet",
	}
	var lookalike, keys []string
	for path, key := range lookalikes {
		lookalike = append(lookalike, `{"add":{"path":"`+path+`","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true}}`)
		keys = append(keys, key)
	}
	for _, backend := range []string{"file", "s3"} {
		for i, line := range append(hostile, lookalike...) {
			refused := i < len(hostile)
			t.Run(fmt.Sprintf("%s/%d", backend, i), func(t *testing.T) {
				var src, dst, outside objstore.Bucket
				var root string
				switch backend {
				case "file":
					dir := t.TempDir()
					open := func(p string) objstore.Bucket {
						b, err := local.Open(filepath.Join(dir, p), true)
						if err != nil {
							t.Fatal(err)
						}
						return b
					}
					src, dst, outside = open("src/tables/t2"), open("dst/tables/t2"), open("")
					root = "file://" + filepath.Join(dir, "src/tables/t2")
				default:
					b := srv.NewBucket(t)
					var err error
					if src, err = s3store.Open(ctx, b, "src/tables/t2", srv.Options()); err != nil {
						t.Fatal(err)
					}
					if dst, err = s3store.Open(ctx, b, "dst/tables/t2", srv.Options()); err != nil {
						t.Fatal(err)
					}
					if outside, err = s3store.Open(ctx, b, "", srv.Options()); err != nil {
						t.Fatal(err)
					}
					root = "s3://" + b + "/src/tables/t2"
				}
				base := bucket(t, filepath.Join(testdata(t), "basic-with-inserts-updates"))
				if _, err := (&Sync{Source: base, Target: src}).Run(ctx, -1); err != nil {
					t.Fatal(err)
				}
				lookKey := ""
				if !refused {
					// The source has the file: a sync may copy it, inside.
					lookKey = keys[i-len(hostile)]
					src.Put(ctx, lookKey, strings.NewReader("x"), 1, objstore.PutOptions{})
				}
				v := latest(t, src)
				commit := strings.ReplaceAll(line, "ROOT", root) + "\n"
				key := fmt.Sprintf("_delta_log/%020d.json", v+1)
				if _, err := src.Put(ctx, key, strings.NewReader(commit), int64(len(commit)), objstore.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				before := map[string]bool{}
				for info, err := range outside.List(ctx, "") {
					if err != nil {
						t.Fatal(err)
					}
					before[info.Key] = true
				}
				_, err := (&Sync{Source: src, Target: dst}).Run(ctx, -1)
				switch {
				case refused && (!errors.Is(err, delta.ErrOutsideTable) || !(strings.Contains(err.Error(), key) || strings.Contains(err.Error(), fmt.Sprintf("at version %d", v+1)))):
					t.Fatalf("sync: %v; want it refused, naming %s or version %d", err, key, v+1)
				case !refused && err == nil:
					if _, serr := dst.Stat(ctx, lookKey); serr != nil {
						t.Fatalf("the sync succeeded, but %q is not in the target table: %v", lookKey, serr)
					}
				}
				for info, err := range outside.List(ctx, "") {
					if err != nil {
						t.Fatal(err)
					}
					if !before[info.Key] && !strings.HasPrefix(info.Key, "dst/tables/t2/") {
						t.Errorf("written outside the target table: %s", info.Key)
					}
				}
			})
		}
	}
}
