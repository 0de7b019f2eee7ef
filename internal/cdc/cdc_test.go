package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tandem/internal/cdc"
	"tandem/internal/postgres"
	"tandem/internal/postgres/pgtest"
)

// topology is a source primary with a streaming standby, and a target.
type topology struct {
	primary, standby, target *pgtest.Cluster
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	p := pgtest.Primary(t)
	return &topology{primary: p, standby: pgtest.Standby(t, p), target: pgtest.Primary(t)}
}

func (tp *topology) options(tables ...string) cdc.Options {
	return cdc.Options{Pair: "orders", Sources: []string{tp.primary.DSN(), tp.standby.DSN()}, Target: tp.target.DSN(),
		Tables: tables, Slot: "tandem_orders", Publication: "tandem_orders", Flush: 20 * time.Millisecond}
}

func run(t *testing.T, dsn string, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	c, err := postgres.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, q := range sqls {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func query(t *testing.T, dsn, q string) string {
	t.Helper()
	s, err := try(dsn, q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s
}

// try runs a query and returns its rows, one line each.
func try(dsn, q string) (string, error) {
	ctx := context.Background()
	c, err := postgres.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, q)
	if err != nil {
		return "", err
	}
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return "", err
		}
		out = append(out, fmt.Sprint(vals...))
	}
	return strings.Join(out, "\n"), rows.Err()
}

// has reports whether q answers want (an error is not).
func has(dsn, q, want string) bool {
	s, err := try(dsn, q)
	return err == nil && s == want
}

// start runs a replicator until the test ends or stop is called.
func start(t *testing.T, o cdc.Options) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := cdc.New(o)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// level waits until validation finds no difference.
func level(t *testing.T, o cdc.Options) cdc.Report {
	t.Helper()
	var rep cdc.Report
	waitFor(t, "the target never matched the source", func() bool {
		var err error
		rep, err = cdc.Validate(context.Background(), o, cdc.ValidateOptions{Wait: 5 * time.Second})
		if err != nil {
			t.Logf("validate: %v", err)
			return false
		}
		return rep.Differences == 0
	})
	return rep
}

// TestReplicate: a snapshot of existing rows, then inserts, updates (one
// leaving a TOAST value unchanged), deletes, a key change and a truncate,
// through a restart; the target matches the source row for row.
func TestReplicate(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	run(t, tp.primary.DSN(),
		`CREATE TABLE orders (id int PRIMARY KEY, note text, big text, amount numeric(10,2), at timestamptz DEFAULT now())`,
		`CREATE TABLE items (order_id int, line int, sku text, PRIMARY KEY (order_id, line))`,
		`INSERT INTO orders (id, note, big, amount) SELECT i, 'n' || i, NULL, i * 1.5 FROM generate_series(1, 5000) i`,
		`INSERT INTO items SELECT i % 100, i, 'sku' || i FROM generate_series(1, 3000) i`)
	o := tp.options("public.orders", "items")
	logs, logged := capture(&o)
	stop := start(t, o)
	waitFor(t, "the snapshot never reached the target", func() bool {
		return has(tp.target.DSN(), `SELECT count(*) FROM orders`, "5000")
	})
	big := strings.Repeat("x", 100000) // stored out of line (TOAST)
	run(t, tp.primary.DSN(),
		`UPDATE orders SET big = repeat('x', 100000) || md5(id::text) WHERE id <= 10`,
		`UPDATE orders SET note = 'touched' WHERE id <= 10`, // big unchanged: sent as "unchanged TOAST"
		`DELETE FROM orders WHERE id BETWEEN 100 AND 199`,
		`UPDATE orders SET id = 100000 WHERE id = 500`,
		`INSERT INTO orders (id, note) VALUES (6000, 'new')`,
		// Values the staging COPY and the array literals must escape.
		`INSERT INTO orders (id, note, big) VALUES (6001, E'tab\there\nline\r\\back "quote" {curly,comma}', '\N'), (6002, NULL, 'NULL')`,
		`UPDATE items SET sku = 'changed' WHERE order_id = 7`,
		// Rows inserted, then changed, deleted and inserted again in one
		// transaction, and rows deleted and inserted again: only rows the
		// batch inserted first go in by COPY, the rest by upsert.
		`BEGIN; INSERT INTO orders (id, note) VALUES (8000, 'inserted'), (8001, 'inserted');
			UPDATE orders SET note = 'then updated' WHERE id = 8000;
			DELETE FROM orders WHERE id = 8001; INSERT INTO orders (id, note) VALUES (8001, 'inserted again');
			DELETE FROM orders WHERE id = 20; INSERT INTO orders (id, note) VALUES (20, 'deleted, inserted again'); COMMIT`,
		`DELETE FROM orders WHERE id = 21`, `INSERT INTO orders (id, note) VALUES (21, 'deleted, then inserted again')`)
	level(t, o)
	if logged("applied again") {
		t.Fatalf("a batch of the source's own changes was applied again with upserts (a row taken for new was not):\n%s", logs())
	}
	if got := query(t, tp.target.DSN(), `SELECT count(*) FROM orders WHERE note = 'touched' AND big LIKE '`+big[:10]+`%' AND length(big) = 100032`); got != "10" {
		t.Fatalf("rows updated with an unchanged TOAST value: %s of 10 kept it", got)
	}
	if got := query(t, tp.target.DSN(), `SELECT note = E'tab\there\nline\r\\back "quote" {curly,comma}' AND big = '\N' FROM orders WHERE id = 6001`); got != "true" {
		t.Fatalf("a value with tabs, line breaks, a backslash and quotes arrived as: %s", query(t, tp.target.DSN(), `SELECT note || '|' || big FROM orders WHERE id = 6001`))
	}
	if got := query(t, tp.target.DSN(), `SELECT note IS NULL AND big = 'NULL' FROM orders WHERE id = 6002`); got != "true" {
		t.Fatalf("NULL and the text NULL arrived as: %s", got)
	}
	stop()
	// 100 transactions of 10 rows: in batches of 10 rows, one bulk round
	// makes more batches than the committer's acknowledgements are
	// buffered (a reader that did not take them while it read hung).
	run(t, tp.primary.DSN(), `DO $$ BEGIN FOR k IN 0..99 LOOP
			INSERT INTO orders (id, note) SELECT i, 'while down' FROM generate_series(7000 + 10*k, 7009 + 10*k) i; COMMIT;
		END LOOP; END $$`, `TRUNCATE items`,
		`INSERT INTO items VALUES (1, 1, 'after truncate')`)
	o.Bulk = 1 // what came in while it was down is read in bulk
	o.Batch = 10
	start(t, o)
	rep := level(t, o)
	if !logged("in bulk") {
		t.Fatalf("the backlog was not read in bulk:\n%s", logs())
	}
	// Streaming now, it falls behind: the target holds its table locked
	// while the source commits 100,000 rows, so the reader stops and the
	// walsender with it. Once the lock goes, the stream is more than a few
	// bytes (Bulk 1) behind the source and reads the rest in bulk.
	waitFor(t, "it did not stream after the backlog", func() bool { return logged("cdc streaming") })
	fell := func() int { return strings.Count(logs(), "fell behind the source") }
	before := fell()
	ctx := context.Background()
	lock, err := pgx.Connect(ctx, tp.target.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	for _, q := range []string{"BEGIN", "LOCK TABLE items IN EXCLUSIVE MODE"} {
		if _, err := lock.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 10 {
		run(t, tp.primary.DSN(), fmt.Sprintf("INSERT INTO items SELECT %d, g, 'behind' FROM generate_series(1, 10000) g", 1000+k))
	}
	time.Sleep(2 * time.Second)
	if _, err := lock.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream never went to bulk reading", func() bool { return fell() > before })
	rep = level(t, o)
	if rep.Tables[0].Rows != 5905 || rep.Tables[1].Rows != 100001 {
		t.Fatalf("rows compared: %+v", rep.Tables)
	}
	// Acknowledged only what the target holds: the slot's confirmed
	// position is at most the target's.
	pos := query(t, tp.target.DSN(), `SELECT lsn FROM tandem.cdc_position`)
	conf := query(t, tp.primary.DSN(), `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'tandem_orders'`)
	if ge := query(t, tp.primary.DSN(), fmt.Sprintf(`SELECT '%s'::pg_lsn >= '%s'::pg_lsn`, pos, conf)); ge != "true" {
		t.Fatalf("the slot confirmed %s, past the target's position %s", conf, pos)
	}
}

// TestFollowFailover: the standby stops receiving, the primary commits
// transactions the target applies, the primary dies and the standby is
// promoted. tandem follows the new timeline, reports the transactions
// lost at the source, and the target ends equal to the new primary.
func TestFollowFailover(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	run(t, tp.primary.DSN(),
		`CREATE TABLE orders (id int PRIMARY KEY, note text, updated timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`INSERT INTO orders (id, note) SELECT i, 'v1' FROM generate_series(1, 2000) i`)
	o := tp.options("orders")
	start(t, o)
	level(t, o)
	// The standby stops streaming; what the primary commits now reaches
	// the target only.
	run(t, tp.standby.DSN(), `ALTER SYSTEM SET primary_conninfo = ''`, `SELECT pg_reload_conf()`)
	waitFor(t, "the standby kept streaming", func() bool {
		return query(t, tp.standby.DSN(), `SELECT count(*) FROM pg_stat_wal_receiver`) == "0"
	})
	run(t, tp.primary.DSN(), `UPDATE orders SET note = 'lost' WHERE id = 5`, `INSERT INTO orders (id, note) VALUES (9001, 'lost insert')`,
		`DELETE FROM orders WHERE id = 6`)
	waitFor(t, "the target never got the doomed changes", func() bool {
		return has(tp.target.DSN(), `SELECT string_agg(id || note, ',' ORDER BY id) FROM orders WHERE id IN (5, 6, 9001)`, "5lost,9001lost insert")
	})
	tp.primary.Stop()
	if err := postgres.Promote(context.Background(), tp.standby.DSN()); err != nil {
		t.Fatal(err)
	}
	run(t, tp.standby.DSN(), `UPDATE orders SET note = 'after promotion', updated = clock_timestamp() WHERE id = 7`,
		`INSERT INTO orders (id, note) VALUES (9002, 'new primary')`)
	level(t, o)
	if got := query(t, tp.target.DSN(), `SELECT id, note FROM orders WHERE id IN (5, 6, 7, 9001, 9002) ORDER BY id`); got != "5v1\n6v1\n7after promotion\n9002new primary" {
		t.Fatalf("the target after following the failover:\n%s", got)
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, tp.target.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	evs, err := cdc.Events(ctx, c, "orders", 1)
	if err != nil || len(evs) == 0 || evs[0].Kind != "source-failover" {
		t.Fatalf("events: %+v %v", evs, err)
	}
	lost := fmt.Sprint(evs[0].Detail["lost"])
	t.Logf("%+v", evs[0].Detail)
	for _, want := range []string{"orders\tupdate\t5", "orders\tinsert\t9001", "orders\tdelete\t6"} {
		if !strings.Contains(lost, want) {
			t.Fatalf("the lost transactions do not list %q: %s", want, lost)
		}
	}
}

// TestBadInput: a column added in the source and not in the target, and a
// target that refuses a transaction, stop the table's changes with a clear
// error and nothing partial; once fixed, tandem resumes where it stopped.
// A table without a primary key and a wrong password are refused at once,
// the password never printed.
func TestBadInput(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	run(t, tp.primary.DSN(), `CREATE TABLE orders (id int PRIMARY KEY, note text)`, `CREATE TABLE nokey (a int)`,
		`INSERT INTO orders SELECT i, 'v1' FROM generate_series(1, 100) i`)
	o := tp.options("public.orders")
	_, logged := capture(&o)
	start(t, o)
	level(t, o)

	// A schema change in the source only.
	run(t, tp.primary.DSN(), `ALTER TABLE orders ADD COLUMN qty int`, `INSERT INTO orders VALUES (101, 'with qty', 5)`)
	waitFor(t, "no error names the missing column", func() bool {
		return logged("column qty (integer) is in the source but not in the target: add it to the target (ALTER TABLE \\\"public\\\".\\\"orders\\\" ADD COLUMN \\\"qty\\\" integer)")
	})
	if has(tp.target.DSN(), `SELECT count(*) FROM orders WHERE id = 101`, "1") {
		t.Fatal("a row of the changed table was applied before the target had its column")
	}
	run(t, tp.target.DSN(), `ALTER TABLE orders ADD COLUMN qty int`)
	level(t, o)

	// A row someone else wrote into the target with a key the source
	// then inserts: the batch goes in again by upserts, and the source's
	// row wins.
	run(t, tp.target.DSN(), `INSERT INTO orders VALUES (300, 'foreign', 0)`)
	run(t, tp.primary.DSN(), `INSERT INTO orders VALUES (300, 'from the source', 3), (301, 'beside it', 3)`)
	waitFor(t, "no warning of the target's own row", func() bool { return logged("applied again with upserts") })
	level(t, o)

	// The target refuses a transaction: none of it is applied.
	run(t, tp.target.DSN(), `ALTER TABLE orders ADD CONSTRAINT no_poison CHECK (note <> 'poison')`)
	run(t, tp.primary.DSN(), `BEGIN; INSERT INTO orders VALUES (200, 'fine', 1); INSERT INTO orders VALUES (201, 'poison', 1); COMMIT`)
	waitFor(t, "no error names the refused transaction", func() bool { return logged("no_poison") })
	if has(tp.target.DSN(), `SELECT count(*) FROM orders WHERE id = 200`, "1") {
		t.Fatal("part of a refused transaction is in the target")
	}
	run(t, tp.target.DSN(), `ALTER TABLE orders DROP CONSTRAINT no_poison`)
	level(t, o)

	// Refused at once: no primary key; a wrong password.
	bad := tp.options("public.nokey")
	bad.Slot, bad.Publication = "tandem_nokey", "tandem_nokey"
	err := cdc.New(bad).Run(context.Background())
	if !errors.Is(err, cdc.ErrConfig) || !strings.Contains(err.Error(), "table public.nokey has no primary key") {
		t.Fatalf("a table without a primary key: %v", err)
	}
	wrong := tp.options("public.orders")
	wrong.Target = strings.Replace(tp.target.DSN(), "postgres@", "nosuchuser:sekrit-pw@", 1)
	err = cdc.New(wrong).Once(context.Background())
	if err == nil || strings.Contains(err.Error(), "sekrit-pw") || !strings.Contains(err.Error(), "target") {
		t.Fatalf("a wrong user: %v", err)
	}
}

// capture sends o's log to a buffer: logs reads it, logged looks in it.
func capture(o *cdc.Options) (logs func() string, logged func(string) bool) {
	var b strings.Builder
	var mu sync.Mutex
	o.Log = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return b.Write(p) }), nil))
	logs = func() string { mu.Lock(); defer mu.Unlock(); return b.String() }
	return logs, func(s string) bool { return strings.Contains(logs(), s) }
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
