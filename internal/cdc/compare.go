package cdc

import (
	"cmp"
	"context"
	"errors"
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
// row's text is the same on each; and no JIT compilation: a comparison's
// scans of 3,000,000 rows ran 20 to 30% faster without it (PostgreSQL 15
// compiles their hash expressions without optimizing them, slower than
// its interpreter here).
const Pinned = `SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; SET timezone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = 'hex'; SET jit = off`

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
	// A differing segment of at most Leaf rows is read row by row, one of
	// at most Buckets rows compared by hash buckets reading at most Fetch
	// rows a side at a time, a larger one split into Fanout key ranges. A
	// zero value is its default: 2,000, 1,048,576, 250,000 and 16.
	Leaf, Buckets, Fetch, Fanout int64
	// rowHash and keyHash are the SQL of a row's and a key's 64-bit hash
	// (see hashes).
	rowHash, keyHash string
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

// colHash is the SQL of a column's 64-bit hash with seed, by its type's
// own hash function (as the type's hash index uses it: values equal for the
// type hash alike), for the types whose function can be called from SQL
// on the column; "" for the others. Dates and timestamps are hashed as
// timestamps (without a time zone: in UTC), a bijection.
func colHash(col Col, seed int) string {
	name, t := ident(col.Name), col.Type
	f := ""
	switch {
	case t == "smallint" || t == "integer" || t == "bigint":
		f, name = "hashint8extended", name+"::bigint"
	case t == "boolean":
		f, name = "hashint8extended", name+"::int::bigint"
	case t == "text" || strings.HasPrefix(t, "character varying"):
		f, name = "hashtextextended", name+"::text"
	case t == "character" || strings.HasPrefix(t, "character("):
		f = "hashbpcharextended"
	case t == "numeric" || strings.HasPrefix(t, "numeric("):
		f = "hash_numeric_extended"
	case t == "uuid":
		f = "uuid_hash_extended"
	case t == "jsonb":
		f = "jsonb_hash_extended"
	case t == "double precision":
		f = "hashfloat8extended"
	case t == "real":
		f = "hashfloat4extended"
	case t == "date":
		f, name = "timestamp_hash_extended", name+"::timestamp"
	case strings.HasPrefix(t, "timestamp") && strings.HasSuffix(t, "with time zone"):
		f, name = "timestamp_hash_extended", name+" AT TIME ZONE 'UTC'"
	case strings.HasPrefix(t, "timestamp"):
		f = "timestamp_hash_extended"
	default:
		return ""
	}
	return fmt.Sprintf("%s(%s, %d)", f, name, seed)
}

// colsHash is the SQL of a 64-bit hash of the columns idx of t (nil: all),
// from each column's own hash (colHash, seeded by its place, 0 for a NULL),
// combined by XOR and mixed by one hash more; "" when a column's type has
// no hash callable from SQL. The mix keeps a table's sum (the XOR of its
// rows' hashes) from being blind to values swapped between rows: without
// it, the sum would be the XOR of every (column, value) pair, whatever row
// each is in. One call per column, and no record made per row: cheaper
// than hash_record_extended (docs/BENCHMARKS.md, 2026-12-07).
func colsHash(t *Table, idx []int) string {
	idx = t.orAll(idx)
	terms := make([]string, len(idx))
	for i, k := range idx {
		h := colHash(t.Cols[k], i+1)
		if h == "" {
			return ""
		}
		terms[i] = "coalesce(" + h + ", 0)"
	}
	return "hashint8extended(" + strings.Join(terms, " # ") + ", 0)"
}

// hashes chooses the SQL of a row's and of a key's 64-bit hash, the same on
// both sides (their columns have the same types): by each column's own
// hash function (colsHash) when every type has one callable from SQL, else
// by hash_record_extended of the row when every type has a hash function,
// else of the row's text. A key of one column is hashed by its type's
// function alone where it has one (hash buckets are taken from it). Each
// choice is tried on the table in q first.
func hashes(ctx context.Context, q Querier, t *Table) (row, key string) {
	works := func(query string) bool {
		on := q
		if tx, ok := q.(pgx.Tx); ok { // a failed query must not end the snapshot's transaction
			sp, err := tx.Begin(ctx)
			if err != nil {
				return false
			}
			defer sp.Rollback(context.WithoutCancel(ctx))
			on = sp
		}
		var h int64
		return on.QueryRow(ctx, query).Scan(&h) == nil
	}
	onTable := func(expr string) bool {
		return expr != "" && works(fmt.Sprintf("SELECT coalesce((SELECT %s FROM %s LIMIT 1), 0)", expr, t.Q()))
	}
	pick := func(idx []int) string {
		if h := colsHash(t, idx); onTable(h) {
			return h
		}
		// hash_record_extended looks for a type's hash function when it
		// meets the type: tried on NULLs too, as the table may be empty.
		nulls := t.list(idx, func(c Col) string { return "NULL::" + c.Type })
		if rec := "hash_record_extended(ROW(" + t.list(idx, nil) + "), 0)"; onTable(rec) && works("SELECT hash_record_extended(ROW("+nulls+"), 0)") {
			return rec
		}
		return "hashtextextended(ROW(" + t.list(idx, nil) + ")::text, 0)"
	}
	row = pick(nil)
	if len(t.Key) == 1 {
		if h := colHash(t.Cols[t.Key[0]], 0); onTable(h) {
			return row, h
		}
	}
	return row, pick(t.Key)
}

type summary struct {
	n int64
	h int64
}

func (c *comparer) summarize(ctx context.Context, q Querier, b bounds) (summary, error) {
	w, args := c.where(b)
	var s summary
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT count(*), coalesce(bit_xor(%s), 0) FROM %s WHERE %s", c.rowHash, c.t.Q(), w), args...).Scan(&s.n, &s.h)
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

// hashes reads the segment's rows (of the buckets in in only, when set)
// as keys and row hashes.
func (c *comparer) hashes(ctx context.Context, q Querier, b bounds, in *bucketSet) ([]keyHash, error) {
	w, args := c.where(b)
	if in != nil {
		args = append(args, in.ids)
		w += fmt.Sprintf(" AND %s & %d = ANY($%d::bigint[])", c.keyHash, in.mask, len(args))
	}
	texts := c.t.list(c.t.Key, func(col Col) string { return ident(col.Name) + "::text" })
	rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s",
		texts, c.rowHash, c.t.Q(), w), args...)
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

// run compares the table. A table the planner estimates at most Buckets
// rows is compared by hash buckets of its keys at once (see byBuckets),
// unless it turns out larger. Else the whole table is summarized; a differing segment of at most Leaf
// rows is read row by row, one of at most Buckets rows compared by hash
// buckets, a larger one split into Fanout key ranges, each compared in
// turn.
func (c *comparer) run(ctx context.Context) (Compared, error) {
	res := Compared{Table: c.t.Name, Scope: c.describe()}
	c.rowHash, c.keyHash = hashes(ctx, c.src, c.t)
	c.Leaf, c.Fanout = cmp.Or(c.Leaf, 2000), cmp.Or(c.Fanout, 16)
	c.Buckets, c.Fetch = cmp.Or(c.Buckets, 1<<20), cmp.Or(c.Fetch, 250_000)
	var s, d summary
	err := errMoreRows
	if est := c.estimate(ctx); est >= 0 && est <= c.Buckets {
		// Small enough for hash buckets: their sums are the table's, and
		// a table that differs is not read once more.
		s, d, err = c.byBuckets(ctx, &res, bounds{}, est)
		res.Rows = s.n
		if !errors.Is(err, errMoreRows) {
			if err != nil {
				return res, fmt.Errorf("table %s: %w", c.t.Name, err)
			}
			return res, nil
		}
		err = nil // the estimate was stale: the sums are the table's
	} else {
		s, d, err = c.summaries(ctx, bounds{})
		res.Segments, res.Rows = res.Segments+1, s.n
	}
	queue := []keyRange{{bounds{}, s, d}}
	for err == nil && len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		switch {
		case g.s == g.d:
		case g.rows() <= c.Leaf:
			err = c.leaf(ctx, &res, g.b, nil)
		case g.rows() <= c.Buckets:
			_, _, err = c.byBuckets(ctx, &res, g.b, g.rows())
		default:
			var parts []keyRange
			parts, err = c.split(ctx, g)
			res.Segments += len(parts)
			queue = append(queue, parts...)
		}
	}
	if err != nil {
		return res, fmt.Errorf("table %s: %w", c.t.Name, err)
	}
	return res, nil
}

// split cuts a segment into about Fanout key ranges at keys of the side with
// more rows, and summarizes each.
func (c *comparer) split(ctx context.Context, g keyRange) ([]keyRange, error) {
	q, n := c.src, g.s.n
	if g.d.n > g.s.n {
		q, n = c.dst, g.d.n
	}
	cuts, err := c.splits(ctx, q, g.b, n)
	if err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	var parts []keyRange
	lo := g.b.lo
	for _, k := range cuts {
		if g.b.hi != nil && slices.Equal(k, g.b.hi) {
			break
		}
		parts = append(parts, keyRange{b: bounds{lo: lo, hi: k}})
		lo = k
	}
	parts = append(parts, keyRange{b: bounds{lo: lo, hi: g.b.hi}})
	for i := range parts {
		if parts[i].s, parts[i].d, err = c.summaries(ctx, parts[i].b); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// keyRange is a segment's bounds with its summary on each side.
type keyRange struct {
	b    bounds
	s, d summary
}

func (g keyRange) rows() int64 { return max(g.s.n, g.d.n) }

func (c *comparer) summaries(ctx context.Context, b bounds) (summary, summary, error) {
	return both(ctx, c, func(ctx context.Context, q Querier) (summary, error) { return c.summarize(ctx, q, b) })
}

// leaf reads the segment's rows (those of the listed hash buckets only,
// when in is set) on both sides and adds what differs.
func (c *comparer) leaf(ctx context.Context, res *Compared, b bounds, in *bucketSet) error {
	sk, dk, err := both(ctx, c, func(ctx context.Context, q Querier) ([]keyHash, error) { return c.hashes(ctx, q, b, in) })
	if err != nil {
		return err
	}
	res.Fetched += int64(len(sk) + len(dk))
	res.Diffs = append(res.Diffs, merge(c.t, sk, dk)...)
	return nil
}

// bucketSet is some of a segment's hash buckets: rows whose key hash,
// masked by mask, is one of ids.
type bucketSet struct {
	mask int64
	ids  []int64
}

// bucketRows is how many rows a hash bucket holds, aimed at.
const bucketRows = 64

// byBuckets compares a segment of about rows rows in two scans a side,
// however its differences are spread: the first sums its rows by hash
// bucket of their keys (count and hash, as a segment's), the second reads
// the rows of the buckets that differ, at most Fetch rows a side at a time
// (a scan each). Splitting by key ranges instead reads nearly every row at
// each level when the differences are scattered, as a source failover's
// gap leaves them. It returns the segment's summary on each side.
func (c *comparer) byBuckets(ctx context.Context, res *Compared, b bounds, rows int64) (summary, summary, error) {
	nb := int64(2)
	for nb*bucketRows < rows {
		nb *= 2
	}
	mask := nb - 1
	w, args := c.where(b)
	sql := fmt.Sprintf("SELECT %s & %d, count(*), coalesce(bit_xor(%s), 0) FROM %s WHERE %s GROUP BY 1",
		c.keyHash, mask, c.rowHash, c.t.Q(), w)
	s, d, err := both(ctx, c, func(ctx context.Context, q Querier) (map[int64]summary, error) {
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return nil, err
		}
		out := map[int64]summary{}
		var id int64
		var s summary
		_, err = pgx.ForEachRow(rows, []any{&id, &s.n, &s.h}, func() error { out[id] = s; return nil })
		return out, err
	})
	if err != nil {
		return summary{}, summary{}, fmt.Errorf("hash buckets: %w", err)
	}
	res.Segments += len(s)
	var ids []int64
	var ts, td summary
	for id := range nb {
		ts.n, ts.h = ts.n+s[id].n, ts.h^s[id].h
		td.n, td.h = td.n+d[id].n, td.h^d[id].h
		if s[id] != d[id] {
			ids = append(ids, id)
		}
	}
	if n := max(ts.n, td.n); n > c.Buckets && n > 4*rows {
		return ts, td, errMoreRows
	}
	for len(ids) > 0 {
		var n int64
		i := 0
		for ; i < len(ids) && (i == 0 || n+max(s[ids[i]].n, d[ids[i]].n) <= c.Fetch); i++ {
			n += max(s[ids[i]].n, d[ids[i]].n)
		}
		if err := c.leaf(ctx, res, b, &bucketSet{mask: mask, ids: ids[:i]}); err != nil {
			return ts, td, err
		}
		ids = ids[i:]
	}
	return ts, td, nil
}

// errMoreRows: a segment compared by hash buckets has more rows than
// Buckets, and several times more than expected (the planner's estimate
// was stale): its buckets are too large, it is split by key range instead.
var errMoreRows = errors.New("more rows than estimated")

// estimate is the planner's estimate of the table's rows, or -1 when it
// has none (never analyzed) or could not be read.
func (c *comparer) estimate(ctx context.Context) int64 {
	var n float64
	if err := c.src.QueryRow(ctx, "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", c.t.Q()).Scan(&n); err != nil {
		return -1
	}
	return int64(n)
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
