package cdc

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"tandem/internal/postgres"
	"tandem/internal/postgres/pgtest"
)

// TestCompareSplits: two tables of 20,000 rows differing in about 60,
// scattered, with integer keys (whose text order is not their order), text
// keys and keys of two columns: every differing key is found once, and
// none that is level, whether the differing segments are read row by row,
// split further, or compared by hash buckets.
func TestCompareSplits(t *testing.T) {
	t.Parallel()
	a, b := pgtest.Primary(t), pgtest.Primary(t)
	ctx := context.Background()
	// Keys of one integer, one text column, and two columns (hashed as a
	// record), each with the key as keyString prints it; grown has grown
	// 200 times since it was last analyzed.
	tables := map[string]string{"acct": "id::text", "names": "k", "pairs": "a || E'\t' || b", "grown": "id::text"}
	for i, dsn := range []string{a.DSN(), b.DSN()} {
		c, _ := postgres.Connect(ctx, dsn)
		seed := []string{"0.3", "0.7"}[i]
		if _, err := c.Exec(ctx, `CREATE TABLE acct (id int PRIMARY KEY, balance bigint, note text); SELECT setseed(`+seed+`);
			INSERT INTO acct SELECT g, g % 7, 'x' FROM generate_series(1, 20000) g WHERE random() < 0.999;
			UPDATE acct SET balance = balance + 1 WHERE random() < 0.001;
			CREATE TABLE names (k text PRIMARY KEY, balance bigint, note text);
			INSERT INTO names SELECT 'n' || id, balance, note FROM acct;
			CREATE TABLE pairs (a text, b int, balance bigint, note text, PRIMARY KEY (a, b));
			INSERT INTO pairs SELECT 'p' || id % 13, id, balance, note FROM acct;
			CREATE TABLE grown (LIKE acct INCLUDING ALL) WITH (autovacuum_enabled = false);
			INSERT INTO grown SELECT * FROM acct WHERE id <= 100;
			ANALYZE;
			INSERT INTO grown SELECT * FROM acct WHERE id > 100`); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	sc, _ := postgres.Connect(ctx, a.DSN())
	dc, _ := postgres.Connect(ctx, b.DSN())
	for name, key := range tables {
		var tb *Table
		pgx.BeginFunc(ctx, sc, func(tx pgx.Tx) error {
			ts, err := sourceTables(ctx, tx, []string{"public." + name}, nil)
			tb = ts[0]
			return err
		})
		// What a row-by-row comparison of both sides finds.
		all := func(c *pgx.Conn) map[string]string {
			rows, _ := c.Query(ctx, `SELECT `+key+`, t::text FROM `+name+` t`)
			m := map[string]string{}
			for rows.Next() {
				var k, v string
				rows.Scan(&k, &v)
				m[k] = v
			}
			return m
		}
		sa, da := all(sc), all(dc)
		want := map[string]bool{}
		for k, v := range sa {
			if da[k] != v {
				want[k] = true
			}
		}
		for k := range da {
			if _, ok := sa[k]; !ok {
				want[k] = true
			}
		}
		// By hash buckets of the whole table at once (the defaults: the
		// planner's estimate is 20,000 rows); split into parts of 1,250
		// rows read row by row; split down to parts of 20 rows; split into
		// parts of 5,000 rows compared by hash buckets, whose rows are
		// read at most 100 at a time.
		configs := []*comparer{{}, {Leaf: 2000, Buckets: 2000}, {Leaf: 20, Buckets: 20, Fanout: 1000}, {Leaf: 20, Buckets: 6000, Fanout: 4, Fetch: 100}}
		if name == "grown" {
			// Estimated at 100 rows: two buckets of 10,000 rows would be
			// read whole; 20,000 rows are more than Buckets, so it is
			// split by key range instead.
			configs = []*comparer{{Leaf: 20, Buckets: 1000}}
		}
		for _, cmp := range configs {
			cmp.src, cmp.dst, cmp.t = sc, dc, tb
			rowByRow := cmp.Leaf == 2000
			res, err := cmp.run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, d := range res.Diffs {
				k := keyString(d.Key)
				if seen[k] || !want[k] {
					t.Errorf("%s, leaf %d, fanout %d: key %s found twice or level", name, cmp.Leaf, cmp.Fanout, k)
				}
				seen[k] = true
			}
			if res.Rows != int64(len(sa)) {
				t.Errorf("%s, leaf %d, buckets %d: %d source rows, want %d", name, cmp.Leaf, cmp.Buckets, res.Rows, len(sa))
			}
			if len(want) < 20 || len(seen) != len(want) {
				t.Fatalf("%s, leaf %d, fanout %d: %d diffs found, %d rows differ", name, cmp.Leaf, cmp.Fanout, len(seen), len(want))
			}
			if !rowByRow && res.Fetched >= int64(len(sa)+len(da))/4 {
				t.Fatalf("%s, leaf %d, fanout %d: %d rows read of %d", name, cmp.Leaf, cmp.Fanout, res.Fetched, len(sa)+len(da))
			}
			t.Logf("%s, leaf %d, buckets %d, fanout %d: %d diffs, %d segments, %d rows read", name, cmp.Leaf, cmp.Buckets, cmp.Fanout, len(res.Diffs), res.Segments, res.Fetched)
		}
	}

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
	cmp := &comparer{src: stx, dst: dc, t: docs}
	res, err := cmp.run(ctx)
	if err != nil || cmp.byType || len(res.Diffs) != 1 || res.Diffs[0].Key[0] != "2" {
		t.Fatalf("json rows: by type %v, %+v %v", cmp.byType, res.Diffs, err)
	}
}
