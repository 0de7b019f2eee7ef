package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tandem/internal/fence"
)

// Position is where the target stands in the source's history, kept in the
// target (tandem.cdc_position) in the same transaction as the changes.
type Position struct {
	Pair     string `json:"pair"`
	SystemID string `json:"system_id"`
	Timeline int32  `json:"timeline"`
	// LSN is the end of the last applied transaction, or a later point of
	// the source with nothing replicated in between.
	LSN LSN `json:"lsn"`
	// CommitTime is the source's commit time of the last applied
	// transaction; SourceTime the source's clock when it stood at LSN:
	// the target has everything the source had committed then.
	CommitTime time.Time `json:"commit_time"`
	SourceTime time.Time `json:"source_time"`
	// State: new (nothing copied), streaming (consistent up to LSN).
	State string `json:"state"`
	// Epoch and Region are the fence: the highest lease epoch a writer
	// showed, and its region. A writer under a lower epoch is refused.
	Epoch   int64     `json:"epoch"`
	Region  string    `json:"region"`
	Slot    string    `json:"slot"`
	Rows    int64     `json:"rows"`
	Updated time.Time `json:"updated"`
}

// LSN is a WAL position, printed as PostgreSQL does (16/B374D848).
type LSN = pglogrepl.LSN

// ErrStale: the target has seen a higher epoch than the writer's; nothing
// was written.
var ErrStale = fmt.Errorf("the target has seen a newer lease epoch: %w", fence.ErrFenced)

const ddl = `CREATE SCHEMA IF NOT EXISTS tandem;
CREATE TABLE IF NOT EXISTS tandem.cdc_position (pair text PRIMARY KEY, system_id text NOT NULL DEFAULT '', timeline int NOT NULL DEFAULT 0,
	lsn pg_lsn NOT NULL DEFAULT '0/0', commit_time timestamptz, source_time timestamptz, state text NOT NULL DEFAULT 'new',
	epoch bigint NOT NULL DEFAULT 0, region text NOT NULL DEFAULT '', slot text NOT NULL DEFAULT '', rows bigint NOT NULL DEFAULT 0,
	updated timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS tandem.cdc_journal (pair text NOT NULL, timeline int NOT NULL, end_lsn pg_lsn NOT NULL,
	commit_time timestamptz NOT NULL, xid bigint NOT NULL, changes text[] NOT NULL, more int NOT NULL DEFAULT 0,
	PRIMARY KEY (pair, timeline, end_lsn));
CREATE TABLE IF NOT EXISTS tandem.cdc_events (pair text NOT NULL, at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, detail jsonb NOT NULL)`

// prepare creates tandem's tables in the target (two writers racing on
// the catalog: the loser tries again).
func prepare(ctx context.Context, c *pgx.Conn) error {
	var err error
	for range 3 {
		if _, err = c.Exec(ctx, ddl); err == nil {
			return journalLZ4(ctx, c)
		}
	}
	return fmt.Errorf("create tandem's tables (schema tandem) in the target: %w", err)
}

// journalLZ4 compresses the journal's key lists with lz4: stored
// uncompressed the journal took a tenth of the apply time, with lz4 about
// none (docs/BENCHMARKS.md). A server built without lz4 keeps its default.
func journalLZ4(ctx context.Context, c *pgx.Conn) error {
	_, err := c.Exec(ctx, `ALTER TABLE tandem.cdc_journal ALTER COLUMN changes SET COMPRESSION lz4`)
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "0A000" {
		return nil // feature_not_supported: built without lz4
	}
	if err != nil {
		return fmt.Errorf("compress tandem's journal (tandem.cdc_journal) with lz4: %w", err)
	}
	return nil
}

// ReadPosition reads pair's position from the target (State "new" when
// nothing was ever applied).
func ReadPosition(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, pair string) (Position, error) {
	p := Position{Pair: pair, State: "new"}
	var ct, st *time.Time
	err := q.QueryRow(ctx, `SELECT system_id, timeline, lsn::text, commit_time, source_time, state, epoch, region, slot, rows, updated
		FROM tandem.cdc_position WHERE pair = $1`, pair).
		Scan(&p.SystemID, &p.Timeline, &p.LSN, &ct, &st, &p.State, &p.Epoch, &p.Region, &p.Slot, &p.Rows, &p.Updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, nil
	}
	if ct != nil {
		p.CommitTime = *ct
	}
	if st != nil {
		p.SourceTime = *st
	}
	return p, err
}

// claim raises the target's fence to epoch in tx and holds it (the row
// stays locked until tx ends): a takeover's Fence waits for tx, and tx
// fails with ErrStale when the target has seen a higher epoch.
func claim(ctx context.Context, tx pgx.Tx, pair string, epoch int64, region string) error {
	tag, err := tx.Exec(ctx, `INSERT INTO tandem.cdc_position (pair, epoch, region) VALUES ($1, $2, $3)
		ON CONFLICT (pair) DO UPDATE SET epoch = excluded.epoch, region = excluded.region
		WHERE tandem.cdc_position.epoch <= excluded.epoch`, pair, epoch, region)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		p, _ := ReadPosition(ctx, tx, pair)
		return fmt.Errorf("cdc %s: write under epoch %d from %s refused: %w (epoch %d, from %s)", pair, epoch, region, ErrStale, p.Epoch, p.Region)
	}
	return nil
}

// Fence raises the target's fence of pair to epoch: once it returns, no
// writer under a lower epoch changes the target (one in flight has
// committed or will be refused). A takeover's plan calls it.
func Fence(ctx context.Context, target, pair string, epoch int64, region string) error {
	c, err := connect(ctx, target)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if err := prepare(ctx, c); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return claim(ctx, tx, pair, epoch, region) })
}

// savePosition records p (after claim, in the same transaction).
func savePosition(ctx context.Context, tx pgx.Tx, p Position, rows int64) error {
	_, err := tx.Exec(ctx, `UPDATE tandem.cdc_position SET system_id = $2, timeline = $3, lsn = $4::pg_lsn, commit_time = $5, source_time = $6,
		state = $7, slot = $8, rows = rows + $9, updated = now() WHERE pair = $1`,
		p.Pair, p.SystemID, p.Timeline, p.LSN.String(), nullTime(p.CommitTime), nullTime(p.SourceTime), p.State, p.Slot, rows)
	return err
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Event is something that happened to a pair (a source failover followed,
// a snapshot), kept in the target (tandem.cdc_events).
type Event struct {
	At     time.Time      `json:"at"`
	Kind   string         `json:"kind"`
	Detail map[string]any `json:"detail"`
}

func addEvent(ctx context.Context, tx pgx.Tx, pair, kind string, detail any) error {
	b, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO tandem.cdc_events (pair, kind, detail) VALUES ($1, $2, $3)`, pair, kind, string(b))
	return err
}

// Events reads pair's last n events from the target, newest first.
func Events(ctx context.Context, c *pgx.Conn, pair string, n int) ([]Event, error) {
	rows, err := c.Query(ctx, `SELECT at, kind, detail FROM tandem.cdc_events WHERE pair = $1 ORDER BY at DESC LIMIT $2`, pair, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		var b []byte
		if err := r.Scan(&e.At, &e.Kind, &b); err != nil {
			return e, err
		}
		return e, json.Unmarshal(b, &e.Detail)
	})
}
