package fence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
)

var ctx = context.Background()

// authority is a fake lease: tests move its epoch, fence it or cut it off.
type authority struct {
	mu     sync.Mutex
	epoch  int64
	fenced bool
	down   bool
	grace  time.Duration
	reads  atomic.Int64
}

func (a *authority) cond(ctx context.Context) (Grant, error) {
	a.reads.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.down:
		return Grant{}, errors.New("witness unreachable")
	case a.fenced:
		return Grant{}, fmt.Errorf("%w: the test lease moved", ErrFenced)
	}
	return Grant{Epoch: a.epoch, For: a.grace, What: "the test lease"}, nil
}

func (a *authority) set(f func(a *authority)) {
	a.mu.Lock()
	f(a)
	a.mu.Unlock()
}

func TestGuardGrants(t *testing.T) {
	a := &authority{epoch: 3, grace: 50 * time.Millisecond}
	g := New("test writer", a.cond)
	if err := g.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if g.Epoch() != 3 {
		t.Fatalf("epoch %d, want 3", g.Epoch())
	}
	// Many checks within a grant cost few reads: the grant is renewed in
	// the background when half of it is left.
	for range 1000 {
		if err := g.Check(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.reads.Load(); n > 5 {
		t.Fatalf("%d reads for 1001 checks within a grant", n)
	}

	// The authority cannot be read: writes stop, and resume once it can.
	a.set(func(a *authority) { a.down = true })
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for err = g.Check(ctx); err == nil; err = g.Check(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("the guard kept allowing writes without confirmation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(err, ErrUnconfirmed) || Fenced(err) {
		t.Fatalf("unreachable authority: %v", err)
	}
	a.set(func(a *authority) { a.down = false })
	if err := g.Check(ctx); err != nil {
		t.Fatalf("after the authority answers again: %v", err)
	}

	// Another epoch fences the guard for good, even if it comes back.
	a.set(func(a *authority) { a.epoch = 4 })
	for err = g.Check(ctx); err == nil; err = g.Check(ctx) {
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "from epoch 3 to 4") {
		t.Fatalf("epoch moved: %v", err)
	}
	a.set(func(a *authority) { a.epoch = 3 })
	time.Sleep(60 * time.Millisecond)
	if err := g.Check(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("a fenced guard allowed a write again: %v", err)
	}
}

func TestGuardFencedCondition(t *testing.T) {
	a := &authority{epoch: 1, grace: time.Second, fenced: true}
	g := New("test writer", a.cond)
	if err := g.Check(ctx); !Fenced(err) {
		t.Fatalf("fenced condition: %v", err)
	}
}

// slow delays each write between its gate and its landing, as a paused
// process or a slow network would.
type slow struct {
	objstore.Bucket
	delay time.Duration
}

func (s *slow) GatesWrites() bool { return true }
func (s *slow) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	gate := o.Gate
	o.Gate = func() (time.Time, error) {
		until, err := gate()
		time.Sleep(s.delay)
		return until, err
	}
	return s.Bucket.Put(ctx, key, r, size, o)
}

func TestBucketGatesEveryWrite(t *testing.T) {
	dir := t.TempDir()
	b, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	a := &authority{epoch: 1, grace: 100 * time.Millisecond}
	g := New("test writer", a.cond)
	fb := g.Bucket(b)
	if _, err := fb.Put(ctx, "a", strings.NewReader("1"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if objstore.Writers(fb, 16) != objstore.Writers(b, 16) || !objstore.KeepsModTime(fb) {
		t.Fatal("the fenced bucket hides the backend's capabilities")
	}
	a.set(func(a *authority) { a.epoch = 2 })
	time.Sleep(150 * time.Millisecond) // the grant runs out
	if _, err := fb.Put(ctx, "b", strings.NewReader("2"), 1, objstore.PutOptions{}); !Fenced(err) {
		t.Fatalf("write after the epoch moved: %v", err)
	}
	if err := fb.Delete(ctx, "a"); !Fenced(err) {
		t.Fatalf("delete after the epoch moved: %v", err)
	}
	if _, err := b.Stat(ctx, "b"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a fenced write is visible: %v", err)
	}
	if _, err := b.Stat(ctx, "a"); err != nil {
		t.Fatalf("a fenced delete removed the object: %v", err)
	}

	// A write held up between its gate and its landing for longer than a
	// grace is reported: it may have landed after a takeover.
	g2 := New("paused writer", (&authority{epoch: 1, grace: 50 * time.Millisecond}).cond)
	_, err = g2.Bucket(&slow{Bucket: b, delay: 200 * time.Millisecond}).Put(ctx, "c", strings.NewReader("3"), 1, objstore.PutOptions{})
	if !errors.Is(err, ErrLate) || !strings.Contains(err.Error(), "/c returned") {
		t.Fatalf("late write: %v", err)
	}
}

// TestDeferredWriteGatedAtPublish: a write staged while the writer held
// its right and published in a batch after the right moved lands nothing.
func TestDeferredWriteGatedAtPublish(t *testing.T) {
	b, err := local.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	a := &authority{epoch: 1, grace: 50 * time.Millisecond}
	g := New("test writer", a.cond)
	if err := g.Check(ctx); err != nil { // the writer starts under epoch 1
		t.Fatal(err)
	}
	fb, ok := g.Bucket(b).(objstore.Deferrer)
	if !ok {
		t.Fatal("the fenced bucket hides the folder's deferred writes")
	}
	at, release := make(chan struct{}), make(chan struct{})
	hold := func() (time.Time, error) { close(at); <-release; return time.Time{}, nil }
	res := make(chan error, 1)
	if err := fb.PutDeferred(ctx, "x", strings.NewReader("x"), 1, objstore.PutOptions{Gate: hold},
		func(_ objstore.Info, err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	<-at // staged, and its batch is being published
	a.set(func(a *authority) { a.epoch = 2 })
	time.Sleep(100 * time.Millisecond) // the grant runs out
	close(release)
	if err := <-res; !Fenced(err) {
		t.Fatalf("a write published after the epoch moved: %v", err)
	}
	if _, err := b.Stat(ctx, "x"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a fenced deferred write is visible: %v", err)
	}
}
