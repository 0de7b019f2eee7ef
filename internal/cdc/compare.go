package cdc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier is a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Pinned are the session settings both sides of a comparison use, so a
// row's text is the same on each.
const Pinned = `SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; SET timezone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = 'hex'`

// Scope limits a comparison to some rows of a table: those whose audit
// column is within [Since, Until] (a zero bound is open), and the listed
// keys. The zero Scope is the whole table.
type Scope struct {
	Since, Until time.Time
	// Keys are rows compared whatever their audit column says (the keys of
	// transactions lost at a source failover).
	Keys [][]string
}

func (s Scope) windowed() bool { return !s.Since.IsZero() || !s.Until.IsZero() }

// Diff is one row that differs: missing in the target, extra in it, or
// with other values.
type Diff struct {
	Table string   `json:"table"`
	Key   []string `json:"key"`
	Kind  string   `json:"kind"` // missing, extra, differs
}

// Compared is what comparing one table found.
type Compared struct {
	Table    string `json:"table"`
	Rows     int64  `json:"rows"`      // in the source, within the scope
	Segments int    `json:"segments"`  // hashed
	Fetched  int64  `json:"rows_read"` // read row by row
	Diffs    []Diff `json:"diffs"`
	// Scope says what was compared ("whole table", "updated_at from ...").
	Scope string `json:"scope"`
}

// Counts of the diffs by kind.
func (c Compared) Counts() (missing, extra, differs int) {
	for _, d := range c.Diffs {
		switch d.Kind {
		case "missing":
			missing++
		case "extra":
			extra++
		default:
			differs++
		}
	}
	return
}

// comparer bisects a table's key space: a segment whose count and hash
// agree on both sides is equal; one that differs is split at keys of the
// side with more rows until it is small enough to read row by row.
type comparer struct {
	src, dst Querier
	t        *Table
	scope    Scope
	// Leaf is the row count at or below which a segment is read row by
	// row; Fanout how many parts a differing segment is split into.
	Leaf, Fanout int64
	// byType: rows are hashed by their types' hash functions, not as text.
	byType bool
}

// segment bounds: keys (lo, hi]; nil is open.
type bounds struct{ lo, hi []string }

func (c *comparer) keyTuple(prefix string) string {
	return "(" + c.t.list(c.t.Key, func(col Col) string { return prefix + ident(col.Name) }) + ")"
}

// where is the segment's and the scope's condition, with its arguments
// numbered from $1.
func (c *comparer) where(b bounds) (string, []any) {
	var conds []string
	var args []any
	param := func(v any, typ string) string {
		args = append(args, v)
		return fmt.Sprintf("$%d::%s", len(args), typ)
	}
	tuple := func(vals []string) string {
		parts := make([]string, len(c.t.Key))
		for i, k := range c.t.Key {
			parts[i] = param(vals[i], c.t.Cols[k].Type)
		}
		return "(" + strings.Join(parts, ", ") + ")"
	}
	if b.lo != nil {
		conds = append(conds, c.keyTuple("")+" > "+tuple(b.lo))
	}
	if b.hi != nil {
		conds = append(conds, c.keyTuple("")+" <= "+tuple(b.hi))
	}
	var scope []string
	if c.scope.windowed() && c.t.Audit >= 0 {
		a := ident(c.t.Cols[c.t.Audit].Name)
		var w []string
		if !c.scope.Since.IsZero() {
			w = append(w, a+" >= "+param(c.scope.Since, "timestamptz"))
		}
		if !c.scope.Until.IsZero() {
			w = append(w, a+" <= "+param(c.scope.Until, "timestamptz"))
		}
		scope = append(scope, strings.Join(w, " AND "))
	}
	if len(c.scope.Keys) > 0 {
		cols := make([]any, len(c.t.Key))
		for j := range c.t.Key {
			col := make([]string, len(c.scope.Keys))
			for i, k := range c.scope.Keys {
				col[i] = k[j]
			}
			cols[j] = col
		}
		var ps, casts []string
		for j, k := range c.t.Key {
			args = append(args, cols[j])
			ps = append(ps, fmt.Sprintf("$%d::text[]", len(args)))
			casts = append(casts, fmt.Sprintf("k.c%d::%s", j, c.t.Cols[k].Type))
		}
		as := make([]string, len(c.t.Key))
		for j := range as {
			as[j] = fmt.Sprintf("c%d", j)
		}
		scope = append(scope, fmt.Sprintf("%s IN (SELECT %s FROM unnest(%s) AS k(%s))", c.keyTuple(""), strings.Join(casts, ", "), strings.Join(ps, ", "), strings.Join(as, ", ")))
	}
	if len(scope) > 0 && (c.scope.windowed() && c.t.Audit >= 0 || len(c.scope.Keys) > 0) {
		conds = append(conds, "("+strings.Join(scope, " OR ")+")")
	}
	if len(conds) == 0 {
		return "true", args
	}
	return strings.Join(conds, " AND "), args
}

// rowHash is a row's 64-bit hash, the same on both sides: of the
// source's columns in order, by each type's own hash function when every
// column's type has one (no text is made), else of the row's text.
func (c *comparer) rowHash() string {
	row := "ROW(" + c.t.list(nil, nil) + ")"
	if c.byType {
		return "hash_record_extended(" + row + ", 0)"
	}
	return "hashtextextended(" + row + "::text, 0)"
}

// typeHashes reports whether every column of t has a hash function for
// its type in q (hash_record_extended needs one per column).
func typeHashes(ctx context.Context, q Querier, t *Table) bool {
	if tx, ok := q.(pgx.Tx); ok { // a failed query must not end the snapshot's transaction
		sp, err := tx.Begin(ctx)
		if err != nil {
			return false
		}
		defer sp.Rollback(context.WithoutCancel(ctx))
		q = sp
	}
	nulls := t.list(nil, func(c Col) string { return "NULL::" + c.Type })
	var h int64
	if err := q.QueryRow(ctx, "SELECT hash_record_extended(ROW("+nulls+"), 0)").Scan(&h); err != nil {
		return false
	}
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT coalesce((SELECT hash_record_extended(ROW(%s), 0) FROM %s LIMIT 1), 0)", t.list(nil, nil), t.Q())).Scan(&h)
	return err == nil
}

type summary struct {
	n int64
	h int64
}

func (c *comparer) summarize(ctx context.Context, q Querier, b bounds) (summary, error) {
	w, args := c.where(b)
	var s summary
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT count(*), coalesce(bit_xor(%s), 0) FROM %s WHERE %s", c.rowHash(), c.t.Q(), w), args...).Scan(&s.n, &s.h)
	return s, err
}

// both runs f on each side at once.
func both[T any](ctx context.Context, c *comparer, f func(context.Context, Querier) (T, error)) (T, T, error) {
	var a, b T
	var errA error
	done := make(chan struct{})
	go func() {
		defer close(done)
		a, errA = f(ctx, c.src)
	}()
	b, errB := f(ctx, c.dst)
	<-done
	if errA != nil {
		return a, b, fmt.Errorf("source: %w", errA)
	}
	if errB != nil {
		return a, b, fmt.Errorf("target: %w", errB)
	}
	return a, b, nil
}

// splits returns keys that cut the segment into about Fanout parts of the
// side q (at most Fanout-1 keys, in order).
func (c *comparer) splits(ctx context.Context, q Querier, b bounds, n int64) ([][]string, error) {
	step := max(n/c.Fanout, 1)
	w, args := c.where(b)
	args = append(args, step)
	keys := c.t.list(c.t.Key, nil)
	texts := c.t.list(c.t.Key, func(col Col) string { return ident(col.Name) + "::text" })
	rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS tandem_rn FROM %s WHERE %s) s WHERE tandem_rn %% $%d = 0 ORDER BY tandem_rn",
		texts, keys, keys, c.t.Q(), w, len(args)), args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
		k := make([]string, len(c.t.Key))
		ptrs := make([]any, len(k))
		for i := range k {
			ptrs[i] = &k[i]
		}
		return k, r.Scan(ptrs...)
	})
}

type keyHash struct {
	key []string
	h   int64
}

// hashes reads the segment's rows as keys and row hashes, in key order.
func (c *comparer) hashes(ctx context.Context, q Querier, b bounds) ([]keyHash, error) {
	w, args := c.where(b)
	texts := c.t.list(c.t.Key, func(col Col) string { return ident(col.Name) + "::text" })
	rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s",
		texts, c.rowHash(), c.t.Q(), w), args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyHash, error) {
		kh := keyHash{key: make([]string, len(c.t.Key))}
		ptrs := make([]any, 0, len(kh.key)+1)
		for i := range kh.key {
			ptrs = append(ptrs, &kh.key[i])
		}
		return kh, r.Scan(append(ptrs, &kh.h)...)
	})
}

// run compares the table.
func (c *comparer) run(ctx context.Context) (Compared, error) {
	res := Compared{Table: c.t.Name, Scope: c.describe()}
	c.byType = typeHashes(ctx, c.src, c.t)
	queue := []bounds{{}}
	first := true
	for len(queue) > 0 {
		b := queue[0]
		queue = queue[1:]
		s, d, err := both(ctx, c, func(ctx context.Context, q Querier) (summary, error) { return c.summarize(ctx, q, b) })
		if err != nil {
			return res, fmt.Errorf("table %s: %w", c.t.Name, err)
		}
		res.Segments++
		if first {
			res.Rows, first = s.n, false
		}
		if s == d {
			continue
		}
		if max(s.n, d.n) <= c.Leaf {
			sk, dk, err := both(ctx, c, func(ctx context.Context, q Querier) ([]keyHash, error) { return c.hashes(ctx, q, b) })
			if err != nil {
				return res, fmt.Errorf("table %s: %w", c.t.Name, err)
			}
			res.Fetched += int64(len(sk) + len(dk))
			res.Diffs = append(res.Diffs, merge(c.t, sk, dk)...)
			continue
		}
		q := c.src
		n := s.n
		if d.n > s.n {
			q, n = c.dst, d.n
		}
		cuts, err := c.splits(ctx, q, b, n)
		if err != nil {
			return res, fmt.Errorf("table %s: split: %w", c.t.Name, err)
		}
		lo := b.lo
		for _, k := range cuts {
			if b.hi != nil && slices.Equal(k, b.hi) {
				break
			}
			queue = append(queue, bounds{lo: lo, hi: k})
			lo = k
		}
		queue = append(queue, bounds{lo: lo, hi: b.hi})
	}
	return res, nil
}

func (c *comparer) describe() string {
	var parts []string
	if c.scope.windowed() {
		if c.t.Audit < 0 {
			parts = append(parts, "whole table (no audit column for the window)")
		} else {
			a := c.t.Cols[c.t.Audit].Name
			switch {
			case c.scope.Since.IsZero():
				parts = append(parts, fmt.Sprintf("%s until %s", a, c.scope.Until.UTC().Format(time.RFC3339)))
			case c.scope.Until.IsZero():
				parts = append(parts, fmt.Sprintf("%s from %s", a, c.scope.Since.UTC().Format(time.RFC3339)))
			default:
				parts = append(parts, fmt.Sprintf("%s from %s to %s", a, c.scope.Since.UTC().Format(time.RFC3339), c.scope.Until.UTC().Format(time.RFC3339)))
			}
		}
	}
	if len(c.scope.Keys) > 0 {
		parts = append(parts, fmt.Sprintf("%d listed keys", len(c.scope.Keys)))
	}
	if len(parts) == 0 {
		return "whole table"
	}
	return strings.Join(parts, " and ")
}

// merge compares the rows of one segment of both sides.
func merge(t *Table, src, dst []keyHash) []Diff {
	var out []Diff
	in := make(map[string]int64, len(dst))
	for _, r := range dst {
		in[keyString(r.key)] = r.h
	}
	for _, r := range src {
		k := keyString(r.key)
		h, ok := in[k]
		switch {
		case !ok:
			out = append(out, Diff{Table: t.Name, Key: r.key, Kind: "missing"})
		case h != r.h:
			out = append(out, Diff{Table: t.Name, Key: r.key, Kind: "differs"})
		}
		delete(in, k)
	}
	for _, r := range dst {
		if _, ok := in[keyString(r.key)]; ok {
			out = append(out, Diff{Table: t.Name, Key: r.key, Kind: "extra"})
		}
	}
	return out
}

// keyString is a key's values as one string (tab-separated), as the
// journal and messages show it.
func keyString(k []string) string { return strings.Join(k, "\t") }
