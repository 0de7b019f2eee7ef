package local_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	"tandem/internal/objstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Bucket {
		b, err := local.Open(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestRevoke(t *testing.T) {
	storetest.RunRevoke(t, func(t *testing.T) (objstore.Bucket, objstore.Bucket) {
		dir := t.TempDir()
		w, err := local.Open(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		r, err := local.Open(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		return w, r
	}, false)
}

// TestCompareAndSwapAcrossProcesses runs increments from several processes
// (this test binary, re-executed) against one folder.
func TestCompareAndSwapAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("TANDEM_CAS_CHILD"); dir != "" {
		b, err := local.Open(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		for range 25 {
			if err := storetest.Increment(context.Background(), b, "counter"); err != nil {
				t.Fatal(err)
			}
		}
		// Every child also tries to claim the same key once.
		_, err = b.Put(context.Background(), "claim", strings.NewReader(strconv.Itoa(os.Getpid())), -1, objstore.PutOptions{IfAbsent: true})
		if err != nil && !errors.Is(err, objstore.ErrPrecondition) {
			t.Fatal(err)
		}
		return
	}
	dir := t.TempDir()
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(context.Background(), "counter", strings.NewReader("0"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	const children = 4
	var cmds []*exec.Cmd
	for range children {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCompareAndSwapAcrossProcesses$")
		cmd.Env = append(os.Environ(), "TANDEM_CAS_CHILD="+dir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	data, _, err := objstore.ReadAll(context.Background(), b, "counter")
	if err != nil || string(data) != strconv.Itoa(children*25) {
		t.Fatalf("counter = %q, %v; want %d", data, err, children*25)
	}
	if _, err := b.Stat(context.Background(), "claim"); err != nil {
		t.Fatal(err)
	}
}

func TestTempFilesHiddenAndModTimeKept(t *testing.T) {
	dir := t.TempDir()
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	if _, err := b.Put(context.Background(), "x/y", strings.NewReader("data"), 4, objstore.PutOptions{ModTime: mt}); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a crashed writer is not an object.
	if err := os.WriteFile(filepath.Join(dir, "x", local.Reserved+"tmp-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []objstore.Info
	for info, err := range b.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info)
	}
	if len(got) != 1 || got[0].Key != "x/y" || !got[0].ModTime.Equal(mt) {
		t.Fatalf("List = %+v", got)
	}
}

func TestBadKeysAndFolders(t *testing.T) {
	b, err := local.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "/abs", "a/../b", "dir/", "a//b", local.Reserved + "lock"} {
		_, err := b.Put(context.Background(), key, strings.NewReader("x"), 1, objstore.PutOptions{})
		if !errors.Is(err, objstore.ErrBadKey) {
			t.Errorf("Put(%q) = %v, want a key error", key, err)
		}
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := local.Open(missing, false); !errors.Is(err, objstore.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open(missing) = %v", err)
	}
}

// TestReplicaReadable: an object written into a folder is readable by the
// region's other users (0644 less the umask), writable by tandem's only.
func TestReplicaReadable(t *testing.T) {
	dir := t.TempDir()
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(context.Background(), "a/b.csv", strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "a/b.csv"))
	if err != nil {
		t.Fatal(err)
	}
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	if want := fs.FileMode(0o644 &^ umask); fi.Mode().Perm() != want {
		t.Fatalf("mode %v, want %v", fi.Mode().Perm(), want)
	}
}

// TestNoWriteThroughSymlinks: a folder below the root that is a symbolic
// link (here to a folder outside) is never written or deleted through.
func TestNoWriteThroughSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644)
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "real/sub"), 0o755)
	if err := os.Symlink(outside, filepath.Join(dir, "real/sub/deeper")); err != nil {
		t.Fatal(err)
	}
	b, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"link/x", "link/victim", "real/sub/deeper/x"} {
		if _, err := b.Put(context.Background(), key, strings.NewReader("x"), 1, objstore.PutOptions{}); !errors.Is(err, objstore.ErrBadKey) || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("Put(%q): %v", key, err)
		}
		if err := b.Delete(context.Background(), key); !errors.Is(err, objstore.ErrBadKey) {
			t.Errorf("Delete(%q): %v", key, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Fatalf("outside the root: %v", ents)
	}
	if data, _ := os.ReadFile(filepath.Join(outside, "victim")); string(data) != "keep" {
		t.Fatal("a file outside the root was changed")
	}
	if _, err := b.Put(context.Background(), "real/sub/ok", strings.NewReader("x"), 1, objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A compare-and-swap whose lock another process holds (paused) fails,
// saying so, instead of waiting for ever; once the lock is free it works.
func TestLockHeldFails(t *testing.T) {
	defer func(w time.Duration) { *local.LockWait = w }(*local.LockWait)
	*local.LockWait = 200 * time.Millisecond
	b, err := local.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	info, err := b.Put(context.Background(), "lease.json", strings.NewReader("1"), 1, objstore.PutOptions{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(b.Root(), local.LockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = b.Put(context.Background(), "lease.json", strings.NewReader("2"), 1, objstore.PutOptions{IfMatch: info.ETag})
	if err == nil || !strings.Contains(err.Error(), "has been held by another process") {
		t.Fatalf("a write under a held lock: %v", err)
	}
	f.Close() // the holder goes away
	if _, err := b.Put(context.Background(), "lease.json", strings.NewReader("2"), 1, objstore.PutOptions{IfMatch: info.ETag}); err != nil {
		t.Fatal(err)
	}
}
