package cdc

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"tandem/internal/postgres"
	"tandem/internal/postgres/pgtest"
)

// TestCompareSplits: two tables differing in about a fifth of their rows,
// split at integer keys (whose text order is not their order): every
// differing key is found once, and none that is level.
func TestCompareSplits(t *testing.T) {
	t.Parallel()
	a, b := pgtest.Primary(t), pgtest.Primary(t)
	ctx := context.Background()
	for i, dsn := range []string{a.DSN(), b.DSN()} {
		c, _ := postgres.Connect(ctx, dsn)
		seed := []string{"0.3", "0.7"}[i]
		if _, err := c.Exec(ctx, `CREATE TABLE acct (id int PRIMARY KEY, balance bigint, note text); SELECT setseed(`+seed+`);
			INSERT INTO acct SELECT g, (random()*3)::int, 'x' FROM generate_series(1, 3000) g WHERE random() < 0.9`); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	sc, _ := postgres.Connect(ctx, a.DSN())
	dc, _ := postgres.Connect(ctx, b.DSN())
	var tb *Table
	pgx.BeginFunc(ctx, sc, func(tx pgx.Tx) error {
		ts, err := sourceTables(ctx, tx, []string{"public.acct"}, nil)
		tb = ts[0]
		return err
	})
	cmp := &comparer{src: sc, dst: dc, t: tb, Leaf: 2000, Fanout: 16}
	res, err := cmp.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, d := range res.Diffs {
		seen[keyString(d.Key)]++
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("key %s %d times", k, n)
		}
	}
	// What a row-by-row comparison of both sides finds.
	all := func(c *pgx.Conn) map[string]string {
		rows, _ := c.Query(ctx, `SELECT id::text, ROW(id, balance, note)::text FROM acct`)
		m := map[string]string{}
		for rows.Next() {
			var k, v string
			rows.Scan(&k, &v)
			m[k] = v
		}
		return m
	}
	sa, da := all(sc), all(dc)
	diff := 0
	for k, v := range sa {
		if da[k] != v {
			diff++
		}
	}
	for k := range da {
		if _, ok := sa[k]; !ok {
			diff++
		}
	}
	if len(res.Diffs) != diff {
		t.Fatalf("%d diffs found, %d rows differ", len(res.Diffs), diff)
	}
	t.Logf("%d diffs, %d segments", len(res.Diffs), res.Segments)

	// A type without a hash function (json): rows are hashed as text, in
	// the snapshot's transaction, which the probe does not end.
	for i, c := range []*pgx.Conn{sc, dc} {
		if _, err := c.Exec(ctx, `CREATE TABLE docs (id int PRIMARY KEY, body json); INSERT INTO docs VALUES (1, '{"a": 1}'), (2, '{"b": `+[]string{"2", "3"}[i]+`}')`); err != nil {
			t.Fatal(err)
		}
	}
	var docs *Table
	stx, _ := sc.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	defer stx.Rollback(ctx)
	ts, err := sourceTables(ctx, stx, []string{"public.docs"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	docs = ts[0]
	cmp = &comparer{src: stx, dst: dc, t: docs, Leaf: 2000, Fanout: 16}
	res, err = cmp.run(ctx)
	if err != nil || cmp.byType || len(res.Diffs) != 1 || res.Diffs[0].Key[0] != "2" {
		t.Fatalf("json rows: by type %v, %+v %v", cmp.byType, res.Diffs, err)
	}
}
