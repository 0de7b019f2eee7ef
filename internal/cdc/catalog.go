package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is one replicated table as the source defines it.
type Table struct {
	// Name is schema.table as configured.
	Name string
	// Cols are the columns in order, with their types (format_type).
	Cols []Col
	// Key are the indexes in Cols of the primary key's columns, in the
	// key's order.
	Key []int
	// Audit is the index in Cols of the audit column (-1: none): a
	// timestamp the application sets on every change, which scopes a gap
	// backfill and a windowed validation.
	Audit int
}

// Col is one column.
type Col struct {
	Name, Type string
}

// ident quotes a name for SQL.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// splitName parses schema.table (public when there is no schema).
func splitName(name string) (schema, table string) {
	if s, t, ok := strings.Cut(name, "."); ok {
		return s, t
	}
	return "public", name
}

// Q is the table's quoted name.
func (t *Table) Q() string {
	s, n := splitName(t.Name)
	return pgx.Identifier{s, n}.Sanitize()
}

// orAll is idx, or the places of all the columns when idx is nil.
func (t *Table) orAll(idx []int) []int {
	if idx == nil {
		idx = make([]int, len(t.Cols))
		for i := range idx {
			idx[i] = i
		}
	}
	return idx
}

// list quotes the columns at idx (all when idx is nil), joined by ", ",
// each through f (nil: the quoted name).
func (t *Table) list(idx []int, f func(c Col) string) string {
	idx = t.orAll(idx)
	parts := make([]string, len(idx))
	for i, k := range idx {
		if f == nil {
			parts[i] = ident(t.Cols[k].Name)
		} else {
			parts[i] = f(t.Cols[k])
		}
	}
	return strings.Join(parts, ", ")
}

// col returns the index of the named column, or -1.
func (t *Table) col(name string) int {
	return slices.IndexFunc(t.Cols, func(c Col) bool { return c.Name == name })
}

// ErrConfig: the configuration names something the source does not have
// (a table, an audit column) or cannot replicate (no primary key): no
// retry helps until a person acts.
var ErrConfig = errors.New("the configuration does not fit the source")

// ErrSchema: the source and the target disagree about a table; nothing was
// applied.
var ErrSchema = errors.New("the source and the target disagree about a table")

// describe reads a table's columns and primary key from a server; ok is
// false when the table does not exist there.
func describe(ctx context.Context, q Querier, name, audit string) (*Table, bool, error) {
	schema, rel := splitName(name)
	var oid uint32
	err := q.QueryRow(ctx, `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, rel).Scan(&oid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	t := &Table{Name: name, Audit: -1}
	rows, err := q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, oid)
	if err != nil {
		return nil, false, err
	}
	for rows.Next() {
		var c Col
		if err := rows.Scan(&c.Name, &c.Type); err != nil {
			return nil, false, err
		}
		t.Cols = append(t.Cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	rows, err = q.Query(ctx, `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		WHERE i.indrelid = $1 AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`, oid)
	if err != nil {
		return nil, false, err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, false, err
		}
		t.Key = append(t.Key, t.col(n))
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if audit != "" {
		if t.Audit = t.col(audit); t.Audit < 0 {
			return nil, false, fmt.Errorf("%w: table %s has no column %q (audit_columns.%s): name a column the application sets on every change, or leave it out", ErrConfig, name, audit, name)
		}
	}
	return t, true, nil
}

// sourceTables reads the configured tables from the source: each must
// exist and have a primary key.
func sourceTables(ctx context.Context, tx Querier, names []string, audit map[string]string) ([]*Table, error) {
	var out []*Table
	for _, n := range names {
		t, ok, err := describe(ctx, tx, n, audit[n])
		switch {
		case err != nil:
			return nil, fmt.Errorf("table %s in the source: %w", n, err)
		case !ok:
			return nil, fmt.Errorf("%w: table %s does not exist in the source: create it, or take it out of tables", ErrConfig, n)
		case len(t.Key) == 0:
			return nil, fmt.Errorf("%w: table %s has no primary key: tandem applies changes by primary key; add one (ALTER TABLE %s ADD PRIMARY KEY (...)) or take the table out of tables", ErrConfig, n, t.Q())
		}
		out = append(out, t)
	}
	return out, nil
}

// matchTarget makes sure the target has every source table with the same
// columns and key, creating the tables it lacks.
func matchTarget(ctx context.Context, tx pgx.Tx, tables []*Table) error {
	for _, s := range tables {
		t, ok, err := describe(ctx, tx, s.Name, "")
		if err != nil {
			return fmt.Errorf("table %s in the target: %w", s.Name, err)
		}
		if !ok {
			schema, _ := splitName(s.Name)
			ddl := fmt.Sprintf("CREATE SCHEMA IF NOT EXISTS %s; CREATE TABLE %s (%s, PRIMARY KEY (%s))", ident(schema), s.Q(),
				s.list(nil, func(c Col) string { return ident(c.Name) + " " + c.Type }), s.list(s.Key, nil))
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return fmt.Errorf("create table %s in the target: %w", s.Name, err)
			}
			continue
		}
		if err := sameShape(s, t); err != nil {
			return err
		}
	}
	return nil
}

// sameShape reports how target t differs from source s.
func sameShape(s, t *Table) error {
	for _, c := range s.Cols {
		i := t.col(c.Name)
		switch {
		case i < 0:
			return fmt.Errorf("%w: table %s: column %s (%s) is in the source but not in the target: add it to the target (ALTER TABLE %s ADD COLUMN %s %s); tandem applies nothing of the table until then and resumes where it stopped",
				ErrSchema, s.Name, c.Name, c.Type, s.Q(), ident(c.Name), c.Type)
		case t.Cols[i].Type != c.Type:
			return fmt.Errorf("%w: table %s: column %s is %s in the source but %s in the target: make them the same type", ErrSchema, s.Name, c.Name, c.Type, t.Cols[i].Type)
		}
	}
	if s.list(s.Key, nil) != t.list(t.Key, nil) {
		return fmt.Errorf("%w: table %s: primary key (%s) in the source but (%s) in the target", ErrSchema, s.Name, s.list(s.Key, nil), t.list(t.Key, nil))
	}
	return nil
}
