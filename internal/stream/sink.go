package stream

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/fence"
)

// ErrStale: the sink has seen a newer epoch than the delivery's; the
// delivering region lost the lease. It wraps fence.ErrFenced.
var ErrStale = fmt.Errorf("the sink has seen a newer epoch: %w", fence.ErrFenced)

// Sink applies events with the user's statements (or HTTP calls: see
// HTTPCall), in a transaction
// that also records the event's id (an id applied before is skipped: a
// duplicate absorbed), the position reached in the delivering region's
// log, and the highest epoch seen, refusing a delivery under a lower one
// (the fencing token kept at the sink). Tables:
//
//	tandem_stream_fence    (stream, epoch, region, applied, duplicates)
//	tandem_stream_applied  (stream, id, epoch, region, position)
//	tandem_stream_position (stream, consumer, position)
//
// Statements get the event as parameters: $1 id, $2 data (text), $3
// epoch, $4 region, $5 position (SQLite too: tandem rewrites $N as ?N).
type Sink struct {
	db     *sql.DB
	driver string
	stream string
	stmts  []stmt
	call   *HTTPCall // instead of stmts: an HTTP sink with its ledger here
	// rewritten holds tandem's statements in SQLite's placeholders (q).
	rewritten sync.Map
	// Grace bounds how long a transaction may stall between statements
	// on PostgreSQL (idle_in_transaction_session_timeout): a paused
	// delivery's transaction is ended by the server.
	Grace time.Duration
}

type stmt struct {
	text  string
	order []int // the parameter (1 to 5) of each placeholder, in order
}

// bind returns the statement's arguments from the event's parameters.
func (st stmt) bind(params []any) []any {
	args := make([]any, len(st.order))
	for i, n := range st.order {
		args[i] = params[n-1]
	}
	return args
}

var paramRe = regexp.MustCompile(`\$([1-5])\b`)

// OpenSQL opens the sink of stream in a database (driver sqlite or
// postgres) and creates tandem's tables when missing.
func OpenSQL(ctx context.Context, driver, dsn, stream string, statements []string) (*Sink, error) {
	if driver == "sqlite" && !strings.Contains(dsn, "busy_timeout") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dsn += sep + "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"
	}
	db, err := catalog.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	if driver == "sqlite" {
		db.SetMaxOpenConns(1)
	}
	s := &Sink{db: db, driver: driver, stream: stream, Grace: time.Second}
	for _, t := range statements {
		st := stmt{text: t}
		if driver == "sqlite" {
			// Plain ? placeholders, bound in order: SQLite looks numbered
			// ones up by name, one by one.
			for _, m := range paramRe.FindAllStringSubmatch(t, -1) {
				n, _ := strconv.Atoi(m[1])
				st.order = append(st.order, n)
			}
			st.text = paramRe.ReplaceAllString(t, "?")
		} else {
			highest := 0
			for _, m := range paramRe.FindAllStringSubmatch(t, -1) {
				n, _ := strconv.Atoi(m[1])
				highest = max(highest, n)
			}
			for n := 1; n <= highest; n++ {
				st.order = append(st.order, n)
			}
		}
		s.stmts = append(s.stmts, st)
	}
	for _, ddl := range []string{
		`CREATE TABLE IF NOT EXISTS tandem_stream_fence (stream TEXT PRIMARY KEY, epoch BIGINT NOT NULL, region TEXT NOT NULL, applied BIGINT NOT NULL DEFAULT 0, duplicates BIGINT NOT NULL DEFAULT 0)`,
		`CREATE TABLE IF NOT EXISTS tandem_stream_applied (stream TEXT NOT NULL, id TEXT NOT NULL, epoch BIGINT NOT NULL, region TEXT NOT NULL, position BIGINT NOT NULL, PRIMARY KEY (stream, id))`,
		`CREATE TABLE IF NOT EXISTS tandem_stream_position (stream TEXT NOT NULL, consumer TEXT NOT NULL, position BIGINT NOT NULL, PRIMARY KEY (stream, consumer))`,
	} {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			db.Close()
			return nil, fmt.Errorf("sink of stream %s: create tandem's tables: %w", stream, err)
		}
	}
	return s, nil
}

// Close closes the database.
func (s *Sink) Close() { s.db.Close() }

// q is one of tandem's own statements in the driver's placeholders,
// rewritten once per statement: they run per batch and per event.
func (s *Sink) q(text string) string {
	if s.driver != "sqlite" {
		return text
	}
	if r, ok := s.rewritten.Load(text); ok {
		return r.(string)
	}
	r := paramRe.ReplaceAllString(text, "?$1")
	s.rewritten.Store(text, r)
	return r
}

// raise records epoch as the sink's fence in tx, adding the counts; it
// fails with ErrStale when the sink has seen a higher epoch.
func (s *Sink) raise(ctx context.Context, tx *sql.Tx, epoch int64, region string, applied, dups int) error {
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO tandem_stream_fence (stream, epoch, region, applied, duplicates) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stream) DO UPDATE SET epoch = excluded.epoch, region = excluded.region,
  applied = tandem_stream_fence.applied + excluded.applied, duplicates = tandem_stream_fence.duplicates + excluded.duplicates
WHERE tandem_stream_fence.epoch <= excluded.epoch`), s.stream, epoch, region, applied, dups)
	if err != nil {
		return fmt.Errorf("sink of stream %s: fence: %w", s.stream, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		var seen int64
		var by string
		_ = tx.QueryRowContext(ctx, s.q(`SELECT epoch, region FROM tandem_stream_fence WHERE stream = $1`), s.stream).Scan(&seen, &by)
		return fmt.Errorf("stream %s: delivery under epoch %d from %s refused: %w (epoch %d, from %s)", s.stream, epoch, region, ErrStale, seen, by)
	}
	return nil
}

func (s *Sink) begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sink of stream %s: begin: %w", s.stream, err)
	}
	if s.driver == "postgres" {
		idle := s.Grace
		if s.call != nil {
			idle += s.call.Timeout // the ledger's transaction waits for each call
		}
		ms := max(idle, 100*time.Millisecond).Milliseconds()
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL idle_in_transaction_session_timeout = %d", ms)); err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("sink of stream %s: %w", s.stream, err)
		}
	}
	return tx, nil
}

// Fence raises the sink's epoch to epoch: from now on a delivery under a
// lower one is refused. It fails with ErrStale if the sink has seen a
// higher one.
func (s *Sink) Fence(ctx context.Context, epoch int64, region string) error {
	tx, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := s.raise(ctx, tx, epoch, region, 0, 0); err != nil {
		return err
	}
	return tx.Commit()
}

// Position is the position a consumer's region reached (0: none yet).
func (s *Sink) Position(ctx context.Context, consumer string) (int64, error) {
	var p int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT position FROM tandem_stream_position WHERE stream = $1 AND consumer = $2`), s.stream, consumer).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sink of stream %s: position of %s: %w", s.stream, consumer, err)
	}
	return p, nil
}

func (s *Sink) setPosition(ctx context.Context, x interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, consumer string, pos int64) error {
	_, err := x.ExecContext(ctx, s.q(`INSERT INTO tandem_stream_position (stream, consumer, position) VALUES ($1, $2, $3)
ON CONFLICT (stream, consumer) DO UPDATE SET position = excluded.position WHERE tandem_stream_position.position < excluded.position`), s.stream, consumer, pos)
	if err != nil {
		return fmt.Errorf("sink of stream %s: position of %s: %w", s.stream, consumer, err)
	}
	return nil
}

// Delivery is who delivers: the region holding the lease, its epoch, and
// the consumer key its position is kept under.
type Delivery struct {
	Epoch    int64
	Region   string
	Consumer string
}

// Result counts one delivery's events.
type Result struct {
	Applied, Duplicates int
}

// Deliver applies evs (in order, all read from d.Region's log) in one
// transaction: each event not applied before runs the statements; the
// position moves to the last event's; the fence is checked last, and
// check (the delivering region's lease guard) just before the commit.
// On any error nothing of it is applied.
func (s *Sink) Deliver(ctx context.Context, d Delivery, evs []Event, check func(context.Context) error) (Result, error) {
	var r Result
	if len(evs) == 0 {
		return r, nil
	}
	tx, err := s.begin(ctx)
	if err != nil {
		return r, err
	}
	defer tx.Rollback()
	if s.call != nil {
		// A call cannot be taken back: the fence is checked (and held,
		// until the commit) before any is made.
		if err := s.raise(ctx, tx, d.Epoch, d.Region, 0, 0); err != nil {
			return Result{}, err
		}
		if check != nil {
			if err := check(ctx); err != nil {
				return Result{}, err
			}
		}
	}
	fresh, err := s.record(ctx, tx, d, evs)
	if err != nil {
		return Result{}, err
	}
	for _, ev := range evs {
		if !fresh[ev.ID] {
			r.Duplicates++
			continue
		}
		delete(fresh, ev.ID) // an id twice in one batch applies once
		if s.call != nil {
			if err := s.call.do(ctx, ev, d); err != nil {
				return Result{}, fmt.Errorf("sink of stream %s: event %s (position %d in %s): %w", s.stream, ev.ID, ev.Pos, d.Region, err)
			}
			r.Applied++
			continue
		}
		params := []any{ev.ID, string(ev.Data), d.Epoch, d.Region, ev.Pos}
		for i, st := range s.stmts {
			if _, err := tx.ExecContext(ctx, st.text, st.bind(params)...); err != nil {
				return Result{}, fmt.Errorf("sink of stream %s: event %s (position %d in %s): statement %d: %w", s.stream, ev.ID, ev.Pos, d.Region, i+1, err)
			}
		}
		r.Applied++
	}
	if err := s.setPosition(ctx, tx, d.Consumer, evs[len(evs)-1].Pos); err != nil {
		return Result{}, err
	}
	if err := s.raise(ctx, tx, d.Epoch, d.Region, r.Applied, r.Duplicates); err != nil {
		return Result{}, err
	}
	if check != nil {
		if err := check(ctx); err != nil {
			return Result{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return Result{}, fmt.Errorf("sink of stream %s: commit: %w", s.stream, err)
	}
	return r, nil
}

// record inserts the ids of evs into tandem_stream_applied in one
// statement and returns those that were not there.
func (s *Sink) record(ctx context.Context, tx *sql.Tx, d Delivery, evs []Event) (map[string]bool, error) {
	var b strings.Builder
	b.WriteString(`INSERT INTO tandem_stream_applied (stream, id, epoch, region, position) VALUES `)
	var args []any
	for i, ev := range evs {
		if i > 0 {
			b.WriteString(", ")
		}
		if s.driver == "sqlite" {
			// Plain ? binds in order; numbered ones cost SQLite a lookup
			// each.
			b.WriteString("(?, ?, ?, ?, ?)")
			args = append(args, s.stream, ev.ID, d.Epoch, d.Region, ev.Pos)
			continue
		}
		if i == 0 {
			args = append(args, s.stream, d.Epoch, d.Region)
		}
		fmt.Fprintf(&b, "($1, $%d, $2, $3, $%d)", 4+2*i, 5+2*i)
		args = append(args, ev.ID, ev.Pos)
	}
	b.WriteString(` ON CONFLICT (stream, id) DO NOTHING RETURNING id`)
	rows, err := tx.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sink of stream %s: record %d events: %w", s.stream, len(evs), err)
	}
	defer rows.Close()
	fresh := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		fresh[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sink of stream %s: record %d events: %w", s.stream, len(evs), err)
	}
	return fresh, nil
}

// Follow moves consumer's position over the events of evs (read in order
// from its position on) that the sink has applied already, stopping at
// the first it has not: the standby keeps the position it would resume
// from close to the primary's progress. It returns the new position.
func (s *Sink) Follow(ctx context.Context, consumer string, from int64, evs []Event) (int64, error) {
	pos := from
	for _, ev := range evs {
		var one int
		err := s.db.QueryRowContext(ctx, s.q(`SELECT 1 FROM tandem_stream_applied WHERE stream = $1 AND id = $2`), s.stream, ev.ID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return pos, fmt.Errorf("sink of stream %s: %w", s.stream, err)
		}
		pos = ev.Pos
	}
	if pos == from {
		return pos, nil
	}
	return pos, s.setPosition(ctx, s.db, consumer, pos)
}

// Stats is what the sink has recorded of a stream.
type Stats struct {
	Epoch      int64            `json:"epoch"`
	Region     string           `json:"region"`
	Applied    int64            `json:"applied"`
	Duplicates int64            `json:"duplicates_absorbed"`
	Positions  map[string]int64 `json:"positions"`
}

// Stats reads the sink's records of the stream.
func (s *Sink) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Positions: map[string]int64{}}
	err := s.db.QueryRowContext(ctx, s.q(`SELECT epoch, region, applied, duplicates FROM tandem_stream_fence WHERE stream = $1`), s.stream).
		Scan(&st.Epoch, &st.Region, &st.Applied, &st.Duplicates)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("sink of stream %s: %w", s.stream, err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT consumer, position FROM tandem_stream_position WHERE stream = $1`), s.stream)
	if err != nil {
		return st, fmt.Errorf("sink of stream %s: %w", s.stream, err)
	}
	defer rows.Close()
	for rows.Next() {
		var c string
		var p int64
		if err := rows.Scan(&c, &p); err != nil {
			return st, err
		}
		st.Positions[c] = p
	}
	return st, rows.Err()
}
