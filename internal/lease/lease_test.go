package lease

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	"tandem/internal/state"
)

var ctx = context.Background()

func witness(t *testing.T, dir string) state.Store {
	b, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return state.Store{Bucket: b}.Sub("leases")
}

func TestAcquireRenewReleaseFence(t *testing.T) {
	st := witness(t, t.TempDir())
	a := &Lease{Store: st, Group: "lakehouse", Region: "east", TTL: time.Minute}
	b := &Lease{Store: st, Group: "lakehouse", Region: "west", TTL: time.Minute}
	r, err := a.Acquire(ctx)
	if err != nil || r.Epoch != 1 || r.Holder != "east" {
		t.Fatalf("%+v %v", r, err)
	}
	if ep, ok := a.Primary(); !ok || ep != 1 {
		t.Fatal("the holder is not primary")
	}
	if _, err := b.Acquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("second region: %v", err)
	}
	if r, err = a.Acquire(ctx); err != nil || r.Epoch != 1 {
		t.Fatalf("renewal changed the epoch: %+v %v", r, err)
	}
	if _, err := b.Release(ctx); err == nil {
		t.Fatal("a region that does not hold the lease released it")
	}
	if _, err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Primary(); ok {
		t.Fatal("primary after release")
	}
	if err := Check(ctx, st, "lakehouse", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("check after release: %v", err)
	}
	if r, err = b.Acquire(ctx); err != nil || r.Epoch != 2 || r.Holder != "west" {
		t.Fatalf("take over: %+v %v", r, err)
	}
	if err := Check(ctx, st, "lakehouse", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("a stale epoch passed: %v", err)
	}
	if err := Check(ctx, st, "lakehouse", 2); err != nil {
		t.Fatal(err)
	}
	// The old holder cannot renew its way back while west holds it.
	if _, err := a.Acquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("old holder: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	st := witness(t, t.TempDir())
	a := &Lease{Store: st, Group: "g", Region: "east", TTL: 40 * time.Millisecond}
	if _, err := a.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	// east stops on its own once its deadline passes, without any signal.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := a.Primary(); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder never stopped acting as primary")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// west may take it once the record's expiry has passed on its clock.
	later := func() time.Time { return time.Now().Add(time.Minute) }
	b := &Lease{Store: st, Group: "g", Region: "west", TTL: time.Minute, Now: later}
	r, err := b.Acquire(ctx)
	if err != nil || r.Epoch != 2 {
		t.Fatalf("%+v %v", r, err)
	}
}

// TestTwoRegionsNeverBothPrimary runs two tandem processes, one per region,
// that contend for the lease, renew it, release it at random, and one of
// them dies without warning. Each writes down the times it believed itself
// primary; no two of those periods from different regions may overlap.
func TestTwoRegionsNeverBothPrimary(t *testing.T) {
	if dir := os.Getenv("TANDEM_LEASE_CHILD"); dir != "" {
		contend(t, dir, os.Getenv("TANDEM_LEASE_REGION"))
		return
	}
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for _, region := range []string{"east", "west"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTwoRegionsNeverBothPrimary$")
		cmd.Env = append(os.Environ(), "TANDEM_LEASE_CHILD="+dir, "TANDEM_LEASE_REGION="+region)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, c := range cmds {
		c.Wait() // one of them dies on purpose
	}
	periods := map[string][][2]int64{}
	for _, region := range []string{"east", "west"} {
		f, err := os.Open(filepath.Join(dir, region+".log"))
		if err != nil {
			t.Fatalf("%s never held the lease: %v", region, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var p [2]int64
			if n, _ := fmt.Sscanf(sc.Text(), "release %d", &p[0]); n == 1 {
				// Released: every period running then ends here.
				for i, q := range periods[region] {
					if q[0] <= p[0] && p[0] < q[1] {
						periods[region][i][1] = p[0]
					}
				}
				continue
			}
			fmt.Sscan(sc.Text(), &p[0], &p[1])
			periods[region] = append(periods[region], p)
		}
		f.Close()
	}
	if len(periods["east"]) == 0 || len(periods["west"]) == 0 {
		t.Fatalf("each region must have been primary at some time: %d and %d periods", len(periods["east"]), len(periods["west"]))
	}
	for _, a := range periods["east"] {
		for _, b := range periods["west"] {
			if a[0] < b[1] && b[0] < a[1] {
				t.Fatalf("both regions primary: east %v, west %v", a, b)
			}
		}
	}
	t.Logf("east was primary %d times, west %d times, never together", len(periods["east"]), len(periods["west"]))
}

// contend is one region's tandem: for about three seconds it tries to hold
// the lease; while primary it renews, sometimes releases, and east dies at a
// random moment.
func contend(t *testing.T, dir, region string) {
	l := &Lease{Store: witness(t, filepath.Join(dir, "witness")), Group: "lakehouse", Region: region,
		TTL: 150 * time.Millisecond, Margin: 50 * time.Millisecond}
	log, err := os.OpenFile(filepath.Join(dir, region+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	dieAt := time.Now().Add(time.Duration(1000+rng.IntN(1000)) * time.Millisecond)
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if region == "east" && time.Now().After(dieAt) {
			os.Exit(3) // no release: west must wait for the expiry
		}
		if _, err := l.Acquire(ctx); err == nil {
			if _, ok := l.Primary(); ok {
				// Primary from now until the local deadline.
				fmt.Fprintf(log, "%d %d\n", time.Now().UnixNano(), time.Now().Add(time.Until(l.Deadline())).UnixNano())
			}
			if rng.IntN(8) == 0 {
				fmt.Fprintf(log, "release %d\n", time.Now().UnixNano())
				l.Release(ctx)
				time.Sleep(30 * time.Millisecond)
			}
		} else if !errors.Is(err, ErrHeld) {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond)
	}
	log.Close()
}

// TestKeep: the holder's lease is renewed while it holds it; once another
// region took it, Keep never takes it back.
func TestKeep(t *testing.T) {
	st := witness(t, t.TempDir())
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	east := &Lease{Store: st, Group: "g", Region: "east", TTL: 300 * time.Millisecond, Standby: "west"}
	done := make(chan struct{})
	go func() { east.Keep(kctx, true, slog.New(slog.DiscardHandler)); close(done) }()
	var first Record
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r, ok, _ := Show(ctx, st, "g")
		if ok && first.Renewed.IsZero() {
			first = r
		}
		if ok && r.Renewed.After(first.Renewed.Add(150*time.Millisecond)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, _, _ := Show(ctx, st, "g")
	if r.Holder != "east" || r.Epoch != 1 || !r.Renewed.After(first.Renewed) || r.Standby != "west" {
		t.Fatalf("not renewed: first %+v, now %+v", first, r)
	}
	// East stops (a paused or dead process); west fails over once east's
	// lease expired; east comes back and must not take it back.
	stop()
	<-done
	west := &Lease{Store: st, Group: "g", Region: "west", TTL: time.Hour}
	for {
		if _, err := west.Acquire(ctx); err == nil {
			break
		} else if !errors.Is(err, ErrHeld) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	kctx, stop = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { east.Keep(kctx, true, slog.New(slog.DiscardHandler)); close(done) }()
	time.Sleep(time.Second) // several of east's renewal periods
	r, _, _ = Show(ctx, st, "g")
	if r.Holder != "west" || r.Epoch != 2 {
		t.Fatalf("east took the lease back: %+v", r)
	}
	if _, ok := east.Primary(); ok {
		t.Fatal("east still acts as primary")
	}
	stop()
	<-done
}

// TestReleaseDuringRenewals: a release by another process of the holder's
// region (a plan, `tandem lease release`) succeeds while the holder's serve
// keeps renewing: a renewal is not a change of holder.
func TestReleaseDuringRenewals(t *testing.T) {
	st := witness(t, t.TempDir())
	serve := &Lease{Store: st, Group: "lakehouse", Region: "east", TTL: time.Second}
	if _, err := serve.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				serve.Renew(ctx)
			}
		}
	}()
	cli := &Lease{Store: st, Group: "lakehouse", Region: "east", TTL: time.Second}
	for range 10 {
		if _, err := cli.Release(ctx); err != nil {
			close(stop)
			<-done
			t.Fatalf("release while the holder renews: %v", err)
		}
		if _, err := cli.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
}

// cutOff is a witness that stops answering when cut is set.
type cutOff struct {
	objstore.Bucket
	cut     atomic.Bool
	refused atomic.Int64 // reads refused
}

func (c *cutOff) Get(ctx context.Context, key string) (io.ReadCloser, objstore.Info, error) {
	if c.cut.Load() {
		c.refused.Add(1)
		return nil, objstore.Info{}, errors.New("connection refused")
	}
	return c.Bucket.Get(ctx, key)
}

func (c *cutOff) Put(ctx context.Context, key string, r io.Reader, size int64, o objstore.PutOptions) (objstore.Info, error) {
	if c.cut.Load() {
		return objstore.Info{}, errors.New("connection refused")
	}
	return c.Bucket.Put(ctx, key, r, size, o)
}

// A holder cut off from the witness stops acting as primary by its local
// deadline, before the lease expires for the standby, and says so. The
// failing reads are logged once, not once a round, and the witness's
// return is said with how long it failed.
func TestCutOffHolderSaysItStops(t *testing.T) {
	b, err := local.Open(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	w := &cutOff{Bucket: b}
	st := state.Store{Bucket: w}.Sub("leases")
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	east := &Lease{Store: st, Group: "g", Region: "east", TTL: 400 * time.Millisecond, Standby: "west"}
	done := make(chan struct{})
	go func() { east.Keep(kctx, true, log); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for _, ok := east.Primary(); !ok; _, ok = east.Primary() {
		if time.Now().After(deadline) {
			t.Fatal("east never acted as primary")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.cut.Store(true)
	rec, _, _ := Show(ctx, state.Store{Bucket: b}.Sub("leases"), "g")
	for _, ok := east.Primary(); ok; _, ok = east.Primary() {
		time.Sleep(5 * time.Millisecond)
	}
	if stopped := time.Now(); !stopped.Before(rec.Expires) {
		t.Fatalf("east acted as primary until %s, after the lease expired at %s", stopped, rec.Expires)
	}
	for !bytes.Contains(logs.bytes(), []byte("cut off from the witness: stopped acting as primary")) {
		if time.Now().After(deadline) {
			t.Fatalf("east did not say it stopped:\n%s", logs.bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Several more rounds against the dead witness.
	for n := w.refused.Load() + 6; w.refused.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("east stopped reading the witness:\n%s", logs.bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := bytes.Count(logs.bytes(), []byte(`msg="read or renew the region lease"`)); n != 1 {
		t.Fatalf("the same failure was logged %d times, want once:\n%s", n, logs.bytes())
	}
	w.cut.Store(false)
	back := regexp.MustCompile(`msg="the witness answers again".* attempts=([0-9]+)`)
	for {
		m := back.FindSubmatch(logs.bytes())
		if m != nil {
			if n, _ := strconv.Atoi(string(m[1])); n < 7 {
				t.Fatalf("the witness's return counts %d failed rounds, want 7 or more:\n%s", n, logs.bytes())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("east did not say the witness answers again:\n%s", logs.bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
