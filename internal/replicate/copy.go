package replicate

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	// Mode is the permission bits of every file written into a folder;
	// zero keeps the source's, less the group and other write bits (a
	// replica only tandem's user changes), and 0644 for a source without
	// them (S3).
	Mode fs.FileMode

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
	return objstore.Await(func(done func(objstore.Info, error)) error {
		c.CopyLater(ctx, src, done)
		return nil
	})
}

// CopyLater copies like Copy, but into a target that publishes in batches
// (objstore.Deferrer) it returns once the bytes are staged: done is called
// once, perhaps from another goroutine and after CopyLater returned, with
// what Copy would have returned. A copy that fails is tried again in
// either case, before or after it was staged.
func (c *Copier) CopyLater(ctx context.Context, src objstore.Info, done func(objstore.Info, error)) {
	c.init()
	c.try(ctx, src, 1, 200*time.Millisecond, done)
}

// try makes attempt n of a copy; wait is the pause before the next one.
func (c *Copier) try(ctx context.Context, src objstore.Info, n int, wait time.Duration, done func(objstore.Info, error)) {
	err := c.copyOnce(ctx, src, func(info objstore.Info, err error) {
		if err != nil {
			// Not in the store's goroutine, which publishes others.
			go c.failed(ctx, src, n, wait, err, done)
			return
		}
		done(info, nil)
	})
	if err != nil {
		c.failed(ctx, src, n, wait, err, done)
	}
}

// failed tries a failed attempt n again after wait, or gives up.
func (c *Copier) failed(ctx context.Context, src objstore.Info, n int, wait time.Duration, err error, done func(objstore.Info, error)) {
	if n >= c.Retries || ctx.Err() != nil || errors.Is(err, objstore.ErrNotExist) || fence.Refused(err) && !heldUp(err) {
		done(objstore.Info{}, err)
		return
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		done(objstore.Info{}, ctx.Err())
		return
	}
	c.try(ctx, src, n+1, 2*wait, done)
}

// heldUp reports a write the store refused because it reached it after its
// grant (a slow store, a loaded machine): nothing of it landed, and the next
// attempt asks the guard again, which refuses it if the region lost its
// right meanwhile.
func heldUp(err error) bool {
	return errors.Is(err, objstore.ErrRevoked) && !errors.Is(err, fence.ErrFenced) && !errors.Is(err, fence.ErrLate)
}

// inPlaceSingleMax is the largest object from a store that changes in place
// sent to a store that takes parts in one request.
const inPlaceSingleMax = 8 << 20

// CheckMode refuses a configured file mode that would let others than
// tandem's user change a replica, or keep tandem from its own copies.
func CheckMode(m fs.FileMode) error {
	switch {
	case m&^0o777 != 0:
		return fmt.Errorf("%o is not a file mode (octal permission bits, such as 0640)", uint32(m))
	case m&0o022 != 0:
		return fmt.Errorf("%04o lets the group or others write: a replica is changed by tandem alone until it is promoted; use a mode without write bits for them, such as 0644 or 0640", uint32(m))
	case m&0o600 != 0o600:
		return fmt.Errorf("%04o keeps tandem's own user from reading or writing its copies; the owner needs read and write (0600 at least)", uint32(m))
	}
	return nil
}

// mode is the permission bits a copy of src gets.
func (c *Copier) mode(src objstore.Info) fs.FileMode {
	switch {
	case c.Mode != 0:
		return c.Mode
	case src.Mode != 0:
		return src.Mode &^ 0o022
	}
	return 0o644
}

// A copy is of one version of the source or it fails: the source's
// identity is taken when the copy starts and checked again after the last
// byte was read and before anything is published, through the open file
// where the source can (objstore.Restater), else by name (objstore.SameVersion:
// size, ETag, which for a file holds its modification time and inode, and
// its change time). A source that changed fails the copy with
// ErrPrecondition; the object is tried again (and, failing, waits in the
// retry queue). Only stores whose objects change in place need the second
// look: an S3 GET, and each ranged GET under If-Match, reads one version.
//
// A copy that is published when copyOnce returns nil is passed to done
// then; one staged in a store that publishes later, when it is published
// or fails.
func (c *Copier) copyOnce(ctx context.Context, src objstore.Info, done func(objstore.Info, error)) error {
	opts := objstore.PutOptions{ModTime: src.ModTime, Mode: c.mode(src)}
	inPlace := objstore.ChangesInPlace(c.Source)
	threshold := c.MultipartThreshold
	if inPlace {
		// A single PUT of a file is read into memory first, to check it
		// before the last byte goes out: keep those small.
		threshold = min(threshold, inPlaceSingleMax)
	}
	if pp, ok := c.Target.(objstore.PartPutter); ok && src.Size >= threshold {
		select {
		case c.big <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-c.big }()
		start := src
		if inPlace {
			var err error
			if start, err = c.Source.Stat(ctx, src.Key); err != nil {
				return fmt.Errorf("copy %s: %w", src.Key, err)
			}
			if err := sameAsListed(src, start); err != nil {
				return err
			}
			opts.Gate = func() (time.Time, error) { return time.Time{}, c.unchanged(ctx, start, nil) }
		}
		// Every part is read under the ETag the copy started with.
		open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			return c.Source.GetRange(ctx, src.Key, off, n, start.ETag)
		}
		info, err := pp.PutParts(ctx, src.Key, src.Size, c.PartSize, 4, open, opts)
		if err != nil && inPlace {
			// A file rewritten during a part's upload can fail it first
			// (the part's checksum no longer matches): say why.
			if cerr := c.unchanged(ctx, start, nil); cerr != nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("copy %s: %w", src.Key, err)
		}
		done(info, nil)
		return nil
	}
	rc, got, err := c.open(ctx, src, inPlace)
	if err != nil {
		return err
	}
	defer rc.Close()
	var body io.Reader = rc
	if inPlace {
		body = &checkAtEnd{r: rc, left: src.Size, check: func() error { return c.unchanged(ctx, got, rc) }}
	}
	err = objstore.PutDeferred(ctx, c.Target, src.Key, body, src.Size, opts, func(info objstore.Info, err error) {
		if err != nil {
			err = fmt.Errorf("copy %s: %w", src.Key, err)
		}
		done(info, err)
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", src.Key, err)
	}
	return nil
}

// open opens src for a copy of the version listed: a source that changes
// in place and opens without a look (objstore.Opener) is looked at once,
// after the copy read it (checkAtEnd), against the listing; others are
// looked at as they are opened (Get).
func (c *Copier) open(ctx context.Context, src objstore.Info, inPlace bool) (io.ReadCloser, objstore.Info, error) {
	if o, ok := c.Source.(objstore.Opener); ok && inPlace && src.ETag != "" {
		rc, err := o.Open(ctx, src.Key)
		if err != nil {
			return nil, objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
		}
		return rc, src, nil
	}
	rc, got, err := c.Source.Get(ctx, src.Key)
	if err != nil {
		return nil, objstore.Info{}, fmt.Errorf("copy %s: %w", src.Key, err)
	}
	if err := sameAsListed(src, got); err != nil {
		rc.Close()
		return nil, objstore.Info{}, err
	}
	return rc, got, nil
}

// sameAsListed fails a copy whose source is no longer what the listing
// (or a log) described: copy nothing now.
func sameAsListed(src, got objstore.Info) error {
	if got.Size != src.Size || (src.ETag != "" && got.ETag != src.ETag) {
		return fmt.Errorf("copy %s: the source has %d bytes, expected %d (changed since it was listed): %w", src.Key, got.Size, src.Size, objstore.ErrPrecondition)
	}
	return nil
}

// unchanged fails when the source object is no longer the version was:
// the reader it was read through tells, when it can (objstore.Restater),
// else the source does.
func (c *Copier) unchanged(ctx context.Context, was objstore.Info, read io.Reader) error {
	var cur objstore.Info
	var err error
	if rs, ok := read.(objstore.Restater); ok {
		cur, err = rs.Restat()
	} else {
		cur, err = c.Source.Stat(ctx, was.Key)
	}
	if err != nil {
		return fmt.Errorf("the source object is gone or unreadable after its copy was read: %w", err)
	}
	if !objstore.SameVersion(was, cur) {
		return fmt.Errorf("the source object changed while it was copied (its size, times or inode differ from when the copy started): nothing of it was published, it is copied again: %w", objstore.ErrPrecondition)
	}
	return nil
}

// checkAtEnd reads an object of a known size and runs check before it
// hands over the last bytes: a check that fails turns the read into an
// error, so a store that publishes on the last byte (an HTTP PUT) never
// gets it. WriteTo, which io.Copy prefers (a file's copy_file_range),
// checks after writing everything out: only for a writer whose bytes
// nobody sees before a later step, such as a folder's staged file.
type checkAtEnd struct {
	r     io.Reader
	left  int64
	check func() error
}

func (c *checkAtEnd) Read(p []byte) (int, error) {
	if c.left <= 0 {
		if err := c.check(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := io.ReadFull(c.r, p)
	c.left -= int64(n)
	if err == io.ErrUnexpectedEOF || (err == io.EOF && c.left > 0) {
		return 0, fmt.Errorf("the source object ended %d bytes early (it changed while it was copied): %w", c.left, objstore.ErrPrecondition)
	}
	if err != nil {
		return 0, err
	}
	if c.left == 0 {
		if err := c.check(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (c *checkAtEnd) WriteTo(w io.Writer) (int64, error) {
	wt, ok := c.r.(io.WriterTo)
	if !ok {
		return io.Copy(w, onlyReader{c})
	}
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		// Exactly the bytes expected (a file's copy_file_range then
		// stops without a call to find the end); a source that grew
		// meanwhile fails the check below (its size and times changed).
		n, err = rf.ReadFrom(io.LimitReader(c.r, c.left))
	} else {
		n, err = wt.WriteTo(w)
	}
	if err == nil && n != c.left {
		err = fmt.Errorf("the source object gave %d bytes, expected %d (it changed while it was copied): %w", n, c.left, objstore.ErrPrecondition)
	}
	if err == nil {
		err = c.check()
	}
	return n, err
}

// onlyReader hides a reader's WriteTo.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

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
