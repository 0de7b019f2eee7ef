package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"sort"

	"github.com/RoaringBitmap/roaring/v2/roaring64"
	"github.com/parquet-go/parquet-go"
)

// Row is one row of a table: logical column name to value (nil for
// null; int32, int64, float32, float64, bool, string or []byte).
type Row map[string]any

// Rows reads the rows of snapshot s: each live data file's Parquet rows
// but those its deletion vector marks deleted, with the table's logical
// column names (column mapping) and partition values. It is a plain reader
// for checks and reports, not a query engine: it reads top-level columns of
// primitive types and refuses nested ones with the column named.
func (t *Table) Rows(ctx context.Context, s *Snapshot) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		cols, err := logicalColumns(s.Metadata.SchemaString)
		if err != nil {
			yield(nil, err)
			return
		}
		keys := make([]FileKey, 0, len(s.Files))
		for k := range s.Files {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].Path < keys[j].Path })
		for _, k := range keys {
			add := s.Files[k]
			deleted, err := t.Deleted(ctx, add.DeletionVector)
			if err != nil {
				yield(nil, fmt.Errorf("%s: %w", add.Path, err))
				return
			}
			if !t.fileRows(ctx, k.Path, add, cols, deleted, yield) {
				return
			}
		}
	}
}

// Count is the number of rows at snapshot s, deletion vectors applied.
func (t *Table) Count(ctx context.Context, s *Snapshot) (int64, error) {
	var n int64
	for _, err := range t.Rows(ctx, s) {
		if err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

// column is a top-level column: its logical name and the name Parquet
// files use (the physical name under column mapping).
type column struct{ logical, physical string }

func logicalColumns(schema string) ([]column, error) {
	var st struct {
		Fields []struct {
			Name     string          `json:"name"`
			Type     json.RawMessage `json:"type"`
			Metadata map[string]any  `json:"metadata"`
		} `json:"fields"`
	}
	if err := json.Unmarshal([]byte(schema), &st); err != nil {
		return nil, fmt.Errorf("table schema: %w", err)
	}
	var out []column
	for _, f := range st.Fields {
		c := column{logical: f.Name, physical: f.Name}
		if p, ok := f.Metadata["delta.columnMapping.physicalName"].(string); ok && p != "" {
			c.physical = p
		}
		out = append(out, c)
	}
	return out, nil
}

// fileRows yields the rows of one data file; false when the consumer
// stopped or an error was yielded.
func (t *Table) fileRows(ctx context.Context, key string, add *Add, cols []column, deleted *roaring64.Bitmap, yield func(Row, error) bool) bool {
	fail := func(err error) bool { yield(nil, fmt.Errorf("%s: %w", key, err)); return false }
	ra, size, cleanup, err := t.readerAt(ctx, key)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	pf, err := parquet.OpenFile(ra, size)
	if err != nil {
		return fail(err)
	}
	// Leaf index of each physical column name; nested columns are refused.
	leaf := map[string]int{}
	for i, path := range pf.Schema().Columns() {
		if len(path) != 1 {
			continue
		}
		leaf[path[0]] = i
	}
	idx := make([]int, len(cols))
	for i, c := range cols {
		j, ok := leaf[c.physical]
		switch {
		case ok:
			idx[i] = j
		case add.PartitionValues != nil && hasKey(add.PartitionValues, c.physical, c.logical):
			idx[i] = -1
		default:
			return fail(fmt.Errorf("column %s (%s) is nested or missing: this reader reads top-level primitive columns", c.logical, c.physical))
		}
	}
	r := parquet.NewReader(pf)
	defer r.Close()
	buf := make([]parquet.Row, 256)
	var pos uint64
	for {
		n, err := r.ReadRows(buf)
		for _, pr := range buf[:n] {
			if deleted != nil && deleted.Contains(pos) {
				pos++
				continue
			}
			pos++
			row := make(Row, len(cols))
			for i, c := range cols {
				if idx[i] < 0 {
					row[c.logical] = partitionValue(add.PartitionValues, c)
					continue
				}
				row[c.logical] = value(pr[idx[i]])
			}
			if !yield(row, nil) {
				return false
			}
		}
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return fail(err)
		}
	}
}

func hasKey(m map[string]string, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// partitionValue is a partition column's value as the log writes it (a
// string; null when absent or empty).
func partitionValue(m map[string]string, c column) any {
	v, ok := m[c.physical]
	if !ok {
		v, ok = m[c.logical]
	}
	if !ok {
		return nil
	}
	return v
}

func value(v parquet.Value) any {
	if v.IsNull() {
		return nil
	}
	switch v.Kind() {
	case parquet.Boolean:
		return v.Boolean()
	case parquet.Int32:
		return v.Int32()
	case parquet.Int64:
		return v.Int64()
	case parquet.Float:
		return v.Float()
	case parquet.Double:
		return v.Double()
	case parquet.ByteArray, parquet.FixedLenByteArray:
		return string(v.ByteArray())
	}
	return v.String()
}

// dvMagic starts every serialized deletion vector (PROTOCOL.md, "Deletion
// Vector Format"), little endian.
const dvMagic = 1681511377

// Deleted reads a deletion vector: the row positions it marks deleted (nil
// for none). Stored vectors are checked against their checksum and their
// cardinality.
func (t *Table) Deleted(ctx context.Context, dv *DeletionVector) (*roaring64.Bitmap, error) {
	if dv == nil {
		return nil, nil
	}
	var payload []byte
	switch dv.StorageType {
	case "i":
		raw, err := z85Decode(dv.PathOrInlineDv)
		if err != nil {
			return nil, fmt.Errorf("inline deletion vector: %w", err)
		}
		payload = raw
	case "u", "p":
		key, err := dv.File(t.Bucket.URL())
		if err != nil {
			return nil, err
		}
		off := int64(1) // after the format version byte
		if dv.Offset != nil {
			off = int64(*dv.Offset)
		}
		rc, err := t.Bucket.GetRange(ctx, key, off, 4+int64(dv.SizeInBytes)+4, "")
		if err != nil {
			return nil, fmt.Errorf("deletion vector %s: %w", key, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("deletion vector %s: %w", key, err)
		}
		if len(data) != 8+int(dv.SizeInBytes) || binary.BigEndian.Uint32(data) != uint32(dv.SizeInBytes) {
			return nil, fmt.Errorf("deletion vector %s at offset %d: the stored size does not match the log's %d bytes", key, off, dv.SizeInBytes)
		}
		payload = data[4 : 4+dv.SizeInBytes]
		if crc32.ChecksumIEEE(payload) != binary.BigEndian.Uint32(data[4+dv.SizeInBytes:]) {
			return nil, fmt.Errorf("deletion vector %s at offset %d: checksum mismatch (the file is corrupt)", key, off)
		}
	default:
		return nil, fmt.Errorf("deletion vector storage type %q: %w", dv.StorageType, ErrUnsupported)
	}
	if len(payload) < 12 || binary.LittleEndian.Uint32(payload) != dvMagic {
		return nil, errors.New("deletion vector: not a serialized RoaringBitmapArray (bad magic number)")
	}
	body := payload[4:]
	if n := binary.LittleEndian.Uint64(body); n > uint64(len(body))/4 {
		return nil, fmt.Errorf("deletion vector: %d bitmaps cannot fit in %d bytes", n, len(body))
	}
	bm := roaring64.New()
	if _, err := bm.ReadFrom(bytes.NewReader(body)); err != nil {
		return nil, fmt.Errorf("deletion vector: %w", err)
	}
	if int64(bm.GetCardinality()) != dv.Cardinality {
		return nil, fmt.Errorf("deletion vector marks %d rows, the log says %d", bm.GetCardinality(), dv.Cardinality)
	}
	return bm, nil
}
