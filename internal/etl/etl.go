// Package etl writes Delta tables the way an ETL workflow does, for the demo
// and the benchmarks: appends, updates that rewrite files, OPTIMIZE-style
// compaction and VACUUM, each as a real Delta commit over Parquet data files.
// Commits carry commitInfo.job with the run id, as Databricks writes it.
package etl

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/parquet-go/parquet-go"

	"tandem/internal/delta"
	"tandem/internal/objstore"
)

// Row is the schema of every generated table.
type Row struct {
	ID    int64  `parquet:"id"`
	Value string `parquet:"value"`
}

const schema = `{"type":"struct","fields":[{"name":"id","type":"long","nullable":false,"metadata":{}},{"name":"value","type":"string","nullable":false,"metadata":{}}]}`

// Table is a Delta table being written.
type Table struct {
	B       objstore.Bucket
	Version int64
	live    map[string]int64 // path -> size
	removed []string         // removed files not vacuumed yet
	rng     *rand.Rand
	nextID  int64
	// Written counts every data byte ever written (what replicating the
	// folder would copy).
	Written int64
}

// Create writes version 0 of a new table.
func Create(ctx context.Context, b objstore.Bucket, seed uint64) (*Table, error) {
	t := &Table{B: b, Version: -1, live: map[string]int64{}, rng: rand.New(rand.NewPCG(seed, seed+1))}
	id := make([]byte, 16)
	crand.Read(id)
	actions := []any{
		map[string]any{"protocol": map[string]any{"minReaderVersion": 1, "minWriterVersion": 2}},
		map[string]any{"metaData": map[string]any{"id": hex.EncodeToString(id), "format": map[string]any{"provider": "parquet", "options": map[string]any{}},
			"schemaString": schema, "partitionColumns": []string{}, "configuration": map[string]any{}, "createdTime": time.Now().UnixMilli()}},
	}
	return t, t.commit(ctx, "CREATE TABLE", "", actions)
}

// Open continues writing an existing table at its latest version (a
// workflow running in the region it failed over to).
func Open(ctx context.Context, b objstore.Bucket, seed uint64) (*Table, error) {
	dt, err := delta.Open(ctx, b)
	if err != nil {
		return nil, err
	}
	snap, err := dt.Snapshot(ctx, dt.Log.Latest)
	if err != nil {
		return nil, err
	}
	t := &Table{B: b, Version: snap.Version, live: map[string]int64{}, rng: rand.New(rand.NewPCG(seed, seed+1)),
		nextID: int64(seed) << 40} // ids apart from the ones written before
	for _, a := range snap.Files {
		t.live[a.Path] = a.Size
	}
	return t, nil
}

// Live is the number of live files and their bytes.
func (t *Table) Live() (files int, bytes int64) {
	for _, s := range t.live {
		bytes += s
	}
	return len(t.live), bytes
}

func (t *Table) commit(ctx context.Context, op, runID string, actions []any) error {
	info := map[string]any{"timestamp": time.Now().UnixMilli(), "operation": op}
	if runID != "" {
		info["job"] = map[string]any{"jobId": "1", "jobRunId": runID}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.Encode(map[string]any{"commitInfo": info})
	for _, a := range actions {
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	key := fmt.Sprintf("%s%020d.json", delta.LogDir, t.Version+1)
	if _, err := t.B.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{IfAbsent: true}); err != nil {
		return fmt.Errorf("commit %d: %w", t.Version+1, err)
	}
	t.Version++
	return nil
}

// writeFile writes a Parquet file of n rows and returns its add action.
func (t *Table) writeFile(ctx context.Context, n int, dataChange bool) (map[string]any, error) {
	rows := make([]Row, n)
	for i := range rows {
		t.nextID++
		v := make([]byte, 48)
		for j := range v {
			v[j] = "abcdefghijklmnopqrstuvwxyz0123456789"[t.rng.IntN(36)]
		}
		rows[i] = Row{ID: t.nextID, Value: string(v)}
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[Row](&buf)
	if _, err := w.Write(rows); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	name := make([]byte, 16)
	crand.Read(name)
	path := fmt.Sprintf("part-%05d-%s.snappy.parquet", t.Version+1, hex.EncodeToString(name))
	if _, err := t.B.Put(ctx, path, bytes.NewReader(buf.Bytes()), int64(buf.Len()), objstore.PutOptions{}); err != nil {
		return nil, err
	}
	t.live[path] = int64(buf.Len())
	t.Written += int64(buf.Len())
	return map[string]any{"add": map[string]any{"path": path, "partitionValues": map[string]any{}, "size": buf.Len(),
		"modificationTime": time.Now().UnixMilli(), "dataChange": dataChange}}, nil
}

func (t *Table) remove(path string, dataChange bool) map[string]any {
	size := t.live[path]
	delete(t.live, path)
	t.removed = append(t.removed, path)
	return map[string]any{"remove": map[string]any{"path": path, "deletionTimestamp": time.Now().UnixMilli(), "dataChange": dataChange, "size": size}}
}

// Append adds files of rows (one commit).
func (t *Table) Append(ctx context.Context, runID string, files, rows int) error {
	var actions []any
	for range files {
		a, err := t.writeFile(ctx, rows, true)
		if err != nil {
			return err
		}
		actions = append(actions, a)
	}
	return t.commit(ctx, "WRITE", runID, actions)
}

// Update rewrites one live file (an UPDATE or MERGE touching it).
func (t *Table) Update(ctx context.Context, runID string, rows int) error {
	paths := slices.Sorted(maps.Keys(t.live))
	if len(paths) == 0 {
		return t.Append(ctx, runID, 1, rows)
	}
	old := paths[t.rng.IntN(len(paths))]
	a, err := t.writeFile(ctx, rows, true)
	if err != nil {
		return err
	}
	return t.commit(ctx, "UPDATE", runID, []any{t.remove(old, true), a})
}

// Optimize compacts every live file into one (no data change).
func (t *Table) Optimize(ctx context.Context, runID string, rows int) error {
	var actions []any
	for _, p := range slices.Sorted(maps.Keys(t.live)) {
		actions = append(actions, t.remove(p, false))
	}
	a, err := t.writeFile(ctx, rows, false)
	if err != nil {
		return err
	}
	return t.commit(ctx, "OPTIMIZE", runID, append(actions, a))
}

// Vacuum deletes removed files from storage (retention zero: the demo's
// and benchmark's choice, so that history the standby still needs can
// really disappear).
func (t *Table) Vacuum(ctx context.Context) error {
	for _, p := range t.removed {
		if err := t.B.Delete(ctx, p); err != nil {
			return err
		}
	}
	t.removed = nil
	return nil
}
