package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/etl"
	"tandem/internal/lease"
	"tandem/internal/location"
	"tandem/internal/objstore"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
	"tandem/internal/state"
)

// fenceRig is two regions, a witness, a bucket of thousands of small
// objects and a Delta table of thousands of files in east, and what a
// trial needs to move the lease between east and west.
type fenceRig struct {
	t      *testing.T
	dir    string
	s3     *s3test.Server // nil: folders
	east   string         // url of east's data (folder or s3://bucket)
	env    []string       // for child processes
	leases state.Store
	keeper func()
	// west is each trial's target: its folder (the bucket's folder on the
	// S3 server's disk), and its URL.
	west, westURL map[int]string
}

const fenceTTL = 2 * time.Second

func newFenceRig(t *testing.T, useS3 bool) *fenceRig {
	r := &fenceRig{t: t, dir: t.TempDir(), west: map[int]string{}, westURL: map[int]string{}}
	ctx := context.Background()
	var src objstore.Bucket
	var err error
	if useS3 {
		r.s3 = s3test.Shared(t)
		bucket := r.s3.NewBucket(t)
		r.east = "s3://" + bucket
		r.env = []string{"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	} else {
		r.east = filepath.Join(r.dir, "east")
	}
	open := func(url string) objstore.Bucket {
		l, err := location.Parse(url)
		if err != nil {
			t.Fatal(err)
		}
		opts := s3store.Options{}
		if r.s3 != nil {
			opts = r.s3.Options()
		}
		b, err := location.Open(ctx, l, opts, true)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	src = open(r.east + "/lake")
	data := bytes.Repeat([]byte("x"), 1024)
	for i := range 3000 {
		if _, err = src.Put(ctx, fmt.Sprintf("raw/%04d.csv", i), bytes.NewReader(data), int64(len(data)), objstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tb, err := etl.Create(ctx, open(r.east+"/tables/bronze"), 1)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := tb.Append(ctx, "run", 500, 4); err != nil {
			t.Fatal(err)
		}
	}
	wb, err := location.Open(ctx, location.Location{Scheme: "file", Path: filepath.Join(r.dir, "witness")}, s3store.Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	r.leases = state.Store{Bucket: wb}.Sub("leases")
	r.holdEast()
	// Before the folders go: the keeper writes into the witness.
	t.Cleanup(func() { r.keeper() })
	return r
}

// config writes the configuration of trial n: a new target in west (a
// folder, or a fresh S3 bucket) and new records, so each pass copies all.
func (r *fenceRig) config(n int) string {
	west, state := filepath.Join(r.dir, fmt.Sprintf("west-%d", n)), filepath.Join(r.dir, fmt.Sprintf("west-%d/.tandem", n))
	r.west[n], r.westURL[n] = west, west
	s3 := ""
	if r.s3 != nil {
		bucket := r.s3.NewBucket(r.t)
		west, r.west[n] = "s3://"+bucket, filepath.Join(r.s3.Root, bucket)
		r.westURL[n] = west
		state = west + "/.tandem"
		s3 = fmt.Sprintf(", s3: {endpoint: %q, region: us-east-1, path_style: true, access_key_id: %s, secret_access_key: %s}", r.s3.Endpoint, s3test.Access, s3test.Secret)
	}
	cfg := filepath.Join(r.dir, fmt.Sprintf("tandem-%d.yaml", n))
	writeFile(r.t, cfg, fmt.Sprintf(`
regions:
  - {name: east, state: %[1]s/east-state%[4]s}
  - {name: west, state: %[3]s%[4]s}
replication:
  - {name: lake, from: {region: east, url: %[2]s/lake}, to: {region: west, url: %[5]s/lake}}
groups:
  - name: sales
    from: east
    to: west
    tables: [{name: bronze, from: %[2]s/tables/bronze, to: %[5]s/tables/bronze}]
witness: {url: %[1]s/witness}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], groups: [sales], lease_ttl: %[6]s}
`, r.dir, r.east, state, s3, west, fenceTTL))
	return cfg
}

// holdEast gives east the lease and keeps renewing it (east's serve).
func (r *fenceRig) holdEast() {
	ctx := context.Background()
	l := &lease.Lease{Store: r.leases, Group: "lakehouse", Region: "east", TTL: fenceTTL, Standby: "west"}
	for {
		if _, err := l.Acquire(ctx); err == nil {
			break
		} else if !errors.Is(err, lease.ErrHeld) {
			r.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.keeper = func() { cancel(); <-done } // returns once it writes no more
	go func() {
		defer close(done)
		l.Keep(kctx, false, slog.New(slog.DiscardHandler))
	}()
}

// takeover moves the lease to west in one of the ways it moves, as
// `tandem lease acquire` and the plans do (with the configuration of the
// trial, whose stores in west are revoked), and returns the change time of
// the witness record once west holds it: no write of east's may land at
// or after it.
func (r *fenceRig) takeover(mode, cfgPath string) time.Time {
	ctx := context.Background()
	r.keeper() // east's serve stops renewing (planned, or gone)
	if mode == "release" {
		east := &lease.Lease{Store: r.leases, Group: "lakehouse", Region: "east", TTL: fenceTTL}
		if _, err := east.Release(ctx); err != nil {
			r.t.Fatal(err)
		}
	}
	env, err := loadEnv(cfgPath, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	west, err := env.NewLease(ctx, &env.Cfg.ProtectionGroups[0], "west", "east")
	if err != nil {
		r.t.Fatal(err)
	}
	west.TTL = time.Hour // nobody renews it during the check
	for {
		if _, err := west.Acquire(ctx); err == nil {
			break
		} else if !errors.Is(err, lease.ErrHeld) {
			r.t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fi, err := os.Stat(filepath.Join(r.dir, "witness/leases/lakehouse.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	return ctime(fi)
}

// giveBack returns the lease to east for the next trial.
func (r *fenceRig) giveBack() {
	west := &lease.Lease{Store: r.leases, Group: "lakehouse", Region: "west", TTL: time.Hour}
	if _, err := west.Release(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.holdEast()
}

func ctime(fi fs.FileInfo) time.Time {
	st := fi.Sys().(*syscall.Stat_t)
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
}

// landedAfter lists the files of trial n's west (data and records) whose
// change time is at or after t.
func (r *fenceRig) landedAfter(n int, t time.Time) (late []string, files int) {
	// versitygw keeps a bucket's objects as files in a folder of its root.
	filepath.WalkDir(r.west[n], func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".tandem-") || strings.Contains(p, ".sgwtmp") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		files++
		if !ctime(info).Before(t) {
			late = append(late, fmt.Sprintf("%s (%s after)", p, ctime(info).Sub(t)))
		}
		return nil
	})
	return late, files
}

// TestFencingUnderRandomLeaseMoves runs 42 trials per backend (after one
// whole pass and one whole sync that time them; 42 keeps the test suite
// within its 20 minutes, and in earlier runs of 50 the fence stopped a
// writer mid-way in 28 to 38 of them). In each, a
// real tandem process acting for east (a replication pass of 3,000
// objects, or a group sync of 2,000 Delta files) writes into west while
// the lease moves to west at a random moment: by a planned release, by
// expiry after east's serve died, by expiry while the writer is stopped
// with SIGSTOP (resumed after the takeover), or after the writer was
// killed with -9. Then every file in west (data and tandem's records) must
// have changed before the witness named west.
func TestFencingUnderRandomLeaseMoves(t *testing.T) {
	t.Parallel() // it waits for leases most of the time
	for _, backend := range []string{"folders", "s3"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			r := newFenceRig(t, backend == "s3")
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
			modes := []string{"release", "expire", "sigstop", "kill"}
			stopped := map[string]int{}
			var passTime [2]time.Duration // a whole pass, then a whole sync, measured
			const trials = 42
			for n := 0; n < 2+trials; n++ {
				what := []string{"replicate", "group"}[n%2]
				cfg := r.config(n)
				args := []string{"replicate", "--config", cfg, "lake"}
				if what == "group" {
					args = []string{"group", "sync", "--config", cfg, "sales"}
				}
				var cmd *exec.Cmd
				var out bytes.Buffer
				var done chan error
				var ended time.Time // when the writer exited
				start := func() time.Time {
					cmd = exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
					cmd.Env = append(append(os.Environ(), "TANDEM_MAIN=1"), r.env...)
					out.Reset()
					cmd.Stdout, cmd.Stderr = &out, &out
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					done = make(chan error, 1)
					go func() {
						err := cmd.Wait()
						ended = time.Now()
						done <- err
					}()
					return time.Now()
				}
				if n < 2 {
					// The first pass and sync run whole: how long they take
					// tells where "during" is. On a machine loaded enough
					// that a write outlives its grant, the writer stops (as
					// it must) and a rerun converges: each attempt keeps
					// what it copied, so attempts go on while they copy
					// something.
					idle, had := 0, 0
					for attempt := 1; ; attempt++ {
						began := start()
						err := <-done
						if err == nil {
							passTime[n] = time.Since(began)
							break
						}
						if _, files := r.landedAfter(n, time.Now()); files > had {
							had = files
						} else {
							idle++
						}
						if attempt == 40 || idle == 3 || !refusal(out.String()) {
							t.Fatalf("%s, attempt %d: %v\n%s", what, attempt, err, out.String())
						}
						t.Logf("%s, attempt %d, refused by its guard on a loaded machine; running it again:\n%s", what, attempt, out.String())
					}
					continue
				}
				began := start()
				mode := modes[rng.IntN(len(modes))]
				// A moment within the first third of a pass: on a loaded
				// machine a later one often finds the writer done (a
				// release or an expiry takes a while to complete, and the
				// writer goes on until its grant runs out).
				time.Sleep(time.Duration(int64(passTime[n%2])/20 + rng.Int64N(int64(passTime[n%2])*6/20)))
				switch mode {
				case "sigstop":
					cmd.Process.Signal(syscall.SIGSTOP)
				case "kill":
					cmd.Process.Kill()
				}
				moved := r.takeover(mode, cfg)
				if mode == "sigstop" {
					time.Sleep(fenceTTL) // past the TTL, the lease long gone
					cmd.Process.Signal(syscall.SIGCONT)
				}
				var exit error
				select {
				case exit = <-done:
				case <-time.After(2 * time.Minute):
					cmd.Process.Kill()
					t.Fatalf("trial %d (%s, %s): the writer did not stop", n, what, mode)
				}
				late, files := r.landedAfter(n, moved)
				if len(late) > 0 {
					t.Fatalf("trial %d (%s, %s): %d of %d files in west landed after west held the lease, e.g. %v\n%s", n, what, mode, len(late), files, late[:min(5, len(late))], out.String())
				}
				if exit == nil {
					// It ran whole before the lease moved: the machine is
					// faster now than when the pass was measured, so
					// "during" is measured again from this pass.
					passTime[n%2] = ended.Sub(began)
				}
				if exit != nil && mode != "kill" {
					o := out.String()
					switch {
					case strings.Contains(o, "fenced") || refusal(o):
						stopped[mode]++
					case strings.Contains(o, "source: folder "+r.west[n]), strings.Contains(o, "source: "+r.westURL[n]):
						// Paused before it read the lease: it woke up acting
						// for west, the new holder, whose tables are not there.
						stopped["turned around"]++
					default:
						t.Fatalf("trial %d (%s, %s): the writer failed without saying it was fenced:\n%s", n, what, mode, o)
					}
				}
				r.giveBack()
			}
			t.Logf("writers stopped mid-way by the fence: %v (the others had finished first, or were killed)", stopped)
			total := 0
			for _, n := range stopped {
				total += n
			}
			if total < 10 {
				t.Fatalf("only %d of %d trials moved the lease while a writer was writing: the test did not test the fence", total, trials)
			}
		})
	}
}

// refusal reports whether a writer's output says its guard or its store
// refused a write: unconfirmed, late or revoked.
func refusal(out string) bool {
	return strings.Contains(out, "cannot confirm") || strings.Contains(out, "may have landed after its grant ran out") ||
		strings.Contains(out, "was revoked before it landed")
}
