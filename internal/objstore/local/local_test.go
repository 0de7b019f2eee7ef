package local_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// TestLockHeldIsBroken: a compare-and-swap whose holder is paused inside
// the lock, about to rename, does not keep another writer (a takeover) out
// past lockWait; the paused holder's write does not land when it resumes.
func TestLockHeldIsBroken(t *testing.T) {
	defer func(w time.Duration) { *local.LockWait = w }(*local.LockWait)
	*local.LockWait = 200 * time.Millisecond
	root := t.TempDir()
	paused, other := openBucket(t, root), openBucket(t, root)
	ctx := context.Background()
	info, err := paused.Put(ctx, "lease.json", strings.NewReader("1"), 1, objstore.PutOptions{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	held, resume := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	local.HoldLocked(func() {
		if first.CompareAndSwap(false, true) {
			close(held)
			<-resume
		}
	})
	defer local.HoldLocked(nil)
	done := make(chan error, 1)
	go func() {
		_, err := paused.Put(ctx, "lease.json", strings.NewReader("p"), 1, objstore.PutOptions{IfMatch: info.ETag})
		done <- err
	}()
	<-held
	if _, err := other.Put(ctx, "lease.json", strings.NewReader("o"), 1, objstore.PutOptions{IfMatch: info.ETag}); err != nil {
		t.Fatalf("a write while a paused process holds the lock: %v", err)
	}
	close(resume)
	if err := <-done; !errors.Is(err, objstore.ErrRevoked) {
		t.Fatalf("the paused holder's write, resumed: %v, want ErrRevoked", err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "lease.json")); string(data) != "o" {
		t.Fatalf("lease.json = %q, want the other writer's", data)
	}
	// Both take the lock again as usual.
	cur, _ := other.Stat(ctx, "lease.json")
	next, err := paused.Put(ctx, "lease.json", strings.NewReader("2"), 1, objstore.PutOptions{IfMatch: cur.ETag})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Put(ctx, "lease.json", strings.NewReader("3"), 1, objstore.PutOptions{IfMatch: next.ETag}); err != nil {
		t.Fatal(err)
	}
}

func openBucket(t *testing.T, root string) *local.Bucket {
	b, err := local.Open(root, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLockBreaksLoseNoUpdate: writers on their own handles increment a
// counter by compare-and-swap while the lock is broken all the time (it
// is held "too long" after 1 ms): writes broken off fail, and none that
// succeeds is lost.
func TestLockBreaksLoseNoUpdate(t *testing.T) {
	defer func(w time.Duration) { *local.LockWait = w }(*local.LockWait)
	*local.LockWait = time.Millisecond
	root := t.TempDir()
	ctx := context.Background()
	if _, err := openBucket(t, root).Put(ctx, "n", strings.NewReader("0"), 1, objstore.PutOptions{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		b := openBucket(t, root)
		wg.Go(func() {
			for range 100 {
				info, err := b.Stat(ctx, "n")
				if err != nil {
					t.Error(err)
					return
				}
				data, err := os.ReadFile(filepath.Join(root, "n"))
				if err != nil {
					t.Error(err)
					return
				}
				n, _ := strconv.Atoi(string(data))
				next := strconv.Itoa(n + 1)
				// The ETag read may be newer than the data read: the
				// compare then fails (the object changed) or, if equal,
				// the count is still consistent with what it replaced.
				cur, _ := b.Stat(ctx, "n")
				if cur.ETag != info.ETag {
					continue
				}
				// A write broken off fails, whatever the step it was
				// at (staging taken away while it was made, too).
				if _, err := b.Put(ctx, "n", strings.NewReader(next), int64(len(next)), objstore.PutOptions{IfMatch: info.ETag}); err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	data, _ := os.ReadFile(filepath.Join(root, "n"))
	if got, _ := strconv.Atoi(string(data)); int64(got) != ok.Load() || got == 0 {
		t.Fatalf("counter %d after %d successful compare-and-swaps (%d failed)", got, ok.Load(), failed.Load())
	}
	t.Logf("%d successful, %d failed", ok.Load(), failed.Load())
}

// stagingFolders lists the staging folders at root.
func stagingFolders(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), local.Reserved+"stage-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestTidy: a command's staging folders are gone when it ends, unless a
// write still has a file staged in one; a Put after Tidy still lands.
func TestTidy(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := local.Open(root, false)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, r io.Reader) error {
		_, err := b.Put(ctx, key, r, -1, objstore.PutOptions{})
		return err
	}
	if err := put("a/b", strings.NewReader("ab")); err != nil {
		t.Fatal(err)
	}
	if got := stagingFolders(t, root); len(got) != 1 {
		t.Fatalf("staging folders after a Put: %v, want one", got)
	}
	local.Tidy()
	if got := stagingFolders(t, root); len(got) != 0 {
		t.Fatalf("staging folders after Tidy: %v, want none", got)
	}

	// A write held up with its file staged keeps its folder.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- put("c", pr) }()
	if _, err := pw.Write([]byte("first half ")); err != nil {
		t.Fatal(err)
	}
	local.Tidy()
	if got := stagingFolders(t, root); len(got) != 1 {
		t.Fatalf("staging folders after Tidy with a write under way: %v, want its one", got)
	}
	pw.Write([]byte("second half"))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the write under way failed after Tidy: %v", err)
	}
	local.Tidy()
	if got := stagingFolders(t, root); len(got) != 0 {
		t.Fatalf("staging folders after the write and Tidy: %v, want none", got)
	}
	for key, want := range map[string]string{"a/b": "ab", "c": "first half second half"} {
		data, err := os.ReadFile(filepath.Join(root, key))
		if err != nil || string(data) != want {
			t.Fatalf("%s holds %q, %v; want %q", key, data, err, want)
		}
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 2 {
		t.Fatalf("the root holds %d entries, want a and c only", len(ents))
	}
}

// TestPutDeferred: a deferred write becomes visible only when it is
// published, after PutDeferred returned; one whose writer gave up or whose
// staging was revoked before then never becomes visible and leaves
// nothing; many at once are each published once.
func TestPutDeferred(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := local.Open(root, false)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		info objstore.Info
		err  error
	}
	put := func(ctx context.Context, key, data string, gate objstore.Gate) chan result {
		t.Helper()
		res := make(chan result, 1)
		err := b.PutDeferred(ctx, key, strings.NewReader(data), int64(len(data)), objstore.PutOptions{Gate: gate},
			func(info objstore.Info, err error) { res <- result{info, err} })
		if err != nil {
			t.Fatalf("stage %s: %v", key, err)
		}
		return res
	}
	// held is a gate that waits until the test lets it through.
	held := func() (objstore.Gate, chan struct{}, chan struct{}) {
		at, release := make(chan struct{}), make(chan struct{})
		return func() (time.Time, error) { close(at); <-release; return time.Time{}, nil }, at, release
	}
	visible := func(key string) bool {
		_, err := b.Stat(ctx, key)
		if err != nil && !errors.Is(err, objstore.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}

	// Staged and held at its publish: not visible, not listed.
	gate, at, release := held()
	res := put(ctx, "a", "first", gate)
	<-at
	if visible("a") {
		t.Fatal("a deferred write is visible before it was published")
	}
	for info, err := range b.List(ctx, "") {
		t.Fatalf("listed before it was published: %v %v", info.Key, err)
	}
	close(release)
	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	st, err := b.Stat(ctx, "a")
	if err != nil || st.ETag != got.info.ETag || st.Size != 5 {
		t.Fatalf("published: %+v, %v; done said %+v", st, err, got.info)
	}

	// A writer that gave up before its write was published.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if got := <-put(gone, "b", "second", nil); !errors.Is(got.err, context.Canceled) {
		t.Fatalf("a write whose writer gave up: %v, want context.Canceled", got.err)
	}
	if visible("b") {
		t.Fatal("a write whose writer gave up became visible")
	}

	// Another process takes the staging away before the publish.
	gate, at, release = held()
	res = put(ctx, "c", "third", gate)
	<-at
	other, err := local.Open(root, false)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := other.Revoke(ctx); err != nil || n != 1 {
		t.Fatalf("revoke: %d staged files, %v; want 1", n, err)
	}
	close(release)
	if got := <-res; !errors.Is(got.err, objstore.ErrRevoked) {
		t.Fatalf("a write revoked before its publish: %v, want ErrRevoked", got.err)
	}
	if visible("c") {
		t.Fatal("a revoked write became visible")
	}

	// Many at once: each published once, with its own bytes.
	const n = 500
	var wg sync.WaitGroup
	var calls atomic.Int64
	for i := range n {
		wg.Add(1)
		key := "many/" + strconv.Itoa(i)
		if err := b.PutDeferred(ctx, key, strings.NewReader(key), int64(len(key)), objstore.PutOptions{},
			func(_ objstore.Info, err error) {
				if err != nil {
					t.Error(err)
				}
				calls.Add(1)
				wg.Done()
			}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != n {
		t.Fatalf("%d calls of done for %d writes", calls.Load(), n)
	}
	for i := range n {
		key := "many/" + strconv.Itoa(i)
		if data, err := os.ReadFile(filepath.Join(root, key)); err != nil || string(data) != key {
			t.Fatalf("%s holds %q, %v", key, data, err)
		}
	}
	local.Tidy()
	ents, _ := os.ReadDir(root)
	if len(ents) != 2 {
		t.Fatalf("the root holds %d entries, want a and many only: nothing staged is left", len(ents))
	}
}
