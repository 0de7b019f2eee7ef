package cdc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/cdc"
	"tandem/internal/fence"
	"tandem/internal/postgres"
)

// TestMain runs a replicator in a child process when asked (the test can
// kill it with SIGKILL at any moment).
func TestMain(m *testing.M) {
	if spec := os.Getenv("TANDEM_CDC_CHILD"); spec != "" {
		var o cdc.Options
		if err := json.Unmarshal([]byte(spec), &o); err != nil {
			panic(err)
		}
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		cdc.New(o).Run(context.Background())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a replicator in its own process.
type child struct {
	t    *testing.T
	o    cdc.Options
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

var children atomic.Int64

func startChild(t *testing.T, o cdc.Options, log *os.File) *child {
	if o.Bulk == 0 && children.Add(1)%2 == 0 {
		o.Bulk = 1 // every other child reads every backlog in bulk
	}
	spec, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, o: o, cmd: exec.Command(os.Args[0], "-test.run=^$"), done: make(chan struct{}), log: log}
	c.cmd.Env = append(os.Environ(), "TANDEM_CDC_CHILD="+string(spec))
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.kill)
	return c
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

// load writes inserts, updates and deletes into whichever source server
// is the primary, reconnecting through failovers, until stopped.
type load struct {
	sources []string
	stop    chan struct{}
	wg      sync.WaitGroup
	n       atomic.Int64
}

func startLoad(sources []string, workers int) *load {
	l := &load{sources: sources, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			ctx := context.Background()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				p, err := cdc.FindPrimary(ctx, l.sources)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				c, err := postgres.Connect(ctx, p)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				for err == nil {
					select {
					case <-l.stop:
						c.Close(ctx)
						return
					default:
					}
					id := r.IntN(3000) + 1
					switch r.IntN(10) {
					case 0, 1:
						_, err = c.Exec(ctx, `DELETE FROM acct WHERE id = $1`, id)
					case 2:
						// a transaction of several rows
						_, err = c.Exec(ctx, fmt.Sprintf(`INSERT INTO acct (id, balance, note) SELECT g, 1, 'batch' FROM generate_series(%d, %d) g
							ON CONFLICT (id) DO UPDATE SET balance = acct.balance + 1`, id, id+20))
					default:
						_, err = c.Exec(ctx, `INSERT INTO acct (id, balance, note) VALUES ($1, $2, md5(random()::text))
							ON CONFLICT (id) DO UPDATE SET balance = acct.balance + excluded.balance, note = excluded.note`, id, r.IntN(100))
					}
					if err == nil {
						l.n.Add(1)
					}
					time.Sleep(time.Millisecond)
				}
				c.Close(ctx)
			}
		}()
	}
	return l
}

func (l *load) end() { close(l.stop); l.wg.Wait() }

func sleepRandom(max time.Duration) { time.Sleep(time.Duration(rand.Int64N(int64(max)))) }

// TestAdversarialFailovers: a write load runs while the source's standby
// is promoted at random moments (the old primary killed, then rebuilt as
// the new primary's standby) and the replicator is killed with SIGKILL at
// random moments, ten times; the target ends with no difference from the
// surviving primary.
func TestAdversarialFailovers(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	run(t, tp.primary.DSN(), `CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text)`,
		`INSERT INTO acct SELECT g, 0, 'seed' FROM generate_series(1, 2000) g`)
	o := tp.options("acct")
	log, err := os.CreateTemp("", "tandem-cdc-child-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(log.Name())
	ch := startChild(t, o, log)
	ld := startLoad(o.Sources, 4)
	primary, standby := tp.primary, tp.standby
	trials := 10
	for trial := range trials {
		sleepRandom(800 * time.Millisecond)
		if rand.IntN(2) == 0 {
			ch.kill()
			sleepRandom(300 * time.Millisecond)
			ch = startChild(t, o, log)
		}
		sleepRandom(800 * time.Millisecond)
		// Kill the replicator at a random moment around the promotion.
		killer := make(chan *child, 1)
		go func(c *child) {
			sleepRandom(1500 * time.Millisecond)
			c.kill()
			killer <- c
		}(ch)
		primary.Stop()
		if err := postgres.Promote(context.Background(), standby.DSN()); err != nil {
			t.Fatalf("trial %d: promote: %v", trial, err)
		}
		primary, standby = standby, primary
		<-killer
		ch = startChild(t, o, log)
		sleepRandom(500 * time.Millisecond)
		// The old primary comes back as the new one's standby.
		standby.BaseBackup(primary)
		standby.Start()
		t.Logf("trial %d: %s is the primary; %d writes so far", trial, postgres.Redact(primary.DSN()), ld.n.Load())
	}
	ld.end()
	var rep cdc.Report
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err = cdc.Validate(context.Background(), o, cdc.ValidateOptions{Wait: 10 * time.Second})
		if err == nil && rep.Differences == 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			j, _ := json.MarshalIndent(rep, "", " ")
			t.Fatalf("the target never matched the surviving primary: %v\n%.5000s\nreplicator's log:\n%s", err, j, b)
		}
		time.Sleep(time.Second)
	}
	if b, _ := os.ReadFile(log.Name()); !bytes.Contains(b, []byte("reads a backlog in bulk")) || !bytes.Contains(b, []byte("cdc streaming")) {
		t.Fatalf("the replicators did not both read a backlog in bulk and stream:\n%s", b)
	}
	followed := query(t, tp.target.DSN(), `SELECT count(*) FROM tandem.cdc_events WHERE kind = 'source-failover'`)
	lost := query(t, tp.target.DSN(), `SELECT coalesce(sum(jsonb_array_length(detail->'lost')), 0) FROM tandem.cdc_events WHERE kind = 'source-failover'`)
	t.Logf("%d writes; %s source failovers followed; %s applied transactions reported lost at the source; %d rows compared",
		ld.n.Load(), followed, lost, rep.Tables[0].Rows)
	// Two promotions close together can be followed in one step (the
	// replicator was down or reconnecting across both): what counts is
	// that the target stands on the surviving primary's timeline.
	run(t, primary.DSN(), "CHECKPOINT")
	tl := query(t, primary.DSN(), `SELECT timeline_id FROM pg_control_checkpoint()`)
	if at := query(t, tp.target.DSN(), `SELECT timeline FROM tandem.cdc_position`); at != tl || tl != fmt.Sprint(trials+1) || followed == "0" {
		t.Fatalf("the target's position is on timeline %s, the primary on %s after %d promotions (%s followed)", at, tl, trials, followed)
	}
}

// TestFenceRandomMoments: a replicator applies a write load under a lease
// epoch; at a random moment the epoch moves and the target's fence is
// raised (what a plan's cdc.stop does). Nothing the old writer does
// becomes visible in the target after the fence returns. Ten trials.
func TestFenceRandomMoments(t *testing.T) {
	t.Parallel()
	tp := newTopology(t)
	run(t, tp.primary.DSN(), `CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text)`)
	ld := startLoad([]string{tp.primary.DSN()}, 2)
	defer ld.end()
	for trial := range 10 {
		var epoch atomic.Int64
		epoch.Store(int64(trial + 1))
		mine := epoch.Load()
		cond := func(ctx context.Context) (fence.Grant, error) {
			if epoch.Load() != mine {
				return fence.Grant{}, fmt.Errorf("the lease moved: %w", fence.ErrFenced)
			}
			return fence.Grant{Epoch: mine, For: 200 * time.Millisecond, What: "test lease"}, nil
		}
		o := tp.options("acct")
		o.Region, o.Guard = "east", fence.New("cdc under test", cond)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cdc.New(o).Run(ctx) }()
		if trial > 0 { // the first trial's fence comes before the first snapshot
			sleepRandom(1500 * time.Millisecond)
		}
		epoch.Add(1)
		if err := cdc.Fence(context.Background(), o.Target, o.Pair, epoch.Load(), "west"); err != nil {
			t.Fatal(err)
		}
		// The target as it stands (the table may not exist yet: the
		// fence can come before the first snapshot).
		state := func() string {
			s, err := try(tp.target.DSN(), `SELECT (SELECT lsn FROM tandem.cdc_position WHERE pair = 'orders'), (SELECT coalesce(sum(hashtext(a::text)), 0) FROM acct a)`)
			if err != nil {
				return "error: " + err.Error()
			}
			return s
		}
		snap := state()
		time.Sleep(400 * time.Millisecond)
		if after := state(); after != snap {
			t.Fatalf("trial %d: the target changed after the fence: %s, then %s", trial, snap, after)
		}
		select {
		case err := <-done:
			if !fence.Fenced(err) {
				t.Fatalf("trial %d: the replicator ended with %v, want fenced", trial, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("trial %d: the fenced replicator kept running", trial)
		}
		cancel()
	}
}
