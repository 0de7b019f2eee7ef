package cdc

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"tandem/internal/postgres"
)

// Report is what a validation found.
type Report struct {
	Pair string `json:"pair"`
	// Source is the source primary compared (no password).
	Source string `json:"source"`
	// SourceLSN is where the source's snapshot stood; TargetLSN the
	// target's position when its snapshot was taken.
	SourceLSN string     `json:"source_lsn"`
	TargetLSN string     `json:"target_lsn,omitempty"`
	Tables    []Compared `json:"tables"`
	// Differences counts the rows that still differed after the re-checks.
	Differences int `json:"differences"`
	// Rechecked is how many differing rows a fresh read found level
	// (changes in flight when the snapshots were taken).
	Rechecked int     `json:"rechecked"`
	Seconds   float64 `json:"seconds"`
	// Note says what the validation could not do.
	Note string `json:"note,omitempty"`
}

// ValidateOptions choose what to compare.
type ValidateOptions struct {
	Scope Scope
	// Tables limits the validation to some of the pair's tables.
	Tables []string
	// Wait bounds how long the target's snapshot waits for the replicator
	// to apply what the source's snapshot has (default 30s).
	Wait time.Duration
}

// conns are a validation's or repair's connections.
type conns struct {
	source, target *pgx.Conn
	primary        string
	tables         []*Table
}

func (c *conns) close(ctx context.Context) {
	for _, x := range []*pgx.Conn{c.source, c.target} {
		if x != nil {
			x.Close(context.WithoutCancel(ctx))
		}
	}
}

func dial(ctx context.Context, o *Options, only []string) (*conns, error) {
	c := &conns{}
	var err error
	if c.primary, err = FindPrimary(ctx, o.Sources); err != nil {
		return c, err
	}
	if c.source, err = connect(ctx, c.primary); err != nil {
		return c, fmt.Errorf("source: %w", err)
	}
	if c.target, err = connect(ctx, o.Target); err != nil {
		return c, fmt.Errorf("target: %w", err)
	}
	for _, x := range []*pgx.Conn{c.source, c.target} {
		if _, err := x.Exec(ctx, Pinned); err != nil {
			return c, err
		}
	}
	names := o.Tables
	if len(only) > 0 {
		for _, n := range only {
			if !slices.Contains(o.Tables, n) {
				return c, fmt.Errorf("table %s is not one of the pair's tables (%v)", n, o.Tables)
			}
		}
		names = only
	}
	err = pgx.BeginFunc(ctx, c.source, func(tx pgx.Tx) error {
		c.tables, err = sourceTables(ctx, tx, names, o.Audit)
		return err
	})
	if err != nil {
		return c, err
	}
	for _, t := range c.tables {
		tt, ok, err := describe(ctx, c.target, t.Name, "")
		switch {
		case err != nil:
			return c, fmt.Errorf("target: table %s: %w", t.Name, err)
		case !ok:
			return c, fmt.Errorf("table %s does not exist in the target: nothing of it was replicated yet (tandem cdc run creates it)", t.Name)
		}
		if err := sameShape(t, tt); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Validate compares the pair's tables in the source primary and the
// target, each in a consistent snapshot, the target's taken once the
// replicator has applied what the source's has. Rows that differ are read
// again (three times at most, each after the target caught up with the
// source's position then; once when no replicator is applying), so changes
// in flight are not reported.
func Validate(ctx context.Context, o Options, vo ValidateOptions) (Report, error) {
	o.defaults()
	if vo.Wait <= 0 {
		vo.Wait = 30 * time.Second
	}
	started := time.Now()
	rep := Report{Pair: o.Pair}
	c, err := dial(ctx, &o, vo.Tables)
	defer c.close(ctx)
	if err != nil {
		return rep, err
	}
	rep.Source = postgres.Redact(c.primary)
	src, err := c.source.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, err
	}
	defer src.Rollback(context.WithoutCancel(ctx))
	var at LSN
	if err := src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&at); err != nil {
		return rep, fmt.Errorf("source: %w", err)
	}
	rep.SourceLSN = at.String()
	pos, reached := waitApplied(ctx, c.target, o.Pair, at, vo.Wait)
	rep.TargetLSN = pos.LSN.String()
	recheckWait, rechecks := vo.Wait, 3
	if !reached {
		// Nothing is applying: one re-read, waiting for nothing, finds
		// what a change in flight in the source resolved.
		recheckWait, rechecks = 0, 1
	}
	if pos.State == "streaming" && !reached {
		rep.Note = fmt.Sprintf("the target had not applied up to the source's snapshot (%s): it stood at %s (is tandem replicating? serve in the target's region or tandem cdc run); rows changed since may show as differences", at, pos.LSN)
	}
	dst, err := c.target.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, err
	}
	defer dst.Rollback(context.WithoutCancel(ctx))
	for _, t := range c.tables {
		cmp := &comparer{src: src, dst: dst, t: t, scope: vo.Scope}
		res, err := cmp.run(ctx)
		if err != nil {
			return rep, err
		}
		rep.Tables = append(rep.Tables, res)
	}
	src.Rollback(ctx)
	dst.Rollback(ctx)
	for i := range rep.Tables {
		t := c.tables[i]
		for round := 0; round < rechecks && len(rep.Tables[i].Diffs) > 0; round++ {
			still, err := recheck(ctx, c, &o, t, rep.Tables[i].Diffs, recheckWait)
			if err != nil {
				return rep, err
			}
			rep.Rechecked += len(rep.Tables[i].Diffs) - len(still)
			rep.Tables[i].Diffs = still
		}
		rep.Differences += len(rep.Tables[i].Diffs)
	}
	rep.Seconds = time.Since(started).Seconds()
	return rep, nil
}

// stalled is how long a position that does not move is waited for: no
// replicator is applying (a running one moves it every second, idle too).
const stalled = 3 * time.Second

// waitApplied waits until the target's position of pair reaches at (at
// most wait, and no longer than stalled once it stops moving); reached is
// false when it did not, or there is no position.
func waitApplied(ctx context.Context, target *pgx.Conn, pair string, at LSN, wait time.Duration) (Position, bool) {
	deadline := time.Now().Add(wait)
	var last LSN
	moved := time.Now()
	for {
		pos, err := ReadPosition(ctx, target, pair)
		if err != nil || pos.State != "streaming" {
			return pos, false
		}
		if pos.LSN >= at {
			return pos, true
		}
		if pos.LSN != last {
			last, moved = pos.LSN, time.Now()
		}
		if time.Now().After(deadline) || time.Since(moved) > stalled {
			return pos, false
		}
		select {
		case <-ctx.Done():
			return pos, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// recheck reads the differing rows again on both sides (the target once
// it applied what the source had at the read) and returns those that
// still differ, with their kind now.
func recheck(ctx context.Context, c *conns, o *Options, t *Table, ds []Diff, wait time.Duration) ([]Diff, error) {
	keys := diffKeys(ds)
	var at LSN
	if err := c.source.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&at); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	srows, err := fetch(ctx, c.source, t, keys)
	if err != nil {
		return nil, fmt.Errorf("source: table %s: %w", t.Name, err)
	}
	waitApplied(ctx, c.target, o.Pair, at, wait)
	drows, err := fetch(ctx, c.target, t, keys)
	if err != nil {
		return nil, fmt.Errorf("target: table %s: %w", t.Name, err)
	}
	var out []Diff
	for _, k := range keys {
		ks := keyString(k)
		s, d := srows[ks], drows[ks]
		switch {
		case s == nil && d == nil:
		case s == nil:
			out = append(out, Diff{Table: t.Name, Key: k, Kind: "extra"})
		case d == nil:
			out = append(out, Diff{Table: t.Name, Key: k, Kind: "missing"})
		case !sameValues(s, d):
			out = append(out, Diff{Table: t.Name, Key: k, Kind: "differs"})
		}
	}
	return out, nil
}

func sameValues(a, b *change) bool {
	for i := range a.vals {
		switch {
		case (a.vals[i] == nil) != (b.vals[i] == nil):
			return false
		case a.vals[i] != nil && *a.vals[i] != *b.vals[i]:
			return false
		}
	}
	return true
}

// Action is one change a repair makes (or would make, in a dry run).
type Action struct {
	Table string   `json:"table"`
	Key   []string `json:"key"`
	Do    string   `json:"do"` // upsert, delete
}

// RepairResult is what a repair did.
type RepairResult struct {
	Actions      []Action `json:"actions"`
	Upserted     int      `json:"upserted"`
	Deleted      int      `json:"deleted"`
	Transactions int      `json:"transactions"`
	DryRun       bool     `json:"dry_run,omitempty"`
}

// repairChunk bounds the rows one repair transaction changes.
const repairChunk = 500

// Repair makes the target's differing rows of rep what the source has now:
// idempotent upserts and deletes, in transactions of at most 500 rows,
// each under the fence (o.Guard, the epoch recorded in the target). A dry
// run only lists the actions.
func Repair(ctx context.Context, o Options, rep Report, dryRun bool) (RepairResult, error) {
	o.defaults()
	res := RepairResult{DryRun: dryRun}
	var only []string
	for _, t := range rep.Tables {
		only = append(only, t.Table)
	}
	c, err := dial(ctx, &o, only)
	defer c.close(ctx)
	if err != nil {
		return res, err
	}
	if !dryRun {
		if err := prepare(ctx, c.target); err != nil {
			return res, err
		}
	}
	s := &session{o: &o, target: c.target}
	for i, t := range c.tables {
		keys := diffKeys(rep.Tables[i].Diffs)
		for len(keys) > 0 {
			n := min(len(keys), repairChunk)
			chunk := keys[:n]
			keys = keys[n:]
			srows, err := fetch(ctx, c.source, t, chunk)
			if err != nil {
				return res, fmt.Errorf("source: table %s: %w", t.Name, err)
			}
			for _, k := range chunk {
				a := Action{Table: t.Name, Key: k, Do: "delete"}
				if srows[keyString(k)] != nil {
					a.Do = "upsert"
				}
				res.Actions = append(res.Actions, a)
			}
			if dryRun {
				continue
			}
			epoch, err := s.epoch(ctx)
			if err != nil {
				return res, err
			}
			var f Fixed
			err = pgx.BeginFunc(ctx, c.target, func(tx pgx.Tx) error {
				if err := claim(ctx, tx, o.Pair, epoch, o.Region); err != nil {
					return err
				}
				if f, err = fix(ctx, c.source, tx, t, chunk); err != nil {
					return err
				}
				return s.check(ctx)
			})
			if err != nil {
				return res, err
			}
			res.Upserted += f.Upserted
			res.Deleted += f.Deleted
			res.Transactions++
		}
	}
	return res, nil
}

// ParseLSN reads a WAL position (16/B374D848).
func ParseLSN(s string) (LSN, error) { return pglogrepl.ParseLSN(s) }

// Print writes the report for people, with at most n differing keys per
// table.
func Print(w io.Writer, r Report, n int) {
	fmt.Fprintf(w, "validated %s against %s (source at %s, target at %s) in %.1fs\n", r.Pair, r.Source, r.SourceLSN, r.TargetLSN, r.Seconds)
	for _, t := range r.Tables {
		m, x, d := t.Counts()
		fmt.Fprintf(w, "  %s (%s): %d rows, %d segments hashed, %d rows read: %d missing, %d extra, %d differ\n", t.Table, t.Scope, t.Rows, t.Segments, t.Fetched, m, x, d)
		for i, df := range t.Diffs {
			if i == n {
				fmt.Fprintf(w, "    ... and %d more (--json lists them all)\n", len(t.Diffs)-n)
				break
			}
			fmt.Fprintf(w, "    %s %s\n", df.Kind, describeKey(df.Key))
		}
	}
	if r.Rechecked > 0 {
		fmt.Fprintf(w, "  %d rows that differed in the snapshots were level when read again (changes in flight)\n", r.Rechecked)
	}
	if r.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", r.Note)
	}
	if r.Differences == 0 {
		fmt.Fprintln(w, "no differences")
	} else {
		fmt.Fprintf(w, "%d rows differ\n", r.Differences)
	}
}
