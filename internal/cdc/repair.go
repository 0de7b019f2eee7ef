package cdc

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
)

// fetch reads the rows of keys from q as text, one change each (a key q
// does not have is not returned).
func fetch(ctx context.Context, q Querier, t *Table, keys [][]string) (map[string]*change, error) {
	out := map[string]*change{}
	if len(keys) == 0 {
		return out, nil
	}
	args := make([]any, len(t.Key))
	for j := range t.Key {
		col := make([]string, len(keys))
		for i, k := range keys {
			col[i] = k[j]
		}
		args[j] = pgArray(col)
	}
	texts := t.list(nil, func(c Col) string { return ident(c.Name) + "::text" })
	sel := unnest(t, t.Key)
	rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s FROM %s WHERE (%s) IN (SELECT * FROM (%s) k)", texts, t.Q(), t.list(t.Key, nil), sel), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		c := &change{vals: make([]*string, len(t.Cols)), have: make([]bool, len(t.Cols))}
		ptrs := make([]any, len(t.Cols))
		for i := range ptrs {
			ptrs[i] = &c.vals[i]
			c.have[i] = true
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out[keyString(c.key(t))] = c
	}
	return out, rows.Err()
}

func (c *change) key(t *Table) []string {
	k := make([]string, len(t.Key))
	for i, j := range t.Key {
		if v := c.vals[j]; v != nil {
			k[i] = *v
		}
	}
	return k
}

// keyChange is a delete of key.
func keyChange(t *Table, key []string) *change {
	c := &change{del: true, vals: make([]*string, len(t.Cols)), have: make([]bool, len(t.Cols))}
	for i, j := range t.Key {
		v := key[i]
		c.vals[j], c.have[j] = &v, true
	}
	return c
}

// Fixed counts what a repair changed.
type Fixed struct {
	Upserted int `json:"upserted"`
	Deleted  int `json:"deleted"`
}

// fix makes the target's rows of keys what src has: upserts the rows src
// has, deletes those it lacks.
func fix(ctx context.Context, src Querier, dst pgx.Tx, t *Table, keys [][]string) (Fixed, error) {
	var f Fixed
	rows, err := fetch(ctx, src, t, keys)
	if err != nil {
		return f, fmt.Errorf("table %s: read the source's rows: %w", t.Name, err)
	}
	var ups, dels []*change
	for _, k := range keys {
		if c := rows[keyString(k)]; c != nil {
			ups = append(ups, c)
		} else {
			dels = append(dels, keyChange(t, k))
		}
	}
	if len(dels) > 0 {
		if err := Delete(ctx, dst, t, dels); err != nil {
			return f, fmt.Errorf("table %s: delete in the target: %w", t.Name, err)
		}
	}
	if len(ups) > 0 {
		if err := Upsert(ctx, dst, t, ups); err != nil {
			return f, fmt.Errorf("table %s: upsert in the target: %w", t.Name, err)
		}
	}
	return Fixed{Upserted: len(ups), Deleted: len(dels)}, nil
}

// copyTable copies the whole table from src into the (empty) table of dst
// with COPY, the fastest way in.
func copyTable(ctx context.Context, src, dst pgx.Tx, t *Table) (int64, error) {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := src.Conn().PgConn().CopyTo(ctx, pw, fmt.Sprintf("COPY (SELECT %s FROM %s) TO STDOUT", t.list(nil, nil), t.Q()))
		pw.CloseWithError(err)
		errc <- err
	}()
	tag, err := dst.Conn().PgConn().CopyFrom(ctx, pr, fmt.Sprintf("COPY %s (%s) FROM STDIN", t.Q(), t.list(nil, nil)))
	pr.CloseWithError(err)
	if serr := <-errc; serr != nil {
		return 0, fmt.Errorf("table %s: read from the source: %w", t.Name, serr)
	}
	if err != nil {
		return 0, fmt.Errorf("table %s: write into the target: %w", t.Name, err)
	}
	return tag.RowsAffected(), nil
}

// isEmpty reports whether the table has no rows in q.
func isEmpty(ctx context.Context, q Querier, t *Table) (bool, error) {
	var any bool
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT exists (SELECT 1 FROM %s)", t.Q())).Scan(&any)
	return !any, err
}

// diffKeys are the keys of diffs.
func diffKeys(ds []Diff) [][]string {
	out := make([][]string, len(ds))
	for i, d := range ds {
		out[i] = d.Key
	}
	return out
}

// describeKey prints a key for people: (1, 'a').
func describeKey(k []string) string { return "(" + strings.Join(k, ", ") + ")" }
