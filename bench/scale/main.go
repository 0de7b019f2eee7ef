// Command scale measures planning a sync of a large Delta table: 100,000
// commits and a checkpoint of 1,000,000 live files.
//
//	go build -o /tmp/scale ./bench/scale
//	/tmp/scale -gen DIR                      # write the table's log (no data files)
//	/usr/bin/time -v /tmp/scale -plan DIR    # time and peak memory of the plan
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/parquet-go/parquet-go"

	"tandem/internal/delta"
	"tandem/internal/objstore/local"
	"tandem/internal/tablesync"
)

func main() {
	gen := flag.String("gen", "", "write a table here")
	plan := flag.String("plan", "", "plan a sync of the table here into an empty target")
	commits := flag.Int("commits", 100000, "commits")
	files := flag.Int("files", 1000000, "live files in the checkpoint")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the plan here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		must(err)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	switch {
	case *gen != "":
		generate(*gen, *commits, *files)
	case *plan != "":
		measure(*plan)
		return
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func generate(dir string, commits, files int) {
	logDir := filepath.Join(dir, "_delta_log")
	must(os.MkdirAll(logDir, 0o755))
	cp := int64(commits - 10)
	write := func(v int64, body string) {
		must(os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%020d.json", v)), []byte(body), 0o644))
	}
	write(0, `{"commitInfo":{"timestamp":0,"operation":"CREATE TABLE"}}
{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}
{"metaData":{"id":"scale","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[]}","partitionColumns":[],"configuration":{}}}
`)
	for v := int64(1); v < int64(commits); v++ {
		write(v, fmt.Sprintf(`{"commitInfo":{"timestamp":%d,"operation":"WRITE"}}
{"add":{"path":"part-%09d.parquet","partitionValues":{},"size":1000,"modificationTime":0,"dataChange":true}}
`, v, v))
	}
	f, err := os.Create(filepath.Join(logDir, fmt.Sprintf("%020d.checkpoint.parquet", cp)))
	must(err)
	w := parquet.NewGenericWriter[delta.Action](f)
	meta := delta.Metadata{ID: "scale", SchemaString: `{"type":"struct","fields":[]}`, PartitionColumns: []string{}, Configuration: map[string]string{}}
	_, err = w.Write([]delta.Action{{Protocol: &delta.Protocol{MinReaderVersion: 1, MinWriterVersion: 2}}, {MetaData: &meta}})
	must(err)
	batch := make([]delta.Action, 0, 10000)
	for i := range files {
		batch = append(batch, delta.Action{Add: &delta.Add{Path: fmt.Sprintf("date=2026-01-%02d/part-%09d-c000.snappy.parquet", i%28+1, i), Size: 1000 + int64(i%500), ModificationTime: 1, DataChange: false}})
		if len(batch) == cap(batch) {
			_, err = w.Write(batch)
			must(err)
			batch = batch[:0]
		}
	}
	_, err = w.Write(batch)
	must(err)
	must(w.Close())
	must(f.Close())
}

func measure(dir string) {
	ctx := context.Background()
	b, err := local.Open(dir, false)
	must(err)
	target, err := local.Open(must2(os.MkdirTemp("", "tandem-scale-target-")), false)
	must(err)
	defer os.RemoveAll(target.Root())
	start := time.Now()
	plan, err := tablesync.Plan(ctx, b, target, -1)
	must(err)
	el := time.Since(start)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("plan: version %d, %d files to copy, %.2f s, heap in use %.0f MiB, heap peak (sys) %.0f MiB\n",
		plan.Version, plan.Files, el.Seconds(), float64(ms.HeapInuse)/(1<<20), float64(ms.HeapSys)/(1<<20))
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func must2(s string, err error) string {
	must(err)
	return s
}
