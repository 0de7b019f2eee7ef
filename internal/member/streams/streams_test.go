package streams_test

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/loopback"
	"tandem/internal/stream"
	"tandem/internal/stream/embed"
	"tandem/internal/stream/streamtest"
	"tandem/produce"

	_ "modernc.org/sqlite"
)

// bin is the tandem binary the tests run, as a user would.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tandem-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "tandem")
	if out, err := exec.Command("go", "build", "-o", bin, "tandem/cmd/tandem").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tandem: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs tandem and returns its exit code and output.
func run(t testing.TB, args ...string) (int, string) {
	t.Helper()
	return runIn(t, "", args...)
}

func must(t testing.TB, args ...string) string {
	t.Helper()
	code, out := run(t, args...)
	if code != 0 {
		t.Fatalf("tandem %v: exit %d\n%s", args, code, out)
	}
	return out
}

// serve is a `tandem serve --region R` process.
type serve struct {
	t      testing.TB
	cfg    string
	region string
	extra  []string
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func startServe(t testing.TB, cfg, region string, extra ...string) *serve {
	s := &serve{t: t, cfg: cfg, region: region, extra: extra, out: &syncBuffer{}}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *serve) start() {
	s.cmd = exec.Command(bin, append([]string{"serve", "--config", s.cfg, "--region", s.region, "--listen", "127.0.0.1:0"}, s.extra...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.done = make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(s.cmd, s.done)
}

func (s *serve) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *serve) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

func (s *serve) stop() {
	if !s.running() {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.kill()
	}
}

const ttl = 500 * time.Millisecond

// rig is two regions' brokers of one kind, and what a trial needs.
type rig struct {
	t    testing.TB
	kind string
	urls map[string]string
	dir  string
}

func newRig(t testing.TB, kind string, trials int) *rig {
	r := &rig{t: t, kind: kind, urls: map[string]string{}, dir: t.TempDir()}
	var topics []string
	for n := range trials {
		topics = append(topics, fmt.Sprintf("orders%d", n))
	}
	for _, region := range []string{"east", "west"} {
		if kind == "kafka" {
			r.urls[region] = streamtest.Kafka(t, topics...)
		} else {
			r.urls[region] = streamtest.NATS(t, "")
		}
	}
	return r
}

// config writes trial n's configuration: stream ordersN in both regions,
// its own witness and sink.
func (r *rig) config(n int) (cfg, sink string) {
	return r.configSink(n, "")
}

// configSink is config with the given sink section (YAML at its indent),
// or the SQL sink of effects when "".
func (r *rig) configSink(n int, sinkYAML string) (cfg, sink string) {
	name := fmt.Sprintf("orders%d", n)
	if r.kind == "nats" {
		for _, u := range r.urls {
			if err := embed.CreateStream(context.Background(), u, name, name+".events"); err != nil {
				r.t.Fatal(err)
			}
		}
	}
	dir := filepath.Join(r.dir, fmt.Sprint(n))
	sink = filepath.Join(dir, "sink.db")
	cfg = filepath.Join(dir, "tandem.yaml")
	os.MkdirAll(filepath.Join(dir, "witness"), 0o755)
	text := fmt.Sprintf(`
regions:
  - {name: east, state: %[1]s/east}
  - {name: west, state: %[1]s/west}
witness: {url: %[1]s/witness}
streams:
  - name: %[2]s
    regions:
      east: {broker: "%[3]s", stream: %[2]s}
      west: {broker: "%[4]s", stream: %[2]s}
    catch_up_after: 300ms
    batch: 50
%[7]s
protection_groups:
  - {name: dr, primary: east, standby: west, streams: [%[2]s], lease_ttl: %[6]s}
`, dir, name, r.urls["east"], r.urls["west"], sink, ttl, cmp.Or(sinkYAML, fmt.Sprintf(`    sink:
      sql:
        driver: sqlite
        dsn: %s
        statements:
          - CREATE TABLE IF NOT EXISTS effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, epoch INTEGER, region TEXT)
          - INSERT INTO effects (id, epoch, region) VALUES ($1, $3, $4)`, sink)))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return cfg, sink
}

// effects reads the sink's effects in commit order.
func effects(t testing.TB, path string) (ids []string, epochs []int64) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, epoch FROM effects ORDER BY seq`)
	if err != nil {
		return nil, nil // not created yet
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var e int64
		rows.Scan(&id, &e)
		ids, epochs = append(ids, id), append(epochs, e)
	}
	return ids, epochs
}

// TestStreamsUnderChaos: events are produced (to both regions, to one
// only, and again after a "timeout") while serve processes are killed
// with -9, paused past the lease's TTL, and the lease moves between the
// regions at random moments. At the end every event id produced takes
// effect exactly once in the sink, and the sink's effects never go back
// to an older epoch once a newer one has delivered.
func TestStreamsUnderChaos(t *testing.T) {
	trials := 20
	if testing.Short() {
		trials = 3
	}
	for _, kind := range []string{"nats", "kafka"} {
		t.Run(kind, func(t *testing.T) {
			// One broker at a time: the machine is shared with the other
			// packages' tests, and a loaded machine only slows this down.
			r := newRig(t, kind, trials)
			for n := range trials {
				chaosTrial(t, r, n)
			}
		})
	}
}

func chaosTrial(t *testing.T, r *rig, n int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(len(r.kind))))
	cfg, sinkPath := r.config(n)
	name := fmt.Sprintf("orders%d", n)
	serves := map[string]*serve{"east": startServe(t, cfg, "east"), "west": startServe(t, cfg, "west")}
	logs := map[string]stream.Log{}
	for region, u := range r.urls {
		l, err := stream.Open(ctx, stream.Spec{Broker: u, Stream: name})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		logs[region] = l
	}
	var targets []produce.Target
	for _, region := range []string{"east", "west"} {
		targets = append(targets, produce.Target{Region: region, Broker: r.urls[region], Stream: name})
	}
	p, err := produce.Open(ctx, targets)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	waitLease(t, cfg, "east")
	const events = 400
	produced := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	var sendErrs []error
	prng := rand.New(rand.NewPCG(uint64(n), 7)) // the producer's own
	wg.Go(func() {
		for i := range events {
			id := fmt.Sprintf("t%d-e%04d", n, i)
			produced[id] = true
			switch x := prng.IntN(100); {
			case x < 5:
				logs["east"].Append(ctx, id, []byte("only east"))
			case x < 10:
				logs["west"].Append(ctx, id, []byte("only west"))
			default:
				if _, err := p.Send(ctx, id, []byte("both")); err != nil {
					sendErrs = append(sendErrs, err)
				}
				if x >= 90 { // a producer retrying after a timeout
					p.Send(ctx, id, []byte("both"))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	holder := "east"
	other := func(r string) string {
		if r == "east" {
			return "west"
		}
		return "east"
	}
	var did []string
	for range 3 {
		time.Sleep(time.Duration(rng.IntN(800)) * time.Millisecond)
		switch rng.IntN(3) {
		case 0: // a planned move
			to := other(holder)
			// The release fails when the holder's lease ran out meanwhile
			// (its serve was killed): the acquire below then takes it.
			run(t, "lease", "release", "--config", cfg, "--region", holder, "dr")
			takeLease(t, cfg, to)
			holder = to
			did = append(did, "move to "+to)
		case 1: // the holder's serve freezes past the TTL; the other takes over
			s, to := serves[holder], other(holder)
			s.cmd.Process.Signal(syscall.SIGSTOP)
			takeLease(t, cfg, to)
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			s.cmd.Process.Signal(syscall.SIGCONT)
			did = append(did, "freeze "+holder+", take over in "+to)
			holder = to
		case 2: // a serve killed mid-batch, started again
			region := []string{"east", "west"}[rng.IntN(2)]
			serves[region].kill()
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			serves[region].start()
			did = append(did, "kill -9 "+region)
		}
	}
	wg.Wait()
	if len(sendErrs) > 0 {
		t.Fatalf("trial %d: dual produce failed with both brokers up: %v", n, sendErrs[0])
	}
	var ids []string
	var epochs []int64
	deadline := time.Now().Add(90 * time.Second)
	for {
		ids, epochs = effects(t, sinkPath)
		seen := map[string]bool{}
		for _, id := range ids {
			seen[id] = true
		}
		if len(seen) >= len(produced) {
			break
		}
		if time.Now().After(deadline) {
			var missing []string
			for id := range produced {
				if !seen[id] {
					missing = append(missing, id)
				}
			}
			t.Fatalf("trial %d (%v): %d of %d events took effect; missing %v\neast:\n%s\nwest:\n%s", n, did, len(seen), len(produced), head(missing),
				tail(serves["east"].out.String()), tail(serves["west"].out.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // anything late would show now
	ids, epochs = effects(t, sinkPath)
	count := map[string]int{}
	for i, id := range ids {
		count[id]++
		if count[id] > 1 {
			t.Fatalf("trial %d (%v): event %s took effect twice", n, did, id)
		}
		if !produced[id] {
			t.Fatalf("trial %d: an effect for %s, never produced", n, id)
		}
		if i > 0 && epochs[i] < epochs[i-1] {
			t.Fatalf("trial %d (%v): event %s took effect under epoch %d after epoch %d had delivered", n, did, id, epochs[i], epochs[i-1])
		}
	}
	for _, s := range serves {
		s.stop()
	}
	t.Logf("trial %d: %v: %d events once each", n, did, len(ids))
}

// takeLease takes the lease of dr for region, once the holder's has run
// out (or was released).
func takeLease(t testing.TB, cfg, region string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := run(t, "lease", "acquire", "--config", cfg, "--region", region, "--yes", "dr")
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot take the lease: %s", region, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitLease waits until region holds the lease of dr.
func waitLease(t testing.TB, cfg, region string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := run(t, "lease", "show", "--config", cfg, "dr")
		if code == 0 && strings.Contains(out, "dr: held by "+region) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never took the lease: %s", region, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func head(s []string) []string { return s[:min(len(s), 10)] }

func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// runIn runs tandem with stdin.
func runIn(t testing.TB, stdin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// waitEffects waits until the sink has n distinct effects and returns them.
func waitEffects(t testing.TB, sink string, n int) (ids []string, epochs []int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, epochs = effects(t, sink)
		distinct := map[string]bool{}
		for _, id := range ids {
			distinct[id] = true
		}
		if len(distinct) >= n {
			if len(ids) != len(distinct) {
				t.Fatalf("%d effects for %d events: some took effect twice", len(ids), len(distinct))
			}
			return ids, epochs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events took effect", len(distinct), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStreamCommands: events in through `tandem stream produce` and the
// HTTP endpoint, status, a switchover (drain, then the sink fenced at the
// new epoch) and a failover, each event taking effect once.
func TestStreamCommands(t *testing.T) {
	r := newRig(t, "nats", 1)
	cfg, sink := r.config(0)
	listen := loopback.Free(t)
	east := startServe(t, cfg, "east", "--listen", listen)
	west := startServe(t, cfg, "west")
	waitLease(t, cfg, "east")

	var lines strings.Builder
	for i := range 50 {
		fmt.Fprintf(&lines, "cli-%02d {\"n\": %d}\n", i, i)
	}
	code, out := runIn(t, lines.String(), "stream", "produce", "--config", cfg, "--lines", "orders0")
	if code != 0 || !strings.Contains(out, "event cli-49: east@50, west@50") {
		t.Fatalf("stream produce: exit %d\n%s", code, out)
	}
	if code, out := run(t, "stream", "produce", "--config", cfg, "nope", "x"); code != 2 || !strings.Contains(out, `no stream named "nope"`) {
		t.Fatalf("unknown stream: exit %d\n%s", code, out)
	}
	post := func(key string) int {
		req, _ := http.NewRequest("POST", "http://"+listen+"/streams/orders0/events", strings.NewReader(`{"via": "http"}`))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			req.Body = io.NopCloser(strings.NewReader(`{"via": "http"}`))
		}
	}
	if c := post("http-1"); c != 200 {
		t.Fatalf("POST: %d", c)
	}
	if c := post("http-1"); c != 200 { // a retry: the same event
		t.Fatalf("POST again: %d", c)
	}
	if c := post(""); c != 400 {
		t.Fatalf("POST without an id: %d, want 400", c)
	}
	waitEffects(t, sink, 51)

	out = must(t, "status", "--config", cfg, "--json")
	var st struct {
		Streams []struct {
			Stream     string `json:"stream"`
			Health     string `json:"health"`
			Processing string `json:"processing_region"`
			Sink       struct {
				Applied int64 `json:"applied"`
			} `json:"sink"`
			Regions map[string]struct {
				Produced int64 `json:"produced"`
			} `json:"regions"`
		} `json:"streams"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Streams) != 1 {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if s := st.Streams[0]; s.Processing != "east" || s.Sink.Applied != 51 || s.Regions["west"].Produced < 51 {
		t.Fatalf("status: %+v", s)
	}

	// A switchover: east drains, west resumes where east stopped.
	out = must(t, "plan", "run", "--config", cfg, "switchover")
	for _, want := range []string{"succeeded      stream.drain:orders0", "succeeded      stream.start:orders0", "the sink takes deliveries from west under epoch"} {
		if !strings.Contains(out, want) {
			t.Fatalf("switchover output lacks %q:\n%s", want, out)
		}
	}
	for i := range 10 {
		must(t, "stream", "produce", "--config", cfg, "--id", fmt.Sprintf("after-switch-%d", i), "orders0", "x")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("east:\n%s\nwest:\n%s", tail(east.out.String()), tail(west.out.String()))
		}
	})
	ids, epochs := waitEffects(t, sink, 61)
	if epochs[len(epochs)-1] <= epochs[0] {
		t.Fatalf("the events after the switchover took effect under epoch %d, as before it (%d)", epochs[len(epochs)-1], epochs[0])
	}
	_ = ids

	// A failover back to east with west gone dark.
	west.kill()
	out = must(t, "plan", "run", "--config", cfg, "failover")
	if !strings.Contains(out, "east resumes after position") {
		t.Fatalf("failover output:\n%s", out)
	}
	for i := range 10 {
		must(t, "stream", "produce", "--config", cfg, "--id", fmt.Sprintf("after-failover-%d", i), "orders0", "x")
	}
	waitEffects(t, sink, 71)
}

// TestHTTPSinkServe: an HTTP sink under serve, through a switchover: every
// event reaches the receiver with its id as Idempotency-Key, and the
// deliveries after the switch carry the new epoch.
func TestHTTPSinkServe(t *testing.T) {
	var mu sync.Mutex
	epochs := map[string]string{}
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if k := r.Header.Get("Idempotency-Key"); epochs[k] == "" {
			epochs[k] = r.Header.Get("Tandem-Epoch")
		}
	}))
	defer srv.Close()
	r := newRig(t, "nats", 1)
	cfg, _ := r.configSink(0, fmt.Sprintf(`    sink:
      http: {url: "%s/events"}
      ledger: {driver: sqlite, dsn: %s}`, srv.URL, filepath.Join(r.dir, "ledger.db")))
	startServe(t, cfg, "east")
	startServe(t, cfg, "west")
	waitLease(t, cfg, "east")
	send := func(prefix string) {
		var lines strings.Builder
		for i := range 50 {
			fmt.Fprintf(&lines, "%s-%02d x\n", prefix, i)
		}
		if code, out := runIn(t, lines.String(), "stream", "produce", "--config", cfg, "--lines", "orders0"); code != 0 {
			t.Fatalf("produce: %s", out)
		}
	}
	waitCalls := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			got := len(epochs)
			mu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events reached the receiver", got, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	send("before")
	waitCalls(50)
	must(t, "plan", "run", "--config", cfg, "switchover")
	send("after")
	waitCalls(100)
	mu.Lock()
	defer mu.Unlock()
	if epochs["before-00"] == epochs["after-00"] || calls != 100 {
		t.Fatalf("epochs %s then %s, %d calls for 100 events", epochs["before-00"], epochs["after-00"], calls)
	}
}
