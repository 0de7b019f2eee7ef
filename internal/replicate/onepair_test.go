package replicate

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/state"
)

// An index is bound to its pair: a pass of another pair (a shared state
// folder, a pair pointed at a new target) refuses it and deletes nothing.
func TestIndexBelongsToItsPair(t *testing.T) {
	src, dst, other := localBucket(t), localBucket(t), localBucket(t)
	put(t, src, map[string]string{"a": "1", "b": "2"})
	st := state.Store{Bucket: localBucket(t)}.Sub("lake")
	p := &Pair{Name: "lake", Source: src, Target: dst, Delete: true, State: &st}
	run(t, p)

	// The other target holds objects with the keys tandem recorded; the
	// source lost one of them.
	put(t, other, map[string]string{"a": "theirs", "b": "theirs too"})
	if err := src.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	repointed := &Pair{Name: "lake", Source: src, Target: other, Delete: true, State: &st}
	_, err := repointed.RunOnce(ctx)
	if err == nil || !strings.Contains(err.Error(), "-> "+dst.URL()+", not to") || !strings.Contains(err.Error(), "remove "+st.URL("index/")) {
		t.Fatalf("a pass into another target with the first pair's index: %v", err)
	}
	expectTree(t, other, map[string]string{"a": "theirs", "b": "theirs too"})

	// Another source into the same target, same state folder: refused.
	src2 := localBucket(t)
	if _, err := (&Pair{Name: "lake", Source: src2, Target: dst, Delete: true, State: &st}).RunOnce(ctx); err == nil {
		t.Fatal("a pass of another source with the first pair's index succeeded")
	}
	expectTree(t, dst, map[string]string{"a": "1", "b": "2"})

	// The pair itself goes on; a target reached through a symbolic link is
	// the same store.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dst.(*local.Bucket).Root(), link); err != nil {
		t.Fatal(err)
	}
	viaLink, err := local.Open(link, false)
	if err != nil {
		t.Fatal(err)
	}
	sum := run(t, &Pair{Name: "lake", Source: src, Target: viaLink, Delete: true, State: &st})
	if sum.Deleted != 1 {
		t.Fatalf("the pair's own pass: %+v", sum)
	}

	// Starting fresh as the message says works and adopts what is there.
	if err := os.RemoveAll(filepath.Join(st.Bucket.(*local.Bucket).Root(), "lake", "index")); err != nil {
		t.Fatal(err)
	}
	sum = run(t, repointed)
	if sum.Foreign != 1 || sum.Objects != 1 {
		t.Fatalf("fresh pass into the other target: %+v", sum)
	}
}

// Delete removes only an object that is still what tandem wrote.
func TestDeleteOnlyWhatTandemWrote(t *testing.T) {
	for name, mk := range map[string]func(*testing.T) objstore.Bucket{"local": localBucket, "s3": s3Bucket} {
		t.Run(name, func(t *testing.T) {
			src, dst := localBucket(t), mk(t)
			put(t, src, map[string]string{"keep": "k", "mine": "m", "gone": "g"})
			p := newPair(src, dst, true, t)
			run(t, p)
			// Someone rewrites "mine" in the target; the source drops it
			// and "gone".
			time.Sleep(10 * time.Millisecond)
			put(t, dst, map[string]string{"mine": "changed by a person"})
			for _, k := range []string{"mine", "gone"} {
				if err := src.Delete(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			sum := run(t, p)
			if sum.Deleted != 1 || sum.Foreign != 1 || sum.ForeignKeys[0] != "mine" {
				t.Fatalf("pass: %+v", sum)
			}
			expectTree(t, dst, map[string]string{"keep": "k", "mine": "changed by a person"})
		})
	}
}

// rewriter rewrites a source file in place while tandem copies it: the
// last half gets new bytes of the same length and the modification time
// is put back, so only the change time tells.
type rewriter struct {
	*local.Bucket
	key   string
	open  bool // rewrite after the file is opened, before it is read
	count atomic.Int64
}

func (r *rewriter) Unwrap() objstore.Bucket { return r.Bucket }

func (r *rewriter) rewrite(t testing.TB) {
	if r.count.Add(1) > 1 {
		return
	}
	p := filepath.Join(r.Root(), r.key)
	fi, err := os.Stat(p)
	if err != nil {
		t.Error(err)
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Error(err)
		return
	}
	f.WriteAt(bytes.Repeat([]byte("N"), int(fi.Size()/2)), fi.Size()-fi.Size()/2)
	f.Close()
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
}

type midRead struct {
	io.ReadCloser
	read int
	then func()
}

func (m *midRead) Read(p []byte) (int, error) {
	if m.read > 0 && m.then != nil {
		m.then()
		m.then = nil
	}
	p = p[:min(len(p), 64<<10)]
	n, err := m.ReadCloser.Read(p)
	m.read += n
	return n, err
}

func (r *rewriter) Get(ctx context.Context, key string) (io.ReadCloser, objstore.Info, error) {
	rc, info, err := r.Bucket.Get(ctx, key)
	if err != nil || key != r.key {
		return rc, info, err
	}
	if r.open {
		r.rewrite(testingT)
		return rc, info, nil
	}
	return &midRead{ReadCloser: rc, then: func() { r.rewrite(testingT) }}, info, nil
}

// Open rewrites as Get does (it would otherwise be *local.Bucket's,
// promoted past Get).
func (r *rewriter) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, _, err := r.Get(ctx, key)
	return rc, err
}

func (r *rewriter) GetRange(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	rc, err := r.Bucket.GetRange(ctx, key, off, n, etag)
	if err == nil && key == r.key && off > 0 {
		r.rewrite(testingT) // after the first part was read
	}
	return rc, err
}

var testingT testing.TB

// A copy is of one version of the source or it fails: a file rewritten
// in place while it is copied (its modification time put back) is not
// published, into a folder or into S3, in one request or in parts; the
// next pass copies the version that then stands.
func TestTornCopyFails(t *testing.T) {
	testingT = t
	const mib = 1 << 20
	cases := []struct {
		name string
		dst  func(*testing.T) objstore.Bucket
		size int
		open bool
	}{
		{"folder, rewritten while read", localBucket, 2 * mib, false},
		{"folder, rewritten after open", localBucket, 2 * mib, true},
		{"s3, one request", s3Bucket, 2 * mib, false},
		{"s3, in parts", s3Bucket, 12 * mib, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srcDir := t.TempDir()
			old := bytes.Repeat([]byte("O"), c.size)
			if err := os.WriteFile(filepath.Join(srcDir, "big"), old, 0o644); err != nil {
				t.Fatal(err)
			}
			lb, err := local.Open(srcDir, false)
			if err != nil {
				t.Fatal(err)
			}
			dst := c.dst(t)
			src := &rewriter{Bucket: lb, key: "big", open: c.open}
			p := newPair(src, dst, true, t)
			p.Retries = 1
			p.PartSize = 5 << 20 // parts after the first to rewrite during
			sum, err := p.RunOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Failed != 1 || sum.Watermark != nil || !strings.Contains(sum.FailedObjects[0].Error, "changed while it was copied") {
				t.Fatalf("a pass that read a changing file: %+v", sum)
			}
			if _, err := dst.Stat(ctx, "big"); !errors.Is(err, objstore.ErrNotExist) {
				t.Fatalf("a torn copy was published: %v", err)
			}
			// The next pass (the retry queue's wait passed) copies the
			// version that stands now, whole.
			p.RetryBackoff = time.Nanosecond
			if err := p.saveRetryQueue(ctx, nil); err != nil {
				t.Fatal(err)
			}
			sum = run(t, p)
			now, _ := os.ReadFile(filepath.Join(srcDir, "big"))
			got, _, err := objstore.ReadAll(ctx, dst, "big")
			if err != nil || !bytes.Equal(got, now) || sum.Watermark == nil {
				t.Fatalf("rerun: %v, %d bytes equal to the source: %v, %+v", err, len(got), bytes.Equal(got, now), sum)
			}
		})
	}
}

// replacer puts a new version of key in place (written aside and renamed
// over it) once its file was opened for a copy.
type replacer struct {
	*local.Bucket
	key  string
	with []byte
	done atomic.Bool
}

func (r *replacer) Unwrap() objstore.Bucket { return r.Bucket }

func (r *replacer) Get(ctx context.Context, key string) (io.ReadCloser, objstore.Info, error) {
	rc, info, err := r.Bucket.Get(ctx, key)
	if err == nil && key == r.key && !r.done.Swap(true) {
		p := filepath.Join(r.Root(), key)
		if err := os.WriteFile(p+".new", r.with, 0o644); err != nil {
			testingT.Error(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			testingT.Error(err)
		}
	}
	return rc, info, err
}

func (r *replacer) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, _, err := r.Get(ctx, key)
	return rc, err
}

// A file replaced (renamed over) while it is copied is published whole in
// one version or not at all (a rename over a file changes the old inode's
// change time, which the copy's second look through its open file sees),
// and the next pass publishes the new version.
func TestReplacedSourceNeverTorn(t *testing.T) {
	testingT = t
	srcDir := t.TempDir()
	old := bytes.Repeat([]byte("O"), 100_000)
	if err := os.WriteFile(filepath.Join(srcDir, "f"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	lb, err := local.Open(srcDir, false)
	if err != nil {
		t.Fatal(err)
	}
	dst := localBucket(t)
	src := &replacer{Bucket: lb, key: "f", with: bytes.Repeat([]byte("N"), 50_000)}
	p := newPair(src, dst, true, t)
	p.Retries = 1
	run(t, p)
	got, _, err := objstore.ReadAll(ctx, dst, "f")
	if err == nil && !bytes.Equal(got, old) && !bytes.Equal(got, src.with) {
		t.Fatalf("published %d bytes that are neither version", len(got))
	}
	if err != nil && !errors.Is(err, objstore.ErrNotExist) {
		t.Fatal(err)
	}
	p.RetryBackoff = time.Nanosecond
	if err := p.saveRetryQueue(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if sum := run(t, p); sum.Watermark == nil {
		t.Fatalf("the next pass: %+v", sum)
	}
	if got, _, err = objstore.ReadAll(ctx, dst, "f"); err != nil || !bytes.Equal(got, src.with) {
		t.Fatalf("the next pass published %d bytes (%v), not the new version", len(got), err)
	}
}

// Copies into a folder keep the source's permission bits less group and
// other write, or take the configured mode, whatever the umask.
func TestCopiedModes(t *testing.T) {
	srcDir := t.TempDir()
	modes := map[string]fs.FileMode{"run.sh": 0o755, "open": 0o666, "private": 0o600, "plain": 0o644}
	for k, m := range modes {
		p := filepath.Join(srcDir, k)
		if err := os.WriteFile(p, []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, m)
	}
	src, _ := local.Open(srcDir, false)
	want := map[string]fs.FileMode{"run.sh": 0o755, "open": 0o644, "private": 0o600, "plain": 0o644}
	for _, configured := range []fs.FileMode{0, 0o640} {
		dst := localBucket(t)
		p := newPair(src, dst, true, t)
		p.Mode = configured
		run(t, p)
		for k, m := range want {
			if configured != 0 {
				m = configured
			}
			fi, err := os.Stat(filepath.Join(dst.(*local.Bucket).Root(), k))
			if err != nil || fi.Mode().Perm() != m {
				t.Fatalf("mode %v: %s is %v, want %v (%v)", configured, k, fi.Mode().Perm(), m, err)
			}
		}
	}
}

// Symbolic links and special files in a source are passed over, listed in
// the summary, and keep the pass from claiming a watermark unless the pair
// ignores them.
func TestUnsupportedEntries(t *testing.T) {
	srcDir, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("not for the replica"), 0o644)
	os.WriteFile(filepath.Join(srcDir, "a"), []byte("a"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(srcDir, "link"))
	os.Symlink(outside, filepath.Join(srcDir, "dirlink"))
	if err := syscall.Mkfifo(filepath.Join(srcDir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, _ := local.Open(srcDir, false)
	for _, ignore := range []bool{false, true} {
		dst := localBucket(t)
		p := newPair(src, dst, true, t)
		p.IgnoreUnsupported = ignore
		sum := run(t, p)
		kinds := map[string]string{}
		for _, u := range sum.UnsupportedSample {
			kinds[u.Key] = u.Kind
		}
		want := map[string]string{"link": "symbolic link", "dirlink": "symbolic link", "pipe": "named pipe"}
		if sum.Unsupported != 3 || !maps.Equal(kinds, want) || (sum.Watermark != nil) != ignore {
			t.Fatalf("ignore %v: %+v", ignore, sum)
		}
		expectTree(t, dst, map[string]string{"a": "a"})
	}
}

// An index chunk is read from the state folder, where anything may be
// written: a corrupt one is an error naming it, never a crash.
func FuzzIndexChunk(f *testing.F) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(entry{Key: "a/b", Src: ident{Size: 3, ETag: "e", MTime: 1}, Dst: ident{Size: 3, ETag: "d"}}.append(nil))
	zw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		readChunk(bytes.NewReader(data), "index/g1/000001.gz", func(e entry, err error) bool {
			if err != nil && !strings.Contains(err.Error(), "index/g1/000001.gz") {
				t.Fatalf("an error that does not name the chunk: %v", err)
			}
			return true
		})
	})
}

// A pair asked to keep its target read-only by a policy protects it at
// every pass, and refuses a target that cannot be.
func TestReadOnlyPrincipal(t *testing.T) {
	src := localBucket(t)
	put(t, src, map[string]string{"a": "1"})
	p := newPair(src, localBucket(t), true, t)
	p.ReadOnlyPrincipal = "arn:aws:iam::123456789012:role/tandem"
	if _, err := p.RunOnce(ctx); err == nil || !strings.Contains(err.Error(), "cannot be protected by a policy") {
		t.Fatalf("a folder target with a read-only principal: %v", err)
	}
	dst := s3Bucket(t)
	p = newPair(src, dst, true, t)
	p.ReadOnlyPrincipal = "arn:aws:iam::123456789012:role/tandem"
	run(t, p)
	bucket := strings.Split(strings.TrimPrefix(dst.URL(), "s3://"), "/")[0]
	out, err := s3test.Shared(t).Client().GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: &bucket})
	if err != nil || !strings.Contains(*out.Policy, s3store.PolicySid) {
		t.Fatalf("the target's policy after a pass: %v", err)
	}
}
