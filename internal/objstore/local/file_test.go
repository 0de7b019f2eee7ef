package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"tandem/internal/objstore"
)

func openT(t *testing.T, path string, flag int) *file {
	t.Helper()
	f, err := open(path, filepath.Base(path), flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A copy between two files takes exactly what a LimitedReader allows (and
// uses it up, as a read through it would), or the rest of the source.
func TestFileCopyBetweenFiles(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src := openT(t, filepath.Join(dir, "src"), unix.O_RDONLY)
	dst := openT(t, filepath.Join(dir, "dst"), unix.O_RDWR|unix.O_CREAT)
	lr := &io.LimitedReader{R: src, N: 4096}
	if n, err := io.Copy(dst, lr); err != nil || n != 4096 || lr.N != 0 {
		t.Fatalf("limited copy: %d bytes, %v, %d left", n, err, lr.N)
	}
	if n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: -1}); err != nil || n != 0 {
		t.Fatalf("a copy through a used-up LimitedReader: %d bytes, %v", n, err)
	}
	if n, err := io.Copy(dst, src); err != nil || n != int64(len(data)-4096) {
		t.Fatalf("copy of the rest: %d bytes, %v", n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "dst")); !bytes.Equal(got, data) {
		t.Fatalf("the copy holds %d bytes, not the source's %d", len(got), len(data))
	}
	buf := make([]byte, 20)
	if n, err := dst.ReadAt(buf, int64(len(data)-10)); n != 10 || err != io.EOF || string(buf[:n]) != "0123456789" {
		t.Fatalf("read at the end: %d %q %v", n, buf[:n], err)
	}
}

// Where copy_file_range cannot copy (from a pipe here), the copy goes
// through a buffer, whole.
func TestFileCopyFallsBack(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := &file{fd: p[0], name: "pipe"}, &file{fd: p[1], name: "pipe"}
	defer r.Close()
	go func() {
		w.Write([]byte(strings.Repeat("x", 5000)))
		w.Close()
	}()
	dst := openT(t, filepath.Join(t.TempDir(), "dst"), unix.O_RDWR|unix.O_CREAT)
	lr := &io.LimitedReader{R: r, N: 3000}
	if n, err := dst.ReadFrom(lr); err != nil || n != 3000 || lr.N != 0 {
		t.Fatalf("copy from a pipe: %d bytes, %v, %d left", n, err, lr.N)
	}
	if n, err := dst.ReadFrom(r); err != nil || n != 2000 {
		t.Fatalf("copy of the rest of a pipe: %d bytes, %v", n, err)
	}
}

// A file closed twice says so, and its descriptor is not closed again
// (it may be another file's by then).
func TestFileClosedOnce(t *testing.T) {
	f, err := open(filepath.Join(t.TempDir(), "f"), "f", unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// Files have no finalizer: every Get and Put, failed ones too, closes what
// it opened.
func TestNoDescriptorLeft(t *testing.T) {
	ctx := context.Background()
	b, err := Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	before := openFiles(t)
	for i := range 50 {
		key := "d/o" + strings.Repeat("x", i%3) + string(rune('a'+i%26))
		if _, err := b.Put(ctx, key, strings.NewReader("data"), 4, objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		rc, _, err := b.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		// A Put whose reader gives too few bytes fails; a Get of a folder
		// fails.
		if _, err := b.Put(ctx, key, strings.NewReader("da"), 4, objstore.PutOptions{}); err == nil {
			t.Fatal("a short Put succeeded")
		}
		if _, _, err := b.Get(ctx, "d"); err == nil {
			t.Fatal("a Get of a folder succeeded")
		}
	}
	if after := openFiles(t); after != before {
		t.Fatalf("%d files open before, %d after", before, after)
	}
}

func openFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestETagFormat(t *testing.T) {
	for _, c := range []struct {
		mtime, size int64
		ino         uint64
	}{{0, 0, 0}, {1_700_000_000_123_456_789, 4096, 1 << 40}, {-5, 1, ^uint64(0)}} {
		if got, want := etag(c.mtime, c.size, c.ino), fmt.Sprintf("%x-%x-%x", c.mtime, c.size, c.ino); got != want {
			t.Errorf("etag(%d, %d, %d) = %s, want %s (the identity records already hold)", c.mtime, c.size, c.ino, got, want)
		}
	}
}
