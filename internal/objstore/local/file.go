package local

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"tandem/internal/objstore"
)

// file is an open regular file held as a bare descriptor: Get's readers and
// Put's staged files. os.NewFile costs an fcntl(2) and a finalizer per
// file, and os.File's reads and closes go through the runtime's poller
// bookkeeping: 5% of the CPU of a pass over small files (perf). A file has
// no finalizer: whoever opens one closes it, as every ReadCloser's user
// must.
//
// A copy from one file into another uses copy_file_range(2), as io.Copy
// between two *os.File does.
type file struct {
	fd   int
	name string // its path, for errors
	key  string // its object's key, for Restat
}

var (
	_ io.ReaderAt        = (*file)(nil)
	_ io.WriterTo        = (*file)(nil)
	_ io.ReaderFrom      = (*file)(nil)
	_ objstore.Restater  = (*file)(nil)
	_ io.ReadWriteCloser = (*file)(nil)
)

// open opens path as a file for key.
func open(path, key string, flag int, perm uint32) (*file, error) {
	fd, err := unix.Open(path, flag|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &file{fd: fd, name: path, key: key}, nil
}

func (f *file) err(op string, err error) error {
	if f.fd < 0 {
		err = os.ErrClosed
	}
	return &fs.PathError{Op: op, Path: f.name, Err: err}
}

func (f *file) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(f.fd, p) })
	switch {
	case err != nil:
		return 0, f.err("read", err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := ignoringEINTR(func() (int, error) { return unix.Pread(f.fd, p[done:], off+int64(done)) })
		if err != nil {
			return done, f.err("read", err)
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return done, nil
}

func (f *file) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := ignoringEINTR(func() (int, error) { return unix.Write(f.fd, p[done:]) })
		if err != nil {
			return done, f.err("write", err)
		}
		done += n
	}
	return done, nil
}

// WriteTo writes the rest of f to w: by copy_file_range into another file.
func (f *file) WriteTo(w io.Writer) (int64, error) {
	if dst, ok := w.(*file); ok {
		return dst.ReadFrom(f)
	}
	return io.Copy(w, struct{ io.Reader }{f})
}

// ReadFrom copies r into f: by copy_file_range from another file (or the
// first n bytes of one, through an io.LimitedReader), else through a
// buffer.
func (f *file) ReadFrom(r io.Reader) (int64, error) {
	limit := int64(-1)
	src := r
	if lr, ok := r.(*io.LimitedReader); ok {
		if lr.N <= 0 {
			return 0, nil
		}
		limit, src = lr.N, lr.R
	}
	from, ok := src.(*file)
	if !ok {
		return io.Copy(struct{ io.Writer }{f}, r)
	}
	var done int64
	for limit < 0 || done < limit {
		want := 1 << 30
		if limit >= 0 {
			want = int(min(limit-done, 1<<30))
		}
		n, err := ignoringEINTR(func() (int, error) { return unix.CopyFileRange(from.fd, nil, f.fd, nil, want, 0) })
		if err != nil && done == 0 && fallsBack(err) {
			// Not between these two files (another filesystem, an old
			// kernel): through a buffer.
			return io.Copy(struct{ io.Writer }{f}, r)
		}
		if err != nil {
			return spend(r, limit, done), f.err("copy_file_range", err)
		}
		if n == 0 {
			break
		}
		done += int64(n)
	}
	return spend(r, limit, done), nil
}

// spend takes n bytes off a LimitedReader's allowance, as reading through
// it would have, and returns n.
func spend(r io.Reader, limit, n int64) int64 {
	if lr, ok := r.(*io.LimitedReader); ok && limit >= 0 {
		lr.N = limit - n
	}
	return n
}

// fallsBack tells whether copy_file_range's error means "not between these
// files" rather than a failure of the copy.
func fallsBack(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM)
}

func (f *file) Close() error {
	if f.fd < 0 {
		return f.err("close", os.ErrClosed)
	}
	fd := f.fd
	f.fd = -1
	if err := unix.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

func (f *file) Sync() error {
	if err := unix.Fsync(f.fd); err != nil {
		return f.err("fsync", err)
	}
	return nil
}

func (f *file) Chmod(mode fs.FileMode) error {
	if err := unix.Fchmod(f.fd, uint32(mode.Perm())); err != nil {
		return f.err("chmod", err)
	}
	return nil
}

// stat is fstat(2).
func (f *file) stat() (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return nil, f.err("stat", err)
	}
	return &st, nil
}

// Restat tells what the open file is now (objstore.Restater).
func (f *file) Restat() (objstore.Info, error) {
	st, err := f.stat()
	if err != nil {
		return objstore.Info{}, err
	}
	return info(f.key, st), nil
}

func ignoringEINTR(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}
