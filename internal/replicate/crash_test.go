package replicate

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/state"
)

// dying kills the process while it writes its n-th object: half the bytes
// are read, then the process exits without any cleanup.
type dying struct {
	objstore.Bucket
	n     int64
	count atomic.Int64
}

func (d *dying) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	if d.count.Add(1) == d.n {
		half := make([]byte, size/2)
		io.ReadFull(r, half)
		os.Exit(7)
	}
	return d.Bucket.Put(ctx, key, r, size, o)
}

func (d *dying) Unwrap() objstore.Bucket { return d.Bucket }

const crashObjects = 120

// TestCrashChild is the process that dies; TestCrashRerun starts it.
func TestCrashChild(t *testing.T) {
	env := os.Getenv("TANDEM_CRASH_CHILD")
	if env == "" {
		t.Skip("started by TestCrashRerun")
	}
	var cfg crashConfig
	fmt.Sscan(env, &cfg.srcDir, &cfg.stateDir, &cfg.dstKind, &cfg.dstArg, &cfg.endpoint, &cfg.at)
	chunkInterval = 0 // record every finished copy at once
	p := cfg.pair(t)
	p.Target = &dying{Bucket: p.Target, n: int64(cfg.at)}
	p.RunOnce(context.Background())
	t.Fatal("the pass finished instead of dying")
}

type crashConfig struct {
	srcDir, stateDir, dstKind, dstArg, endpoint string
	at                                          int
}

func (c crashConfig) pair(t *testing.T) *Pair {
	src, err := local.Open(c.srcDir, false)
	if err != nil {
		t.Fatal(err)
	}
	var dst objstore.Bucket
	if c.dstKind == "s3" {
		opts := s3store.Options{Endpoint: c.endpoint, PathStyle: true, AccessKeyID: s3test.Access, SecretAccessKey: s3test.Secret}
		dst, err = s3store.Open(context.Background(), c.dstArg, "data", opts)
	} else {
		dst, err = local.Open(c.dstArg, false)
	}
	if err != nil {
		t.Fatal(err)
	}
	stb, err := local.Open(c.stateDir, false)
	if err != nil {
		t.Fatal(err)
	}
	st := state.Store{Bucket: stb}.Sub("lake")
	return &Pair{Name: "lake", Source: src, Target: dst, Delete: true, State: &st, Transfers: 4}
}

func TestCrashRerun(t *testing.T) {
	for _, kind := range []string{"local", "s3"} {
		t.Run(kind, func(t *testing.T) {
			cfg := crashConfig{srcDir: t.TempDir(), stateDir: t.TempDir(), dstKind: kind, at: 50, endpoint: "-"}
			src, _ := local.Open(cfg.srcDir, false)
			tree := map[string]string{}
			for i := range crashObjects {
				tree[fmt.Sprintf("obj/%04d", i)] = strings.Repeat(strconv.Itoa(i), 1000+i)
			}
			put(t, src, tree)
			if kind == "s3" {
				b := s3Bucket(t)
				cfg.dstArg = strings.Split(strings.TrimPrefix(b.URL(), "s3://"), "/")[0]
				cfg.endpoint = s3test.Shared(t).Endpoint
			} else {
				cfg.dstArg = t.TempDir()
			}

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("TANDEM_CRASH_CHILD=%s %s %s %s %s %d",
				cfg.srcDir, cfg.stateDir, cfg.dstKind, cfg.dstArg, cfg.endpoint, cfg.at))
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
				t.Fatalf("child did not die as planned: %v\n%s", err, out)
			}

			p := cfg.pair(t)
			// Nothing partial is visible: every object present has its
			// full bytes.
			got := read(t, p.Target)
			for k, v := range got {
				if tree[k] != v {
					t.Fatalf("partial or wrong object %s after the crash (%d bytes, want %d)", k, len(v), len(tree[k]))
				}
			}
			if len(got) < cfg.at-8 {
				t.Fatalf("only %d objects before the crash", len(got))
			}
			// The rerun converges and copies only what is missing (the
			// copies in flight at the crash may be redone).
			sum := run(t, p)
			expectTree(t, p.Target, tree)
			missing := int64(crashObjects - len(got))
			if sum.Objects < missing || sum.Objects > missing+int64(p.Transfers) {
				t.Fatalf("rerun copied %d objects, %d were missing: %+v", sum.Objects, missing, sum)
			}
			if sum.Watermark == nil || sum.Foreign != 0 {
				t.Fatalf("rerun %+v", sum)
			}
			// The rerun removed what the killed pass left: staged files
			// in a folder, unfinished uploads in S3.
			if kind == "s3" {
				bucket := cfg.dstArg
				out, err := s3test.Shared(t).Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
				if err != nil || len(out.Uploads) != 0 {
					t.Fatalf("unfinished uploads after the rerun: %v %v", out, err)
				}
			} else {
				ents, _ := os.ReadDir(cfg.dstArg)
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), local.Reserved) && e.Name() != ".tandem-lock" && !strings.Contains(e.Name(), fmt.Sprintf("-%d-", os.Getpid())) {
						t.Fatalf("left in the target after the rerun: %s (removed %d)", e.Name(), sum.LeftoversRemoved)
					}
				}
			}
		})
	}
}
