package objstore

import (
	"context"
	"fmt"
	"io"
	"iter"
)

// Empty is a bucket with no objects that takes no writes: how a dry run
// sees a destination that does not exist yet (a real run creates it).
func Empty(url string) Bucket { return empty(url) }

type empty string

func (e empty) URL() string { return string(e) }

func (e empty) List(ctx context.Context, prefix string) iter.Seq2[Info, error] {
	return func(func(Info, error) bool) {}
}

func (e empty) Stat(ctx context.Context, key string) (Info, error) {
	return Info{}, fmt.Errorf("object %s in %s: %w", key, e, ErrNotExist)
}

func (e empty) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	_, err := e.Stat(ctx, key)
	return nil, Info{}, err
}

func (e empty) GetRange(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	_, err := e.Stat(ctx, key)
	return nil, err
}

func (e empty) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Info, error) {
	return Info{}, fmt.Errorf("put %s in %s: it does not exist yet, and a dry run writes nothing", key, e)
}

func (e empty) Delete(ctx context.Context, key string) error { return nil }
