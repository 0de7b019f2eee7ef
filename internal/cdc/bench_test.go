package cdc_test

// Benchmarks of CDC against its peers, side by side in one run on real
// PostgreSQL 15 servers (bench/cdc.sh runs them and prints the figures for
// docs/BENCHMARKS.md). TANDEM_BENCH_ROWS sets the table sizes (defaults:
// 200,000 rows applied, 10,000,000 validated, 1,000,000 repaired).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tandem/internal/cdc"
	"tandem/internal/postgres"
	"tandem/internal/postgres/pgtest"
)

func benchRows(def int) int {
	if n, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return def
}

const benchTable = `CREATE TABLE acct (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL, opened date NOT NULL, updated timestamptz NOT NULL DEFAULT now())`

func benchFill(from, to int) string {
	return fmt.Sprintf(`INSERT INTO acct (id, owner, balance, opened) SELECT g, 'owner ' || g, g %% 10000 / 7.0, date '2020-01-01' + g %% 1000 FROM generate_series(%d, %d) g`, from, to)
}

func conn(b testing.TB, dsn string) *pgx.Conn {
	c, err := postgres.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// equalTables makes the same n-row table in both servers.
func equalTables(b *testing.B, n int, extra ...string) (*topology, *pgx.Conn, *pgx.Conn) {
	tp := &topology{primary: pgtest.Primary(b), target: pgtest.Primary(b)}
	src, dst := conn(b, tp.primary.DSN()), conn(b, tp.target.DSN())
	for _, c := range []*pgx.Conn{src, dst} {
		for _, q := range append([]string{benchTable, benchFill(1, n), "UPDATE acct SET updated = '2026-01-01'"}, append(extra, "VACUUM ANALYZE acct")...) {
			mustExec(b, c, q)
		}
	}
	return tp, src, dst
}

// pipeCopy copies the rows of out (COPY ... TO STDOUT in src) into in
// (COPY ... FROM STDIN in dst), in chunks of 64 KiB as psql's \copy sends
// them (a message per row, as the source hands them out, cost the peer a
// system call per row).
func pipeCopy(b *testing.B, src, dst *pgx.Conn, out, in string) {
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 64<<10)
		_, err := src.PgConn().CopyTo(context.Background(), w, out)
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
	}()
	if _, err := dst.PgConn().CopyFrom(context.Background(), pr, in); err != nil {
		b.Fatal(err)
	}
}

func mustExec(b testing.TB, c *pgx.Conn, q string) {
	if _, err := c.Exec(context.Background(), q); err != nil {
		b.Fatalf("%s: %v", q, err)
	}
}

// BenchmarkApply: rows inserted in the source, in transactions of 1,000,
// until the target's position has them all (tandem), against a plain COPY
// of the same rows into a table of the target (the floor).
func BenchmarkApply(b *testing.B) {
	n := benchRows(200000)
	tp := &topology{primary: pgtest.Primary(b), target: pgtest.Primary(b)}
	src, dst := conn(b, tp.primary.DSN()), conn(b, tp.target.DSN())
	mustExec(b, src, benchTable)
	o := cdc.Options{Pair: "bench", Sources: []string{tp.primary.DSN()}, Target: tp.target.DSN(), Tables: []string{"public.acct"},
		Slot: "tandem_bench", Publication: "tandem_bench"}
	ctx := context.Background()
	waitPos := func(at string) {
		for {
			var ok bool
			if err := dst.QueryRow(ctx, `SELECT coalesce((SELECT lsn >= $1::pg_lsn FROM tandem.cdc_position WHERE pair = 'bench' AND state = 'streaming'), false)`, at).Scan(&ok); err == nil && ok {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// replicate starts the replicator and returns when the target has
	// what the source has now; stop then waits until the slot has let go
	// of it too (the source's housekeeping, not part of the time) and
	// stops the replicator.
	replicate := func(o cdc.Options) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cdc.New(o).Run(rctx) }()
		var at string
		src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&at)
		waitPos(at)
		return func() {
			for {
				var ok bool
				if err := src.QueryRow(ctx, `SELECT coalesce((SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'tandem_bench'), false)`, at).Scan(&ok); err == nil && ok {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
		}
	}
	replicate(o)() // the slot and the (empty) snapshot
	// refill puts run i's rows in the source, in transactions of 1,000.
	// Then a checkpoint logs the transactions running (as the source's
	// background writer does every 15 s when it is busy), where a slot may
	// restart decoding: without it, a slot's restart point would stay
	// where the benchmark began (its runs follow each other within
	// seconds), and each run would decode every earlier run's rows again
	// before its own.
	write := func(i int) {
		for k := 0; k < n; k += 1000 {
			mustExec(b, src, benchFill(i*n+k+1, i*n+min(k+1000, n)))
		}
	}
	refill := func(i int) {
		mustExec(b, src, "TRUNCATE acct")
		write(i)
		mustExec(b, src, "CHECKPOINT")
	}
	// tandem: the rows wait in the slot while the replicator is stopped
	// (a backlog, read in bulk); the time is that of applying them all.
	// tandem-stream: the same, read from the stream as a live tail is (the
	// bulk read switched off).
	stream := o
	stream.Bulk = -1
	for k, c := range []struct {
		name string
		o    cdc.Options
	}{{"tandem", o}, {"tandem-stream", stream}} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				b.StopTimer()
				refill(k*1000 + i)
				b.StartTimer()
				stop := replicate(c.o)
				b.StopTimer()
				stop()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
	// tandem-live: the replicator streams, caught up, while the rows are
	// written; the time runs from the first insert until the target has
	// the last (the source's own writing is part of it). A stream that
	// falls behind by more than twice Bulk goes on in bulk.
	b.Run("tandem-live", func(b *testing.B) {
		for i := range b.N {
			b.StopTimer()
			mustExec(b, src, "TRUNCATE acct")
			stop := replicate(o)
			b.StartTimer()
			write(i)
			var at string
			src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&at)
			waitPos(at)
			b.StopTimer()
			stop()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	// source-write: the writing of tandem-live alone, with no replicator
	// (its ceiling).
	b.Run("source-write", func(b *testing.B) {
		for i := range b.N {
			b.StopTimer()
			mustExec(b, src, "TRUNCATE acct")
			b.StartTimer()
			write(i)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	// decode: the source server decoding the same rows from a slot of its
	// own and counting them, with no client and no target: the floor of
	// any replicator that reads them by logical decoding.
	b.Run("decode", func(b *testing.B) {
		mustExec(b, src, `SELECT pg_create_logical_replication_slot('bench_decode', 'pgoutput')`)
		defer mustExec(b, src, `SELECT pg_drop_replication_slot('bench_decode')`)
		for i := range b.N {
			b.StopTimer()
			refill(i)
			b.StartTimer()
			mustExec(b, src, `SELECT count(*) FROM pg_logical_slot_get_binary_changes('bench_decode', NULL, NULL, 'proto_version', '1', 'publication_names', 'tandem_bench')`)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("copy", func(b *testing.B) {
		mustExec(b, dst, `CREATE TABLE IF NOT EXISTS acct_copy (LIKE acct INCLUDING ALL)`)
		for range b.N {
			b.StopTimer()
			mustExec(b, dst, "TRUNCATE acct_copy")
			b.StartTimer()
			pipeCopy(b, src, dst, fmt.Sprintf(`COPY (SELECT g, 'owner ' || g, g %% 10000 / 7.0, date '2020-01-01' + g %% 1000, now() FROM generate_series(1, %d) g) TO STDOUT`, n), "COPY acct_copy FROM STDIN")
			b.StopTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkValidate: two equal tables compared by tandem validate, against
// SELECT count(*) on both sides at once.
func BenchmarkValidate(b *testing.B) {
	n := benchRows(10_000_000)
	tp, src, dst := equalTables(b, n)
	o := cdc.Options{Pair: "bench", Sources: []string{tp.primary.DSN()}, Target: tp.target.DSN(), Tables: []string{"public.acct"}}
	b.Run("tandem", func(b *testing.B) {
		for range b.N {
			rep, err := cdc.Validate(context.Background(), o, cdc.ValidateOptions{Wait: time.Millisecond})
			if err != nil || rep.Differences != 0 {
				b.Fatalf("%v %+v", err, rep)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("count", func(b *testing.B) {
		for range b.N {
			done := make(chan error, 1)
			go func() { var k int64; done <- src.QueryRow(context.Background(), "SELECT count(*) FROM acct").Scan(&k) }()
			var k int64
			if err := dst.QueryRow(context.Background(), "SELECT count(*) FROM acct").Scan(&k); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkGapRepair: a target level with its source except for 1,000
// rows (changed in the source, as in the gap of a source failover) is
// brought level by the compare-and-repair tandem runs in the gap (whole
// table, and scoped by the audit column), against a full resync (TRUNCATE
// and COPY of the table).
func BenchmarkGapRepair(b *testing.B) {
	n := benchRows(1_000_000)
	tp, src, dst := equalTables(b, n, "CREATE INDEX ON acct (updated)")
	o := cdc.Options{Pair: "bench", Sources: []string{tp.primary.DSN()}, Target: tp.target.DSN(), Tables: []string{"public.acct"}, Audit: map[string]string{"public.acct": "updated"}}
	change := func(b *testing.B, i int) {
		mustExec(b, src, fmt.Sprintf("UPDATE acct SET balance = balance + 1, updated = '2026-06-01'::timestamptz + interval '%d second' WHERE id %% %d = 0", i, n/1000))
	}
	for _, c := range []struct {
		name  string
		scope cdc.Scope
	}{{"tandem-whole-table", cdc.Scope{}}, {"tandem-audit-column", cdc.Scope{Since: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}}} {
		b.Run(c.name, func(b *testing.B) {
			for i := range b.N {
				b.StopTimer()
				change(b, i)
				b.StartTimer()
				rep, err := cdc.Validate(context.Background(), o, cdc.ValidateOptions{Scope: c.scope, Wait: time.Millisecond})
				if err != nil || rep.Differences != 1000 {
					b.Fatalf("%v: %d differences", err, rep.Differences)
				}
				if _, err := cdc.Repair(context.Background(), o, rep, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("full-resync", func(b *testing.B) {
		for range b.N {
			mustExec(b, dst, "TRUNCATE acct")
			pipeCopy(b, src, dst, "COPY acct TO STDOUT", "COPY acct FROM STDIN")
		}
	})
}
