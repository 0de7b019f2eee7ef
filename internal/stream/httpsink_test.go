package stream_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"tandem/internal/stream"
)

// receiver is an HTTP endpoint that applies each Idempotency-Key once.
type receiver struct {
	mu      sync.Mutex
	applied map[string]string // key -> epoch
	calls   int
	fail    string // a key answered 500
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	key := r.Header.Get("Idempotency-Key")
	if key == rc.fail {
		http.Error(w, "the receiver refuses it", http.StatusInternalServerError)
		return
	}
	if _, ok := rc.applied[key]; !ok {
		rc.applied[key] = r.Header.Get("Tandem-Epoch")
	}
}

// TestHTTPSink: each event is one call with its id as Idempotency-Key and
// the epoch; the ledger skips ids applied before, refuses a stale epoch
// before any call, and a delivery that failed after its calls (the answer
// lost, a crash) sends them again with the same keys.
func TestHTTPSink(t *testing.T) {
	ctx := context.Background()
	rc := &receiver{applied: map[string]string{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	sk, err := stream.OpenHTTP(ctx, "sqlite", filepath.Join(t.TempDir(), "ledger.db"), "pay", stream.HTTPCall{URL: srv.URL + "/events"})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	east := stream.Delivery{Epoch: 1, Region: "east", Consumer: "east/pay"}
	west := stream.Delivery{Epoch: 2, Region: "west", Consumer: "west/pay"}
	evs := []stream.Event{{ID: "a", Pos: 1}, {ID: "b", Pos: 2}}
	if r, err := sk.Deliver(ctx, east, evs, nil); err != nil || r.Applied != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	// Lost after the calls: nothing recorded, sent again, applied once.
	lost := errors.New("the process died before its commit")
	if _, err := sk.Deliver(ctx, east, []stream.Event{{ID: "c", Pos: 3}}, func(context.Context) error {
		if rc.calls == 3 {
			return lost
		}
		return nil
	}); !errors.Is(err, lost) {
		t.Fatalf("lost delivery: %v", err)
	}
	if r, err := sk.Deliver(ctx, west, []stream.Event{{ID: "b", Pos: 1}, {ID: "a", Pos: 2}, {ID: "c", Pos: 3}}, nil); err != nil || r.Applied != 1 || r.Duplicates != 2 {
		t.Fatalf("west: %+v %v", r, err)
	}
	calls := rc.calls
	if _, err := sk.Deliver(ctx, east, []stream.Event{{ID: "d", Pos: 4}}, nil); !errors.Is(err, stream.ErrStale) || rc.calls != calls {
		t.Fatalf("stale: %v, %d calls made", err, rc.calls-calls)
	}
	rc.fail = "e"
	if _, err := sk.Deliver(ctx, west, []stream.Event{{ID: "e", Pos: 4}}, nil); err == nil || !strings.Contains(err.Error(), "event e (position 4 in west)") || !strings.Contains(err.Error(), "500") {
		t.Fatalf("refused call: %v", err)
	}
	if len(rc.applied) != 3 || rc.applied["c"] != "1" || rc.calls != 5 {
		t.Fatalf("receiver: %v after %d calls", rc.applied, rc.calls)
	}
	st, _ := sk.Stats(ctx)
	if st.Applied != 3 || st.Duplicates != 2 || st.Epoch != 2 {
		t.Fatalf("stats %+v", st)
	}
}
