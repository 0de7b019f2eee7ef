package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"tandem/internal/objstore"
)

// copyWithRetry copies one object, trying up to p.Retries times with a short
// backoff. It returns the target's Info of the new object.
func (p *Pair) copyWithRetry(ctx context.Context, src objstore.Info, big chan struct{}) (objstore.Info, error) {
	var err error
	wait := 200 * time.Millisecond
	for attempt := 1; attempt <= p.Retries; attempt++ {
		var info objstore.Info
		info, err = p.copyObject(ctx, src, big)
		if err == nil {
			return info, nil
		}
		if ctx.Err() != nil || errors.Is(err, objstore.ErrNotExist) {
			// Gone from the source since the listing: the next pass
			// sees the deletion.
			return objstore.Info{}, err
		}
		if attempt < p.Retries {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return objstore.Info{}, ctx.Err()
			}
			wait *= 2
		}
	}
	return objstore.Info{}, err
}

// copyObject copies the version of src the listing showed. The target gets
// the object in one atomic step: a renamed temporary file, a single PUT, or a
// completed multipart upload.
func (p *Pair) copyObject(ctx context.Context, src objstore.Info, big chan struct{}) (objstore.Info, error) {
	opts := objstore.PutOptions{ModTime: src.ModTime}
	if pp, ok := p.Target.(objstore.PartPutter); ok && src.Size >= p.MultipartThreshold {
		select {
		case big <- struct{}{}:
		case <-ctx.Done():
			return objstore.Info{}, ctx.Err()
		}
		defer func() { <-big }()
		// Every part is read with the listed ETag, so a source that
		// changes mid-copy fails the copy instead of mixing versions.
		open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return p.Source.GetRange(ctx, src.Key, off, n, src.ETag)
		}
		info, err := pp.PutParts(ctx, src.Key, src.Size, p.PartSize, 4, open, opts)
		if err != nil {
			return objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
		}
		return info, nil
	}
	rc, got, err := p.Source.Get(ctx, src.Key)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
	}
	defer rc.Close()
	if got.Size != src.Size || (got.ETag != "" && got.ETag != src.ETag) {
		// Changed since the listing: copy nothing now, the next pass
		// lists the new version.
		return objstore.Info{}, fmt.Errorf("copy %s: changed in the source during the pass", src.Key)
	}
	info, err := p.Target.Put(ctx, src.Key, rc, src.Size, opts)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
	}
	return info, nil
}
