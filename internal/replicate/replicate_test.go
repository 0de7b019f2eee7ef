package replicate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/state"
)

var ctx = context.Background()

func localBucket(t *testing.T) objstore.Bucket {
	t.Helper()
	b, err := local.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func s3Bucket(t *testing.T) objstore.Bucket {
	t.Helper()
	srv := s3test.Shared(t)
	b, err := s3store.Open(ctx, srv.NewBucket(t), "data", srv.Options())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, b objstore.Bucket, tree map[string]string) {
	t.Helper()
	for k, v := range tree {
		if _, err := b.Put(ctx, k, strings.NewReader(v), int64(len(v)), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, b objstore.Bucket) map[string]string {
	t.Helper()
	got := map[string]string{}
	for info, err := range b.List(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		data, _, err := objstore.ReadAll(ctx, b, info.Key)
		if err != nil {
			t.Fatal(err)
		}
		got[info.Key] = string(data)
	}
	return got
}

func expectTree(t *testing.T, b objstore.Bucket, want map[string]string) {
	t.Helper()
	if got := read(t, b); !maps.Equal(got, want) {
		t.Fatalf("target holds %v\nwant %v", got, want)
	}
}

func newPair(src, dst objstore.Bucket, withState bool, t *testing.T) *Pair {
	p := &Pair{Name: "lake", Source: src, Target: dst, Delete: true}
	if withState {
		st := state.Store{Bucket: localBucket(t)}.Sub("lake")
		p.State = &st
	}
	return p
}

func run(t *testing.T, p *Pair) Summary {
	t.Helper()
	sum, err := p.RunOnce(ctx)
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	return sum
}

var sample = map[string]string{
	"a.csv":           "id,name\n1,ada\n",
	"a-b/x.json":      `{"x":1}`,
	"a/b/c.parquet":   "PAR1....PAR1",
	"dir/empty":       "",
	"z/\u00e9t\u00e9": "summer",
}

func TestBackends(t *testing.T) {
	kinds := map[string]func(*testing.T) objstore.Bucket{"local": localBucket, "s3": s3Bucket}
	for _, from := range []string{"local", "s3"} {
		for _, to := range []string{"local", "s3"} {
			t.Run(from+"_to_"+to, func(t *testing.T) {
				src, dst := kinds[from](t), kinds[to](t)
				put(t, src, sample)
				p := newPair(src, dst, true, t)
				sum := run(t, p)
				expectTree(t, dst, sample)
				if sum.Objects != int64(len(sample)) || sum.Watermark == nil {
					t.Fatalf("first pass %+v", sum)
				}
				// A rerun copies nothing.
				sum = run(t, p)
				if sum.Objects != 0 || sum.Unchanged != int64(len(sample)) {
					t.Fatalf("no-op pass %+v", sum)
				}
				// Change, add, delete.
				put(t, src, map[string]string{"a.csv": "id,name\n1,ada\n2,bob\n", "new/one": "1"})
				if err := src.Delete(ctx, "dir/empty"); err != nil {
					t.Fatal(err)
				}
				sum = run(t, p)
				want := read(t, src)
				expectTree(t, dst, want)
				if sum.Objects != 2 || sum.Deleted != 1 || sum.Foreign != 0 {
					t.Fatalf("incremental pass %+v", sum)
				}
			})
		}
	}
}

func TestLargeObjectsInParts(t *testing.T) {
	src, dst := localBucket(t), s3Bucket(t)
	data := make([]byte, 13<<20+7)
	rand.Read(data)
	if _, err := src.Put(ctx, "big.bin", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	p := newPair(src, dst, true, t)
	p.MultipartThreshold, p.PartSize = 5<<20, 5<<20
	if sum := run(t, p); sum.Objects != 1 {
		t.Fatalf("%+v", sum)
	}
	got, _, err := objstore.ReadAll(ctx, dst, "big.bin")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("large object differs (%v)", err)
	}
	// With its record lost, the object is recognized by its multipart
	// hash instead of being sent again.
	fresh := newPair(src, dst, true, t)
	fresh.MultipartThreshold, fresh.PartSize = 5<<20, 5<<20
	if sum := run(t, fresh); sum.Objects != 0 || sum.Adopted != 1 {
		t.Fatalf("rerun with a lost index %+v", sum)
	}
	// And back down to a folder, the multipart ETag recorded.
	back := localBucket(t)
	run(t, newPair(dst, back, false, t))
	got, _, _ = objstore.ReadAll(ctx, back, "big.bin")
	if !bytes.Equal(got, data) {
		t.Fatal("large object differs after the second hop")
	}
}

func TestWithoutStateComparesListings(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	p := newPair(src, dst, false, t)
	run(t, p)
	sum := run(t, p)
	if sum.Objects != 0 || sum.Adopted != int64(len(sample)) {
		t.Fatalf("rerun without state %+v", sum)
	}
	// Without a record, --delete removes whatever the source lacks.
	put(t, dst, map[string]string{"extra": "x"})
	sum = run(t, p)
	if sum.Deleted != 1 {
		t.Fatalf("%+v", sum)
	}
	expectTree(t, dst, sample)
}

func TestExclude(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, map[string]string{"tables/gold/part-0": "owned by a group", "raw/x": "x"})
	put(t, dst, map[string]string{"tables/gold/_delta_log/0.json": "the group's copy"})
	p := newPair(src, dst, true, t)
	p.Exclude = []string{"tables/"}
	sum := run(t, p)
	expectTree(t, dst, map[string]string{"raw/x": "x", "tables/gold/_delta_log/0.json": "the group's copy"})
	if sum.Foreign != 0 || sum.Deleted != 0 {
		t.Fatalf("%+v", sum)
	}
}

func TestForeignWrites(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	p := newPair(src, dst, true, t)
	run(t, p)
	// Someone writes to the replica.
	put(t, dst, map[string]string{"a.csv": "overwritten on the replica", "stray.txt": "written on the replica"})
	sum := run(t, p)
	if sum.Foreign != 2 || len(sum.ForeignKeys) != 2 {
		t.Fatalf("foreign writes not reported: %+v", sum)
	}
	// The replica gets the source's version back, and the stray object is
	// kept: tandem deletes only what it copied.
	want := maps.Clone(sample)
	want["stray.txt"] = "written on the replica"
	expectTree(t, dst, want)
	st, err := LoadStatus(ctx, *p.State, "lake")
	if err != nil || st.LastPass.Foreign != 2 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// flaky fails every Put of one key.
type flaky struct {
	objstore.Bucket
	bad  string
	puts atomic.Int64
}

func (f *flaky) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	f.puts.Add(1)
	if key == f.bad {
		return objstore.Info{}, errors.New("injected: disk full")
	}
	return f.Bucket.Put(ctx, key, r, size, o)
}

func TestRetryQueueAndWatermark(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	target := &flaky{Bucket: dst, bad: "a.csv"}
	p := newPair(src, target, true, t)
	p.RetryBackoff = time.Hour
	sum := run(t, p)
	if sum.Failed != 1 || sum.Watermark != nil {
		t.Fatalf("pass with a failing object %+v", sum)
	}
	q, err := LoadRetryQueue(ctx, *p.State)
	if err != nil || len(q) != 1 || q[0].Key != "a.csv" || q[0].Attempts != 1 || !strings.Contains(q[0].Error, "disk full") {
		t.Fatalf("retry queue %+v, %v", q, err)
	}
	// Within the backoff the object waits, and the watermark stays.
	sum = run(t, p)
	if sum.Pending != 1 || sum.Watermark != nil {
		t.Fatalf("pass within backoff %+v", sum)
	}
	st, _ := LoadStatus(ctx, *p.State, "lake")
	if st.Watermark != nil {
		t.Fatalf("watermark advanced past a failed object: %v", st.Watermark)
	}
	// Once the target heals and the backoff is over, the pass converges.
	target.bad = ""
	q[0].NextAttempt = time.Now().Add(-time.Second)
	if _, err := p.State.Save(ctx, "retry.json", q, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	sum = run(t, p)
	if sum.Objects != 1 || sum.Watermark == nil {
		t.Fatalf("healing pass %+v", sum)
	}
	expectTree(t, dst, sample)
	if q, _ := LoadRetryQueue(ctx, *p.State); len(q) != 0 {
		t.Fatalf("retry queue not emptied: %+v", q)
	}
}

func TestPromotion(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	p := newPair(src, dst, true, t)
	run(t, p)
	prom, err := Promote(ctx, *p.State, "lake", dst, fence.DefaultGrace, 0)
	if err != nil || prom.Watermark == nil {
		t.Fatalf("promote: %+v, %v", prom, err)
	}
	put(t, src, map[string]string{"after": "promotion"})
	if _, err := p.RunOnce(ctx); !errors.Is(err, ErrPromoted) {
		t.Fatalf("pass after promotion: %v", err)
	}
	if _, err := dst.Stat(ctx, "after"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatal("a pass wrote into a promoted target")
	}
	again, err := Promote(ctx, *p.State, "lake", dst, fence.DefaultGrace, 0)
	if err != nil || !again.At.Equal(prom.At) {
		t.Fatalf("second promote %+v, %v", again, err)
	}
}

// blocking holds every Put until the promotion record exists and a grace
// has passed, as a pass paused in the middle of a copy would.
type blocking struct {
	objstore.Bucket
	st state.Store
}

func (b *blocking) GatesWrites() bool { return true }
func (b *blocking) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	for {
		if ok, _ := b.st.Exists(ctx, "promoted.json"); ok {
			break
		}
		select {
		case <-ctx.Done():
			return objstore.Info{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	time.Sleep(fence.DefaultGrace + 100*time.Millisecond)
	return b.Bucket.Put(ctx, key, r, size, o)
}

// TestPromotionDuringPass: a pass that is copying when the target is
// promoted writes nothing more: its next write is refused at the gate.
func TestPromotionDuringPass(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	p := newPair(src, nil, true, t)
	p.Target = &blocking{Bucket: dst, st: *p.State}
	done := make(chan error, 1)
	go func() { _, err := p.RunOnce(ctx); done <- err }()
	if _, err := Promote(ctx, *p.State, "lake", dst, fence.DefaultGrace, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrPromoted) {
			t.Fatalf("pass ended with %v, want ErrPromoted", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a running pass did not notice the promotion")
	}
	expectTree(t, dst, map[string]string{})
}

// unsorted lists its objects in the wrong order.
type unsorted struct{ objstore.Bucket }

func (u unsorted) List(ctx context.Context, prefix string) iter.Seq2[objstore.Info, error] {
	return func(yield func(objstore.Info, error) bool) {
		_ = yield(objstore.Info{Key: "b"}, nil) && yield(objstore.Info{Key: "a"}, nil)
	}
}

func TestUnsortedListingDeletesNothing(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, dst, map[string]string{"c": "keep me"})
	p := newPair(unsorted{src}, dst, false, t)
	_, err := p.RunOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "not in key order") {
		t.Fatalf("err = %v", err)
	}
	expectTree(t, dst, map[string]string{"c": "keep me"})
}

func TestListingErrorDeletesNothing(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, dst, map[string]string{"c": "keep me"})
	p := newPair(failingList{src}, dst, false, t)
	if _, err := p.RunOnce(ctx); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v", err)
	}
	expectTree(t, dst, map[string]string{"c": "keep me"})
}

type failingList struct{ objstore.Bucket }

func (f failingList) List(ctx context.Context, prefix string) iter.Seq2[objstore.Info, error] {
	return func(yield func(objstore.Info, error) bool) {
		yield(objstore.Info{}, fmt.Errorf("list: connection reset"))
	}
}

// TestNoOpPassRequests counts the HTTP requests of a pass over unchanged
// objects: listings only, no HEAD or GET per object.
func TestNoOpPassRequests(t *testing.T) {
	srv := s3test.Shared(t)
	counter := srv.NewCounter(t)
	opts := srv.Options()
	opts.Endpoint = counter.Endpoint
	open := func() objstore.Bucket {
		b, err := s3store.Open(ctx, srv.NewBucket(t), "p", opts)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	src, dst := open(), open()
	tree := map[string]string{}
	for i := range 1500 {
		tree[fmt.Sprintf("k/%05d", i)] = "v"
	}
	put(t, src, tree)
	p := newPair(src, dst, true, t)
	run(t, p)
	counter.Take()
	sum := run(t, p)
	got := counter.Take()
	if sum.Unchanged != 1500 {
		t.Fatalf("%+v", sum)
	}
	// Two listings of two pages each and one of the target's unfinished
	// uploads (the sweep of what an interrupted pass left); nothing per
	// object.
	if got["HEAD"] != 0 || got["GET"] != 0 || got["PUT"] != 0 || got["GET-list"] != 5 {
		t.Fatalf("requests of a no-op pass: %v", got)
	}
}

// refuseOnce is a target whose first Put fails with err, as a store that
// refused a write: nothing of it lands.
type refuseOnce struct {
	objstore.Bucket
	err   error
	puts  atomic.Int32
	first atomic.Bool
}

func (r *refuseOnce) Put(ctx context.Context, key string, body io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	r.puts.Add(1)
	if r.first.CompareAndSwap(false, true) {
		io.Copy(io.Discard, body)
		return objstore.Info{}, r.err
	}
	return r.Bucket.Put(ctx, key, body, size, opts)
}

// TestHeldUpWriteTriedAgain: a write its store refused for reaching it
// after its grant (a loaded machine; nothing landed) is tried again, under
// the guard again; a write the fence refused is not.
func TestHeldUpWriteTriedAgain(t *testing.T) {
	for _, c := range []struct {
		err   error
		again bool
	}{
		{fmt.Errorf("put a: its time ran out before it reached the store (Request has expired.): %w", objstore.ErrRevoked), true},
		{fmt.Errorf("put a: its staging was revoked: %w", objstore.ErrRevoked), true},
		{fmt.Errorf("%w: west holds lakehouse (epoch 2), not east", fence.ErrFenced), false},
		{fmt.Errorf("put a: may have landed after its grant ran out: %w", fence.ErrLate), false},
	} {
		src, dst := localBucket(t), localBucket(t)
		put(t, src, map[string]string{"a": "x"})
		tgt := &refuseOnce{Bucket: dst, err: c.err}
		cp := &Copier{Source: src, Target: tgt}
		info, err := cp.Copy(ctx, objstore.Info{Key: "a", Size: 1})
		if c.again && (err != nil || info.Size != 1 || tgt.puts.Load() != 2) {
			t.Errorf("%v: not tried again: %v after %d puts", c.err, err, tgt.puts.Load())
		}
		if !c.again && (err == nil || tgt.puts.Load() != 1) {
			t.Errorf("%v: tried again (%d puts): %v", c.err, tgt.puts.Load(), err)
		}
	}
}
