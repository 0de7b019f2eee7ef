package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// change is the last state a batch knows of one row: deleted, or its
// values (nil: NULL), with have false for a column the source left
// unchanged (an unchanged TOAST value: the target keeps its own).
type change struct {
	del  bool
	vals []*string
	have []bool
	// born: the batch's first change of the row is its insert, so the
	// row was not in the source, nor in a target level with it, when the
	// batch started: it can go in by COPY, without the conflict check of
	// an upsert (see batch.apply).
	born bool
	// seq orders the batch's rows by their first change: the source's
	// order, which keeps an index's inserts close together.
	seq int
}

func (c *change) full() bool {
	for _, h := range c.have {
		if !h {
			return false
		}
	}
	return true
}

// segment is a run of changes folded to one per row; a truncate ends one.
type segment struct {
	truncate []*Table
	rows     map[*Table]map[string]*change
	order    []*Table
	fast     map[*Table]*split // prepared for a fast apply (see prepare)
}

// txn is one source transaction of a batch, for the journal.
type txn struct {
	end     LSN
	commit  time.Time
	xid     uint32
	changes []string
	more    int
}

// batch is the changes of whole source transactions, applied in one
// target transaction: each row's last state, in order of truncates.
type batch struct {
	segs  []*segment
	rows  int
	txns  []txn
	first time.Time
}

// maxJournal bounds the keys one transaction's journal entry lists.
const maxJournal = 1000

func (b *batch) seg() *segment {
	if len(b.segs) == 0 {
		b.segs = append(b.segs, &segment{rows: map[*Table]map[string]*change{}})
	}
	return b.segs[len(b.segs)-1]
}

func (b *batch) begin(xid uint32) {
	if b.first.IsZero() {
		b.first = time.Now()
	}
	b.txns = append(b.txns, txn{xid: xid})
}

func (b *batch) note(t *Table, op, key string) {
	x := &b.txns[len(b.txns)-1]
	if len(x.changes) < maxJournal {
		x.changes = append(x.changes, t.Name+"\t"+op+"\t"+key)
	} else {
		x.more++
	}
}

// put folds one row change into the batch.
func (b *batch) put(t *Table, key string, c *change) {
	s := b.seg()
	m := s.rows[t]
	if m == nil {
		m = map[string]*change{}
		s.rows[t] = m
		s.order = append(s.order, t)
	}
	old := m[key]
	if old != nil && !old.del && !c.del && !c.full() {
		for i, h := range c.have {
			if h {
				old.vals[i], old.have[i] = c.vals[i], true
			}
		}
		c = old
	}
	if old != nil {
		c.born, c.seq = old.born, old.seq
	} else {
		c.seq = b.rows
	}
	m[key] = c
	b.rows++
}

func (b *batch) truncate(ts []*Table) {
	b.segs = append(b.segs, &segment{truncate: ts, rows: map[*Table]map[string]*change{}})
	b.rows++
}

func (b *batch) empty() bool { return len(b.txns) == 0 }

// apply writes the batch into tx. With fast, whole rows born in the batch
// go in by COPY, as a plain insert: the target is level with the source
// at the batch's start (its position commits with its data), so none of
// them is there. A target someone else wrote into may hold one anyway:
// the COPY then fails with a unique violation (errBornExists), and the
// caller applies the batch again without fast, upserting every row.
func (b *batch) apply(ctx context.Context, tx pgx.Tx, fast bool) error {
	for _, s := range b.segs {
		if len(s.truncate) > 0 {
			names := make([]string, len(s.truncate))
			for i, t := range s.truncate {
				names[i] = t.Q()
			}
			if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(names, ", ")); err != nil {
				return fmt.Errorf("truncate %s in the target: %w", strings.Join(names, ", "), err)
			}
		}
		for _, t := range s.order {
			sp := s.fast[t]
			if !fast || sp == nil {
				sp = splitRows(s.rows[t], fast)
			}
			if err := sp.apply(ctx, tx, t); err != nil {
				return fmt.Errorf("table %s in the target: %w", t.Name, err)
			}
		}
	}
	return nil
}

// split is one table's rows of a segment by how they are written:
// deletes, whole rows born in the batch (COPY), other whole rows (insert,
// or update on conflict) and rows with unchanged columns (update of the
// columns the source sent), whole rows in the order of their first change.
type split struct {
	dels, born, fulls []*change
	partial           map[string][]*change
	bornCopy          []byte // COPY input of born, when prepared
}

func splitRows(rows map[string]*change, fast bool) *split {
	sp := &split{partial: map[string][]*change{}}
	for _, c := range rows {
		switch {
		case c.del:
			sp.dels = append(sp.dels, c)
		case fast && c.born && c.full():
			sp.born = append(sp.born, c)
		case c.full():
			sp.fulls = append(sp.fulls, c)
		default:
			var mask strings.Builder
			for _, h := range c.have {
				mask.WriteByte("01"[b2i(h)])
			}
			sp.partial[mask.String()] = append(sp.partial[mask.String()], c)
		}
	}
	for _, cs := range [][]*change{sp.born, sp.fulls} {
		slices.SortFunc(cs, func(a, b *change) int { return a.seq - b.seq })
	}
	return sp
}

// prepare splits the batch's rows for a fast apply and builds the COPY
// input of the rows born in it, before the batch reaches the committer
// (which commits the one before meanwhile).
func (b *batch) prepare() {
	for _, s := range b.segs {
		s.fast = map[*Table]*split{}
		for _, t := range s.order {
			sp := splitRows(s.rows[t], true)
			sp.bornCopy = copyText(sp.born)
			s.fast[t] = sp
		}
	}
}

// apply writes the rows of table t into tx, one statement per kind.
func (sp *split) apply(ctx context.Context, tx pgx.Tx, t *Table) error {
	if len(sp.dels) > 0 {
		if err := Delete(ctx, tx, t, sp.dels); err != nil {
			return err
		}
	}
	if len(sp.born) > 0 {
		if sp.bornCopy == nil {
			sp.bornCopy = copyText(sp.born)
		}
		if err := copyRows(ctx, tx, t.Q(), t, sp.bornCopy); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
				return fmt.Errorf("%w: %v", errBornExists, err)
			}
			return err
		}
	}
	if len(sp.fulls) > 0 {
		if err := stageUpsert(ctx, tx, t, sp.fulls); err != nil {
			return err
		}
	}
	for _, cs := range sp.partial {
		if err := update(ctx, tx, t, cs); err != nil {
			return err
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// columns returns, for the columns at idx, one text array literal per
// column of the rows' values (sent as text and cast on the server: pgx
// encodes a []*string by reflection, element by element, which cost a
// third of the replicator's CPU).
func columns(idx []int, cs []*change) []any {
	args := make([]any, len(idx))
	var b strings.Builder
	for j, k := range idx {
		b.Reset()
		b.WriteByte('{')
		for i, c := range cs {
			if i > 0 {
				b.WriteByte(',')
			}
			writeElem(&b, c.vals[k])
		}
		b.WriteByte('}')
		args[j] = b.String()
	}
	return args
}

// writeElem writes one element of an array literal: NULL, or the value
// quoted.
func writeElem(b *strings.Builder, v *string) {
	if v == nil {
		b.WriteString("NULL")
		return
	}
	b.WriteByte('"')
	arrayEscape.WriteString(b, *v)
	b.WriteByte('"')
}

// unnest is "SELECT $1::text::text[]::type AS col, ..." over the columns at idx:
// the rows as a relation with the table's types.
func unnest(t *Table, idx []int) string {
	var params, casts []string
	for j, k := range idx {
		params = append(params, fmt.Sprintf("$%d::text::text[]", j+1))
		casts = append(casts, fmt.Sprintf("u.c%d::%s AS %s", j, t.Cols[k].Type, ident(t.Cols[k].Name)))
	}
	var as []string
	for j := range idx {
		as = append(as, fmt.Sprintf("c%d", j))
	}
	return fmt.Sprintf("SELECT %s FROM unnest(%s) AS u(%s)", strings.Join(casts, ", "), strings.Join(params, ", "), strings.Join(as, ", "))
}

func keyMatch(t *Table, a, b string) string {
	return t.list(t.Key, func(c Col) string { return a + "." + ident(c.Name) + " = " + b + "." + ident(c.Name) })
}

func and(s string) string { return strings.ReplaceAll(s, ", ", " AND ") }

// Delete removes the rows with the changes' keys, where they exist.
func Delete(ctx context.Context, tx pgx.Tx, t *Table, cs []*change) error {
	q := fmt.Sprintf("DELETE FROM %s AS t USING (%s) AS d WHERE %s", t.Q(), unnest(t, t.Key), and(keyMatch(t, "t", "d")))
	_, err := tx.Exec(ctx, q, columns(t.Key, cs)...)
	return err
}

// Upsert inserts whole rows, replacing the row of the same key.
func Upsert(ctx context.Context, tx pgx.Tx, t *Table, cs []*change) error {
	all := make([]int, len(t.Cols))
	for i := range all {
		all[i] = i
	}
	_, err := tx.Exec(ctx, upsertFrom(t, unnest(t, all)), columns(all, cs)...)
	return err
}

// upsertFrom is the INSERT of the rows query gives (every column, in the
// table's order), replacing the row of the same key.
func upsertFrom(t *Table, query string) string {
	var set []string
	for i, c := range t.Cols {
		if !isKey(t, i) {
			set = append(set, ident(c.Name)+" = excluded."+ident(c.Name))
		}
	}
	conflict := "DO NOTHING"
	if len(set) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(set, ", ")
	}
	return fmt.Sprintf("INSERT INTO %s (%s) %s ON CONFLICT (%s) %s", t.Q(), t.list(nil, nil), query, t.list(t.Key, nil), conflict)
}

// stageUpsert is Upsert through a temporary table of the target's session:
// the rows go in by COPY (the server parses each value once, as a COPY
// does, instead of text arrays then casts), then one INSERT ... SELECT
// replaces them. The table empties at commit. It measured 0.6 of the time
// of the unnest form per batch.
func stageUpsert(ctx context.Context, tx pgx.Tx, t *Table, cs []*change) error {
	h := fnv.New32a()
	h.Write([]byte(t.Name + "\x00" + t.list(nil, nil)))
	stage := fmt.Sprintf("tandem_stage_%08x", h.Sum32())
	if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s ON COMMIT DELETE ROWS AS SELECT %s FROM %s WITH NO DATA", stage, t.list(nil, nil), t.Q())); err != nil {
		return fmt.Errorf("staging table: %w", err)
	}
	if err := copyRows(ctx, tx, stage, t, copyText(cs)); err != nil {
		return fmt.Errorf("staging table: %w", err)
	}
	_, err := tx.Exec(ctx, upsertFrom(t, "SELECT * FROM "+stage))
	return err
}

// errBornExists: a row the batch inserted first was in the target already
// (someone else wrote it there).
var errBornExists = errors.New("a row the source inserted is in the target already")

// copyText is the COPY input (text format) of the whole rows of cs.
func copyText(cs []*change) []byte {
	var b bytes.Buffer
	for _, c := range cs {
		for i, v := range c.vals {
			if i > 0 {
				b.WriteByte('\t')
			}
			switch {
			case v == nil:
				b.WriteString(`\N`)
			case strings.ContainsAny(*v, "\\\t\n\r"):
				copyEscape.WriteString(&b, *v)
			default:
				b.WriteString(*v)
			}
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// copyRows copies rows (COPY input in text format) into the table named
// into (quoted), whose columns are t's.
func copyRows(ctx context.Context, tx pgx.Tx, into string, t *Table, rows []byte) error {
	_, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(rows), "COPY "+into+" ("+t.list(nil, nil)+") FROM STDIN")
	return err
}

var copyEscape = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

// update sets the columns the changes have (the same for all of them) on
// the rows of their keys that exist.
func update(ctx context.Context, tx pgx.Tx, t *Table, cs []*change) error {
	var set []string
	var cols []int
	for i, h := range cs[0].have {
		if h {
			cols = append(cols, i)
			if !isKey(t, i) {
				set = append(set, ident(t.Cols[i].Name)+" = d."+ident(t.Cols[i].Name))
			}
		}
	}
	if len(set) == 0 {
		return nil
	}
	q := fmt.Sprintf("UPDATE %s AS t SET %s FROM (%s) AS d WHERE %s", t.Q(), strings.Join(set, ", "), unnest(t, cols), and(keyMatch(t, "t", "d")))
	_, err := tx.Exec(ctx, q, columns(cols, cs)...)
	return err
}

func isKey(t *Table, i int) bool {
	for _, k := range t.Key {
		if k == i {
			return true
		}
	}
	return false
}

// journal records the batch's transactions in tx, and forgets entries
// older than keep.
func (b *batch) journal(ctx context.Context, tx pgx.Tx, pair string, timeline int32) error {
	n := len(b.txns)
	ends, times, xids, changes, more := make([]string, n), make([]time.Time, n), make([]int64, n), make([]string, n), make([]int32, n)
	for i, x := range b.txns {
		ends[i], times[i], xids[i], more[i] = x.end.String(), x.commit, int64(x.xid), int32(x.more)
		changes[i] = pgArray(x.changes)
	}
	_, err := tx.Exec(ctx, `INSERT INTO tandem.cdc_journal (pair, timeline, end_lsn, commit_time, xid, changes, more)
		SELECT $1, $2, e::pg_lsn, t, x, c::text[], m FROM unnest($3::text[], $4::timestamptz[], $5::bigint[], $6::text[], $7::int[]) AS u(e, t, x, c, m)
		ON CONFLICT DO NOTHING`, pair, timeline, ends, times, xids, changes, more)
	return err
}

var arrayEscape = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// pgArray writes a text array literal.
func pgArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		writeElem(&b, &s)
	}
	b.WriteByte('}')
	return b.String()
}
