// Package objstore defines the object-store interface tandem reads and writes
// through. A Bucket is rooted at a bucket and prefix (or a local folder); keys
// are relative to that root and use "/" as separator. Backends live in
// subpackages (local, s3) and are opened by package location.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"strings"
	"time"
)

// ErrNotExist is wrapped by every error about a missing object.
var ErrNotExist = fs.ErrNotExist

// ErrPrecondition is wrapped by a conditional Put that found the object absent
// when IfMatch was set, present when IfAbsent was set, or with another ETag.
var ErrPrecondition = errors.New("precondition failed")

// ErrRevoked is wrapped by a gated write the store refused because its
// time ran out before it landed, or its staging was revoked (Revoke):
// another region took over while the writer was held up.
var ErrRevoked = errors.New("the write was revoked before it landed")

// ErrBadKey is wrapped by a write or delete of a key that CheckKey refuses.
var ErrBadKey = errors.New("not a key tandem writes")

// CheckKey is the one rule of the keys tandem writes and deletes, on every
// backend, checked by the backends themselves: a relative path (no leading
// "/") none of whose segments is "." or ".." (a store that maps keys to
// files, as S3 servers over a file system do, would resolve them out of
// the bucket's root), without NUL or line breaks, at most 1024 bytes (S3's
// limit). Backends may refuse more (a folder: empty segments, a trailing
// "/").
func CheckKey(key string) error {
	bad := func(why string) error { return fmt.Errorf("key %q: %w: %s", key, ErrBadKey, why) }
	switch {
	case key == "":
		return bad("it is empty")
	case strings.HasPrefix(key, "/"):
		return bad("it starts with /")
	case len(key) > 1024:
		return bad("it is longer than 1024 bytes")
	case strings.ContainsAny(key, "\x00\n\r"):
		return bad("it holds a NUL or a line break")
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "." || seg == ".." {
			return bad("a segment is . or ..")
		}
	}
	return nil
}

// Info describes one object.
type Info struct {
	Key  string
	Size int64
	// ETag identifies one version of the object. It is opaque: an MD5 for a
	// simple S3 upload, a multipart hash for others, a synthetic identity for
	// local files. Equal ETags within one backend mean equal content.
	ETag    string
	ModTime time.Time
	// Changed is the object's status change time (a file's ctime), zero
	// for stores without one. A rewrite that restores the modification
	// time still changes it.
	Changed time.Time
	// Mode is the permission bits of a file, zero for stores without them.
	Mode fs.FileMode
}

// SameVersion reports whether two Infos of one key describe one version:
// equal sizes and ETags, and equal change times where both are known.
func SameVersion(a, b Info) bool {
	return a.Size == b.Size && a.ETag == b.ETag && (a.Changed.IsZero() || b.Changed.IsZero() || a.Changed.Equal(b.Changed))
}

// Restater is implemented by a reader from Get or Open that can tell what
// it reads now without looking the key up again (an open file: fstat(2)),
// which makes a copy's one-version check cheaper. A rewrite in place shows
// in its Info, and so does a new version renamed over it (the old file's
// change time moves when it loses its name).
type Restater interface {
	Restat() (Info, error)
}

// Opener is implemented by a store that can open an object for reading
// without looking at it, returning a Restater: a copy that knows the
// version it wants from a listing looks once, at the end (a folder's file:
// one fstat where Get takes two). A decorator must not promote it past its
// own Get.
type Opener interface {
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// InPlacer is implemented by buckets whose objects can be rewritten in
// place while they are read (files in a folder), so that what a reader got
// may mix two versions: a copy from one checks, after reading and before
// publishing, that the object did not change (package replicate). Objects
// of other stores (S3) are read whole from one version.
type InPlacer interface {
	ChangesInPlace() bool
}

// ChangesInPlace reports whether b's objects can change while read.
func ChangesInPlace(b Bucket) bool {
	i, ok := find[InPlacer](b)
	return ok && i.ChangesInPlace()
}

// PutOptions make a Put conditional or carry attributes.
type PutOptions struct {
	// IfAbsent makes the Put fail with ErrPrecondition when the key exists.
	IfAbsent bool
	// IfMatch makes the Put fail with ErrPrecondition unless the current
	// object has this ETag (compare-and-swap). A missing object fails too.
	IfMatch string
	// ModTime is kept as the object's modification time by backends that
	// implement ModTimeKeeper; others ignore it.
	ModTime time.Time
	// Mode is the permission bits of the new object on stores that have
	// them (a folder's file mode, whatever the umask); zero leaves the
	// store's default (0644 less the umask). Others ignore it.
	Mode fs.FileMode
	// Gate, when set, is called once, as late as the backend can: after the
	// bytes are stored where no reader sees them and just before the one
	// step that makes the object visible (a rename, the single PUT request,
	// CompleteMultipartUpload). An error from Gate abandons the write:
	// nothing becomes visible and Put returns an error wrapping it. Gate
	// returns the moment after which the write must not land; a backend
	// that can make the store refuse it then does (S3: a presigned request
	// that expires; folders: the staging a Revoke takes away), and fails
	// with ErrRevoked. Backends do not retry a gated request on their own.
	// Package fence sets it.
	Gate Gate
}

// Gate is a write's last check; see PutOptions.Gate.
type Gate func() (until time.Time, err error)

// Run calls the gate, if any.
func (g Gate) Run() (time.Time, error) {
	if g == nil {
		return time.Time{}, nil
	}
	return g()
}

// GateDeleter is implemented by buckets that gate a delete like a Put.
type GateDeleter interface {
	DeleteGated(ctx context.Context, key string, gate Gate) error
}

// Revoker is implemented by buckets that can take away the writes other
// processes have under way but not landed (a folder's staging, S3's
// multipart uploads), so that none of them lands afterwards. It returns
// how many it took away. A region that takes over revokes its stores
// before it acts (package member).
type Revoker interface {
	Revoke(ctx context.Context) (int, error)
}

// Gated is implemented by buckets that call PutOptions.Gate themselves.
// A bucket that does not is gated by its callers before Put.
type Gated interface {
	GatesWrites() bool
}

// StoreSlack bounds how long after its grant ends a gated write may still
// land in a store that enforces the grant's end itself (S3 counts a
// presigned request's expiry in whole seconds), with room for the store's
// clock to be a little behind.
const StoreSlack = 1250 * time.Millisecond

// Bounded is implemented by buckets that bound, themselves, when a gated
// write can become visible: one that succeeded and returned at most
// LateBound after its grant ran out became visible before any takeover
// took effect (the takeover waits that long, then revokes), so it is no
// stale write (see package fence).
type Bounded interface {
	LateBound() time.Duration
}

// LateBound is b's LateBound, or 0 for a bucket that bounds nothing.
func LateBound(b Bucket) time.Duration {
	for b != nil {
		if l, ok := b.(Bounded); ok {
			return l.LateBound()
		}
		u, ok := b.(Unwrapper)
		if !ok {
			return 0
		}
		b = u.Unwrap()
	}
	return 0
}

// GatesWrites reports whether b calls PutOptions.Gate.
func GatesWrites(b Bucket) bool {
	g, ok := b.(Gated)
	return ok && g.GatesWrites()
}

// Unwrapper is implemented by decorators, so that capabilities of the
// bucket they wrap (Syncer, PartPutter, Root) can be found.
type Unwrapper interface {
	Unwrap() Bucket
}

// Sweeper is a bucket that removes what interrupted writers left in it
// (staged files of processes that are gone, multipart uploads started
// before a time and never finished): a rerun after a crash cleans up.
type Sweeper interface {
	Sweep(ctx context.Context, before time.Time) (int, error)
}

// Sweep removes what interrupted writers left in b before the time given
// (the start of the pass that sweeps), looking through decorators, and
// returns how many it removed.
func Sweep(ctx context.Context, b Bucket, before time.Time) (int, error) {
	if s, ok := find[Sweeper](b); ok {
		return s.Sweep(ctx, before)
	}
	return 0, nil
}

// find returns the first of b and the buckets it decorates that is a T.
func find[T any](b Bucket) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		u, ok := b.(Unwrapper)
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	var zero T
	return zero, false
}

// Revoke revokes b's writes under way (see Revoker); a bucket that cannot
// revokes nothing.
func Revoke(ctx context.Context, b Bucket) (int, error) {
	if r, ok := find[Revoker](b); ok {
		return r.Revoke(ctx)
	}
	return 0, nil
}

// Unsupported is an entry of a store that is no object tandem can copy: a
// symbolic link, a device, a named pipe or a socket in a folder.
type Unsupported struct {
	Key  string `json:"key"`
	Kind string `json:"kind"`
}

// Reporter is implemented by buckets whose listings can pass over entries
// that are no objects (Unsupported): ListReporting lists like List and
// calls skipped for each entry it passes over.
type Reporter interface {
	ListReporting(ctx context.Context, prefix string, skipped func(Unsupported)) iter.Seq2[Info, error]
}

// ListReporting lists b, calling skipped for what the listing passes over
// when b can tell (see Reporter).
func ListReporting(ctx context.Context, b Bucket, prefix string, skipped func(Unsupported)) iter.Seq2[Info, error] {
	if r, ok := find[Reporter](b); ok {
		return r.ListReporting(ctx, prefix, skipped)
	}
	return b.List(ctx, prefix)
}

// Protector is implemented by buckets that can refuse object writes from
// every principal but tandem's while they hold a replica (an S3 bucket
// policy), and allow them again when it is promoted.
type Protector interface {
	Protect(ctx context.Context, principal string) error
	Unprotect(ctx context.Context) error
}

// Protect protects b (see Protector); a bucket that cannot protect itself
// gives an error saying so.
func Protect(ctx context.Context, b Bucket, principal string) error {
	p, ok := find[Protector](b)
	if !ok {
		return fmt.Errorf("%s cannot be protected by a policy (only S3 buckets can): remove read_only_principal", b.URL())
	}
	return p.Protect(ctx, principal)
}

// Unprotect removes what Protect added, if b can have it.
func Unprotect(ctx context.Context, b Bucket) error {
	if p, ok := find[Protector](b); ok {
		return p.Unprotect(ctx)
	}
	return nil
}

// Identifier is implemented by buckets that can name the store they are
// more exactly than their URL: a folder by its path with symbolic links
// resolved, an S3 bucket with its service's endpoint and its region.
type Identifier interface {
	Identity() string
}

// Identity names the store b is (see Identifier), looking through
// decorators; a bucket that cannot is named by its URL.
func Identity(b Bucket) string {
	if i, ok := find[Identifier](b); ok {
		return i.Identity()
	}
	return b.URL()
}

// Bucket is an object store rooted at a bucket and prefix.
//
// Implementations are safe for concurrent use. Writes are atomic: a reader
// sees the old object, the new one or no object, never part of one.
type Bucket interface {
	// URL names the bucket, without credentials.
	URL() string
	// List yields the objects whose key starts with prefix, in ascending
	// byte order of their keys, reading the store page by page. Iteration
	// stops at the first error, which is yielded.
	List(ctx context.Context, prefix string) iter.Seq2[Info, error]
	// Stat returns the object's Info, or an error wrapping ErrNotExist.
	Stat(ctx context.Context, key string) (Info, error)
	// Get opens the object for reading. The caller closes the reader. A
	// missing object gives an error wrapping ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// GetRange reads n bytes at off. When etag is not empty and the object
	// no longer has it, the error wraps ErrPrecondition.
	GetRange(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error)
	// Put stores size bytes from r (size -1 when unknown) under key and
	// returns the new object's Info; Info.ModTime may be zero when the store
	// does not report it on write.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Info, error)
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
}

// PartPutter is implemented by buckets that store one large object from
// parts written in parallel (S3 multipart upload). open returns the bytes of
// one part; it is called once per attempt of that part.
type PartPutter interface {
	PutParts(ctx context.Context, key string, size, partSize int64, concurrency int,
		open func(ctx context.Context, off, n int64) (io.ReadCloser, error), opts PutOptions) (Info, error)
}

// ModTimeKeeper is implemented by buckets that store PutOptions.ModTime as
// the object's modification time, so that a listing shows the source's time.
type ModTimeKeeper interface {
	KeepsModTime() bool
}

// KeepsModTime reports whether b stores PutOptions.ModTime.
func KeepsModTime(b Bucket) bool {
	k, ok := b.(ModTimeKeeper)
	return ok && k.KeepsModTime()
}

// Syncer is implemented by buckets that defer part of a write's durability
// (a folder's directory entry) until Sync. Sync makes every Put that
// returned before it durable. Objects are visible and whole at once either
// way; only durability across a power loss waits for Sync.
type Syncer interface {
	Sync(ctx context.Context) error
}

// Sync calls b.Sync if b defers durability.
func Sync(ctx context.Context, b Bucket) error {
	if s, ok := b.(Syncer); ok {
		return s.Sync(ctx)
	}
	return nil
}

// Deferrer is implemented by a store that publishes plain writes in
// batches (a folder: one filesystem sync for many files). PutDeferred
// reads r to its end and stores the bytes where no reader sees them, then
// returns; the object becomes visible later, and done is called once,
// perhaps from another goroutine, with what Put would have returned. An
// error from PutDeferred means nothing was stored and done is not called.
// done must not wait for another write to the same store: the store may
// call it from the goroutine that publishes the others.
// A decorator implements it itself or not at all: its own Put must stay
// in the path (see PutDeferred).
type Deferrer interface {
	PutDeferred(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions, done func(Info, error)) error
}

// PutDeferred is b's PutDeferred, or PutNow for a bucket that does not
// defer.
func PutDeferred(ctx context.Context, b Bucket, key string, r io.Reader, size int64, opts PutOptions, done func(Info, error)) error {
	if d, ok := b.(Deferrer); ok {
		return d.PutDeferred(ctx, key, r, size, opts, done)
	}
	return PutNow(ctx, b, key, r, size, opts, done)
}

// PutNow is a PutDeferred that publishes before it returns: b's Put, whose
// result goes to done when it succeeds.
func PutNow(ctx context.Context, b Bucket, key string, r io.Reader, size int64, opts PutOptions, done func(Info, error)) error {
	info, err := b.Put(ctx, key, r, size, opts)
	if err != nil {
		return err
	}
	done(info, nil)
	return nil
}

// Await starts a write that reports through done (a PutDeferred, a
// deferred copy) and waits for its result.
func Await(start func(done func(Info, error)) error) (Info, error) {
	type result struct {
		info Info
		err  error
	}
	res := make(chan result, 1)
	if err := start(func(info Info, err error) { res <- result{info, err} }); err != nil {
		return Info{}, err
	}
	got := <-res
	return got.info, got.err
}

// InFlighter is implemented by buckets that want more writes in flight than
// the caller's default, such as S3, where each write waits for a round
// trip.
type InFlighter interface {
	InFlight() int
}

// Writers is the number of writes to keep in flight to b: n, or more if b
// asks for more.
func Writers(b Bucket, n int) int {
	if f, ok := b.(InFlighter); ok {
		return max(n, f.InFlight())
	}
	return n
}

// ReadAll reads a whole object, for small objects such as state records.
func ReadAll(ctx context.Context, b Bucket, key string) ([]byte, Info, error) {
	rc, info, err := b.Get(ctx, key)
	if err != nil {
		return nil, Info{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, Info{}, err
	}
	return data, info, nil
}
