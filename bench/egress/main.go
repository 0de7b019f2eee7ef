// Command egress measures the bytes that cross regions when a workflow's
// tables are kept in a standby, on a compaction-heavy workload: bronze,
// silver and gold written through many runs with appends, updates that
// rewrite files, OPTIMIZE and VACUUM. It compares tandem's group sync with
// (a) replicating every file the tables' folders ever held, (a') tandem's own
// bucket replication run at the same run boundaries, and (b) the anchor's
// deep clone into a staging location and then into the final tables.
//
//	go run ./bench/egress [-runs 30] [-optimize-every 2] [-updates-per-run 4] [-sync-every 1]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"tandem/internal/delta"
	"tandem/internal/etl"
	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	"tandem/internal/replicate"
	"tandem/internal/state"
	"tandem/internal/tablegroup"
)

func main() {
	runs := flag.Int("runs", 30, "workflow runs")
	every := flag.Int("optimize-every", 2, "compact and vacuum every N runs")
	loop := flag.Int("updates-per-run", 4, "updates silver makes in a loop during each run (seed 001)")
	syncEvery := flag.Int("sync-every", 1, "sync the group (and run bucket replication) every N runs")
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "tandem-egress-")
	must(err)
	defer os.RemoveAll(dir)
	open := func(p string) objstore.Bucket {
		b, err := local.Open(filepath.Join(dir, p), true)
		must(err)
		return b
	}
	names := []string{"bronze", "silver", "gold"}
	tables := map[string]*etl.Table{}
	stateStore := state.Store{Bucket: open("standby-state")}.Sub("groups").Sub("sales")
	g := &tablegroup.Group{Name: "sales", Workflow: true, State: stateStore}
	// (a') bucket replication of the same table folders, at the same boundaries.
	pair := &replicate.Pair{Name: "tables", Source: open("primary"), Target: open("standby-bucket"), Delete: true}
	st := state.Store{Bucket: open("bucket-state")}
	pair.State = &st
	// (b) the anchor: staging clone then final clone; both incremental.
	staging := map[string]map[string]bool{}
	var tandemBytes, bucketBytes, anchorCross, anchorLocal int64
	for i, n := range names {
		t, err := etl.Create(ctx, open("primary/"+n), uint64(i+1))
		must(err)
		tables[n] = t
		g.Tables = append(g.Tables, tablegroup.Table{Name: n, Source: t.B, Target: open("standby/" + n)})
		staging[n] = map[string]bool{}
	}
	for r := 1; r <= *runs; r++ {
		id := fmt.Sprintf("run-%d", r)
		must(tables["bronze"].Append(ctx, id, 4, 4000))
		must(tables["silver"].Append(ctx, id, 2, 4000))
		for range *loop {
			must(tables["silver"].Update(ctx, id, 8000))
		}
		for range max(1, *loop/2) {
			must(tables["gold"].Update(ctx, id, 2000))
		}
		if r%*every == 0 {
			for _, n := range names {
				files, _ := tables[n].Live()
				must(tables[n].Optimize(ctx, id, 4000*files))
				must(tables[n].Vacuum(ctx))
			}
		}
		_, err := g.Complete(ctx, id)
		must(err)
		if r%*syncEvery != 0 {
			continue
		}
		res, err := g.Sync(ctx)
		must(err)
		for _, t := range res.Tables {
			tandemBytes += t.Bytes + t.LogBytes
		}
		sum, err := pair.RunOnce(ctx)
		must(err)
		bucketBytes += sum.Bytes
		// The anchor clones each table as of the run into staging (new
		// live files cross regions), then staging into the final table
		// (the same bytes again, inside the standby).
		for _, n := range names {
			tb, err := delta.Open(ctx, tables[n].B)
			must(err)
			snap, err := tb.Snapshot(ctx, -1)
			must(err)
			for k, a := range snap.Files {
				if !staging[n][k.Path] {
					staging[n][k.Path] = true
					anchorCross += a.Size
					anchorLocal += a.Size
				}
			}
		}
	}
	var written, live int64
	for _, t := range tables {
		written += t.Written
		_, b := t.Live()
		live += b
	}
	standby := du(filepath.Join(dir, "standby"))
	fmt.Printf("| measure (%d runs, %d silver updates a run, optimize and vacuum every %d runs, sync every %d runs) | bytes | vs tandem |\n|---|---|---|\n", *runs, *loop, *every, *syncEvery)
	row := func(name string, v int64) {
		fmt.Printf("| %s | %d | %.2fx |\n", name, v, float64(v)/float64(tandemBytes))
	}
	row("tandem group sync: bytes across regions (data + log)", tandemBytes)
	row("(a) every data file the tables' folders ever held", written)
	row("(a') tandem bucket replication at the same run boundaries", bucketBytes)
	row("(b) anchor: across regions into staging (data only)", anchorCross)
	row("(b) anchor: staging then final, bytes written in the standby", anchorCross+anchorLocal)
	row("tandem: bytes held in the standby at the end (one copy)", standby)
	row("(b) anchor: bytes held in the standby at the end (staging + final, before their own vacuum)", 2*anchorCross)
	row("live data at the end", live)
}

func du(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
