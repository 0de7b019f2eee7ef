package stream_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"tandem/internal/fence"
	"tandem/internal/stream"
	"tandem/internal/stream/streamtest"
	"tandem/produce"
)

// The cost of the guarantee, side by side on the same broker and sink:
//
//	go test -run '^$' -bench . -benchtime 30000x -count 3 ./internal/stream
//
// Produce: one region (a plain producer) against both (dual produce).
// Deliver: a plain consumer that reads batches and inserts them in one
// transaction each, against tandem's processor doing the same through the
// sink (id recorded, position, epoch fence, lease guard).

func benchLog(b *testing.B, kind, name string) (stream.Log, string) {
	url := streamtest.Broker(b, kind, name)
	l, err := stream.Open(context.Background(), stream.Spec{Broker: url, Stream: name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return l, url
}

func BenchmarkProduce(b *testing.B) {
	ctx := context.Background()
	for _, kind := range kinds {
		b.Run(kind+"/single", func(b *testing.B) {
			l, _ := benchLog(b, kind, "bench")
			b.ResetTimer()
			for i := range b.N {
				if _, err := l.Append(ctx, fmt.Sprint(i), []byte(`{"amount": 12}`)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(kind+"/dual", func(b *testing.B) {
			_, ua := benchLog(b, kind, "bench")
			_, ub := benchLog(b, kind, "bench")
			p, err := produce.Open(ctx, []produce.Target{{Region: "a", Broker: ua, Stream: "bench"}, {Region: "b", Broker: ub, Stream: "bench"}})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			for i := range b.N {
				if _, err := p.Send(ctx, fmt.Sprint(i), []byte(`{"amount": 12}`)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

const benchBatch = 256

func fill(b *testing.B, l stream.Log, n int) {
	ctx := context.Background()
	for i := range n {
		if _, err := l.Append(ctx, fmt.Sprintf("e%08d", i), []byte(`{"amount": 12}`)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDeliver(b *testing.B) {
	ctx := context.Background()
	for _, kind := range kinds {
		b.Run(kind+"/plain", func(b *testing.B) {
			l, _ := benchLog(b, kind, "bench")
			fill(b, l, b.N)
			db, err := sql.Open("sqlite", filepath.Join(b.TempDir(), "sink.db")+"?_pragma=journal_mode(WAL)")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			db.Exec(`CREATE TABLE effects (id TEXT, body TEXT)`)
			b.ResetTimer()
			pos := int64(0)
			for pos < int64(b.N) {
				evs, err := l.Read(ctx, pos, benchBatch, 100*time.Millisecond)
				if err != nil {
					b.Fatal(err)
				}
				if len(evs) == 0 {
					continue
				}
				tx, _ := db.Begin()
				for _, ev := range evs {
					if _, err := tx.Exec(`INSERT INTO effects (id, body) VALUES (?, ?)`, ev.ID, string(ev.Data)); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				pos = evs[len(evs)-1].Pos
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(kind+"/tandem", func(b *testing.B) {
			l, _ := benchLog(b, kind, "bench")
			fill(b, l, b.N)
			path := filepath.Join(b.TempDir(), "sink.db")
			sk, err := stream.OpenSQL(ctx, "sqlite", path, "bench", []string{`INSERT INTO effects (id, body) VALUES ($1, $2)`})
			if err != nil {
				b.Fatal(err)
			}
			defer sk.Close()
			db, _ := sql.Open("sqlite", path)
			db.Exec(`CREATE TABLE effects (id TEXT, body TEXT)`)
			db.Close()
			ls := &lease{}
			ls.move("a")
			rctx, cancel := context.WithCancel(ctx)
			p := &stream.Processor{Region: "a", Log: l, Sink: sk, Consumer: "a/bench", Batch: benchBatch,
				Guard: fence.New("bench", ls.cond("a")),
				Delivered: func(_ stream.Result, pos int64) {
					if pos >= int64(b.N) {
						cancel()
					}
				}}
			b.ResetTimer()
			if err := p.Run(rctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
