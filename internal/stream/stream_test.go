package stream_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"tandem/internal/fence"
	"tandem/internal/stream"
	"tandem/internal/stream/embed"
	"tandem/internal/stream/streamtest"
	"tandem/produce"

	_ "modernc.org/sqlite"
)

var kinds = []string{"nats", "kafka"}

func open(t *testing.T, kind, name string) stream.Log {
	t.Helper()
	l, err := stream.Open(context.Background(), stream.Spec{Broker: streamtest.Broker(t, kind, name), Stream: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func readAll(t *testing.T, l stream.Log) []stream.Event {
	t.Helper()
	var out []stream.Event
	for {
		evs, err := l.Read(context.Background(), int64(len(out)), 100, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			if h, _ := l.Head(context.Background()); int64(len(out)) >= h {
				return out
			}
			continue
		}
		out = append(out, evs...)
	}
}

func TestLog(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, kind, "orders")
			for i := range 5 {
				pos, err := l.Append(ctx, fmt.Sprintf("e%d", i), []byte(fmt.Sprint(i)))
				if err != nil || pos != int64(i+1) {
					t.Fatalf("append %d: %d %v", i, pos, err)
				}
			}
			evs := readAll(t, l)
			if len(evs) != 5 || evs[4].ID != "e4" || string(evs[4].Data) != "4" || evs[4].Pos != 5 {
				t.Fatalf("read %+v", evs)
			}
			// A read from the middle, then a seek back.
			evs, err := l.Read(ctx, 3, 10, time.Second)
			if err != nil || len(evs) == 0 || evs[0].Pos != 4 {
				t.Fatalf("read after 3: %+v %v", evs, err)
			}
			if evs, _ = l.Read(ctx, 1, 1, time.Second); len(evs) != 1 || evs[0].ID != "e1" {
				t.Fatalf("read after 1: %+v", evs)
			}
			if h, err := l.Head(ctx); err != nil || h != 5 {
				t.Fatalf("head %d %v", h, err)
			}
		})
	}
}

func TestMissingStream(t *testing.T) {
	for _, kind := range kinds {
		url := streamtest.Broker(t, kind, "")
		_, err := stream.Open(context.Background(), stream.Spec{Broker: url, Stream: "nope"})
		if !errors.Is(err, stream.ErrNoStream) {
			t.Fatalf("%s: %v", kind, err)
		}
	}
	if _, err := stream.Open(context.Background(), stream.Spec{Broker: "amqp://x:1", Stream: "s"}); err == nil {
		t.Fatal("an unknown scheme opened")
	}
}

func TestMirror(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a, b := open(t, kind, "s"), open(t, kind, "s")
			// e0..e4 reach both, e5..e7 only a, e8 only b, e9 reaches b
			// without an id.
			for i := range 5 {
				a.Append(ctx, fmt.Sprintf("e%d", i), nil)
			}
			for i := range 5 {
				b.Append(ctx, fmt.Sprintf("e%d", 4-i), nil) // another order
			}
			for i := 5; i < 8; i++ {
				a.Append(ctx, fmt.Sprintf("e%d", i), []byte("only a"))
			}
			b.Append(ctx, "e8", []byte("only b"))
			b.Append(ctx, "", []byte("no id")) // a producer that is not tandem's
			m := &stream.Mirror{Regions: [2]string{"a", "b"}, Logs: [2]stream.Log{a, b}, After: time.Hour}
			if n, err := m.Round(ctx); err != nil || n != 0 {
				t.Fatalf("round before After: %d %v", n, err)
			}
			if m.State.Missing("a") != 3 || m.State.Missing("b") != 2 {
				t.Fatalf("missing %+v", m.State.Pending)
			}
			m.After = 0
			if n, err := m.Round(ctx); err != nil || n != 5 {
				t.Fatalf("catch-up: %d %v", n, err)
			}
			waitFor(t, func() bool {
				n, err := m.Round(ctx)
				if err != nil || n != 0 {
					t.Fatalf("after catch-up: %d copied again, %v", n, err)
				}
				return m.State.Missing("a")+m.State.Missing("b") == 0
			})
			ids := func(l stream.Log) map[string]int {
				c := map[string]int{}
				for _, ev := range readAll(t, l) {
					c[ev.ID]++
				}
				return c
			}
			ia, ib := ids(a), ids(b)
			if len(ia) != 10 || len(ib) != 10 || ia["tandem:b:7"] != 1 || ib[""] != 1 {
				t.Fatalf("a %v, b %v", ia, ib)
			}
		})
	}
}

// lease is a fake authority: the epoch a region holds.
type lease struct {
	holder atomic.Value
	epoch  atomic.Int64
}

func (l *lease) move(to string) { l.epoch.Add(1); l.holder.Store(to) }

func (l *lease) cond(region string) fence.Condition {
	return func(ctx context.Context) (fence.Grant, error) {
		if l.holder.Load() != region {
			return fence.Grant{}, fmt.Errorf("%s does not hold the lease: %w", region, fence.ErrFenced)
		}
		return fence.Grant{Epoch: l.epoch.Load(), For: 200 * time.Millisecond, What: "the lease"}, nil
	}
}

func sink(t *testing.T, path string) *stream.Sink {
	t.Helper()
	s, err := stream.OpenSQL(context.Background(), "sqlite", path, "s", []string{
		`CREATE TABLE IF NOT EXISTS effects (id TEXT, epoch INTEGER, region TEXT)`,
		`INSERT INTO effects (id, epoch, region) VALUES ($1, $3, $4)`})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestProcessSwitch: a is primary, processes, the lease moves to b, which
// resumes from the position its follower kept; a stale delivery of a is
// refused by the sink; every event takes effect once.
func TestProcessSwitch(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a, b := open(t, kind, "s"), open(t, kind, "s")
			db := filepath.Join(t.TempDir(), "sink.db")
			sk := sink(t, db)
			const n = 300
			for i := range n {
				id := fmt.Sprintf("e%03d", i)
				a.Append(ctx, id, nil)
				b.Append(ctx, id, nil)
			}
			ls := &lease{}
			ls.move("a")
			run := func(region string, l stream.Log) chan error {
				done := make(chan error, 1)
				p := &stream.Processor{Region: region, Log: l, Sink: sk, Consumer: region, Batch: 32,
					Guard: fence.New("processing in "+region, ls.cond(region))}
				go func() { done <- p.Run(ctx) }()
				return done
			}
			fctx, stopFollow := context.WithCancel(ctx)
			followed := make(chan error, 1)
			go func() { followed <- stream.Follow(fctx, "b", b, sk, "b", 50) }()
			doneA := run("a", a)
			waitFor(t, func() bool { st, _ := sk.Stats(ctx); return st.Applied >= n/2 })
			ls.move("b")
			if err := <-doneA; !fence.Fenced(err) {
				t.Fatalf("a after the move: %v", err)
			}
			waitFor(t, func() bool { st, _ := sk.Stats(ctx); return st.Positions["b"] > 0 })
			stopFollow()
			if err := <-followed; err != nil {
				t.Fatal(err)
			}
			doneB := run("b", b)
			waitFor(t, func() bool { st, _ := sk.Stats(ctx); return st.Applied == n && st.Epoch == 2 })
			// A stale delivery under a's epoch changes nothing.
			_, err := sk.Deliver(ctx, stream.Delivery{Epoch: 1, Region: "a", Consumer: "a"}, []stream.Event{{ID: "late", Pos: 999}}, nil)
			if !errors.Is(err, stream.ErrStale) {
				t.Fatalf("stale delivery: %v", err)
			}
			ls.move("nobody")
			<-doneB
			once(t, db, n)
		})
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// once checks that the effects table holds n distinct ids, each once.
func once(t *testing.T, path string, n int) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var total, distinct int
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT id) FROM effects`).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if total != n || distinct != n {
		t.Fatalf("effects: %d rows, %d distinct ids, want %d once each", total, distinct, n)
	}
}

// TestProduceRegionDown: with one region's broker down, dual produce goes
// on into the other and says which region missed the event; the catch-up
// brings it there once the broker is back.
func TestProduceRegionDown(t *testing.T) {
	ctx := context.Background()
	na, err := embed.StartNATS(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { na.Stop() })
	urlB := streamtest.NATS(t, "s")
	if err := embed.CreateStream(ctx, na.URL, "s", "s.events"); err != nil {
		t.Fatal(err)
	}
	p, err := produce.Open(ctx, []produce.Target{{Region: "a", Broker: na.URL, Stream: "s"}, {Region: "b", Broker: urlB, Stream: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Timeout = time.Second
	if _, err := p.Send(ctx, "e0", nil); err != nil {
		t.Fatal(err)
	}
	dirA, port := na.Dir, na.Port
	na.Stop()
	res, err := p.Send(ctx, "e1", nil)
	if err != nil || res.Failed["a"] == "" || res.Positions["b"] != 2 {
		t.Fatalf("with a down: %+v %v", res, err)
	}
	if na, err = embed.StartNATS(dirA, port); err != nil {
		t.Fatal(err)
	}
	a, _ := stream.Open(ctx, stream.Spec{Broker: na.URL, Stream: "s"})
	b, _ := stream.Open(ctx, stream.Spec{Broker: urlB, Stream: "s"})
	defer a.Close()
	defer b.Close()
	m := &stream.Mirror{Regions: [2]string{"a", "b"}, Logs: [2]stream.Log{a, b}}
	if n, err := m.Round(ctx); err != nil || n != 1 {
		t.Fatalf("catch-up: %d %v", n, err)
	}
	if evs := readAll(t, a); len(evs) != 2 || evs[1].ID != "e1" {
		t.Fatalf("a after the catch-up: %+v", evs)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://user:hunter2@n1:4222":      "nats://n1:4222",
		"kafka://a:9092,b:9092":            "kafka://a:9092,b:9092",
		"nats://tok@n1:4222,x:y@n2:4222/p": "nats://n1:4222,n2:4222",
		"not a url hunter2":                "",
	} {
		if got := stream.Redact(in); got != want && !(want == "" && !strings.Contains(got, "hunter2")) {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMirrorSlowReads: with the broker slow to send events (a loaded
// machine, a new consumer's start-up), a read may return none for events
// the log holds; the mirror must not take that for the log's end, or it
// copies into a region events the region holds.
func TestMirrorSlowReads(t *testing.T) {
	c, url := streamtest.KafkaCluster(t, "a", "b")
	ctx := context.Background()
	logs := [2]stream.Log{}
	for i, name := range []string{"a", "b"} {
		l, err := stream.Open(ctx, stream.Spec{Broker: url, Stream: name})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		logs[i] = l
		for j := range 3 + (1 - i) { // e0..e3 in a, e0..e2 in b
			if _, err := l.Append(ctx, fmt.Sprintf("e%d", j), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var slowed atomic.Int32
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if slowed.Add(1) <= 4 {
			c.SleepControl(func() { time.Sleep(400 * time.Millisecond) })
		}
		return nil, nil, false
	})
	m := &stream.Mirror{Regions: [2]string{"a", "b"}, Logs: logs}
	if n, err := m.Round(ctx); err != nil || n != 1 || m.State.Copied["b"] != 1 {
		t.Fatalf("round with slow fetches: %d copied, %v, state %+v", n, err, m.State)
	}
	if slowed.Load() == 0 {
		t.Fatal("no fetch was slowed: the test tested nothing")
	}
}
