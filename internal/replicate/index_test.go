package replicate

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"tandem/internal/objstore"
	"tandem/internal/state"
)

// lostAnswer stores the first index chunk it is given, then says the write
// failed, as when a request's answer is lost (a cancelled context, a dropped
// connection) after the store took it.
type lostAnswer struct {
	objstore.Bucket
	lost bool
}

func (l *lostAnswer) Put(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	info, err := l.Bucket.Put(ctx, key, r, size, opts)
	if err == nil && !l.lost && strings.HasSuffix(key, ".gz") {
		l.lost = true
		return objstore.Info{}, errors.New("connection reset after the request was sent")
	}
	return info, err
}

func keysOf(t *testing.T, ix index) []string {
	t.Helper()
	seq, _, err := ix.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, e.Key)
	}
	return keys
}

// TestIndexChunkRewrittenInPlace: a chunk whose write failed is written
// again under its own name, so an index whose first write did land holds
// each entry once, in key order.
func TestIndexChunkRewrittenInPlace(t *testing.T) {
	ix := index{st: state.Store{Bucket: &lostAnswer{Bucket: localBucket(t)}}.Sub("index")}
	w := ix.create()
	for _, k := range []string{"a", "b"} {
		if err := w.add(ctx, entry{Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.flush(ctx); err == nil {
		t.Fatal("the first chunk's write did not fail")
	}
	if err := w.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.add(ctx, entry{Key: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keysOf(t, ix), ","); got != "a,b,c" {
		t.Fatalf("the unpublished generation reads %s, want a,b,c", got)
	}
}

// TestIndexWithRepeatedChunkConverges: a generation left by an older tandem,
// whose retried chunk took a new number, is read up to the repeat; the pass
// after it runs and publishes.
func TestIndexWithRepeatedChunkConverges(t *testing.T) {
	src, dst := localBucket(t), localBucket(t)
	put(t, src, sample)
	p := newPair(src, dst, true, t)
	run(t, p)
	put(t, src, map[string]string{"b-new": "new"})

	ix := index{st: p.State.Sub("index")}
	seq, _, err := ix.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first []entry // the entries a crashed pass had recorded
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		if len(first) < 2 {
			first = append(first, e)
		}
	}
	w := ix.create()
	for range 2 { // the same chunk twice, as the older writer left it
		for _, e := range first {
			w.add(ctx, e)
		}
		if err := w.flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(keysOf(t, ix), ","); !strings.HasPrefix(got, "a-b/x.json,a.csv,a/b/c.parquet") {
		t.Fatalf("index reads %s", got)
	}
	sum := run(t, p)
	if sum.Foreign != 0 {
		t.Fatalf("foreign writes reported: %v", sum.ForeignKeys)
	}
	want := map[string]string{"b-new": "new"}
	for k, v := range sample {
		want[k] = v
	}
	expectTree(t, dst, want)
	if n := len(keysOf(t, ix)); n != len(want) {
		t.Fatalf("published index holds %d entries, want %d", n, len(want))
	}
}
