package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"tandem/internal/etl"
	"tandem/internal/objstore/local"
)

type demoOptions struct {
	dir string
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run tandem's main job on two local folders as two regions",
		Long: `Run tandem's main job end to end with no services: two folders stand for
the primary and standby regions. The demo writes sample data into the primary,
replicates it, changes it and replicates again, shows the RPO watermark,
and catches a write to the read-only replica. An ETL workflow writes three
Delta tables, and the group of tables reaches the standby only at the end of
each completed run. A drill tests the standby. Then the primary goes dark in
the middle of a run: the
failover plan runs from the standby (lease, tables finalized to the last
completed run, bucket made writable, catalog aliases switched, workflow
unpaused), a query through the aliases is answered there, the RPO and RTO are
printed, a failback makes the old primary the standby, and a switchover moves
the work back. Each step is
explained as it runs. The folders stay behind for you to look at (a temporary
folder unless --dir is given).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runDemo(c.Context(), o, os.Stdout)
		},
	}
	c.Flags().StringVar(&o.dir, "dir", "", "folder for the two regions (default: a new temporary folder)")
	c.AddCommand(newDemoCDCCommand())
	return c
}

const demoConfig = `# tandem demo: two folders as two regions.
regions:
  - name: primary
    state: %[1]s/primary/.tandem
    health:
      interval: 250ms
      timeout: 200ms
      failures: 2
      checks: [{name: app, store: {url: %[1]s/primary/app}}]
  - name: standby
    state: %[1]s/standby/.tandem
    health:
      interval: 250ms
      timeout: 200ms
      failures: 2
      checks: [{name: app, store: {url: %[1]s/standby/app}}]
replication:
  - name: lake
    from: {region: primary, url: %[1]s/primary/lake}
    to: {region: standby, url: %[1]s/standby/lake}
    interval: 10s
    delete: true
    rpo: 1m
groups:
  - name: sales
    owner: data-team@example.com
    from: primary
    to: standby
    workflow: {name: sales_etl}
    tables:
      - {name: bronze, from: %[1]s/primary/lake/tables/bronze, to: %[1]s/standby/lake/tables/bronze}
      - {name: silver, from: %[1]s/primary/lake/tables/silver, to: %[1]s/standby/lake/tables/silver}
      - {name: gold, from: %[1]s/primary/lake/tables/gold, to: %[1]s/standby/lake/tables/gold}
`

func runDemo(ctx context.Context, o demoOptions, w io.Writer) error {
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "tandem-demo-"); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	primary, standby := filepath.Join(dir, "primary", "lake"), filepath.Join(dir, "standby", "lake")
	if entries, _ := os.ReadDir(primary); len(entries) > 0 {
		return usageError{fmt.Errorf("%s already holds a demo: give another --dir or remove it", dir)}
	}
	for _, d := range []string{primary, standby, filepath.Join(dir, "witness"), filepath.Join(dir, "primary", "app"), filepath.Join(dir, "standby", "app")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	sched, err := startScheduler(w)
	if err != nil {
		return err
	}
	defer sched.srv.Close()
	ds, err := startDemoStreams(ctx, dir)
	if err != nil {
		return err
	}
	defer ds.stopAll()
	cfgPath := filepath.Join(dir, "tandem.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(demoConfig, dir)+fmt.Sprintf(demoTopology, dir, sched.addr)+ds.topology()), 0o644); err != nil {
		return err
	}
	step := func(n int, title, explain string) {
		fmt.Fprintf(w, "\n== %d. %s\n%s\n\n", n, title, strings.TrimSpace(explain))
	}
	pass := func() error {
		return runReplicate(ctx, replicateOptions{config: cfgPath}, []string{"lake"}, w)
	}

	fmt.Fprintf(w, "tandem demo in %s\nThe config is %s; every command below can be run by hand with --config.\n", dir, cfgPath)

	step(1, "Write sample data into the primary region",
		`The primary region's bucket is the folder primary/lake. We write 300 small
files (CSV and JSON, as an ingest job would) and one 24 MiB file.`)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		name := fmt.Sprintf("raw/orders/2026/11/%02d/part-%04d.csv", i%30+1, i)
		if i%3 == 0 {
			name = fmt.Sprintf("raw/events/batch-%04d.json", i)
		}
		if err := writeDemoFile(filepath.Join(primary, name), 2048+rng.IntN(4096), rng); err != nil {
			return err
		}
	}
	if err := writeDemoFile(filepath.Join(primary, "exports/customers.parquet"), 24<<20, rng); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote 301 objects into %s\n", primary)

	step(2, "Replicate to the standby region",
		`tandem lists both sides in key order and streams them side by side with its
index of earlier copies, so memory does not grow with the bucket. Every object
goes to the standby atomically: a reader there sees the old object or the new
one, never part of one. When a pass copied everything it found, the RPO
watermark moves to the time the pass started: every change made in the primary
before it is in the standby.`)
	if err := pass(); err != nil {
		return err
	}

	step(3, "Change the primary and replicate again",
		`The primary changes: 10 files are rewritten, 5 deleted, 20 added. The next
pass copies only those 30 objects and deletes the 5. The 286 unchanged ones
cost no request of their own: the listing and the index are enough.`)
	for i := range 10 {
		if err := writeDemoFile(filepath.Join(primary, fmt.Sprintf("raw/orders/2026/11/%02d/part-%04d.csv", (i*3+1)%30+1, i*3+1)), 3000, rng); err != nil {
			return err
		}
	}
	for i := range 5 {
		os.Remove(filepath.Join(primary, fmt.Sprintf("raw/events/batch-%04d.json", i*3)))
	}
	for i := range 20 {
		if err := writeDemoFile(filepath.Join(primary, fmt.Sprintf("raw/orders/2026/12/01/part-%04d.csv", i)), 2500, rng); err != nil {
			return err
		}
	}
	if err := pass(); err != nil {
		return err
	}

	step(4, "Catch a write to the read-only replica",
		`Someone writes into the standby's bucket by mistake. The replica should be
read-only, so tandem reports the object as foreign. It never deletes what it
did not write, and it puts the primary's version back over any object it
copied that was changed in the standby.`)
	if err := os.WriteFile(filepath.Join(standby, "raw", "oops.csv"), []byte("written in the standby\n"), 0o644); err != nil {
		return err
	}
	if err := pass(); err != nil {
		return err
	}

	step(5, "Look at the status, as an operator would",
		`'tandem status' reads only the standby region's records, so it works when the
primary is gone. The lag is how much data a failover now would lose, at most.`)
	if err := demoStatus(ctx, cfgPath, w); err != nil {
		return err
	}

	tables, err := demoETL(ctx, cfgPath, primary, step, w)
	if err != nil {
		return err
	}
	if err := demoDR(ctx, dir, cfgPath, tables, sched, ds, step, w); err != nil {
		return err
	}
	if err := demoIntegration(ctx, dir, step, w); err != nil {
		return err
	}
	if err := demoReports(ctx, dir, cfgPath, step, w); err != nil {
		return err
	}

	fmt.Fprintf(w, `
== Done
The regions are in %[1]s; after the automatic failover the standby is the
primary, with no standby until a failback. Try:
  %[5]s status --config %[2]s
  %[5]s plan executions --config %[2]s
  %[5]s plan show --config %[2]s failback
  %[5]s plan run --dry-run --config %[2]s failback
  %[5]s report --config %[2]s --history --out %[1]s/history.html
  %[5]s serve --config %[2]s --region standby     (the web page on http://127.0.0.1:9750/)
  %[5]s replicate --json %[3]s %[4]s
(The workflow steps call a scheduler that lived inside the demo process: by
hand they fail to connect, which is what a precheck is for.)
`, dir, cfgPath, primary, filepath.Join(dir, "copy"), invocation())
	return nil
}

// invocation is how this tandem was started, for commands printed to be
// pasted: "go run ./cmd/tandem" under go run, else the program as invoked.
func invocation() string {
	if strings.Contains(os.Args[0], string(filepath.Separator)+"go-build") {
		return "go run ./cmd/tandem"
	}
	return os.Args[0]
}

// demoETL runs a workflow over three Delta tables and syncs the group at
// run boundaries (steps 6 to 8).
func demoETL(ctx context.Context, cfgPath, primary string, step func(int, string, string), w io.Writer) (map[string]*etl.Table, error) {
	tables := map[string]*etl.Table{}
	names := []string{"bronze", "silver", "gold"}
	for i, name := range names {
		b, err := local.Open(filepath.Join(primary, "tables", name), true)
		if err != nil {
			return nil, err
		}
		if tables[name], err = etl.Create(ctx, b, uint64(i+1)); err != nil {
			return nil, err
		}
	}
	group := func(action, runID string) error {
		return runGroup(ctx, groupOptions{config: cfgPath, runID: runID}, "sales", action, w)
	}
	primaryVersions := func() string {
		v := map[string]int64{}
		for n, t := range tables {
			v[n] = t.Version
		}
		return versions(v)
	}

	step(6, "An ETL workflow writes three Delta tables",
		`The sales_etl workflow writes bronze, silver and gold (real Delta tables:
Parquet files and JSON commits) in many commits per run. Its last task tells
tandem the run is complete: 'tandem group complete --run-id run-1'. Bucket
replication leaves these tables alone: the group copies them.`)
	run := []func() error{
		func() error { return tables["bronze"].Append(ctx, "run-1", 3, 2000) },
		func() error { return tables["silver"].Append(ctx, "run-1", 2, 2000) },
		func() error { return tables["silver"].Update(ctx, "run-1", 2000) },
		func() error { return tables["gold"].Append(ctx, "run-1", 1, 500) },
	}
	for _, f := range run {
		if err := f(); err != nil {
			return nil, err
		}
	}
	if err := group("complete", "run-1"); err != nil {
		return nil, err
	}

	step(7, "Sync while the next run is in flight",
		`Run 2 has started: it appended to bronze and rewrote a silver file, and has not
finished. A sync now copies run 1's versions, not the half-written run 2, and
writes the group manifest in the standby region only once every table is
there.`)
	if err := tables["bronze"].Append(ctx, "run-2", 2, 2000); err != nil {
		return nil, err
	}
	if err := tables["silver"].Update(ctx, "run-2", 2000); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "the primary is at %s (run 2 in flight)\n", primaryVersions())
	if err := group("sync", ""); err != nil {
		return nil, err
	}

	step(8, "Run 2 finishes, with compaction and vacuum",
		`Run 2 writes gold, compacts silver and bronze (OPTIMIZE) and vacuums the files
it compacted away. The next sync copies only files live at run 2's versions:
files written and compacted away between two syncs never cross regions.`)
	steps := []func() error{
		func() error { return tables["gold"].Append(ctx, "run-2", 1, 500) },
		func() error { return tables["silver"].Optimize(ctx, "run-2", 6000) },
		func() error { return tables["bronze"].Optimize(ctx, "run-2", 10000) },
		func() error { return tables["bronze"].Vacuum(ctx) },
		func() error { return tables["silver"].Vacuum(ctx) },
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return nil, err
		}
	}
	if err := group("complete", "run-2"); err != nil {
		return nil, err
	}
	if err := group("sync", ""); err != nil {
		return nil, err
	}
	var written int64
	for _, t := range tables {
		written += t.Written
	}
	fmt.Fprintf(w, "the tables' folders held %s of data files in all; replicating them as files would have copied all of it\n", humanBytes(written))

	return tables, nil
}

func writeDemoFile(path string, size int, rng *rand.Rand) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = "abcdefghijklmnopqrstuvwxyz0123456789,\n"[rng.IntN(38)]
	}
	return os.WriteFile(path, data, 0o644)
}
