package s3_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"tandem/internal/objstore"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/objstore/storetest"
)

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	storetest.Run(t, func(t *testing.T) objstore.Bucket {
		b, err := s3store.Open(context.Background(), srv.NewBucket(t), "some/prefix", srv.Options())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestRevoke(t *testing.T) {
	srv := s3test.Shared(t)
	storetest.RunRevoke(t, func(t *testing.T) (objstore.Bucket, objstore.Bucket) {
		name := srv.NewBucket(t)
		w, err := s3store.Open(context.Background(), name, "p", srv.Options())
		if err != nil {
			t.Fatal(err)
		}
		r, err := s3store.Open(context.Background(), name, "p", srv.Options())
		if err != nil {
			t.Fatal(err)
		}
		return w, r
	}, true)
}

// TestGatedRequestExpires: a gated PUT or delete that reaches the server
// after its grant ended (plus the server's whole-second slack) is refused
// by the server.
func TestGatedRequestExpires(t *testing.T) {
	srv := s3test.Shared(t)
	b, err := s3store.Open(context.Background(), srv.NewBucket(t), "", srv.Options())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	grant := func() (time.Time, error) { return time.Now().Add(100 * time.Millisecond), nil }
	// Paused after it was signed, before it was sent: the server refuses.
	s3store.HoldBeforeSend(func() { time.Sleep(100*time.Millisecond + s3store.Slack + 100*time.Millisecond) })
	_, err = b.Put(ctx, "k", strings.NewReader("x"), 1, objstore.PutOptions{Gate: grant})
	s3store.HoldBeforeSend(nil)
	if !errors.Is(err, objstore.ErrRevoked) {
		t.Fatalf("a late PUT: %v, want ErrRevoked", err)
	}
	if _, err := b.Stat(ctx, "k"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("a late PUT landed: %v", err)
	}
	ok := func() (time.Time, error) { return time.Now().Add(time.Second), nil }
	if _, err := b.Put(ctx, "k", strings.NewReader("x"), 1, objstore.PutOptions{Gate: ok, IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", strings.NewReader("y"), 1, objstore.PutOptions{Gate: ok, IfAbsent: true}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Fatalf("a presigned If-None-Match PUT over an object: %v", err)
	}
	s3store.HoldBeforeSend(func() { time.Sleep(100*time.Millisecond + s3store.Slack + 100*time.Millisecond) })
	err = b.DeleteGated(ctx, "k", grant)
	s3store.HoldBeforeSend(nil)
	if !errors.Is(err, objstore.ErrRevoked) {
		t.Fatalf("a late delete: %v", err)
	}
	if _, err := b.Stat(ctx, "k"); err != nil {
		t.Fatalf("a late delete removed the object: %v", err)
	}
	// A gate that only checks (no end) is not refused however long the
	// request is held up.
	check := func() (time.Time, error) { return time.Time{}, nil }
	s3store.HoldBeforeSend(func() { time.Sleep(2*s3store.Slack + 500*time.Millisecond) })
	_, err = b.Put(ctx, "k2", strings.NewReader("x"), 1, objstore.PutOptions{Gate: check})
	s3store.HoldBeforeSend(nil)
	if err != nil {
		t.Fatalf("a held-up PUT behind a gate without an end: %v", err)
	}
}

// TestSweep: an upload another writer started and never finished (it is
// held up here, as a killed process's would be) is aborted by a sweep of
// everything started before the sweeping pass, and only then.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	w, _ := s3store.Open(ctx, name, "p", srv.Options())
	r, _ := s3store.Open(ctx, name, "p", srv.Options())
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := w.PutParts(ctx, "big", 10<<20, 5<<20, 1, func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			if off > 0 {
				close(started)
				<-release
			}
			return io.NopCloser(strings.NewReader(strings.Repeat("x", int(n)))), nil
		}, objstore.PutOptions{})
		done <- err
	}()
	<-started
	if n, err := r.Sweep(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("a sweep of what was started an hour ago: %d, %v", n, err)
	}
	if n, err := r.Sweep(ctx, time.Now().Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("a sweep of what was started before now: %d, %v", n, err)
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("the swept upload completed")
	}
	if _, err := r.Stat(ctx, "big"); !errors.Is(err, objstore.ErrNotExist) {
		t.Fatalf("big: %v", err)
	}
}
