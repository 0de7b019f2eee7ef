package cdc

import (
	"context"
	"strings"
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
	if err != nil || !strings.Contains(cmp.rowHash, "::text") || len(res.Diffs) != 1 || res.Diffs[0].Key[0] != "2" {
		t.Fatalf("json rows: hashed by %s, %+v %v", cmp.rowHash, res.Diffs, err)
	}
}

// TestRowHashes: a table with a column of each type colHash knows is hashed
// column by column, and every kind of difference is found: values swapped
// between two rows (which a sum of per-column hashes alone is blind to),
// two columns of one type swapped within a row, a value made NULL, and
// each type's value changed; equal values hash alike on both sides.
func TestRowHashes(t *testing.T) {
	t.Parallel()
	a, b := pgtest.Primary(t), pgtest.Primary(t)
	ctx := context.Background()
	const schema = `CREATE TABLE kinds (id int PRIMARY KEY, s smallint, i int, g bigint, g2 bigint, ok boolean, t text,
		v varchar(20), c char(5), n numeric(10,2), u uuid, j jsonb, f double precision, r real, d date,
		tz timestamptz, ts timestamp(3));
		INSERT INTO kinds SELECT x, x, x * 2, x * 3, x * 5, x % 2 = 0, 't' || x, 'v' || x, 'c' || x % 100, x / 7.0,
			md5(x::text)::uuid, jsonb_build_object('x', x), x / 3.0, x / 9.0, date '2020-01-01' + x,
			timestamptz '2026-01-01 00:00:00+02' + x * interval '1 minute', timestamp '2026-01-01' + x * interval '1 second'
		FROM generate_series(1, 60) x;
		UPDATE kinds SET t = NULL, tz = NULL WHERE id = 60`
	for _, dsn := range []string{a.DSN(), b.DSN()} {
		c, _ := postgres.Connect(ctx, dsn)
		if _, err := c.Exec(ctx, schema); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	changes := map[string]string{
		"1":  `UPDATE kinds SET t = CASE id WHEN 1 THEN 't2' ELSE 't1' END WHERE id IN (1, 2)`, // swapped between rows
		"2":  `-- swapped with row 1`,
		"3":  `UPDATE kinds SET g = g2, g2 = g WHERE id = 3`, // swapped within a row
		"4":  `UPDATE kinds SET tz = NULL WHERE id = 4`,
		"5":  `UPDATE kinds SET s = s + 1 WHERE id = 5`,
		"6":  `UPDATE kinds SET ok = NOT ok WHERE id = 6`,
		"7":  `UPDATE kinds SET v = 'w' WHERE id = 7`,
		"8":  `UPDATE kinds SET c = 'z' WHERE id = 8`,
		"9":  `UPDATE kinds SET n = n + 0.01 WHERE id = 9`,
		"10": `UPDATE kinds SET u = md5('x')::uuid WHERE id = 10`,
		"11": `UPDATE kinds SET j = '{"x": 0}' WHERE id = 11`,
		"12": `UPDATE kinds SET f = f + 1e-9 WHERE id = 12`,
		"13": `UPDATE kinds SET r = r + 1 WHERE id = 13`,
		"14": `UPDATE kinds SET d = d + 1 WHERE id = 14`,
		"15": `UPDATE kinds SET tz = tz + interval '1 microsecond' WHERE id = 15`,
		"16": `UPDATE kinds SET ts = ts + interval '1 millisecond' WHERE id = 16`,
		"17": `UPDATE kinds SET i = i + 1 WHERE id = 17`,
		"60": `UPDATE kinds SET t = 't60' WHERE id = 60`, // NULL made a value
	}
	dc, _ := postgres.Connect(ctx, b.DSN())
	defer dc.Close(ctx)
	for _, q := range changes {
		if _, err := dc.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	sc, _ := postgres.Connect(ctx, a.DSN())
	defer sc.Close(ctx)
	for _, c := range []*pgx.Conn{sc, dc} {
		if _, err := c.Exec(ctx, Pinned); err != nil {
			t.Fatal(err)
		}
	}
	table := func(name string) *Table {
		var tb *Table
		if err := pgx.BeginFunc(ctx, sc, func(tx pgx.Tx) error {
			ts, err := sourceTables(ctx, tx, []string{name}, nil)
			if err == nil {
				tb = ts[0]
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return tb
	}
	cmp := &comparer{src: sc, dst: dc, t: table("public.kinds")}
	res, err := cmp.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cmp.rowHash, "hashint8extended(coalesce(") || strings.Contains(cmp.rowHash, "ROW(") {
		t.Fatalf("kinds is not hashed column by column: %s", cmp.rowHash)
	}
	// The same choice in a snapshot's transaction (as validate runs it),
	// where each try runs in a savepoint of its own.
	if err := pgx.BeginFunc(ctx, sc, func(tx pgx.Tx) error {
		row, key := hashes(ctx, tx, cmp.t)
		if row != cmp.rowHash || key != `hashint8extended("id"::bigint, 0)` {
			t.Errorf("in a transaction, kinds is hashed by %s, its key by %s", row, key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, d := range res.Diffs {
		found[d.Key[0]] = true
	}
	for k := range changes {
		if !found[k] {
			t.Errorf("row %s differs and was not found (%s)", k, changes[k])
		}
	}
	if len(found) != len(changes) {
		t.Errorf("found %d rows differing, want %d: %+v", len(found), len(changes), res.Diffs)
	}

	// The only difference values swapped between two rows: the table's
	// sums must differ for the rows to be read at all.
	for i, c := range []*pgx.Conn{sc, dc} {
		if _, err := c.Exec(ctx, `CREATE TABLE swapped (id int PRIMARY KEY, t text, g bigint);
			INSERT INTO swapped SELECT x, 't' || x, x FROM generate_series(1, 100) x`); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if _, err := c.Exec(ctx, `UPDATE swapped SET t = CASE id WHEN 1 THEN 't2' ELSE 't1' END WHERE id IN (1, 2)`); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmp = &comparer{src: sc, dst: dc, t: table("public.swapped")}
	if res, err = cmp.run(ctx); err != nil || len(res.Diffs) != 2 {
		t.Fatalf("values swapped between two rows: %+v %v", res.Diffs, err)
	}

	// An empty table with a type that has no hash function (json): its
	// rows cannot show it, NULLs of its types do.
	if _, err := sc.Exec(ctx, `CREATE TABLE empty_docs (id int PRIMARY KEY, body json)`); err != nil {
		t.Fatal(err)
	}
	if row, key := hashes(ctx, sc, table("public.empty_docs")); !strings.HasSuffix(row, "::text, 0)") || !strings.HasPrefix(key, "hashint8extended(") {
		t.Fatalf("empty json table hashed by %s, its key by %s", row, key)
	}
}
