// Package catalog runs SQL for DR steps through database/sql: user SQL
// steps, and the switch of catalog aliases (views, synonyms or rows of a
// catalog table that give readers one logical name for a region's physical
// table or location). A switch re-points every alias in one transaction:
// readers see all the old targets or all the new ones. Drivers: sqlite (the
// embedded default, pure Go) and postgres (pgx).
package catalog

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// DefaultSwitch re-creates a view over the region's table and checks that
// it reads (SQLite resolves a view only when it is read): the statements
// of an alias switch when the configuration gives none.
var DefaultSwitch = []string{
	`DROP VIEW IF EXISTS {{ident .Alias}}`,
	`CREATE VIEW {{ident .Alias}} AS SELECT * FROM {{ident .Target}}`,
	`SELECT * FROM {{ident .Alias}} LIMIT 0`,
}

// Open opens a database: driver is sqlite or postgres.
func Open(driver, dsn string) (*sql.DB, error) {
	switch driver {
	case "sqlite":
		return sql.Open("sqlite", dsn)
	case "postgres":
		return sql.Open("pgx", dsn)
	}
	return nil, fmt.Errorf("unknown SQL driver %q (sqlite or postgres)", driver)
}

// Exec runs statements in one transaction; on error nothing is committed.
// The error names the statement's index, not its text (which may hold
// values the user would not print).
func Exec(ctx context.Context, driver, dsn string, stmts []string) error {
	return exec(ctx, driver, dsn, stmts, nil)
}

// exec runs stmts in one transaction; label names statement i in errors.
func exec(ctx context.Context, driver, dsn string, stmts []string, label func(i int) string) error {
	if label == nil {
		label = func(i int) string { return fmt.Sprintf("statement %d", i+1) }
	}
	db, err := Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", driver, err)
	}
	defer tx.Rollback()
	for i, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %s (%s): %w", driver, label(i), firstWords(s), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", driver, err)
	}
	return nil
}

func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// Alias is one logical name and the physical name it points at.
type Alias struct {
	Alias, Target, Region string
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$`)

// Funcs are the template functions of alias statements: ident quotes a
// (possibly schema-qualified) identifier, quote makes a string literal.
var Funcs = template.FuncMap{
	"ident": func(s string) (string, error) {
		if !identRe.MatchString(s) {
			return "", fmt.Errorf("%q is not a plain identifier", s)
		}
		parts := strings.Split(s, ".")
		for i, p := range parts {
			parts[i] = `"` + p + `"`
		}
		return strings.Join(parts, "."), nil
	},
	"quote": func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" },
}

// SwitchStatements renders the statements that point every alias at its
// target, in alias order.
func SwitchStatements(templates []string, aliases []Alias) ([]string, error) {
	var ts []*template.Template
	for i, s := range templates {
		t, err := template.New(fmt.Sprint(i)).Funcs(Funcs).Option("missingkey=error").Parse(s)
		if err != nil {
			return nil, fmt.Errorf("switch[%d]: %w", i, err)
		}
		ts = append(ts, t)
	}
	aliases = slices.Clone(aliases)
	slices.SortFunc(aliases, func(a, b Alias) int { return strings.Compare(a.Alias, b.Alias) })
	var out []string
	for _, a := range aliases {
		for i, t := range ts {
			var b bytes.Buffer
			if err := t.Execute(&b, a); err != nil {
				return nil, fmt.Errorf("alias %s: switch[%d]: %w", a.Alias, i, err)
			}
			out = append(out, b.String())
		}
	}
	return out, nil
}

// Switch points every alias at its target in one transaction.
func Switch(ctx context.Context, driver, dsn string, templates []string, aliases []Alias) error {
	stmts, err := SwitchStatements(templates, aliases)
	if err != nil {
		return err
	}
	sorted := slices.Clone(aliases)
	slices.SortFunc(sorted, func(a, b Alias) int { return strings.Compare(a.Alias, b.Alias) })
	return exec(ctx, driver, dsn, stmts, func(i int) string {
		return fmt.Sprintf("alias %s, switch[%d]", sorted[i/len(templates)].Alias, i%len(templates))
	})
}

// Ping checks that a database answers.
func Ping(ctx context.Context, driver, dsn string) error {
	db, err := Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}
