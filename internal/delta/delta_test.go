package delta

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"tandem/internal/delta/deltatest"
	"tandem/internal/objstore/local"
)

func testdata(t testing.TB) string { return deltatest.Dir(t) }

// tables finds every Delta table (a folder holding _delta_log) below dir,
// and the top-level folders that hold none.
func tables(t *testing.T, dir string) (found, notTables []string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if d.Name() == "_delta_log" {
			found = append(found, filepath.Dir(p))
			return filepath.SkipDir
		}
		return nil
	})
	tops, _ := os.ReadDir(dir)
	for _, e := range tops {
		top := filepath.Join(dir, e.Name())
		if e.IsDir() && !slices.ContainsFunc(found, func(f string) bool { return f == top || strings.HasPrefix(f, top+"/") }) {
			notTables = append(notTables, top)
		}
	}
	return found, notTables
}

func open(t *testing.T, dir string) (*Table, error) {
	t.Helper()
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return Open(context.Background(), b)
}

// broken lists the tables that must fail, why, and from which version.
var broken = map[string]struct {
	err  error
	text string
	from int64 // the first failing version; earlier ones reconstruct
}{
	"canonicalized-paths-normal-a":                                   {ErrOutsideTable, "/some/unqualified/absolute/path", 0},
	"canonicalized-paths-normal-b":                                   {ErrOutsideTable, "/some/unqualified/absolute/path", 0},
	"canonicalized-paths-special-a":                                  {ErrOutsideTable, "with%20space", 0},
	"canonicalized-paths-special-b":                                  {ErrOutsideTable, "with%20space", 0},
	"data-reader-absolute-paths-escaped-chars":                       {ErrOutsideTable, "..//Users", 0},
	"deltalog-invalid-protocol-version":                              {ErrUnsupported, "reader version 99", 0},
	"deltalog-state-reconstruction-from-checkpoint-missing-metadata": {ErrCorrupt, "no metaData action", 10},
	"deltalog-state-reconstruction-from-checkpoint-missing-protocol": {ErrCorrupt, "no protocol action", 10},
	"deltalog-state-reconstruction-without-metadata":                 {ErrCorrupt, "no metaData action", 0},
	"deltalog-state-reconstruction-without-protocol":                 {ErrCorrupt, "no protocol action", 0},
	"versions-not-contiguous":                                        {ErrNotReconstructable, "commit 1 is missing", 1},
}

// TestEveryTable reconstructs every version of every table in testdata, or
// expects the documented error.
func TestEveryTable(t *testing.T) {
	found, notTables := tables(t, testdata(t))
	if len(found) < 80 {
		t.Fatalf("found only %d tables", len(found))
	}
	for _, dir := range notTables {
		if _, err := open(t, dir); !errors.Is(err, ErrNotDeltaTable) {
			t.Errorf("%s: Open = %v, want ErrNotDeltaTable", filepath.Base(dir), err)
		}
	}
	for _, dir := range found {
		name := filepath.Base(dir)
		tb, err := open(t, dir)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want, isBroken := broken[name]
		for v := tb.Log.Oldest; v <= tb.Log.Latest; v++ {
			s, err := tb.Snapshot(context.Background(), v)
			switch {
			case isBroken && v >= want.from:
				if !errors.Is(err, want.err) || !strings.Contains(err.Error(), want.text) {
					t.Errorf("%s@%d: err = %v, want %v with %q", name, v, err, want.err, want.text)
				}
			case err != nil:
				t.Errorf("%s@%d: %v", name, v, err)
			case s.Metadata.ID == "" || len(s.Commits) == 0 && len(s.Checkpoint) == 0:
				t.Errorf("%s@%d: empty snapshot %+v", name, v, s)
			}
		}
	}
}

// TestCheckpointMatchesReplay rebuilds each version that has a checkpoint
// both from the checkpoint and by replaying every commit from 0: the two
// must agree on protocol, metadata, live files, transactions and domains.
func TestCheckpointMatchesReplay(t *testing.T) {
	found, _ := tables(t, testdata(t))
	compared := 0
	for _, dir := range found {
		name := filepath.Base(dir)
		if _, isBroken := broken[name]; isBroken {
			continue
		}
		tb, err := open(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		for v := tb.Log.Oldest; v <= tb.Log.Latest; v++ {
			fromCP, err := tb.Snapshot(context.Background(), v)
			if err != nil || len(fromCP.Checkpoint) == 0 {
				continue
			}
			// Hide the checkpoints: replay commits only.
			replay := &Table{Bucket: tb.Bucket, Log: &Log{Files: tb.Log.Files, commits: tb.Log.commits, Oldest: tb.Log.Oldest, Latest: tb.Log.Latest}}
			fromLog, err := replay.Snapshot(context.Background(), v)
			if err != nil {
				if errors.Is(err, ErrNotReconstructable) {
					continue // commits before the checkpoint were cleaned up
				}
				t.Fatalf("%s@%d replay: %v", name, v, err)
			}
			compared++
			if !sameSnapshot(fromCP, fromLog) {
				t.Errorf("%s@%d: checkpoint gives %d files %v, replay gives %d files %v",
					name, v, len(fromCP.Files), fromCP.Protocol, len(fromLog.Files), fromLog.Protocol)
			}
		}
	}
	if compared < 15 {
		t.Fatalf("only %d versions compared", compared)
	}
}

func sameSnapshot(a, b *Snapshot) bool {
	if a.Metadata.ID != b.Metadata.ID || a.Metadata.SchemaString != b.Metadata.SchemaString ||
		a.Protocol.MinReaderVersion != b.Protocol.MinReaderVersion || a.Protocol.MinWriterVersion != b.Protocol.MinWriterVersion ||
		len(a.Files) != len(b.Files) || !maps.Equal(a.Txns, b.Txns) || !maps.Equal(a.Domains, b.Domains) {
		return false
	}
	for k, fa := range a.Files {
		fb, ok := b.Files[k]
		if !ok || fa.Size != fb.Size {
			return false
		}
	}
	return true
}

// TestDeletionVectorFiles resolves every stored deletion vector of the
// tables that have them to a file that exists in the table.
func TestDeletionVectorFiles(t *testing.T) {
	dir := filepath.Join(testdata(t), "dv-with-columnmapping")
	tb, err := open(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tb.Snapshot(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	dvs := 0
	for _, add := range s.Files {
		if add.DeletionVector == nil {
			continue
		}
		f, err := add.DeletionVector.File(tb.Bucket.URL())
		if err != nil {
			t.Fatal(err)
		}
		if f == "" {
			continue // inline
		}
		dvs++
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("deletion vector of %s: %v", add.Path, err)
		}
	}
	if dvs == 0 {
		t.Fatal("no stored deletion vector found")
	}
}

func TestZ85(t *testing.T) {
	// The example of PROTOCOL.md, "Deletion Vector Format".
	dv := &DeletionVector{StorageType: "u", PathOrInlineDv: "ab^-aqEH.-t@S}K{vb[*k^"}
	got, err := dv.File("file:///t")
	if want := "ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin"; err != nil || got != want {
		t.Fatalf("File() = %q, %v; want %q", got, err, want)
	}
}

func TestLogNames(t *testing.T) {
	for name, want := range map[string]LogFile{
		"00000000000000000007.json":                                                 {Kind: Commit, Version: 7},
		"00000000000000000010.checkpoint.parquet":                                   {Kind: Checkpoint, Version: 10},
		"00000000000000000010.checkpoint.0000000002.0000000003.parquet":             {Kind: CheckpointPart, Version: 10, Part: 2, Parts: 3},
		"00000000000000000002.checkpoint.6374b053-df23-479b-b2cf-c9c550132b49.json": {Kind: CheckpointV2, Version: 2},
		"00000000000000000004.crc":                                                  {Kind: Checksum, Version: 4},
		"00000000000000000004.00000000000000000009.compacted.json":                  {Kind: Compacted, Version: 9},
		"_last_checkpoint":                                                          {Kind: LastCheckpoint, Version: -1},
		"00000000000000000007.json.tmp":                                             {Kind: OtherFile, Version: -1},
	} {
		got, _ := parseLogName(name)
		if got.Kind != want.Kind || got.Version != want.Version || got.Part != want.Part || got.Parts != want.Parts {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
}

func FuzzCommit(f *testing.F) {
	f.Add([]byte(`{"add":{"path":"a%20b.parquet","size":1,"deletionVector":{"storageType":"u","pathOrInlineDv":"ab^-aqEH.-t@S}K{vb[*k^","offset":1}}}` + "\n" + `{"commitInfo":{"job":{"runId":12}}}`))
	f.Add([]byte(`{"protocol":{"minReaderVersion":3,"readerFeatures":["x"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		readJSONActions(strings.NewReader(string(data)), "fuzz.json", func(a *Action) error {
			if a.Add != nil {
				decodePath(a.Add.Path, "file:///table")
				if a.Add.DeletionVector != nil {
					a.Add.DeletionVector.File("file:///table")
				}
			}
			if a.Protocol != nil {
				CheckProtocol(*a.Protocol)
			}
			return nil
		})
	})
}

func FuzzLogName(f *testing.F) {
	f.Add("00000000000000000010.checkpoint.0000000002.0000000003.parquet")
	f.Fuzz(func(t *testing.T, name string) {
		if lf, ok := parseLogName(name); ok && lf.Kind == CheckpointPart && (lf.Part < 0 || lf.Parts < 0) {
			t.Fatalf("negative part in %q", name)
		}
	})
}

func TestCorruptCommit(t *testing.T) {
	dir := deltatest.Copy(t, "snapshot-data3")
	p := filepath.Join(dir, "_delta_log", "00000000000000000002.json")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, append(data, []byte("{\"add\":{\"path\":\"x\",\"size\":\n")...), 0o644)
	tb, err := open(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Snapshot(context.Background(), 1); err != nil {
		t.Fatalf("version 1 must not read commit 2: %v", err)
	}
	_, err = tb.Snapshot(context.Background(), 3)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "00000000000000000002.json line") {
		t.Fatalf("corrupt commit: %v", err)
	}
}

func TestProtocolChecks(t *testing.T) {
	for _, tc := range []struct {
		p    Protocol
		want string
	}{
		{Protocol{MinReaderVersion: 3, ReaderFeatures: []string{"deletionVectors", "shinyNewFeature"}}, `reader feature "shinyNewFeature" is unknown`},
		{Protocol{MinReaderVersion: 3, ReaderFeatures: []string{"catalogManaged"}}, "catalog-managed"},
		{Protocol{MinReaderVersion: 4}, "reader version 4 is newer"},
	} {
		if err := CheckProtocol(tc.p); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
	if err := CheckProtocol(Protocol{MinReaderVersion: 3, ReaderFeatures: []string{"deletionVectors", "v2Checkpoint", "columnMapping"}}); err != nil {
		t.Error(err)
	}
}

// TestIncompleteMultiPartCheckpoint: a multi-part checkpoint missing a part
// is not used; the version is rebuilt from the commits.
func TestIncompleteMultiPartCheckpoint(t *testing.T) {
	dir := deltatest.Copy(t, "multi-part-checkpoint")
	os.Remove(filepath.Join(dir, "_delta_log", "00000000000000000001.checkpoint.0000000002.0000000002.parquet"))
	tb, err := open(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tb.Snapshot(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Checkpoint) != 0 || len(s.Commits) != 2 {
		t.Fatalf("rebuilt from checkpoint %v and %d commits", s.Checkpoint, len(s.Commits))
	}
	whole, _ := open(t, filepath.Join(testdata(t), "multi-part-checkpoint"))
	want, _ := whole.Snapshot(context.Background(), 1)
	if len(want.Checkpoint) != 2 || !sameSnapshot(s, want) {
		t.Fatalf("snapshot without the checkpoint differs: %d files vs %d", len(s.Files), len(want.Files))
	}
}

// The checkpoint reader takes whatever bytes a checkpoint holds: a corrupt
// file is an error naming it, never a crash, and its paths are resolved as
// a log's are.
func FuzzCheckpoint(f *testing.F) {
	for _, name := range []string{
		"deltalog-state-reconstruction-from-checkpoint-missing-protocol/_delta_log/00000000000000000010.checkpoint.parquet",
		"multi-part-checkpoint/_delta_log/00000000000000000001.checkpoint.0000000001.0000000002.parquet",
	} {
		data, err := os.ReadFile(filepath.Join(testdata(f), name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := readParquetActions(bytes.NewReader(data), int64(len(data)), "fuzz.checkpoint.parquet", func(a *Action) error {
			if a.Add != nil {
				decodePath(a.Add.Path, "file:///table")
				if a.Add.DeletionVector != nil {
					a.Add.DeletionVector.File("file:///table")
				}
			}
			if a.Sidecar != nil {
				sidecarKey(a.Sidecar.Path, "file:///table")
			}
			return nil
		})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("an unreadable checkpoint is not reported corrupt: %v", err)
		}
	})
}
