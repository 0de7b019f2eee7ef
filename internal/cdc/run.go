// Package cdc replicates PostgreSQL tables by logical decoding (pgoutput,
// through pglogrepl) from a source primary into a target in another
// region, and follows a failover of the source to its standby.
//
// The target keeps, in the same transaction as the changes, the position
// it has reached (source system id, timeline, end LSN of the last applied
// transaction), a journal of the keys each applied transaction changed,
// and the fence (the highest lease epoch a writer showed). Only positions
// durable in the target are acknowledged to the source, so a crash at any
// point resumes where the target stands.
//
// On every connection the replicator finds the source primary among the
// configured servers and compares what IDENTIFY_SYSTEM says with the
// target's position. A new timeline (a promoted standby: PostgreSQL 15's
// logical slots do not survive it) or a missing or invalidated slot means
// the stream cannot continue: the replicator finds where the old timeline
// ended (TIMELINE_HISTORY), reports the applied transactions past that
// point (committed on the old primary, never on the new one: lost at the
// source), creates a new slot, and, in the slot's exported snapshot,
// compares the rows that may have changed in the gap (by audit column, or
// the whole table) and the lost transactions' keys with the target and
// repairs them, before the new stream's first change is applied: stream
// events always win over backfilled rows.
//
// The compare (bisection by checksums over key ranges) is also tandem
// validate, and the repair its --repair.
package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"tandem/internal/fence"
)

// Options configure a Replicator.
type Options struct {
	// Pair names the replication: its position, journal and events in the
	// target are keyed by it.
	Pair string
	// Sources are the source primary and its standbys (any order).
	Sources []string
	Target  string
	// Tables are schema.table names; Audit maps a table to its audit
	// column.
	Tables []string
	Audit  map[string]string
	// Slot and Publication in the source.
	Slot, Publication string
	// Batch is how many row changes one target transaction takes at most
	// (whole source transactions: one larger than Batch goes alone);
	// Flush how long changes wait for more.
	Batch int
	Flush time.Duration
	// Bulk: a backlog of more WAL bytes than this is read through the
	// slot's SQL interface before the stream starts, and a stream whose
	// walsender is more than twice this behind the source stops for one
	// (0: 16 MiB; negative: never). See backlog.
	Bulk int64
	// Margin widens an audit-column backfill before the last applied
	// commit (the clocks of the old and the new primary may differ).
	Margin time.Duration
	// Keep is how long the journal keeps an applied transaction's keys.
	Keep time.Duration
	// Region is who writes (the fence record); Guard fences every target
	// transaction (nil: unfenced, epoch 0).
	Region string
	Guard  *fence.Guard
	Log    *slog.Logger
}

func (o *Options) defaults() {
	if o.Batch <= 0 {
		o.Batch = 10000
	}
	if o.Flush <= 0 {
		o.Flush = 100 * time.Millisecond
	}
	if o.Bulk == 0 {
		o.Bulk = bulkBacklog
	}
	if o.Margin <= 0 {
		o.Margin = time.Minute
	}
	if o.Keep <= 0 {
		o.Keep = 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Replicator runs one pair.
type Replicator struct {
	o Options

	mu        sync.Mutex
	pos       Position
	serverEnd LSN
	rows      int64
}

// New returns a Replicator.
func New(o Options) *Replicator {
	o.defaults()
	return &Replicator{o: o}
}

// Stats is what a running replicator knows.
type Stats struct {
	Position Position
	// ServerEnd is the last WAL position the source reported.
	ServerEnd LSN
	Rows      int64
}

// Stats returns the replicator's position and counters.
func (r *Replicator) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Position: r.pos, ServerEnd: r.serverEnd, Rows: r.rows}
}

// Run replicates until ctx ends, the writer is fenced, or the
// configuration does not fit the source (ErrConfig), reconnecting after
// every other failure (the source failing over, the target refusing a
// transaction, a server restarting, a schema the target lacks).
func (r *Replicator) Run(ctx context.Context) error {
	wait := time.Second
	said := ""
	for {
		err := r.Once(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case fence.Fenced(err):
			r.o.Log.Warn("cdc stops: fenced", "pair", r.o.Pair, "err", err)
			return err
		case errors.Is(err, errRestart), errors.Is(err, errBehind):
			continue
		case errors.Is(err, ErrConfig):
			return err
		case err != nil:
			if err.Error() != said {
				r.o.Log.Warn("cdc interrupted; trying again", "pair", r.o.Pair, "err", err, "retry_in", wait)
				said = err.Error()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// errRestart: a table changed in the source; the catalog is read again.
var errRestart = errors.New("a replicated table changed in the source")

// errBehind: the stream fell behind the source; the next session reads
// what it is behind by in bulk.
var errBehind = errors.New("the stream fell behind the source")

// session is one connection's worth of replication.
type session struct {
	r      *Replicator
	o      *Options
	target *pgx.Conn
	source *pgx.Conn // the primary, for catalog and snapshots
	repl   *pgx.Conn // replication connection to the primary
	id     pglogrepl.IdentifySystemResult
	tables []*Table
	pruned time.Time
}

func (s *session) close(ctx context.Context) {
	ctx = context.WithoutCancel(ctx)
	for _, c := range []*pgx.Conn{s.repl, s.source, s.target} {
		if c != nil {
			c.Close(ctx)
		}
	}
}

// Once connects, brings the target level with the source (a first
// snapshot, or the gap after a source failover) and streams until an
// error. It returns nil only when ctx ends.
func (r *Replicator) Once(ctx context.Context) error {
	s := &session{r: r, o: &r.o}
	defer s.close(ctx)
	if err := s.open(ctx); err != nil {
		return err
	}
	pos, err := ReadPosition(ctx, s.target, r.o.Pair)
	if err != nil {
		return fmt.Errorf("target: read the position: %w", err)
	}
	r.setPos(pos)
	slot, err := readSlot(ctx, s.source, r.o.Slot)
	if err != nil {
		return fmt.Errorf("source: replication slot %s: %w", r.o.Slot, err)
	}
	switch {
	case pos.State != "streaming":
		pos, err = s.level(ctx, pos, slot, "snapshot")
	case pos.SystemID == s.id.SystemID && pos.Timeline == s.id.Timeline && slot.exists && !slot.lost && slot.confirmed <= pos.LSN:
	default:
		pos, err = s.level(ctx, pos, slot, "source-failover")
	}
	if err != nil {
		return err
	}
	return s.stream(ctx, pos)
}

func (s *session) open(ctx context.Context) error {
	var err error
	if s.target, err = connect(ctx, s.o.Target); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := prepare(ctx, s.target); err != nil {
		return err
	}
	primary, err := FindPrimary(ctx, s.o.Sources)
	if err != nil {
		return err
	}
	if s.source, err = connect(ctx, primary); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if s.repl, err = connect(ctx, primary, "replication", "database"); err != nil {
		return fmt.Errorf("source (replication connection): %w", err)
	}
	if s.id, err = pglogrepl.IdentifySystem(ctx, s.repl.PgConn()); err != nil {
		return fmt.Errorf("source: IDENTIFY_SYSTEM: %w (the server needs wal_level = logical and a user with REPLICATION)", err)
	}
	err = pgx.BeginFunc(ctx, s.source, func(tx pgx.Tx) error {
		s.tables, err = sourceTables(ctx, tx, s.o.Tables, s.o.Audit)
		return err
	})
	if err != nil {
		return err
	}
	if err := ensurePublication(ctx, s.source, s.o.Publication, s.tables); err != nil {
		return err
	}
	// Tables the target lacks are created under the fence, like any write.
	epoch, err := s.epoch(ctx)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.target, func(tx pgx.Tx) error {
		if err := claim(ctx, tx, s.o.Pair, epoch, s.o.Region); err != nil {
			return err
		}
		if err := matchTarget(ctx, tx, s.tables); err != nil {
			return err
		}
		return s.check(ctx)
	})
}

func (r *Replicator) setPos(p Position) {
	r.mu.Lock()
	r.pos = p
	r.mu.Unlock()
}

// epoch confirms the writer's right to write now and returns its epoch.
func (s *session) epoch(ctx context.Context) (int64, error) {
	if s.o.Guard == nil {
		return 0, nil
	}
	if err := s.o.Guard.Check(ctx); err != nil {
		return 0, err
	}
	return s.o.Guard.Epoch(), nil
}

func (s *session) check(ctx context.Context) error {
	if s.o.Guard == nil {
		return nil
	}
	return s.o.Guard.Check(ctx)
}

// Lost is an applied transaction the new source primary never had.
type Lost struct {
	Timeline   int32     `json:"timeline"`
	EndLSN     string    `json:"end_lsn"`
	CommitTime time.Time `json:"commit_time"`
	Xid        int64     `json:"xid"`
	// Changes are "table op key" (op insert, update, delete, truncate).
	Changes []string `json:"changes"`
	More    int      `json:"more,omitempty"`
}

// level makes a new slot and brings the target to its consistent point:
// a first copy, or the gap after a source failover (why).
func (s *session) level(ctx context.Context, pos Position, slot slotState, why string) (Position, error) {
	started := time.Now()
	detail := map[string]any{"source": map[string]any{"system_id": s.id.SystemID, "timeline": s.id.Timeline}}
	var lost []Lost
	scope := Scope{}
	scoped := false // by audit column and lost keys
	if why == "source-failover" {
		detail["from"] = map[string]any{"system_id": pos.SystemID, "timeline": pos.Timeline, "lsn": pos.LSN.String(), "commit_time": pos.CommitTime}
		switch {
		case pos.SystemID != s.id.SystemID:
			detail["cause"] = "the source is another database cluster (system id changed): every table compared in full"
		case pos.Timeline != s.id.Timeline:
			sp, ok, err := switchPoint(ctx, s.repl, s.id.Timeline, pos.Timeline)
			if err != nil {
				return pos, err
			}
			if !ok {
				detail["cause"] = fmt.Sprintf("timeline %d is not in the history of timeline %d: every table compared in full", pos.Timeline, s.id.Timeline)
				break
			}
			detail["cause"] = fmt.Sprintf("the source was promoted: timeline %d ended at %s, now timeline %d", pos.Timeline, sp, s.id.Timeline)
			detail["switch_point"] = sp.String()
			if lost, err = lostAfter(ctx, s.target, s.o.Pair, pos.Timeline, sp); err != nil {
				return pos, fmt.Errorf("target: read the journal: %w", err)
			}
			scoped = true
		case slot.exists && !slot.lost && slot.confirmed > pos.LSN:
			detail["cause"] = fmt.Sprintf("the replication slot %s is at %s, past the target's position %s: the target lost applied transactions (restored from a backup?)", s.o.Slot, slot.confirmed, pos.LSN)
			scoped = true
		case slot.lost:
			detail["cause"] = "the replication slot " + s.o.Slot + " was invalidated (max_slot_wal_keep_size): the WAL it kept is gone"
			scoped = true
		default:
			detail["cause"] = "the replication slot " + s.o.Slot + " is missing in the source"
			scoped = true
		}
		if scoped && !pos.CommitTime.IsZero() {
			scope.Since = pos.CommitTime.Add(-s.o.Margin)
		}
		detail["lost"] = lost
		s.o.Log.Warn("cdc follows the source: "+detail["cause"].(string), "pair", s.o.Pair, "lost_transactions", len(lost))
		for _, l := range lost {
			s.o.Log.Warn("transaction lost at the source: applied to the target, committed on the old primary after the switch point, never on the new one",
				"pair", s.o.Pair, "end_lsn", l.EndLSN, "commit_time", l.CommitTime, "xid", l.Xid, "changes", strings.Join(l.Changes, "; "))
		}
	}
	if slot.exists {
		if _, err := s.source.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.o.Slot); err != nil {
			return pos, fmt.Errorf("source: drop the old replication slot %s: %w (another tandem may be streaming from it)", s.o.Slot, err)
		}
	}
	cs, err := pglogrepl.CreateReplicationSlot(ctx, s.repl.PgConn(), s.o.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return pos, fmt.Errorf("source: create the replication slot %s: %w", s.o.Slot, err)
	}
	cp, err := pglogrepl.ParseLSN(cs.ConsistentPoint)
	if err != nil {
		return pos, err
	}
	// The exported snapshot holds while the replication connection is
	// idle: read the source in it, write the target in one transaction.
	if _, err := s.source.Exec(ctx, Pinned); err != nil {
		return pos, err
	}
	if _, err := s.target.Exec(ctx, Pinned); err != nil {
		return pos, err
	}
	src, err := s.source.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return pos, err
	}
	defer src.Rollback(context.WithoutCancel(ctx))
	if _, err := src.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", cs.SnapshotName)); err != nil {
		return pos, fmt.Errorf("source: import the slot's snapshot: %w", err)
	}
	epoch, err := s.epoch(ctx)
	if err != nil {
		return pos, err
	}
	dst, err := s.target.Begin(ctx)
	if err != nil {
		return pos, err
	}
	defer dst.Rollback(context.WithoutCancel(ctx))
	if err := claim(ctx, dst, s.o.Pair, epoch, s.o.Region); err != nil {
		return pos, err
	}
	tables := map[string]any{}
	var total int64
	for _, t := range s.tables {
		sc := scope
		if scoped {
			sc.Keys = lostKeys(lost, t.Name)
			if t.Audit < 0 || sc.Since.IsZero() || lostTruncate(lost, t.Name) {
				sc = Scope{} // nothing scopes it: the whole table
			}
		}
		if !sc.windowed() && len(sc.Keys) == 0 {
			if empty, err := isEmpty(ctx, dst, t); err != nil {
				return pos, err
			} else if empty {
				n, err := copyTable(ctx, src, dst, t)
				if err != nil {
					return pos, err
				}
				total += n
				tables[t.Name] = map[string]any{"copied": n, "scope": "whole table (the target's was empty)"}
				continue
			}
		}
		cmp := &comparer{src: src, dst: dst, t: t, scope: sc}
		res, err := cmp.run(ctx)
		if err != nil {
			return pos, err
		}
		f, err := fix(ctx, src, dst, t, diffKeys(res.Diffs))
		if err != nil {
			return pos, err
		}
		total += int64(f.Upserted + f.Deleted)
		m, x, d := res.Counts()
		tables[t.Name] = map[string]any{"scope": res.Scope, "rows": res.Rows, "missing": m, "extra": x, "differs": d, "upserted": f.Upserted, "deleted": f.Deleted}
	}
	detail["tables"] = tables
	detail["consistent_point"] = cp.String()
	detail["seconds"] = time.Since(started).Seconds()
	npos := Position{Pair: s.o.Pair, SystemID: s.id.SystemID, Timeline: s.id.Timeline, LSN: cp, CommitTime: pos.CommitTime,
		SourceTime: time.Now(), State: "streaming", Slot: s.o.Slot, Epoch: epoch, Region: s.o.Region}
	if err := savePosition(ctx, dst, npos, total); err != nil {
		return pos, err
	}
	if err := addEvent(ctx, dst, s.o.Pair, why, detail); err != nil {
		return pos, err
	}
	if err := s.check(ctx); err != nil {
		return pos, err
	}
	if err := dst.Commit(ctx); err != nil {
		return pos, fmt.Errorf("target: commit the %s: %w", why, err)
	}
	s.o.Log.Info("cdc level with the source", "pair", s.o.Pair, "why", why, "consistent_point", cp, "rows_written", total, "seconds", time.Since(started).Seconds())
	s.r.setPos(npos)
	return npos, nil
}

// lostAfter reads the journal's transactions on timeline that ended after
// the switch point.
func lostAfter(ctx context.Context, c *pgx.Conn, pair string, timeline int32, sp LSN) ([]Lost, error) {
	rows, err := c.Query(ctx, `SELECT timeline, end_lsn::text, commit_time, xid, changes, more FROM tandem.cdc_journal
		WHERE pair = $1 AND timeline = $2 AND end_lsn > $3::pg_lsn ORDER BY end_lsn`, pair, timeline, sp.String())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lost, error) {
		var l Lost
		return l, r.Scan(&l.Timeline, &l.EndLSN, &l.CommitTime, &l.Xid, &l.Changes, &l.More)
	})
}

// lostKeys are the keys of table the lost transactions changed.
func lostKeys(lost []Lost, table string) [][]string {
	var out [][]string
	for _, l := range lost {
		for _, c := range l.Changes {
			f := strings.SplitN(c, "\t", 3)
			if len(f) == 3 && f[0] == table && f[1] != "truncate" {
				out = append(out, strings.Split(f[2], "\t"))
			}
		}
	}
	return out
}

// lostTruncate reports whether a lost transaction truncated table: the
// rows it took from the target have no audit trace.
func lostTruncate(lost []Lost, table string) bool {
	for _, l := range lost {
		for _, c := range l.Changes {
			if strings.HasPrefix(c, table+"\ttruncate\t") {
				return true
			}
		}
	}
	return false
}

// rel is a relation of the stream mapped onto a table.
type rel struct {
	t   *Table
	idx []int // stream column -> table column
}

// stream applies the slot's changes from pos until an error.
func (s *session) stream(ctx context.Context, pos Position) error {
	byName := map[string]*Table{}
	for _, t := range s.tables {
		byName[t.Name] = t
	}
	rels := map[uint32]*rel{}
	b := &batch{}
	var (
		inTxn, skip bool
		end         LSN // of the last transaction the batch took
		commit      time.Time
		lastStatus  time.Time
		idleSaved   time.Time
		asked       time.Time // when the source's WAL end was last asked
		late        bool      // the walsender was behind the source then
		start       = pos.LSN
		queued      = pos     // the position of the last batch handed to the committer
		acked       = pos.LSN // durable in the target: what the source may forget
		told        = pos.LSN // the last acked sent to the source
	)
	// One batch commits in the target while the next one fills.
	type job struct {
		b   *batch
		pos Position
	}
	jobs, acks, errc := make(chan job), make(chan LSN, 64), make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := range jobs {
			if err := s.commit(cctx, j.b, j.pos); err != nil {
				errc <- err
				return
			}
			s.r.setPos(j.pos)
			acks <- j.pos.LSN
		}
	}()
	defer func() { cancel(); close(jobs); wg.Wait() }()
	var recv deadlineCtx
	defer recv.stop()
	status := func(reply bool) error {
		lastStatus, told = time.Now(), acked
		return pglogrepl.SendStandbyStatusUpdate(ctx, s.repl.PgConn(), pglogrepl.StandbyStatusUpdate{WALWritePosition: acked, ReplyRequested: reply})
	}
	submit := func(npos Position) error {
		b.prepare()
		for {
			select {
			case jobs <- job{b, npos}:
				queued, b = npos, &batch{}
				return nil
			case acked = <-acks: // else the committer could wait on its acknowledgements
			case err := <-errc:
				return err
			case <-ctx.Done():
				return nil
			}
		}
	}
	flush := func() error {
		if b.empty() && end <= queued.LSN {
			return nil
		}
		npos := queued
		npos.LSN, npos.SourceTime = end, commit
		if !commit.IsZero() {
			npos.CommitTime = commit
		}
		return submit(npos)
	}
	// drain waits until the target has everything queued.
	drain := func() error {
		for acked < queued.LSN {
			select {
			case acked = <-acks:
			case err := <-errc:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	// handle folds one pgoutput message into the batch.
	handle := func(m pglogrepl.Message) error {
		switch m := m.(type) {
		case *pglogrepl.RelationMessage:
			name := m.Namespace + "." + m.RelationName
			t := byName[name]
			if t == nil && m.Namespace == "public" {
				t = byName[m.RelationName]
			}
			if t == nil {
				return nil // not ours (the publication has more)
			}
			rl := &rel{t: t}
			for _, c := range m.Columns {
				i := t.col(c.Name)
				if i < 0 {
					return fmt.Errorf("%w: table %s has a new column %s: reading it again", errRestart, t.Name, c.Name)
				}
				rl.idx = append(rl.idx, i)
			}
			if len(rl.idx) != len(t.Cols) {
				return fmt.Errorf("%w: table %s lost a column: reading it again", errRestart, t.Name)
			}
			rels[m.RelationID] = rl
		case *pglogrepl.BeginMessage:
			inTxn = true
			// A transaction that ended at or before the position was
			// applied before a restart.
			skip = m.FinalLSN < start
			if !skip {
				b.begin(m.Xid)
			}
		case *pglogrepl.CommitMessage:
			inTxn = false
			if skip {
				return nil
			}
			end, commit = m.TransactionEndLSN, m.CommitTime
			x := &b.txns[len(b.txns)-1]
			x.end, x.commit = m.TransactionEndLSN, m.CommitTime
			if len(x.changes) == 0 && x.more == 0 {
				b.txns = b.txns[:len(b.txns)-1]
				if b.empty() {
					b.first = time.Time{}
				}
			}
		case *pglogrepl.InsertMessage:
			if !skip {
				if err := s.row(b, rels, m.RelationID, "insert", nil, m.Tuple); err != nil {
					return err
				}
			}
		case *pglogrepl.UpdateMessage:
			if !skip {
				if err := s.row(b, rels, m.RelationID, "update", m.OldTuple, m.NewTuple); err != nil {
					return err
				}
			}
		case *pglogrepl.DeleteMessage:
			if !skip {
				if err := s.row(b, rels, m.RelationID, "delete", m.OldTuple, nil); err != nil {
					return err
				}
			}
		case *pglogrepl.TruncateMessage:
			if skip {
				return nil
			}
			var ts []*Table
			for _, id := range m.RelationIDs {
				if rl := rels[id]; rl != nil {
					ts = append(ts, rl.t)
					b.note(rl.t, "truncate", "")
				}
			}
			if len(ts) > 0 {
				b.truncate(ts)
			}
		}
		return nil
	}
	// A backlog is read in bulk first (see backlog), then the stream
	// follows.
	for {
		upto, err := s.backlog(ctx, queued.LSN)
		if err != nil {
			return err
		}
		if upto == 0 {
			break
		}
		s.o.Log.Info("cdc reads a backlog in bulk", "pair", s.o.Pair, "from", queued.LSN, "to", upto)
		err = s.peek(ctx, upto, func(m pglogrepl.Message) error {
			if err := handle(m); err != nil {
				return err
			}
			if !inTxn && b.rows >= s.o.Batch {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Every transaction that committed before upto was in the round.
		end = max(end, upto)
		if err := flush(); err != nil {
			return err
		}
		if err := drain(); err != nil {
			return ctxNil(ctx, err)
		}
		// The target has the round: the slot may forget it.
		if _, err := s.source.Exec(ctx, `SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, s.o.Slot, acked.String()); err != nil {
			return fmt.Errorf("source: advance slot %s to %s: %w", s.o.Slot, acked, err)
		}
		start = queued.LSN
	}
	err := pglogrepl.StartReplication(ctx, s.repl.PgConn(), s.o.Slot, acked, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", s.o.Publication)}})
	if err != nil {
		return fmt.Errorf("source: START_REPLICATION of slot %s: %w", s.o.Slot, err)
	}
	s.o.Log.Info("cdc streaming", "pair", s.o.Pair, "from", acked, "timeline", s.id.Timeline)
	// A stream that falls behind the source by more than behindBulk times
	// Options.Bulk stops, and the next session reads the rest in bulk.
	behind, from := LSN(max(s.o.Bulk, 0))*behindBulk, acked
	for {
		select {
		case err := <-errc:
			return err
		default:
		}
		for len(acks) > 0 {
			acked = <-acks
		}
		if acked != told {
			if err := status(false); err != nil {
				return err
			}
		}
		// The stream's messages do not say where the source's WAL ends
		// (lag is measured to it) or how far the walsender has read: ask,
		// once a second.
		if time.Since(asked) >= time.Second {
			asked = time.Now()
			at, sent, err := s.walEnd(ctx)
			if err != nil {
				return ctxNil(ctx, err)
			}
			// Before it reaches where the stream began, the walsender
			// decodes what the slot kept from earlier (as a bulk read
			// would): that is not falling behind.
			if late = behind > 0 && sent > from && at > sent+behind; late {
				s.o.Log.Info("cdc fell behind the source: reading the rest in bulk", "pair", s.o.Pair, "stream_at", sent, "source_at", at)
			}
		}
		if late && !inTxn { // between transactions
			if err := flush(); err != nil {
				return err
			}
			if err := drain(); err != nil {
				return ctxNil(ctx, err)
			}
			return s.handBack(ctx, acked)
		}
		if !inTxn && (b.rows >= s.o.Batch || !b.first.IsZero() && time.Since(b.first) >= s.o.Flush) {
			if err := flush(); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(time.Second)
		if !b.first.IsZero() && !inTxn {
			deadline = b.first.Add(s.o.Flush)
		}
		msg, err := s.repl.PgConn().ReceiveMessage(recv.until(ctx, deadline))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				if time.Since(lastStatus) >= time.Second && b.empty() {
					if err := status(true); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("source: replication stream: %w", err)
		}
		var data []byte
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			data = m.Data
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("source: replication stream: %w", pgconn.ErrorResponseToPgError(m))
		default:
			continue
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
			if err != nil {
				return err
			}
			// Nothing of ours up to the server's end: the position moves
			// there (durably, now and then), so lag reads zero when idle.
			if !inTxn && b.empty() && k.ServerWALEnd > queued.LSN && time.Since(idleSaved) >= time.Second {
				idleSaved = time.Now()
				end, commit = k.ServerWALEnd, time.Time{}
				npos := queued
				npos.LSN, npos.SourceTime = k.ServerWALEnd, k.ServerTime
				if err := submit(npos); err != nil {
					return err
				}
			} else if k.ReplyRequested {
				if err := status(false); err != nil {
					return err
				}
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return err
			}
			m, err := pglogrepl.Parse(x.WALData)
			if err != nil {
				return fmt.Errorf("source: decode pgoutput at %s: %w", x.WALStart, err)
			}
			if err := handle(m); err != nil {
				return err
			}
		}
	}
}

// handBack ends the stream, having told the slot the target holds acked,
// and waits until the walsender lets go of the slot, so the next session
// can read it in bulk.
func (s *session) handBack(ctx context.Context, acked LSN) error {
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl.PgConn(), pglogrepl.StandbyStatusUpdate{WALWritePosition: acked})
	s.repl.Close(ctx)
	s.repl = nil
	if err != nil {
		return fmt.Errorf("source: replication stream: %w", err)
	}
	for i := 0; ; i++ {
		var active bool
		if err := s.source.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, s.o.Slot).Scan(&active); err != nil {
			return fmt.Errorf("source: replication slot %s: %w", s.o.Slot, err)
		}
		if !active {
			return errBehind
		}
		if i == 500 {
			return fmt.Errorf("source: replication slot %s is still in use 10 s after tandem closed its stream", s.o.Slot)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ctxNil is nil once ctx has ended (the replicator was stopped), else err.
func ctxNil(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// tuple turns a stream tuple into table values.
func (rl *rel) tuple(td *pglogrepl.TupleData) *change {
	c := &change{vals: make([]*string, len(rl.t.Cols)), have: make([]bool, len(rl.t.Cols))}
	for i, col := range td.Columns {
		if i >= len(rl.idx) {
			break
		}
		j := rl.idx[i]
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			c.have[j] = true
		case pglogrepl.TupleDataTypeText, pglogrepl.TupleDataTypeBinary:
			v := string(col.Data)
			c.vals[j], c.have[j] = &v, true
		}
	}
	return c
}

// row folds one row change into the batch.
func (s *session) row(b *batch, rels map[uint32]*rel, id uint32, op string, old, nu *pglogrepl.TupleData) error {
	rl := rels[id]
	if rl == nil {
		return nil
	}
	t := rl.t
	if old != nil {
		oc := rl.tuple(old)
		ok := keyString(oc.key(t))
		if nu == nil || ok != keyString(rl.tuple(nu).key(t)) {
			b.put(t, ok, keyChange(t, oc.key(t)))
			b.note(t, "delete", ok)
		}
	}
	if nu != nil {
		c := rl.tuple(nu)
		c.born = op == "insert"
		k := keyString(c.key(t))
		b.put(t, k, c)
		b.note(t, op, k)
	}
	return nil
}

// commit applies the batch and moves the position to npos in one target
// transaction, under the fence. A batch whose inserted rows the target
// holds already (someone else wrote them) is applied again with upserts.
func (s *session) commit(ctx context.Context, b *batch, npos Position) error {
	err := s.commitOnce(ctx, b, npos, true)
	if errors.Is(err, errBornExists) {
		s.o.Log.Warn("cdc: the target holds rows the source inserted (written by something other than tandem?): the batch is applied again with upserts", "pair", s.o.Pair, "err", err)
		err = s.commitOnce(ctx, b, npos, false)
	}
	return err
}

func (s *session) commitOnce(ctx context.Context, b *batch, npos Position, fast bool) error {
	epoch, err := s.epoch(ctx)
	if err != nil {
		return err
	}
	tx, err := s.target.Begin(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := claim(ctx, tx, s.o.Pair, epoch, s.o.Region); err != nil {
		return err
	}
	if err := b.apply(ctx, tx, fast); err != nil {
		return err
	}
	if len(b.txns) > 0 {
		if err := b.journal(ctx, tx, s.o.Pair, npos.Timeline); err != nil {
			return fmt.Errorf("target: journal: %w", err)
		}
	}
	if time.Since(s.pruned) > time.Minute {
		s.pruned = time.Now()
		if _, err := tx.Exec(ctx, `DELETE FROM tandem.cdc_journal WHERE pair = $1 AND commit_time < now() - $2 * interval '1 second'`, s.o.Pair, s.o.Keep.Seconds()); err != nil {
			return fmt.Errorf("target: prune the journal: %w", err)
		}
	}
	rows := int64(b.rows)
	if err := savePosition(ctx, tx, npos, rows); err != nil {
		return fmt.Errorf("target: position: %w", err)
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("target: commit: %w", err)
	}
	s.r.mu.Lock()
	s.r.rows += rows
	s.r.mu.Unlock()
	return nil
}

// deadlineCtx is one context with a deadline, kept while it still holds:
// a new one per replication message cost a tenth of the replicator's CPU.
type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

// until is a context that ends at deadline or earlier (a read that ends
// early is read again).
func (d *deadlineCtx) until(parent context.Context, deadline time.Time) context.Context {
	if d.ctx == nil || d.at.After(deadline) || time.Until(d.at) <= 0 {
		d.stop()
		d.ctx, d.cancel = context.WithDeadline(parent, deadline)
		d.at = deadline
	}
	return d.ctx
}

func (d *deadlineCtx) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}
