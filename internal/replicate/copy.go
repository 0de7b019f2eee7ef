package replicate

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
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

// canVerify tells whether hashing the source can prove that an unrecorded
// target object already holds its bytes: the sizes agree, the target's ETag
// is a content hash, and the source's is not (a local file, which costs no
// egress to read; S3 sources compare ETags directly in sameContent).
func canVerify(s, d objstore.Info) bool {
	return s.Size == d.Size && contentHash.MatchString(d.ETag) && !contentHash.MatchString(s.ETag)
}

// hashMatches reads the source and compares its MD5 with the target's ETag:
// a plain MD5 for a single upload, or the MD5 of the parts' MD5s followed by
// "-N" for a multipart upload made with p.PartSize.
func (p *Pair) hashMatches(ctx context.Context, src, dst objstore.Info) bool {
	parts := 0
	if i := strings.IndexByte(dst.ETag, '-'); i > 0 {
		parts, _ = strconv.Atoi(dst.ETag[i+1:])
	}
	partSize := src.Size
	if parts > 0 {
		partSize = p.PartSize
		for src.Size/partSize >= 10000 {
			partSize *= 2
		}
		if int64(parts) != (src.Size+partSize-1)/partSize {
			return false
		}
	}
	rc, got, err := p.Source.Get(ctx, src.Key)
	if err != nil || got.ETag != src.ETag {
		if err == nil {
			rc.Close()
		}
		return false
	}
	defer rc.Close()
	var sums []byte
	for {
		h := md5.New()
		n, err := io.CopyN(h, rc, max(partSize, 1))
		if err != nil && err != io.EOF {
			return false
		}
		if n > 0 || len(sums) == 0 {
			sums = h.Sum(sums)
		}
		if n < partSize || err == io.EOF {
			break
		}
	}
	if parts == 0 {
		return hex.EncodeToString(sums) == dst.ETag
	}
	whole := md5.Sum(sums)
	return fmt.Sprintf("%x-%d", whole, len(sums)/md5.Size) == dst.ETag
}
