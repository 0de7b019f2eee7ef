package cdc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"tandem/internal/postgres"
)

func connect(ctx context.Context, dsn string, params ...string) (*pgx.Conn, error) {
	return postgres.Connect(ctx, dsn, params...)
}

// ErrNoPrimary: no source server accepts writes (all in recovery, or none
// answers): a promotion is under way, or the source is down.
var ErrNoPrimary = errors.New("no source server is a primary")

// FindPrimary returns the source server that is not in recovery. Two
// primaries (a split brain) are an error that names both.
func FindPrimary(ctx context.Context, sources []string) (string, error) {
	dsn, _, err := PrimaryStatus(ctx, sources)
	return dsn, err
}

// PrimaryStatus is FindPrimary with what the primary said of itself (its
// WAL position) in the same read.
func PrimaryStatus(ctx context.Context, sources []string) (string, postgres.Status, error) {
	var primaries, notes []string
	var status postgres.Status
	for _, dsn := range sources {
		s, err := postgres.Check(ctx, dsn)
		switch {
		case err != nil:
			notes = append(notes, err.Error())
		case s.InRecovery:
			notes = append(notes, postgres.Redact(dsn)+" is a standby")
		default:
			primaries, status = append(primaries, dsn), s
		}
	}
	switch len(primaries) {
	case 1:
		return primaries[0], status, nil
	case 0:
		return "", status, fmt.Errorf("%w (%s): waiting for a promotion", ErrNoPrimary, strings.Join(notes, "; "))
	}
	var names []string
	for _, p := range primaries {
		names = append(names, postgres.Redact(p))
	}
	return "", status, fmt.Errorf("more than one source server accepts writes (%s): a split brain; fence the one that is not the primary (tandem plan run failover fences the old one)", strings.Join(names, ", "))
}

// slotState is what the source says of a replication slot.
type slotState struct {
	exists, lost bool
	confirmed    LSN
}

func readSlot(ctx context.Context, c *pgx.Conn, slot string) (slotState, error) {
	var s slotState
	var conf *string
	var status *string
	err := c.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&conf, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	s.exists = true
	s.lost = status != nil && *status == "lost"
	if conf != nil {
		s.confirmed, _ = pglogrepl.ParseLSN(*conf)
	}
	return s, nil
}

// ensurePublication makes the publication publish exactly the tables.
func ensurePublication(ctx context.Context, c *pgx.Conn, name string, tables []*Table) error {
	var qs []string
	for _, t := range tables {
		qs = append(qs, t.Q())
	}
	var exists bool
	if err := c.QueryRow(ctx, `SELECT exists (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	q := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", ident(name), strings.Join(qs, ", "))
	if exists {
		q = fmt.Sprintf("ALTER PUBLICATION %s SET TABLE %s", ident(name), strings.Join(qs, ", "))
	}
	if _, err := c.Exec(ctx, q); err != nil {
		return fmt.Errorf("publication %s in the source: %w", name, err)
	}
	return nil
}

// switchPoint reads from the history of timeline where the server left
// timeline from (ok false: from is not in the history: the position is on
// a timeline this server never had).
func switchPoint(ctx context.Context, rc *pgx.Conn, timeline, from int32) (LSN, bool, error) {
	if timeline <= 1 || from >= timeline {
		return 0, false, nil
	}
	h, err := pglogrepl.TimelineHistory(ctx, rc.PgConn(), timeline)
	if err != nil {
		return 0, false, fmt.Errorf("TIMELINE_HISTORY %d: %w", timeline, err)
	}
	return parseHistory(h.Content, from)
}

// parseHistory finds in a timeline history file the LSN where timeline
// from ended: lines "tli<TAB>switchpoint<TAB>reason".
func parseHistory(content []byte, from int32) (LSN, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(content))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil {
			continue
		}
		if int32(tli) == from {
			lsn, err := pglogrepl.ParseLSN(f[1])
			return lsn, err == nil, err
		}
	}
	return 0, false, nil
}

// A backlog of more than Options.Bulk bytes of WAL (bulkBacklog unless
// set) is read through the SQL interface of the slot, in rounds of at most
// bulkRound bytes, before the stream starts. The walsender sends every
// change as its own message with its own system call, which bounds a
// stream (about 100,000 rows/s on the machine of docs/BENCHMARKS.md); a
// query hands the same messages out as the rows of one result, many to a
// packet, at about four times that. A round's changes are decoded whole
// before the first is handed out, and spill to the source's temporary
// files beyond work_mem: bulkRound bounds both. A stream whose walsender
// has read more than behindBulk times the threshold less than the source
// wrote (a source writing faster than a stream carries) stops, and
// reading goes on in bulk.
const (
	bulkBacklog = 16 << 20
	bulkRound   = 256 << 20
	behindBulk  = 2
)

// backlog returns where a bulk read of the slot from from should end, or
// 0 when what is left is small enough to stream.
func (s *session) backlog(ctx context.Context, from LSN) (LSN, error) {
	if s.o.Bulk < 0 {
		return 0, nil
	}
	end, _, err := s.walEnd(ctx)
	if err != nil {
		return 0, err
	}
	if end < from+LSN(s.o.Bulk) {
		return 0, nil
	}
	return min(end, from+bulkRound), nil
}

// peek hands fn, in order, the slot's messages of every transaction that
// committed before upto (pg_logical_slot_peek_binary_changes: the slot
// stays where it is until the target has them).
func (s *session) peek(ctx context.Context, upto LSN, fn func(pglogrepl.Message) error) error {
	rows, err := s.source.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL, 'proto_version', '1', 'publication_names', $3)`,
		s.o.Slot, upto.String(), s.o.Publication)
	if err != nil {
		return fmt.Errorf("source: read slot %s up to %s: %w", s.o.Slot, upto, err)
	}
	defer rows.Close()
	for rows.Next() {
		m, err := pglogrepl.Parse(rows.RawValues()[0])
		if err != nil {
			return fmt.Errorf("source: decode pgoutput of slot %s before %s: %w", s.o.Slot, upto, err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("source: read slot %s up to %s: %w", s.o.Slot, upto, err)
	}
	return nil
}

// walEnd asks the source where its durable WAL ends (what lag is measured
// to, and all a slot can read) and where the walsender streaming the slot
// has read to (0 when none does).
func (s *session) walEnd(ctx context.Context) (end, sent LSN, err error) {
	var at, rd string
	err = s.source.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text, coalesce((SELECT r.sent_lsn::text FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1), '0/0')`, s.o.Slot).Scan(&at, &rd)
	if err != nil {
		return 0, 0, fmt.Errorf("source: current WAL position: %w", err)
	}
	if end, err = pglogrepl.ParseLSN(at); err == nil {
		sent, err = pglogrepl.ParseLSN(rd)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("source: WAL positions %q, %q: %w", at, rd, err)
	}
	s.r.mu.Lock()
	s.r.serverEnd = max(s.r.serverEnd, end)
	s.r.mu.Unlock()
	return end, sent, nil
}
