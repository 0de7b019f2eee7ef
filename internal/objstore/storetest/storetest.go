// Package storetest is the conformance suite every objstore.Bucket passes:
// the local folder always, S3 against a real server on loopback.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/objstore"
)

// Run runs the suite. newBucket returns an empty bucket for each subtest.
func Run(t *testing.T, newBucket func(t *testing.T) objstore.Bucket) {
	ctx := context.Background()

	t.Run("PutGetStat", func(t *testing.T) {
		b := newBucket(t)
		want := []byte("hello, standby")
		put, err := b.Put(ctx, "dir/a.txt", bytes.NewReader(want), int64(len(want)), objstore.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if put.Size != int64(len(want)) || put.ETag == "" {
			t.Fatalf("Put returned %+v", put)
		}
		rc, got, err := b.Get(ctx, "dir/a.txt")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(data, want) || got.ETag != put.ETag || got.Size != put.Size {
			t.Fatalf("Get = %q %+v, want %q %+v", data, got, want, put)
		}
		st, err := b.Stat(ctx, "dir/a.txt")
		if err != nil || st.ETag != put.ETag || st.Size != put.Size || st.ModTime.IsZero() {
			t.Fatalf("Stat = %+v, %v; want ETag %s", st, err, put.ETag)
		}
		// Overwrite changes the ETag.
		put2, err := b.Put(ctx, "dir/a.txt", strings.NewReader("v2"), 2, objstore.PutOptions{})
		if err != nil || put2.ETag == put.ETag {
			t.Fatalf("overwrite: %+v, %v (old ETag %s)", put2, err, put.ETag)
		}
	})

	t.Run("EmptyObjectAndUnknownSize", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Put(ctx, "empty", bytes.NewReader(nil), 0, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, "unknown", io.MultiReader(strings.NewReader("abc")), -1, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		for key, size := range map[string]int64{"empty": 0, "unknown": 3} {
			st, err := b.Stat(ctx, key)
			if err != nil || st.Size != size {
				t.Fatalf("Stat(%s) = %+v, %v; want size %d", key, st, err, size)
			}
		}
	})

	t.Run("HostileKeys", func(t *testing.T) {
		// Keys that climb out of the root, however spelled, are refused
		// by every write and delete, and nothing lands anywhere.
		b := newBucket(t)
		for _, key := range []string{"../outside", "a/../../outside", "a/./b", "/abs", "a/..", "..", ".", "nul\x00", "line\nbreak",
			strings.Repeat("k", 1025)} {
			if _, err := b.Put(ctx, key, strings.NewReader("x"), 1, objstore.PutOptions{}); !errors.Is(err, objstore.ErrBadKey) {
				t.Errorf("Put(%q): %v, want ErrBadKey", key, err)
			}
			if err := b.Delete(ctx, key); !errors.Is(err, objstore.ErrBadKey) {
				t.Errorf("Delete(%q): %v, want ErrBadKey", key, err)
			}
			if pp, ok := b.(objstore.PartPutter); ok {
				_, err := pp.PutParts(ctx, key, 1, 5<<20, 1, func(context.Context, int64, int64) (io.ReadCloser, error) {
					return io.NopCloser(strings.NewReader("x")), nil
				}, objstore.PutOptions{})
				if !errors.Is(err, objstore.ErrBadKey) {
					t.Errorf("PutParts(%q): %v, want ErrBadKey", key, err)
				}
			}
		}
		// Names that only look like traversal are plain keys.
		for _, key := range []string{"%2e%2e/x", "a..b", "...", "a\\..\\b", "‥/x"} {
			if _, err := b.Put(ctx, key, strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
				t.Errorf("Put(%q): %v", key, err)
			}
		}
		n := 0
		for _, err := range b.List(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != 5 {
			t.Errorf("%d objects listed, want the 5 plain keys", n)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Stat(ctx, "nope"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("Stat missing: %v", err)
		}
		if _, _, err := b.Get(ctx, "nope"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("Get missing: %v", err)
		}
		if err := b.Delete(ctx, "nope"); err != nil {
			t.Fatalf("Delete missing: %v", err)
		}
	})

	t.Run("ShortSourceLeavesNothing", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Put(ctx, "short", strings.NewReader("abc"), 10, objstore.PutOptions{}); err == nil {
			t.Fatal("Put with a short source succeeded")
		}
		if _, err := b.Stat(ctx, "short"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("a failed Put left an object: %v", err)
		}
	})

	t.Run("IfAbsent", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Put(ctx, "k", strings.NewReader("first"), 5, objstore.PutOptions{IfAbsent: true}); err != nil {
			t.Fatal(err)
		}
		_, err := b.Put(ctx, "k", strings.NewReader("second"), 6, objstore.PutOptions{IfAbsent: true})
		if !errors.Is(err, objstore.ErrPrecondition) {
			t.Fatalf("second IfAbsent Put: %v, want ErrPrecondition", err)
		}
		expectContent(t, b, "k", "first")
	})

	t.Run("IfAbsentRace", func(t *testing.T) {
		b := newBucket(t)
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := strconv.Itoa(i)
				_, err := b.Put(ctx, "race", strings.NewReader(v), int64(len(v)), objstore.PutOptions{IfAbsent: true})
				if err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, objstore.ErrPrecondition) {
					t.Errorf("Put %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d IfAbsent Puts won, want 1", wins)
		}
	})

	t.Run("CompareAndSwap", func(t *testing.T) {
		b := newBucket(t)
		v1, err := b.Put(ctx, "cas", strings.NewReader("1"), 1, objstore.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v2, err := b.Put(ctx, "cas", strings.NewReader("2"), 1, objstore.PutOptions{IfMatch: v1.ETag})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, "cas", strings.NewReader("3"), 1, objstore.PutOptions{IfMatch: v1.ETag}); !errors.Is(err, objstore.ErrPrecondition) {
			t.Fatalf("CAS with a stale ETag: %v, want ErrPrecondition", err)
		}
		expectContent(t, b, "cas", "2")
		if _, err := b.Put(ctx, "missing", strings.NewReader("x"), 1, objstore.PutOptions{IfMatch: v2.ETag}); !errors.Is(err, objstore.ErrPrecondition) {
			t.Fatalf("CAS on a missing key: %v, want ErrPrecondition", err)
		}
	})

	t.Run("CompareAndSwapCounter", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Put(ctx, "counter", strings.NewReader("0"), 1, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		const workers, each = 4, 5
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := Increment(ctx, b, "counter"); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		expectContent(t, b, "counter", strconv.Itoa(workers*each))
	})

	t.Run("ListOrderAndPrefix", func(t *testing.T) {
		b := newBucket(t)
		keys := []string{"a/c", "a-b", "a/b/c", "a.b", "b", "a/b-c", "z/\u00e9t\u00e9", "a/b0"}
		for _, k := range keys {
			if _, err := b.Put(ctx, k, strings.NewReader(k), int64(len(k)), objstore.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		want := slices.Clone(keys)
		slices.Sort(want) // byte order
		if got := listKeys(t, b, ""); !slices.Equal(got, want) {
			t.Fatalf("List = %q\nwant   %q", got, want)
		}
		if got := listKeys(t, b, "a/b"); !slices.Equal(got, []string{"a/b-c", "a/b/c", "a/b0"}) {
			t.Fatalf("List(a/b) = %q", got)
		}
		if got := listKeys(t, b, "a/"); !slices.Equal(got, []string{"a/b-c", "a/b/c", "a/b0", "a/c"}) {
			t.Fatalf("List(a/) = %q", got)
		}
		if got := listKeys(t, b, "nothing/"); len(got) != 0 {
			t.Fatalf("List(nothing/) = %q", got)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		b := newBucket(t)
		const n = 1050 // more than one S3 page
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				k := fmt.Sprintf("p/%05d", i)
				if _, err := b.Put(ctx, k, strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got := listKeys(t, b, "p/")
		if len(got) != n || !slices.IsSorted(got) {
			t.Fatalf("listed %d keys (sorted %v), want %d", len(got), slices.IsSorted(got), n)
		}
	})

	t.Run("GetRange", func(t *testing.T) {
		b := newBucket(t)
		put, err := b.Put(ctx, "r", strings.NewReader("0123456789"), 10, objstore.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rc, err := b.GetRange(ctx, "r", 3, 4, put.ETag)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if string(data) != "3456" {
			t.Fatalf("GetRange = %q", data)
		}
		if _, err := b.Put(ctx, "r", strings.NewReader("abcdefghij"), 10, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if rc, err := b.GetRange(ctx, "r", 0, 2, put.ETag); !errors.Is(err, objstore.ErrPrecondition) {
			if rc != nil {
				rc.Close()
			}
			t.Fatalf("GetRange with a stale ETag: %v, want ErrPrecondition", err)
		}
	})

	t.Run("KeysThatNeedEscaping", func(t *testing.T) {
		// Written gated (a replication's writes), read whole and in part,
		// listed, deleted gated: every character a URL escapes.
		b := newBucket(t)
		open := func() (time.Time, error) { return time.Now().Add(time.Minute), nil }
		keys := []string{"a b/c+d=e&f", "q?x#y%2Fz", "ünï/cödé €", "p!$'()*,;:@[]~_-.x", "tab\tnot", `back\slash`, "%41%"}
		for _, key := range keys {
			body := "of " + key
			put, err := b.Put(ctx, key, strings.NewReader(body), int64(len(body)), objstore.PutOptions{Gate: open})
			if err != nil {
				t.Fatalf("Put(%q): %v", key, err)
			}
			expectContent(t, b, key, body)
			rc, err := b.GetRange(ctx, key, 3, 2, put.ETag)
			if err != nil {
				t.Fatalf("GetRange(%q): %v", key, err)
			}
			part, _ := io.ReadAll(rc)
			rc.Close()
			if string(part) != body[3:5] {
				t.Fatalf("GetRange(%q) = %q, want %q", key, part, body[3:5])
			}
		}
		got := listKeys(t, b, "")
		want := slices.Sorted(slices.Values(keys))
		if !slices.Equal(got, want) {
			t.Fatalf("List = %q, want %q", got, want)
		}
		gd, ok := b.(objstore.GateDeleter)
		for _, key := range keys {
			var err error
			if ok {
				err = gd.DeleteGated(ctx, key, open)
			} else {
				err = b.Delete(ctx, key)
			}
			if err != nil {
				t.Fatalf("delete %q: %v", key, err)
			}
		}
		if got := listKeys(t, b, ""); len(got) != 0 {
			t.Fatalf("List after deletes = %q", got)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		b := newBucket(t)
		if _, err := b.Put(ctx, "d/x", strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(ctx, "d/x"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat(ctx, "d/x"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("Stat after Delete: %v", err)
		}
		if got := listKeys(t, b, ""); len(got) != 0 {
			t.Fatalf("List after Delete = %q", got)
		}
	})

	t.Run("Gate", func(t *testing.T) {
		b := newBucket(t)
		if !objstore.GatesWrites(b) {
			t.Fatal("every backend calls PutOptions.Gate")
		}
		refuse := errors.New("fenced: the lease moved")
		if _, err := b.Put(ctx, "old", strings.NewReader("v1"), 2, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		old, _ := b.Stat(ctx, "old")
		for _, c := range []struct {
			name string
			key  string
			opts objstore.PutOptions
		}{
			{"plain", "new/plain", objstore.PutOptions{}},
			{"if-absent", "new/absent", objstore.PutOptions{IfAbsent: true}},
			{"if-match", "old", objstore.PutOptions{IfMatch: old.ETag}},
			{"overwrite", "old", objstore.PutOptions{}},
		} {
			calls := 0
			c.opts.Gate = func() (time.Time, error) { calls++; return time.Time{}, refuse }
			_, err := b.Put(ctx, c.key, strings.NewReader("v2"), 2, c.opts)
			if !errors.Is(err, refuse) || calls != 1 {
				t.Fatalf("%s: Put with a refusing gate = %v after %d calls; want the gate's error after 1", c.name, err, calls)
			}
			c.opts.Gate = func() (time.Time, error) { calls++; return time.Now().Add(time.Minute), nil }
			if c.name == "if-match" || c.name == "overwrite" {
				expectContent(t, b, "old", "v1")
				continue
			}
			if _, err := b.Stat(ctx, c.key); !errors.Is(err, objstore.ErrNotExist) {
				t.Fatalf("%s: a refused Put left an object: %v", c.name, err)
			}
			if _, err := b.Put(ctx, c.key, strings.NewReader("v2"), 2, c.opts); err != nil || calls != 2 {
				t.Fatalf("%s: Put with an open gate = %v after %d calls", c.name, err, calls)
			}
			expectContent(t, b, c.key, "v2")
		}
		if got := listKeys(t, b, ""); !slices.Equal(got, []string{"new/absent", "new/plain", "old"}) {
			t.Fatalf("after refused writes List = %q", got)
		}
		pp, ok := b.(objstore.PartPutter)
		if !ok {
			return
		}
		data := make([]byte, 6<<20)
		open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data[off : off+n])), nil
		}
		calls := 0
		_, err := pp.PutParts(ctx, "big", int64(len(data)), 5<<20, 2, open, objstore.PutOptions{Gate: func() (time.Time, error) { calls++; return time.Time{}, refuse }})
		if !errors.Is(err, refuse) || calls != 1 {
			t.Fatalf("PutParts with a refusing gate = %v after %d calls", err, calls)
		}
		if _, err := b.Stat(ctx, "big"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("a refused PutParts left an object: %v", err)
		}
	})

	t.Run("PutParts", func(t *testing.T) {
		b := newBucket(t)
		pp, ok := b.(objstore.PartPutter)
		if !ok {
			t.Skip("backend writes large objects in one stream")
		}
		data := make([]byte, 11<<20+123)
		rand.Read(data)
		open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return &strictReader{r: bytes.NewReader(data[off : off+n])}, nil
		}
		info, err := pp.PutParts(ctx, "big", int64(len(data)), 5<<20, 3, open, objstore.PutOptions{IfAbsent: true})
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != int64(len(data)) {
			t.Fatalf("PutParts size %d", info.Size)
		}
		rc, _, err := b.Get(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Fatal("PutParts stored other bytes")
		}
		if _, err := pp.PutParts(ctx, "big", int64(len(data)), 5<<20, 3, open, objstore.PutOptions{IfAbsent: true}); !errors.Is(err, objstore.ErrPrecondition) {
			t.Fatalf("second IfAbsent PutParts: %v", err)
		}
		failing := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			if off > 0 {
				return nil, errors.New("source went away")
			}
			return open(ctx, off, n)
		}
		if _, err := pp.PutParts(ctx, "broken", int64(len(data)), 5<<20, 1, failing, objstore.PutOptions{}); err == nil {
			t.Fatal("PutParts with a failing source succeeded")
		}
		if _, err := b.Stat(ctx, "broken"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("a failed PutParts left an object: %v", err)
		}
	})
}

// RunRevoke checks that a gated write held up between its gate and its
// landing lands nothing once another handle revoked the store's writes
// under way, and that the writer's next write works. newPair returns two
// handles on one empty location: the writer and the revoker. large says
// the backend's revocable writes are multipart uploads (S3): the held-up
// write is then one.
func RunRevoke(t *testing.T, newPair func(t *testing.T) (writer, revoker objstore.Bucket), large bool) {
	ctx := context.Background()
	w, r := newPair(t)
	held, release := make(chan struct{}), make(chan struct{})
	gate := func() (time.Time, error) {
		close(held)
		<-release // the writer is paused here, past its check
		return time.Now().Add(time.Minute), nil
	}
	data := []byte("held up")
	done := make(chan error, 1)
	go func() {
		var err error
		if pp, ok := w.(objstore.PartPutter); ok && large {
			big := make([]byte, 6<<20)
			open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(big[off : off+n])), nil
			}
			_, err = pp.PutParts(ctx, "held", int64(len(big)), 5<<20, 2, open, objstore.PutOptions{Gate: gate})
		} else {
			_, err = w.Put(ctx, "held", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{Gate: gate})
		}
		done <- err
	}()
	<-held
	n, err := objstore.Revoke(ctx, r)
	if err != nil || n != 1 {
		t.Fatalf("Revoke = %d, %v; want the one held-up write taken away", n, err)
	}
	close(release)
	if err := <-done; !errors.Is(err, objstore.ErrRevoked) {
		t.Fatalf("a write held up past a Revoke = %v, want ErrRevoked", err)
	}
	if _, err := r.Stat(ctx, "held"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a revoked write landed: %v", err)
	}
	// The writer goes on (a legitimate writer after a revoke it survived).
	ok := func() (time.Time, error) { return time.Now().Add(time.Minute), nil }
	if _, err := w.Put(ctx, "after", bytes.NewReader(data), int64(len(data)), objstore.PutOptions{Gate: ok}); err != nil {
		t.Fatalf("a write after the Revoke: %v", err)
	}
	if gd, isGD := w.(objstore.GateDeleter); isGD {
		if err := gd.DeleteGated(ctx, "after", ok); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Stat(ctx, "after"); !errors.Is(err, objstore.ErrNotExist) {
			t.Fatalf("a gated delete left the object: %v", err)
		}
	}
}

// Increment adds one to a decimal counter object by compare-and-swap,
// retrying on conflict. Tests use it to show that CAS is atomic.
func Increment(ctx context.Context, b objstore.Bucket, key string) error {
	for {
		data, info, err := objstore.ReadAll(ctx, b, key)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(data))
		if err != nil {
			return fmt.Errorf("counter %q: %w", data, err)
		}
		v := strconv.Itoa(n + 1)
		_, err = b.Put(ctx, key, strings.NewReader(v), int64(len(v)), objstore.PutOptions{IfMatch: info.ETag})
		if errors.Is(err, objstore.ErrPrecondition) {
			continue
		}
		return err
	}
}

func expectContent(t *testing.T, b objstore.Bucket, key, want string) {
	t.Helper()
	data, _, err := objstore.ReadAll(context.Background(), b, key)
	if err != nil || string(data) != want {
		t.Fatalf("%s = %q, %v; want %q", key, data, err, want)
	}
}

func listKeys(t *testing.T, b objstore.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for info, err := range b.List(context.Background(), prefix) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, info.Key)
	}
	return keys
}

// strictReader fails reads after Close, as a file does.
type strictReader struct {
	r      io.ReadSeeker
	closed bool
}

func (s *strictReader) Read(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("read after close")
	}
	return s.r.Read(p)
}

func (s *strictReader) Seek(off int64, whence int) (int64, error) { return s.r.Seek(off, whence) }
func (s *strictReader) Close() error                              { s.closed = true; return nil }

// FailAfter wraps b so that every Put after the first n fails, as when a
// region goes dark in the middle of a copy.
type FailAfter struct {
	objstore.Bucket
	N    atomic.Int64
	puts atomic.Int64
}

// NewFailAfter returns b failing after n Puts.
func NewFailAfter(b objstore.Bucket, n int64) *FailAfter {
	f := &FailAfter{Bucket: b}
	f.N.Store(n)
	return f
}

func (f *FailAfter) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	if f.puts.Add(1) > f.N.Load() {
		return objstore.Info{}, errors.New("injected: the region went dark")
	}
	return f.Bucket.Put(ctx, key, r, size, o)
}
