// Package local implements objstore.Bucket on a local folder, tandem's
// embedded default. Writes go to a temporary file in the target folder that is
// synced and renamed into place, so a reader never sees part of an object.
// Put-if-absent uses link(2), which fails atomically when the name exists;
// compare-and-swap holds an flock(2) on a lock file in the root, so both are
// atomic across processes, not only goroutines.
package local

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"tandem/internal/objstore"
)

// Reserved is the name prefix of tandem's own files in a folder (temporary
// files and the lock file). Listings never show them.
const Reserved = ".tandem-"

const lockName = Reserved + "lock"

// Bucket is a local folder.
//
// Every Put makes the file's data durable before the rename that makes it
// visible, so an object is whole even after a power loss. Plain Puts commit
// in batches (see commit): the files staged at one moment share one
// syncfs(2) and are then renamed into place, which costs far less than an
// fsync per small file. A writer that need not wait for that stages with
// PutDeferred and moves on. Conditional Puts sync their own file. A rename
// becomes durable when its directory is synced: at once for conditional writes, and at the next Sync
// for plain ones, so that a pass of many objects syncs each directory once.
type Bucket struct {
	root  string
	mu    sync.Mutex
	dirty map[string]bool // directories with renames not yet synced

	stageMu sync.Mutex
	stage   string // staging folder (see stageDir)

	casMu sync.Mutex // one compare-and-swap of this Bucket at a time (see lock)

	queueMu    sync.Mutex
	queue      []*staged // plain writes staged for the next batch
	committing bool      // a committer runs (see commit)

	realDirs sync.Map // folders below the root found to be no symbolic link
}

var (
	_ objstore.Bucket        = (*Bucket)(nil)
	_ objstore.ModTimeKeeper = (*Bucket)(nil)
	_ objstore.Syncer        = (*Bucket)(nil)
	_ objstore.Deferrer      = (*Bucket)(nil)
	_ objstore.Gated         = (*Bucket)(nil)
	_ objstore.GateDeleter   = (*Bucket)(nil)
	_ objstore.Revoker       = (*Bucket)(nil)
	_ objstore.Opener        = (*Bucket)(nil)
)

// Open returns the folder at root. The folder must exist unless create is
// true, in which case it is created with its parents.
func Open(root string, create bool) (*Bucket, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("folder %s: %w", root, err)
	}
	if create {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("create folder %s: %w", abs, err)
		}
	}
	st, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("folder %s does not exist: create it or correct the path: %w", abs, objstore.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("folder %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is a file, not a folder", abs)
	}
	return &Bucket{root: abs, dirty: map[string]bool{}}, nil
}

// Root is the absolute path of the folder.
func (b *Bucket) Root() string { return b.root }

func (b *Bucket) URL() string { return "file://" + b.root }

// Identity is the folder's URL with symbolic links resolved: two paths to
// one folder name one store.
func (b *Bucket) Identity() string {
	if real, err := filepath.EvalSymlinks(b.root); err == nil {
		return "file://" + real
	}
	return b.URL()
}

func (b *Bucket) KeepsModTime() bool { return true }

// GatesWrites: PutOptions.Gate is called just before the rename or link
// that makes a file visible.
func (b *Bucket) GatesWrites() bool { return true }

// LateBound: a gated write or delete becomes visible by a rename out of a
// staging folder that Revoke takes away, so one that succeeded did so
// before any revocation, however late it returned.
func (b *Bucket) LateBound() time.Duration { return math.MaxInt64 }

// path maps a key to a file path, refusing keys that cannot be a file below
// the root.
func (b *Bucket) path(key string) (string, error) {
	if err := objstore.CheckKey(key); err != nil {
		return "", err
	}
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return "", fmt.Errorf("key %q: %w: it cannot be stored as a file in a local folder", key, objstore.ErrBadKey)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, Reserved) || strings.ContainsRune(seg, 0) {
			return "", fmt.Errorf("key %q: %w: it cannot be stored as a file in a local folder", key, objstore.ErrBadKey)
		}
	}
	return filepath.Join(b.root, filepath.FromSlash(key)), nil
}

// writePath is path for a write or a delete: no folder on the way from the
// root to the key may be a symbolic link, which would take the write out
// of the root. Each folder is looked at once per Bucket.
func (b *Bucket) writePath(key string) (string, error) {
	p, err := b.path(key)
	if err != nil {
		return "", err
	}
	for i := strings.IndexByte(key, '/'); i >= 0; i = next(key, i) {
		dir := key[:i]
		if _, ok := b.realDirs.Load(dir); ok {
			continue
		}
		fi, err := os.Lstat(filepath.Join(b.root, filepath.FromSlash(dir)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return p, nil // made as a real folder when the write lands
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			return "", fmt.Errorf("key %q: %w: %s in %s is a symbolic link, and tandem does not write through one (it could lead out of the folder)", key, objstore.ErrBadKey, dir, b.URL())
		case !fi.IsDir():
			return "", fmt.Errorf("key %q: %w: %s in %s is a file, not a folder", key, objstore.ErrBadKey, dir, b.URL())
		}
		b.realDirs.Store(dir, true)
	}
	return p, nil
}

// next is the index of the next "/" in key after i, or -1.
func next(key string, i int) int {
	j := strings.IndexByte(key[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// ChangesInPlace: a file can be rewritten while tandem reads it.
func (b *Bucket) ChangesInPlace() bool { return true }

func info(key string, st *syscall.Stat_t) objstore.Info {
	mt := time.Unix(st.Mtim.Unix())
	return objstore.Info{
		Key:     key,
		Size:    st.Size,
		ModTime: mt,
		Changed: time.Unix(st.Ctim.Unix()),
		Mode:    fs.FileMode(st.Mode).Perm(),
		// A synthetic identity: a rename of a new file changes the inode,
		// an in-place write changes the time.
		ETag: etag(mt.UnixNano(), st.Size, st.Ino),
	}
}

// etag is "%x-%x-%x" of the three, without fmt (it runs for every file
// listed, opened and written).
func etag(mtime, size int64, ino uint64) string {
	b := make([]byte, 0, 40)
	b = strconv.AppendInt(b, mtime, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, size, 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, ino, 16)
	return string(b)
}

// fileInfo is info of an os.Stat or os.Lstat.
func fileInfo(key string, fi fs.FileInfo) objstore.Info {
	return info(key, fi.Sys().(*syscall.Stat_t))
}

// List walks the folder so that keys come out in byte order: within a
// directory a subdirectory "a" sorts as "a/", so "a-b" comes before "a/c".
func (b *Bucket) List(ctx context.Context, prefix string) iter.Seq2[objstore.Info, error] {
	return b.ListReporting(ctx, prefix, nil)
}

// ListReporting lists like List and calls skipped, when not nil, for each
// symbolic link, device, named pipe or socket it passes over: tandem copies
// regular files only, and never follows a link out of the folder.
func (b *Bucket) ListReporting(ctx context.Context, prefix string, skipped func(objstore.Unsupported)) iter.Seq2[objstore.Info, error] {
	return func(yield func(objstore.Info, error) bool) {
		// Start at the deepest directory the prefix names.
		dir := ""
		if i := strings.LastIndex(prefix, "/"); i >= 0 {
			dir = prefix[:i+1]
		}
		b.walk(ctx, dir, prefix, skipped, yield)
	}
}

// kind names a directory entry that is no regular file nor folder.
func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

type dirent struct {
	sortKey string
	name    string
	isDir   bool
}

// walk lists dir (a key prefix ending in "/" or empty) and returns false when
// the consumer stopped or an error was yielded.
func (b *Bucket) walk(ctx context.Context, dir, prefix string, skipped func(objstore.Unsupported), yield func(objstore.Info, error) bool) bool {
	if err := ctx.Err(); err != nil {
		yield(objstore.Info{}, err)
		return false
	}
	f, err := os.Open(filepath.Join(b.root, filepath.FromSlash(dir)))
	if errors.Is(err, fs.ErrNotExist) && dir != "" {
		return true
	}
	if err != nil {
		yield(objstore.Info{}, fmt.Errorf("list %s: %w", b.URL(), err))
		return false
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		yield(objstore.Info{}, fmt.Errorf("list %s%s: %w", b.URL(), "/"+dir, err))
		return false
	}
	list := make([]dirent, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, Reserved) {
			continue
		}
		d := dirent{sortKey: name, name: name, isDir: e.IsDir()}
		if d.isDir {
			d.sortKey += "/"
		}
		full := dir + d.sortKey
		// Keep entries that are under the prefix or lead to it.
		if !strings.HasPrefix(full, prefix) && !(d.isDir && strings.HasPrefix(prefix, full)) {
			continue
		}
		if !d.isDir && !e.Type().IsRegular() {
			if skipped != nil {
				skipped(objstore.Unsupported{Key: full, Kind: kind(e.Type())})
			}
			continue
		}
		list = append(list, d)
	}
	slices.SortFunc(list, func(a, b dirent) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, d := range list {
		if d.isDir {
			if !b.walk(ctx, dir+d.sortKey, prefix, skipped, yield) {
				return false
			}
			continue
		}
		fi, err := os.Lstat(filepath.Join(b.root, filepath.FromSlash(dir), d.name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we listed
		}
		if err != nil {
			yield(objstore.Info{}, fmt.Errorf("list %s: %w", b.URL(), err))
			return false
		}
		if !yield(fileInfo(dir+d.name, fi), nil) {
			return false
		}
	}
	return true
}

func (b *Bucket) Stat(ctx context.Context, key string) (objstore.Info, error) {
	p, err := b.path(key)
	if err != nil {
		return objstore.Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return objstore.Info{}, b.fsErr(key, err)
	}
	if fi.IsDir() {
		return objstore.Info{}, fmt.Errorf("object %s in %s: is a folder: %w", key, b.URL(), objstore.ErrNotExist)
	}
	return fileInfo(key, fi), nil
}

func (b *Bucket) fsErr(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		// A folder that went away (unmounted, removed) is not an empty
		// one: a lease or a record read from it would read as never
		// written.
		if _, serr := os.Stat(b.root); serr != nil {
			return fmt.Errorf("object %s: the folder %s is gone (unmounted or removed?): %v", key, b.root, serr)
		}
		return fmt.Errorf("object %s in %s: %w", key, b.URL(), objstore.ErrNotExist)
	}
	return fmt.Errorf("object %s in %s: %w", key, b.URL(), err)
}

func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, objstore.Info, error) {
	f, err := b.open(key)
	if err != nil {
		return nil, objstore.Info{}, err
	}
	st, err := f.stat()
	if err != nil || st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		f.Close()
		if err == nil {
			err = fs.ErrNotExist
		}
		return nil, objstore.Info{}, b.fsErr(key, err)
	}
	return f, info(key, st), nil
}

// Open opens key's file without looking at it (objstore.Opener). The file
// itself is the reader, so that io.Copy into another file can use
// copy_file_range, and a copy can look at it again by fstat
// (objstore.Restater).
func (b *Bucket) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	f, err := b.open(key)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// open opens key's file for reading, for Open and Get.
func (b *Bucket) open(key string) (*file, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	f, err := open(p, key, unix.O_RDONLY, 0)
	if err != nil {
		return nil, b.fsErr(key, err)
	}
	return f, nil
}

type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (s sectionFile) Close() error { return s.f.Close() }

// GetRange reads through an *os.File, whose Close waits for a read under
// way: a part's body may still be read by an HTTP transport's goroutine
// when its upload gives up and closes it. (Ranges are read for big files
// only, where os.File's cost per file does not show.)
func (b *Bucket) GetRange(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, b.fsErr(key, err)
	}
	fi, err := f.Stat()
	if err != nil || fi.IsDir() {
		f.Close()
		if err == nil {
			err = fs.ErrNotExist
		}
		return nil, b.fsErr(key, err)
	}
	if etag != "" && fileInfo(key, fi).ETag != etag {
		f.Close()
		return nil, fmt.Errorf("object %s in %s changed while being read: %w", key, b.URL(), objstore.ErrPrecondition)
	}
	return sectionFile{io.NewSectionReader(f, off, n), f}, nil
}

func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	if !opts.IfAbsent && opts.IfMatch == "" {
		// A plain Put is a deferred one that waits for its batch.
		return objstore.Await(func(done func(objstore.Info, error)) error {
			return b.PutDeferred(ctx, key, r, size, opts, done)
		})
	}
	s, err := b.stageWrite(ctx, key, r, size, opts, true)
	if err != nil {
		return objstore.Info{}, err
	}
	published := false
	defer func() {
		if !published {
			os.Remove(s.tmp)
		}
	}()
	if opts.IfAbsent {
		// link(2) fails with EEXIST if the name exists, atomically.
		if _, err := opts.Gate.Run(); err != nil {
			return objstore.Info{}, fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
		}
		if err := place(os.Link, s.tmp, s.final); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return objstore.Info{}, fmt.Errorf("put %s in %s: object exists: %w", key, b.URL(), objstore.ErrPrecondition)
			}
			return objstore.Info{}, fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
		}
		os.Remove(s.tmp)
	} else if err := b.compareAndPlace(ctx, key, opts, s.tmp, s.final); err != nil {
		return objstore.Info{}, err
	}
	published = true
	// A conditional write decides something (a lease, a manifest): make
	// it durable before saying it happened.
	if err := syncDir(filepath.Dir(s.final)); err != nil {
		return objstore.Info{}, fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	return info(key, s.st), nil
}

// PutDeferred stages a plain write and returns; a committer makes it
// durable and visible together with the others staged meanwhile, and then
// calls done (objstore.Deferrer). Conditional writes are not deferred:
// they are Put, and done is called before PutDeferred returns.
func (b *Bucket) PutDeferred(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions, done func(objstore.Info, error)) error {
	if opts.IfAbsent || opts.IfMatch != "" {
		return objstore.PutNow(ctx, b, key, r, size, opts, done)
	}
	s, err := b.stageWrite(ctx, key, r, size, opts, false)
	if err != nil {
		return err
	}
	s.ctx, s.gate, s.done = ctx, opts.Gate, done
	b.queueMu.Lock()
	b.queue = append(b.queue, s)
	start := !b.committing
	b.committing = true
	b.queueMu.Unlock()
	if start {
		go b.commit()
	}
	return nil
}

// staged is a write whose bytes are in a staged file, not yet in place.
type staged struct {
	key, tmp, final string
	st              *syscall.Stat_t // the inode and times survive the rename
	ctx             context.Context
	gate            objstore.Gate
	done            func(objstore.Info, error)
}

// stageWrite writes r into a new staged file for key, with its mode and
// modification time, synced when fsync is set, and closes it. Nothing is
// left behind when it fails. The destination folder is made when the
// rename or link finds it missing (place): most exist already, and a stat
// per file shows.
func (b *Bucket) stageWrite(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions, fsync bool) (*staged, error) {
	p, err := b.writePath(key)
	if err != nil {
		return nil, err
	}
	// Created with its mode: a chmod is needed only where the umask takes
	// bits away from it.
	perm := uint32(0o644)
	if opts.Mode != 0 {
		perm = uint32(opts.Mode.Perm())
	}
	tmp, err := b.createTemp(perm)
	if err != nil {
		return nil, fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	src := r
	if _, bare := r.(io.WriterTo); !bare {
		// A file (or a reader that writes itself out from one) is left
		// bare so that io.Copy can use copy_file_range.
		src = contextReader{ctx, r}
	}
	n, err := io.Copy(tmp, src)
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("source gave %d bytes, expected %d", n, size)
	}
	if err == nil && opts.Mode != 0 && perm&umask() != 0 {
		err = tmp.Chmod(opts.Mode.Perm())
	}
	if err == nil && !opts.ModTime.IsZero() {
		err = futimens(tmp, opts.ModTime)
	}
	if err == nil && fsync {
		err = tmp.Sync()
	}
	var st *syscall.Stat_t
	if err == nil {
		st, err = tmp.stat()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Lstat(tmp.name); errors.Is(serr, fs.ErrNotExist) {
			err = fmt.Errorf("its staging was revoked: another region took over while it was held up: %w", objstore.ErrRevoked)
		}
	}
	if err != nil {
		os.Remove(tmp.name)
		return nil, fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	return &staged{key: key, tmp: tmp.name, final: p, st: st}, nil
}

var tempSeq atomic.Uint64

// umask is the process's file mode creation mask, read once from
// /proc/self/status (umask(2) cannot read it without setting it, which
// would race with files created meanwhile); all bits when it cannot be
// read, so that every mode is set by chmod.
var umask = sync.OnceValue(func() uint32 {
	data, err := os.ReadFile("/proc/self/status")
	if err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "Umask:"); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					return uint32(m)
				}
			}
		}
	}
	return 0o777
})

// futimens sets an open file's access and modification times (utimensat
// with no path: no lookup of the name, as os.Chtimes does).
func futimens(f *file, t time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(f.fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return f.err("futimens", errno)
	}
	return nil
}

// stageShards is the number of subfolders a staging folder spreads its
// files over: with every write of a pass staged in one folder, creating a
// file waited on the folder's lock (a tenth of the time of a copy of small
// files, measured with perf).
const stageShards = 16

// countFiles counts the files below dir.
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// createExcl creates a new file in dir with a name no other file has.
func createExcl(dir string, perm uint32) (*file, error) {
	for {
		seq := tempSeq.Add(1)
		name := filepath.Join(dir, strconv.FormatUint(seq%stageShards, 10), "tmp-"+strconv.FormatUint(seq, 36)+"-"+strconv.FormatUint(uint64(rand.Uint32()), 36))
		// Readable by others once in place (a replica serves the region's
		// readers after a failover), writable by tandem's user only; the
		// staging folder (0700) keeps it private until then.
		f, err := open(name, "", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, perm)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
}

// rename is rename(2): os.Rename first stats the destination, a stat per
// file more.
func rename(from, to string) error {
	if err := unix.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// place moves (rename) or links a staged file into place. A staged file
// that is gone was revoked (its staging folder taken away by a Revoke): the
// write fails with ErrRevoked. A destination folder removed meanwhile (a
// delete emptied it) is made again.
func place(op func(from, to string) error, staged, final string) error {
	err := op(staged, final)
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, serr := os.Lstat(staged); errors.Is(serr, fs.ErrNotExist) {
		return fmt.Errorf("its staging was revoked: another region took over while it was held up: %w", objstore.ErrRevoked)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return err
	}
	return op(staged, final)
}

// commit publishes the staged writes in batches until none is left. One
// syncfs(2) makes a whole batch's data durable, however many files it
// holds, which costs far less than an fsync per small file; the batch is
// then renamed into place by a few goroutines (a rename from one folder to
// another takes a lock of the whole filesystem, so more would only wait)
// while the writes staged meanwhile form the next batch and sync.
func (b *Bucket) commit() {
	var renaming sync.WaitGroup
	defer renaming.Wait()
	for {
		b.queueMu.Lock()
		batch := b.queue
		b.queue = nil
		if len(batch) == 0 {
			b.committing = false
			b.queueMu.Unlock()
			return
		}
		b.queueMu.Unlock()
		err := b.syncfs()
		renaming.Wait() // one batch renames while the next syncs
		next := atomic.Int64{}
		for range min(len(batch), renamers) {
			renaming.Go(func() {
				for i := next.Add(1) - 1; i < int64(len(batch)); i = next.Add(1) - 1 {
					b.publish(batch[i], err)
				}
			})
		}
	}
}

// renamers is the number of goroutines that rename a batch into place.
const renamers = 3

// publish renames a synced staged file into place if its writer still
// wants it (its context) and may (its gate), and tells the writer.
func (b *Bucket) publish(s *staged, err error) {
	if err == nil {
		err = context.Cause(s.ctx)
	}
	if err == nil {
		_, err = s.gate.Run()
	}
	if err == nil {
		err = place(rename, s.tmp, s.final)
	}
	if err != nil {
		os.Remove(s.tmp)
		s.done(objstore.Info{}, fmt.Errorf("put %s in %s: %w", s.key, b.URL(), err))
		return
	}
	b.mu.Lock()
	b.dirty[filepath.Dir(s.final)] = true
	b.mu.Unlock()
	s.done(info(s.key, s.st), nil)
}

// syncfs writes back every dirty file of the folder's filesystem.
func (b *Bucket) syncfs() error {
	f, err := os.Open(b.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Sync makes every earlier Put durable by syncing the directories that
// received new names.
func (b *Bucket) Sync(ctx context.Context) error {
	b.mu.Lock()
	dirs := b.dirty
	b.dirty = map[string]bool{}
	b.mu.Unlock()
	for dir := range dirs {
		if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

// compareAndPlace renames the staged file to p if key still has the ETag
// opts.IfMatch, under the folder's lock. The lock is held for the compare,
// the gate and the rename only (the directory sync comes after), and the
// file was staged before the lock was taken: a holder paused past
// lockWait has its staging taken away when the lock is broken (see lock),
// so its rename cannot land when it resumes.
func (b *Bucket) compareAndPlace(ctx context.Context, key string, opts objstore.PutOptions, tmpName, p string) error {
	unlock, err := b.lock(ctx)
	if err != nil {
		return fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	defer unlock()
	cur, err := b.Stat(ctx, key)
	if errors.Is(err, objstore.ErrNotExist) || (err == nil && cur.ETag != opts.IfMatch) {
		return fmt.Errorf("put %s in %s: object changed: %w", key, b.URL(), objstore.ErrPrecondition)
	}
	if err != nil {
		return err
	}
	if _, err := opts.Gate.Run(); err != nil {
		return fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	if heldLocked != nil {
		heldLocked()
	}
	if err := place(rename, tmpName, p); err != nil {
		return fmt.Errorf("put %s in %s: %w", key, b.URL(), err)
	}
	return nil
}

// heldLocked, in tests, holds a compare-and-swap up just before its rename.
var heldLocked func()

// lockWait is how long a compare-and-swap waits for the folder's lock
// before it breaks it.
var lockWait = 10 * time.Second

// lock takes the folder's exclusive flock, which serializes compare-and-swap
// across processes (and casMu within this Bucket). A lock held longer than
// lockWait has a holder that is paused (SIGSTOP, a frozen machine) or
// stuck: it must not keep a takeover from writing the lease, so it is
// broken (see breakLock).
func (b *Bucket) lock(ctx context.Context) (func(), error) {
	b.casMu.Lock()
	path := filepath.Join(b.root, lockName)
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			b.casMu.Unlock()
			return nil, err
		}
		deadline := time.Now().Add(lockWait)
		var same bool
		for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if same = sameFile(f, path); err == nil || !same || !errors.Is(err, syscall.EWOULDBLOCK) || ctx.Err() != nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(wait)
		}
		switch {
		case err == nil && same:
			// Locked, and the file is still the folder's lock file.
		case !same:
			f.Close() // replaced by a breaker meanwhile: lock the new one
			continue
		case errors.Is(err, syscall.EWOULDBLOCK) && ctx.Err() == nil:
			f.Close()
			if f, err = b.breakLock(ctx, path); errors.Is(err, fs.ErrNotExist) {
				continue // another broke it at the same moment, taking this one's staging
			} else if err != nil {
				b.casMu.Unlock()
				return nil, fmt.Errorf("the folder's lock (%s) has been held by another process for %s (is a tandem paused?), and breaking it failed: %w: nothing was written; try again", lockName, lockWait, err)
			}
		default:
			f.Close()
			b.casMu.Unlock()
			return nil, cmp.Or(ctx.Err(), err)
		}
		return func() {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			f.Close()
			b.casMu.Unlock()
		}, nil
	}
}

// breakLock breaks the lock at path, whose holder has held it past
// lockWait, and returns the new lock file, locked. The new file is locked
// before it replaces the old one, so nobody else takes it first. Then
// every other writer's staging is taken away (Revoke): a holder of the old
// lock staged its file before it took the lock, so its rename either
// landed before this, or fails when it resumes; no compare-and-swap of the
// old lock can land after this one's compare.
func (b *Bucket) breakLock(ctx context.Context, path string) (*os.File, error) {
	tmp, err := b.createTemp(0o644) // in this Bucket's own staging, which stays
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(tmp.fd), tmp.name)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := b.Revoke(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sameFile reports whether f is the file path names.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (b *Bucket) Delete(ctx context.Context, key string) error {
	return b.DeleteGated(ctx, key, nil)
}

// DeleteGated deletes like a staged write: the object is moved into the
// staging folder after the gate passed, then removed, so a delete held up
// past a Revoke removes nothing.
func (b *Bucket) DeleteGated(ctx context.Context, key string, gate objstore.Gate) error {
	p, err := b.writePath(key)
	if err != nil {
		return err
	}
	if gate == nil {
		err = os.Remove(p)
	} else {
		err = b.deleteStaged(p, gate)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s in %s: %w", key, b.URL(), err)
	}
	// Remove folders left empty, up to the root, so that listings stay
	// short; a folder that is not empty stops the climb.
	for dir := filepath.Dir(p); dir != b.root && len(dir) > len(b.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func (b *Bucket) deleteStaged(p string, gate objstore.Gate) error {
	if _, err := os.Lstat(p); err != nil {
		return err
	}
	stage, err := b.stageDir(false)
	if err != nil {
		return err
	}
	if _, err := gate.Run(); err != nil {
		return err
	}
	doomed := filepath.Join(stage, "del-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(p, doomed); err != nil {
		if _, serr := os.Lstat(p); errors.Is(err, fs.ErrNotExist) && serr == nil {
			return fmt.Errorf("its staging was revoked: another region took over while it was held up: %w", objstore.ErrRevoked)
		}
		return err
	}
	return os.Remove(doomed)
}

// Staging: every write is first a file in the bucket's staging folder,
// .tandem-stage-HOST-PID-N/SHARD at the root, then renamed or linked into place.
// A Revoke renames other processes' staging folders away, so a write that
// passed its gate but was held up (a paused process) can no longer land.

const stagePrefix = Reserved + "stage-"

var stageSeq atomic.Int64

// stageDir is the bucket's staging folder, made when first needed; with
// renew (a Revoke took it away), a new one.
func (b *Bucket) stageDir(renew bool) (string, error) {
	b.stageMu.Lock()
	defer b.stageMu.Unlock()
	if b.stage != "" && !renew {
		return b.stage, nil
	}
	host, _ := os.Hostname()
	dir := filepath.Join(b.root, fmt.Sprintf("%s%s-%d-%d", stagePrefix, sanitize(host), os.Getpid(), stageSeq.Add(1)))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	made.Store(dir, true)
	for i := range stageShards {
		if err := os.Mkdir(filepath.Join(dir, strconv.Itoa(i)), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	b.stage = dir
	return dir, nil
}

// made holds the staging folders this process made (see Tidy).
var made sync.Map

// Tidy removes the staging folders this process made that hold nothing,
// so that a command leaves no folder of its own in a target when it ends
// (a `diff -r` of source and target finds nothing more). A folder that
// still holds a staged file is left for Sweep. A Put after Tidy makes a
// new staging folder, as after a Revoke.
func Tidy() {
	made.Range(func(k, _ any) bool {
		dir := k.(string)
		for i := range stageShards {
			if err := os.Remove(filepath.Join(dir, strconv.Itoa(i))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return true // holds a staged file
			}
		}
		if err := os.Remove(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			made.Delete(dir)
		}
		return true
	})
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

// createTemp makes a staged file; a staging folder revoked meanwhile is
// made again (a few times: a Revoke may take a new one while it is made).
func (b *Bucket) createTemp(perm uint32) (*file, error) {
	for attempt := 0; ; attempt++ {
		dir, err := b.stageDir(attempt > 0)
		var f *file
		if err == nil {
			f, err = createExcl(dir, perm)
		}
		if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
			continue // revoked, even while it was being made
		}
		return f, err
	}
}

// Revoke takes away every staging folder in the root but this Bucket's
// own (other processes', other handles', those of processes gone), so that
// none of their writes under way lands, and removes them with what they
// held. It returns how many staged files it took away.
func (b *Bucket) Revoke(ctx context.Context) (int, error) {
	ents, err := os.ReadDir(b.root)
	if err != nil {
		return 0, fmt.Errorf("revoke staged writes in %s: %w", b.URL(), err)
	}
	b.stageMu.Lock()
	own := filepath.Base(b.stage)
	b.stageMu.Unlock()
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, stagePrefix) || name == own {
			continue
		}
		gone := filepath.Join(b.root, Reserved+"revoked-"+strings.TrimPrefix(name, stagePrefix))
		if err := os.Rename(filepath.Join(b.root, name), gone); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return n, fmt.Errorf("revoke staged writes in %s: %w", b.URL(), err)
		}
		n += countFiles(gone)
		if err := os.RemoveAll(gone); err != nil {
			return n, fmt.Errorf("remove revoked writes in %s: %w", b.URL(), err)
		}
	}
	return n, syncDir(b.root)
}

// Sweep removes the staging folders that interrupted writers left, with
// what they held: those of a process on this host that is gone, those
// of a Revoke that did not finish, and those of other hosts not touched
// for an hour before before. It returns how many staged files it removed.
func (b *Bucket) Sweep(ctx context.Context, before time.Time) (int, error) {
	ents, err := os.ReadDir(b.root)
	if err != nil {
		return 0, fmt.Errorf("clean up after interrupted writers in %s: %w", b.URL(), err)
	}
	b.stageMu.Lock()
	own := filepath.Base(b.stage)
	b.stageMu.Unlock()
	host, _ := os.Hostname()
	// A pass starts with a sweep: folders found real before are looked at
	// again, in case one was replaced by a symbolic link since.
	b.realDirs.Clear()
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || name == own || !(strings.HasPrefix(name, stagePrefix) || strings.HasPrefix(name, Reserved+"revoked-")) {
			continue
		}
		if strings.HasPrefix(name, stagePrefix) && !leftOver(strings.TrimPrefix(name, stagePrefix), sanitize(host), e, before) {
			continue
		}
		dir := filepath.Join(b.root, name)
		n += countFiles(dir)
		if err := os.RemoveAll(dir); err != nil {
			return n, fmt.Errorf("clean up after interrupted writers in %s: %w", b.URL(), err)
		}
	}
	return n, nil
}

// leftOver reports whether a staging folder named HOST-PID-N belongs to a
// writer that is gone.
func leftOver(id, host string, e fs.DirEntry, before time.Time) bool {
	parts := strings.Split(id, "-")
	if len(parts) >= 3 && parts[0] == host {
		pid, err := strconv.Atoi(parts[1])
		return err == nil && pid != os.Getpid() && unix.Kill(pid, 0) == unix.ESRCH
	}
	fi, err := e.Info()
	return err == nil && fi.ModTime().Before(before.Add(-time.Hour))
}

// contextReader stops a long copy when the context is canceled.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
