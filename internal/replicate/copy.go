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
	"sync"
	"time"

	"tandem/internal/fence"
	"tandem/internal/objstore"
)

// Copier copies single objects from one bucket to another: each object
// reaches the target in one atomic step (a renamed temporary file, a single
// PUT, or a completed multipart upload), with retries. Bucket replication
// and table sync share it.
type Copier struct {
	Source, Target objstore.Bucket
	// MultipartThreshold is the size from which an object goes up in parts
	// when the target supports it (default 64 MiB); PartSize is the part
	// size (default 16 MiB).
	MultipartThreshold int64
	PartSize           int64
	// Retries is the number of attempts per object (default 3).
	Retries int

	once sync.Once
	big  chan struct{} // large objects in flight
}

// Defaults of Copier and Pair.
const (
	DefaultMultipartThreshold = 64 << 20
	DefaultPartSize           = 16 << 20
	DefaultRetries            = 3
)

func (c *Copier) init() {
	c.once.Do(func() {
		if c.MultipartThreshold <= 0 {
			c.MultipartThreshold = DefaultMultipartThreshold
		}
		if c.PartSize <= 0 {
			c.PartSize = DefaultPartSize
		}
		if c.Retries <= 0 {
			c.Retries = DefaultRetries
		}
		c.big = make(chan struct{}, 4)
	})
}

// Copy copies src (as a listing or a log describes it: key, size, and ETag
// when known), trying up to Retries times with a short backoff, and returns
// the target's Info of the new object. An object missing from the source
// is not retried.
func (c *Copier) Copy(ctx context.Context, src objstore.Info) (objstore.Info, error) {
	c.init()
	var err error
	wait := 200 * time.Millisecond
	for attempt := 1; attempt <= c.Retries; attempt++ {
		var info objstore.Info
		info, err = c.copyOnce(ctx, src)
		if err == nil {
			return info, nil
		}
		if ctx.Err() != nil || errors.Is(err, objstore.ErrNotExist) || fence.Refused(err) {
			return objstore.Info{}, err
		}
		if attempt < c.Retries {
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

func (c *Copier) copyOnce(ctx context.Context, src objstore.Info) (objstore.Info, error) {
	opts := objstore.PutOptions{ModTime: src.ModTime}
	if pp, ok := c.Target.(objstore.PartPutter); ok && src.Size >= c.MultipartThreshold {
		select {
		case c.big <- struct{}{}:
		case <-ctx.Done():
			return objstore.Info{}, ctx.Err()
		}
		defer func() { <-c.big }()
		// Every part is read with the known ETag, so a source that
		// changes mid-copy fails the copy instead of mixing versions.
		open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return c.Source.GetRange(ctx, src.Key, off, n, src.ETag)
		}
		info, err := pp.PutParts(ctx, src.Key, src.Size, c.PartSize, 4, open, opts)
		if err != nil {
			return objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
		}
		return info, nil
	}
	rc, got, err := c.Source.Get(ctx, src.Key)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
	}
	defer rc.Close()
	if got.Size != src.Size || (src.ETag != "" && got.ETag != src.ETag) {
		// Changed since it was listed (or not what the log says): copy
		// nothing now.
		return objstore.Info{}, fmt.Errorf("copy %s: the source has %d bytes, expected %d (changed since it was listed)", src.Key, got.Size, src.Size)
	}
	info, err := c.Target.Put(ctx, src.Key, rc, src.Size, opts)
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
