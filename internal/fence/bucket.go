package fence

import (
	"context"
	"io"
	"sync"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/state"
)

// Bucket returns b with every write and delete gated by g: a Put becomes
// visible only if g allows it at the backend's last moment (see
// objstore.PutOptions.Gate), a Delete only if g allows it just before, and
// a write that returns later than its grant plus a grace fails with
// ErrLate. Reads pass through. A nil g returns b.
func (g *Guard) Bucket(b objstore.Bucket) objstore.Bucket {
	if g == nil {
		return b
	}
	fb := &bucket{Bucket: b, g: g}
	if pp, ok := b.(objstore.PartPutter); ok {
		return &partBucket{bucket: fb, pp: pp}
	}
	return fb
}

// Store returns s with its writes gated by g.
func (g *Guard) Store(s state.Store) state.Store {
	return state.Store{Bucket: g.Bucket(s.Bucket), Prefix: s.Prefix}
}

type bucket struct {
	objstore.Bucket
	g *Guard
}

var (
	_ objstore.Bucket        = (*bucket)(nil)
	_ objstore.Syncer        = (*bucket)(nil)
	_ objstore.ModTimeKeeper = (*bucket)(nil)
	_ objstore.InFlighter    = (*bucket)(nil)
	_ objstore.Gated         = (*bucket)(nil)
	_ objstore.Unwrapper     = (*bucket)(nil)
	_ objstore.Revoker       = (*bucket)(nil)
	_ objstore.Deferrer      = (*bucket)(nil)
	_ objstore.PartPutter    = (*partBucket)(nil)
)

func (b *bucket) Unwrap() objstore.Bucket { return b.Bucket }
func (b *bucket) GatesWrites() bool       { return true }
func (b *bucket) KeepsModTime() bool      { return objstore.KeepsModTime(b.Bucket) }
func (b *bucket) InFlight() int           { return objstore.Writers(b.Bucket, 0) }
func (b *bucket) Sync(ctx context.Context) error {
	return objstore.Sync(ctx, b.Bucket)
}

// gated adds the guard's gate to opts, chaining a gate the caller set. The
// returned func reports when the grant used at the gate runs out.
func (b *bucket) gated(ctx context.Context, opts objstore.PutOptions) (objstore.PutOptions, func() time.Time, error) {
	var (
		mu    sync.Mutex
		until time.Time
	)
	inner := opts.Gate
	opts.Gate = func() (time.Time, error) {
		if _, err := inner.Run(); err != nil {
			return time.Time{}, err
		}
		u, err := b.g.allow(ctx)
		mu.Lock()
		until = u
		mu.Unlock()
		return u, err
	}
	if !objstore.GatesWrites(b.Bucket) {
		// The backend cannot gate at its last moment: gate now.
		if _, err := opts.Gate(); err != nil {
			return opts, nil, err
		}
		opts.Gate = nil
	}
	return opts, func() time.Time { mu.Lock(); defer mu.Unlock(); return until }, nil
}

func (b *bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	opts, until, err := b.gated(ctx, opts)
	if err != nil {
		return objstore.Info{}, err
	}
	info, err := b.Bucket.Put(ctx, key, r, size, opts)
	if err != nil {
		return info, err
	}
	return info, b.g.landed(b.URL()+"/"+key, until(), objstore.LateBound(b.Bucket))
}

// PutDeferred gates like Put: the gate runs when the write is published,
// and the late check when it has been.
func (b *bucket) PutDeferred(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions, done func(objstore.Info, error)) error {
	opts, until, err := b.gated(ctx, opts)
	if err != nil {
		return err
	}
	return objstore.PutDeferred(ctx, b.Bucket, key, r, size, opts, func(info objstore.Info, err error) {
		if err == nil {
			err = b.g.landed(b.URL()+"/"+key, until(), objstore.LateBound(b.Bucket))
		}
		done(info, err)
	})
}

func (b *bucket) Delete(ctx context.Context, key string) error {
	var until time.Time
	gate := func() (time.Time, error) {
		u, err := b.g.allow(ctx)
		until = u
		return u, err
	}
	var err error
	if gd, ok := b.Bucket.(objstore.GateDeleter); ok {
		err = gd.DeleteGated(ctx, key, gate)
	} else if _, err = gate(); err == nil {
		err = b.Bucket.Delete(ctx, key)
	}
	if err != nil {
		return err
	}
	return b.g.landed("the delete of "+b.URL()+"/"+key, until, objstore.LateBound(b.Bucket))
}

// Revoke passes through: the revoker of a store is not its writer.
func (b *bucket) Revoke(ctx context.Context) (int, error) { return objstore.Revoke(ctx, b.Bucket) }

type partBucket struct {
	*bucket
	pp objstore.PartPutter
}

func (b *partBucket) PutParts(ctx context.Context, key string, size, partSize int64, concurrency int,
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error), opts objstore.PutOptions) (objstore.Info, error) {
	opts, until, err := b.gated(ctx, opts)
	if err != nil {
		return objstore.Info{}, err
	}
	info, err := b.pp.PutParts(ctx, key, size, partSize, concurrency, open, opts)
	if err != nil {
		return info, err
	}
	return info, b.g.landed(b.URL()+"/"+key, until(), objstore.LateBound(b.Bucket))
}
