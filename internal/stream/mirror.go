package stream

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Mirror catches each of two regions' logs up with the events the other
// holds and it lacks (an event whose dual produce reached one region
// only, a region that was down), matching events by id. Its record
// (MirrorState) is all it keeps between rounds: the position it read up
// to in each log and the events seen in one log and not yet in the other.
type Mirror struct {
	Regions [2]string
	Logs    [2]Log
	// After is how long an event may be missing from the other region
	// before it is copied there: a dual produce in flight reaches both.
	After time.Duration
	// Batch bounds the events read from a log per round (default 1000).
	Batch int
	State *MirrorState
	Now   func() time.Time
}

// MirrorState is the mirror's record.
type MirrorState struct {
	// Cursor is the position read up to, per region.
	Cursor map[string]int64 `json:"cursor"`
	// Pending holds, per region, the events it has that the other region
	// has not shown yet, by id.
	Pending map[string]map[string]*Pending `json:"pending"`
	// Copied counts the events copied into each region.
	Copied map[string]int64 `json:"copied"`
}

// Pending is an event seen in one region only.
type Pending struct {
	Pos    int64     `json:"pos"`
	Seen   time.Time `json:"seen"`
	Copied time.Time `json:"copied,omitzero"`
	data   []byte
}

func (m *Mirror) init() {
	if m.State == nil {
		m.State = &MirrorState{}
	}
	s := m.State
	if s.Cursor == nil {
		s.Cursor = map[string]int64{}
	}
	if s.Pending == nil {
		s.Pending = map[string]map[string]*Pending{}
	}
	if s.Copied == nil {
		s.Copied = map[string]int64{}
	}
	for _, r := range m.Regions {
		if s.Pending[r] == nil {
			s.Pending[r] = map[string]*Pending{}
		}
	}
	if m.Batch <= 0 {
		m.Batch = 1000
	}
	if m.Now == nil {
		m.Now = time.Now
	}
}

// Missing is how many events region has that the other region lacks.
func (s *MirrorState) Missing(region string) int {
	if s == nil {
		return 0
	}
	return len(s.Pending[region])
}

// Round reads what is new in both logs, then copies every event missing
// from one region for longer than After into it. It reports how many it
// copied; a log that fails ends the round with its error (the other
// region's events stay pending: nothing is lost).
func (m *Mirror) Round(ctx context.Context) (int, error) {
	m.init()
	for i := range 2 {
		if err := m.read(ctx, i); err != nil {
			return 0, err
		}
	}
	copied := 0
	for i := range 2 {
		n, err := m.copy(ctx, i)
		copied += n
		if err != nil {
			return copied, err
		}
	}
	return copied, nil
}

// read takes in the new events of log i, matching them against the
// other region's pending ones.
func (m *Mirror) read(ctx context.Context, i int) error {
	s, me, other := m.State, m.Regions[i], m.Regions[1-i]
	for {
		evs, err := next(ctx, m.Logs[i], s.Cursor[me], m.Batch)
		if err != nil {
			return fmt.Errorf("catch-up of %s: %w", me, err)
		}
		if len(evs) == 0 {
			return nil
		}
		now := m.Now()
		for _, ev := range Named(me, evs) {
			s.Cursor[me] = ev.Pos
			if _, ok := s.Pending[other][ev.ID]; ok {
				delete(s.Pending[other], ev.ID)
				continue
			}
			if _, ok := s.Pending[me][ev.ID]; !ok {
				s.Pending[me][ev.ID] = &Pending{Pos: ev.Pos, Seen: now, data: ev.Data}
			}
		}
		if len(evs) < m.Batch {
			return nil
		}
	}
}

// next reads up to n events of l after position after. An empty read is
// taken for the log's end only when the log's end (Head) says so, or when
// nothing came in slowRead: a broker slow to send events it holds (a new
// consumer's start-up, a server restarting, a loaded machine) must not make
// the mirror copy into a region events it holds, or drop an event as gone
// from the log. (What would end the wait with nothing: a Kafka topic whose
// last offset is a transaction's marker, or a broker failing.)
func next(ctx context.Context, l Log, after int64, n int) ([]Event, error) {
	evs, err := l.Read(ctx, after, n, 0)
	if len(evs) > 0 || err != nil {
		return evs, err
	}
	head, err := l.Head(ctx)
	if err != nil || head <= after {
		return nil, err
	}
	for deadline := time.Now().Add(slowRead); time.Now().Before(deadline); {
		if evs, err = l.Read(ctx, after, n, time.Second); len(evs) > 0 || err != nil {
			return evs, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// slowRead is how long the mirror waits for events a log is known to hold.
const slowRead = 30 * time.Second

// recopy is how long a copy may take to show in the other log before it is
// made again.
const recopy = time.Minute

// copy appends to the other region the events of region i it has been
// missing for longer than After, in their order in region i.
func (m *Mirror) copy(ctx context.Context, i int) (int, error) {
	s, me, other := m.State, m.Regions[i], m.Regions[1-i]
	now := m.Now()
	var due []string
	for id, p := range s.Pending[me] {
		if now.Sub(p.Seen) >= m.After && (p.Copied.IsZero() || now.Sub(p.Copied) >= recopy) {
			due = append(due, id)
		}
	}
	slices.SortFunc(due, func(a, b string) int { return int(s.Pending[me][a].Pos - s.Pending[me][b].Pos) })
	n := 0
	for _, id := range due {
		p := s.Pending[me][id]
		if p.data == nil {
			evs, err := next(ctx, m.Logs[i], p.Pos-1, 1)
			if err != nil {
				return n, fmt.Errorf("catch-up of %s: read %s again: %w", other, id, err)
			}
			if len(evs) == 0 || evs[0].Pos != p.Pos {
				// Gone from the log (its retention): nothing to copy.
				delete(s.Pending[me], id)
				continue
			}
			p.data = evs[0].Data
		}
		if _, err := m.Logs[1-i].Append(ctx, id, p.data); err != nil {
			return n, fmt.Errorf("catch-up of %s: %w", other, err)
		}
		p.Copied = now
		s.Copied[other]++
		n++
	}
	return n, nil
}
