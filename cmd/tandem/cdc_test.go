package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"tandem/internal/postgres"
	"tandem/internal/postgres/pgtest"
)

// sqlDo runs statements, failing the test on an error.
func sqlDo(t *testing.T, dsn string, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if err := sqlExec(t, dsn, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestCDC runs a cdc pair as a user would: serve in the target's region
// replicates, cdc status and validate report, validate --repair fixes a
// tampered target (--dry-run changes nothing), a source failover is
// followed, and a failover of the protection group fences the applier.
func TestCDC(t *testing.T) {
	t.Parallel()
	src := pgtest.Primary(t)
	standby := pgtest.Standby(t, src)
	target := pgtest.Primary(t)
	sqlDo(t, src.DSN(),
		`CREATE TABLE orders (id int PRIMARY KEY, note text, updated timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`CREATE TABLE nokey (a int)`,
		`INSERT INTO orders (id, note) SELECT i, 'v1' FROM generate_series(1, 3000) i`)
	_, cfg := eastWest(t, strings.NewReplacer("SRC", src.DSN(), "STB", standby.DSN(), "TGT", target.DSN()).Replace(`
cdc:
  - name: orders
    source: ["SRC", "STB"]
    target: {region: west, dsn: "TGT"}
    tables: [orders]
    audit_columns: {orders: updated}
  - name: broken
    source: ["SRC", "STB"]
    target: {region: west, dsn: "TGT"}
    tables: [nokey]
    slot: tandem_broken
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 2s, cdc: [orders]}
`))
	run := expecter(t)
	west := startServe(t, cfg, "west")
	waitFor(t, "cdc never levelled", func() bool {
		code, _ := tandem(t, nil, "cdc", "status", "--config", cfg, "orders")
		return code == 0
	})
	sqlDo(t, src.DSN(), `UPDATE orders SET note = 'v2', updated = clock_timestamp() WHERE id <= 100`, `DELETE FROM orders WHERE id > 2900`)
	waitFor(t, "the changes never reached the target", func() bool {
		return sqlOne(t, target.DSN(), `SELECT count(*)::text || '/' || count(*) FILTER (WHERE note = 'v2') FROM orders`) == "2900/100"
	})
	out := run(0, "level with the source", "cdc", "status", "--config", cfg, "orders")
	if !strings.Contains(out, "snapshot") {
		t.Fatalf("cdc status shows no snapshot event:\n%s", out)
	}
	run(0, "no differences", "validate", "--config", cfg, "orders")
	run(0, `"lag_bytes"`, "cdc", "status", "--config", cfg, "orders", "--json")
	if _, out := tandem(t, nil, "status", "--config", cfg); !strings.Contains(out, "cdc pair orders: ok\n  the target is at") {
		t.Fatalf("tandem status lacks the cdc pair:\n%s", out)
	}
	run(0, "cdc orders: the target is at", "plan", "precheck", "--config", cfg, "switchover")
	if m := scrape(t, west); !strings.Contains(m, `tandem_cdc_streaming{cdc="orders"} 1`) || !strings.Contains(m, `tandem_cdc_lag_bytes{cdc="orders"}`) {
		t.Fatalf("serve's metrics lack the cdc pair")
	}

	// Someone writes into the target: validate names each row; the dry
	// run changes nothing; the repair levels it.
	sqlDo(t, target.DSN(), `UPDATE orders SET note = 'tampered' WHERE id = 7`, `DELETE FROM orders WHERE id = 8`,
		`INSERT INTO orders (id, note) VALUES (99999, 'extra')`)
	out = run(4, "3 rows differ", "validate", "--config", cfg, "orders")
	for _, want := range []string{"differs (7)", "missing (8)", "extra (99999)", "tandem validate orders --repair --config " + cfg} {
		if !strings.Contains(out, want) {
			t.Fatalf("validate lacks %q:\n%s", want, out)
		}
	}
	out = run(4, "dry run: the repair would change 3 rows", "validate", "--config", cfg, "orders", "--repair", "--dry-run")
	if !strings.Contains(out, "delete public.orders (99999)") || sqlOne(t, target.DSN(), `SELECT note FROM orders WHERE id = 7`) != "tampered" {
		t.Fatalf("dry run:\n%s", out)
	}
	run(0, "repaired: 2 rows upserted, 1 deleted", "validate", "--config", cfg, "orders", "--repair")
	run(0, "no differences", "validate", "--config", cfg, "orders", "--around", "2026-01-01T00:00:00Z", "--window", "87600h")

	// The source fails over to its standby: followed on its own.
	src.Stop()
	if err := postgres.Promote(context.Background(), standby.DSN()); err != nil {
		t.Fatal(err)
	}
	sqlDo(t, standby.DSN(), `INSERT INTO orders (id, note) VALUES (5000, 'after the source failover')`)
	waitFor(t, "the new primary's change never reached the target", func() bool {
		return sqlOne(t, target.DSN(), `SELECT count(*)::text FROM orders WHERE id = 5000`) == "1"
	})
	out = run(0, "followed a source failover", "cdc", "status", "--config", cfg, "orders")
	if !strings.Contains(out, "the source was promoted: timeline 1 ended at") {
		t.Fatalf("cdc status after the source failover:\n%s", out)
	}
	run(0, "no differences", "validate", "--config", cfg, "orders")

	// The protection group fails over to west: the plan raises the
	// target's fence and validates; the applier writes nothing more.
	out = run(0, "cdc.stop", "plan", "show", "--config", cfg, "failover")
	if !strings.Contains(out, "cdc.validate") {
		t.Fatalf("the failover plan lacks the validation:\n%s", out)
	}
	out = run(0, "the target's fence is at epoch", "plan", "run", "--config", cfg, "failover")
	if !strings.Contains(out, "no differences") {
		t.Fatalf("the failover's validation:\n%s", out)
	}
	sqlDo(t, standby.DSN(), `INSERT INTO orders (id, note) VALUES (5001, 'after the failover')`)
	run(0, "west holds the lease: the target is the primary", "cdc", "status", "--config", cfg, "orders")
	if got := sqlOne(t, target.DSN(), `SELECT count(*)::text FROM orders WHERE id = 5001`); got != "0" {
		t.Fatalf("a change reached the target after the failover")
	}

	// Bad input: a table without a primary key, an unknown pair, a
	// wrong password (never printed).
	run(1, "table public.nokey has no primary key", "cdc", "run", "--config", cfg, "broken")
	run(2, `no cdc pair named "nosuch"`, "validate", "--config", cfg, "nosuch")
	run(2, "--dry-run goes with --repair", "validate", "--config", cfg, "orders", "--dry-run")
	bad := strings.Replace(target.DSN(), "postgres@", "postgres:sekrit-pw@", 1) + "&user=nosuchuser"
	writeFile(t, cfg, strings.Replace(mustReadString(t, cfg), target.DSN(), bad, -1))
	code, out := tandem(t, nil, "validate", "--config", cfg, "orders")
	if code != 1 || strings.Contains(out, "sekrit-pw") || !strings.Contains(out, "target") {
		t.Fatalf("validate with a wrong user: exit %d:\n%s", code, out)
	}
}

// TestDemoCDC runs the second demo: a source failover followed, the lost
// transactions reported, the target validated.
func TestDemoCDC(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "tandem-demo-cdc-test-") // the postgres user must reach it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	code, out := tandem(t, nil, "demo", "cdc", "--dir", dir)
	for _, want := range []string{
		"level with the source; 10600 rows applied",
		"followed a source failover at",
		"lost at the source: transaction", "update public.orders (42)", "insert public.orders (20001)",
		"public.orders (whole table): 9901 rows", "no differences",
		"cdc status --config " + dir + "/tandem.yaml orders",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("demo cdc (exit %d) lacks %q:\n%s", code, want, out)
		}
	}
	if code != 0 {
		t.Fatalf("demo cdc exit %d:\n%s", code, out)
	}
}
