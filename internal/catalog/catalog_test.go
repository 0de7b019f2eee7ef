package catalog

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"tandem/internal/postgres/pgtest"
)

// where answers which region a query through the alias reads.
func where(t *testing.T, driver, dsn, alias string) string {
	t.Helper()
	db, err := Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var region string
	if err := db.QueryRow(`SELECT region FROM ` + alias).Scan(&region); err != nil {
		t.Fatalf("query through %s: %v", alias, err)
	}
	return region
}

func testSwitch(t *testing.T, driver, dsn string) {
	ctx := context.Background()
	setup := []string{}
	for _, n := range []string{"customer", "orders"} {
		for _, r := range []string{"east", "west"} {
			setup = append(setup, `CREATE TABLE `+n+`_`+r+` (region text)`, `INSERT INTO `+n+`_`+r+` VALUES ('`+r+`')`)
		}
	}
	if err := Exec(ctx, driver, dsn, setup); err != nil {
		t.Fatal(err)
	}
	to := func(region string) []Alias {
		return []Alias{{"customer", "customer_" + region, region}, {"orders", "orders_" + region, region}}
	}
	if err := Switch(ctx, driver, dsn, DefaultSwitch, to("east")); err != nil {
		t.Fatal(err)
	}
	if got := where(t, driver, dsn, "orders"); got != "east" {
		t.Fatalf("orders reads %s", got)
	}
	// A switch that fails half way changes nothing: both aliases stay.
	broken := append(to("west"), Alias{"zz_last", "no_such_table", "west"})
	err := Switch(ctx, driver, dsn, DefaultSwitch, broken)
	if err == nil || !strings.Contains(err.Error(), "zz_last") {
		t.Fatalf("switch to a missing table: %v", err)
	}
	for _, a := range []string{"customer", "orders"} {
		if got := where(t, driver, dsn, a); got != "east" {
			t.Fatalf("after a failed switch %s reads %s", a, got)
		}
	}
	// Twice is the same as once.
	for range 2 {
		if err := Switch(ctx, driver, dsn, DefaultSwitch, to("west")); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"customer", "orders"} {
		if got := where(t, driver, dsn, a); got != "west" {
			t.Fatalf("%s reads %s, want west", a, got)
		}
	}
}

func TestSwitchSQLite(t *testing.T) {
	testSwitch(t, "sqlite", filepath.Join(t.TempDir(), "catalog.db"))
}

func TestSwitchPostgres(t *testing.T) {
	p := pgtest.Primary(t)
	testSwitch(t, "postgres", p.DSN())
}

func TestIdentRefusesInjection(t *testing.T) {
	_, err := SwitchStatements(DefaultSwitch, []Alias{{"x", "t; DROP TABLE y", "east"}})
	if err == nil || !strings.Contains(err.Error(), "not a plain identifier") {
		t.Fatalf("got %v", err)
	}
	got, err := SwitchStatements([]string{`INSERT INTO aliases VALUES ({{quote .Alias}}, {{quote .Target}})`}, []Alias{{"a", "s3://b/it's", "east"}})
	if err != nil || got[0] != `INSERT INTO aliases VALUES ('a', 's3://b/it''s')` {
		t.Fatalf("got %q, %v", got, err)
	}
}
