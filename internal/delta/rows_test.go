package delta

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tandem/internal/objstore/local"
)

var ctx = context.Background()

// logCounts reads a table's JSON commits the way a reader of the log
// would, without this package: per data file its numRecords (stats), and
// per version the files live with their deletion vector's cardinality.
func logCounts(t *testing.T, dir string, v int64) (rows int64, files int) {
	t.Helper()
	records := map[string]int64{}
	live := map[string]int64{} // path and deletion vector -> deleted rows
	type dv struct {
		StorageType    string `json:"storageType"`
		PathOrInlineDv string `json:"pathOrInlineDv"`
		Offset         *int   `json:"offset"`
		Cardinality    int64  `json:"cardinality"`
	}
	id := func(path string, d *dv) string {
		if d == nil {
			return path
		}
		off := -1
		if d.Offset != nil {
			off = *d.Offset
		}
		return fmt.Sprintf("%s|%s%s@%d", path, d.StorageType, d.PathOrInlineDv, off)
	}
	for n := int64(0); n <= v; n++ {
		f, err := os.Open(filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", n)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var a struct {
				Add *struct {
					Path  string `json:"path"`
					Stats string `json:"stats"`
					DV    *dv    `json:"deletionVector"`
				} `json:"add"`
				Remove *struct {
					Path string `json:"path"`
					DV   *dv    `json:"deletionVector"`
				} `json:"remove"`
			}
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
				t.Fatal(err)
			}
			switch {
			case a.Add != nil:
				var st struct{ NumRecords int64 }
				json.Unmarshal([]byte(a.Add.Stats), &st)
				records[a.Add.Path] = st.NumRecords
				live[id(a.Add.Path, a.Add.DV)] = 0
				if a.Add.DV != nil {
					live[id(a.Add.Path, a.Add.DV)] = a.Add.DV.Cardinality
				}
			case a.Remove != nil:
				delete(live, id(a.Remove.Path, a.Remove.DV))
			}
		}
		f.Close()
	}
	for k, del := range live {
		path, _, _ := strings.Cut(k, "|")
		rows += records[path] - del
	}
	return rows, len(live)
}

// TestRowsApplyDeletionVectors reads a Spark-written table with deletion
// vectors, column mapping and partitions at every version (its checkpoint
// included) and compares the rows with what the log says: numRecords of
// each live file minus its deletion vector's cardinality.
func TestRowsApplyDeletionVectors(t *testing.T) {
	dir := filepath.Join(testdata(t), "dv-with-columnmapping")
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	withDVs := 0
	for v := int64(0); v <= tb.Log.Latest; v++ {
		snap, err := tb.Snapshot(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		want, files := logCounts(t, dir, v)
		var got int64
		for row, err := range tb.Rows(ctx, snap) {
			if err != nil {
				t.Fatalf("version %d: %v", v, err)
			}
			got++
			// Logical names, and the partition value from the log.
			if _, ok := row["col1"]; !ok || row["part"] == nil {
				t.Fatalf("version %d: row %v lacks logical columns", v, row)
			}
			if s, ok := row["col2"].(string); !ok || !strings.HasPrefix(s, "foo") {
				t.Fatalf("version %d: col2 = %v", v, row["col2"])
			}
		}
		if got != want || len(snap.Files) != files {
			t.Errorf("version %d: %d rows in %d files, the log says %d rows in %d files", v, got, len(snap.Files), want, files)
		}
		for _, a := range snap.Files {
			if a.DeletionVector != nil {
				withDVs++
			}
		}
	}
	if withDVs == 0 {
		t.Fatal("no version had a deletion vector: the test proves nothing")
	}
}

func TestDeletedRefusesCorruptVectors(t *testing.T) {
	tmp := t.TempDir()
	b, _ := local.Open(tmp, true)
	tb := &Table{Bucket: b}
	size, off := int32(20), int32(1)
	os.WriteFile(filepath.Join(tmp, "d.bin"), append([]byte{1, 0, 0, 0, 20}, make([]byte, 24)...), 0o644)
	dv := &DeletionVector{StorageType: "p", PathOrInlineDv: "d.bin", Offset: &off, SizeInBytes: size, Cardinality: 1}
	if _, err := tb.Deleted(ctx, dv); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt vector: %v", err)
	}
	dv.StorageType, dv.PathOrInlineDv = "i", "0000000000"
	if _, err := tb.Deleted(ctx, dv); err == nil {
		t.Fatal("an inline vector without the magic number was accepted")
	}
}
