package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"tandem/internal/catalog"
	"tandem/internal/member"
	"tandem/internal/member/streams"
	"tandem/internal/stream/embed"
	"tandem/produce"
)

// demoStreams is the demo's event stream: a NATS JetStream server per
// region (embedded, keeping its stream in the region's folder), orders
// produced to both all along, and a sink outside both regions.
type demoStreams struct {
	dir   string
	nats  map[string]*embed.NATS
	ports map[string]int
	sink  string

	mu     sync.Mutex
	acked  []string // events a region took
	inDark int      // of them, while the primary was dark
	dark   bool
	cancel context.CancelFunc
	done   chan struct{}
}

const demoStreamTopology = `streams:
  - name: orders
    regions:
      primary: {broker: "nats://127.0.0.1:%[2]d", stream: ORDERS}
      standby: {broker: "nats://127.0.0.1:%[3]d", stream: ORDERS}
    catch_up_after: 1s
    sink:
      sql:
        driver: sqlite
        dsn: %[1]s/sink/orders.db
        statements:
          - INSERT INTO orders (id, body, region, epoch) VALUES ($1, $2, $4, $3)
`

func startDemoStreams(ctx context.Context, dir string) (*demoStreams, error) {
	d := &demoStreams{dir: dir, nats: map[string]*embed.NATS{}, ports: map[string]int{}, sink: filepath.Join(dir, "sink", "orders.db")}
	for _, region := range []string{"primary", "standby"} {
		if err := d.startBroker(region); err != nil {
			d.stopAll()
			return nil, err
		}
		if err := embed.CreateStream(ctx, d.nats[region].URL, "ORDERS", "orders.events"); err != nil {
			d.stopAll()
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(d.sink), 0o755); err != nil {
		return nil, err
	}
	err := catalog.Exec(ctx, "sqlite", d.sink, []string{`CREATE TABLE IF NOT EXISTS orders (id TEXT, body TEXT, region TEXT, epoch INTEGER)`})
	return d, err
}

func (d *demoStreams) startBroker(region string) error {
	n, err := embed.StartNATS(filepath.Join(d.dir, region, "nats"), d.ports[region])
	if err != nil {
		return fmt.Errorf("the %s region's NATS server: %w", region, err)
	}
	u, err := url.Parse(n.URL)
	if err != nil {
		return err
	}
	d.ports[region], _ = strconv.Atoi(u.Port())
	d.nats[region] = n
	return nil
}

func (d *demoStreams) topology() string {
	return fmt.Sprintf(demoStreamTopology, d.dir, d.ports["primary"], d.ports["standby"])
}

// produceAll sends an order every 20 ms to both regions until stopped.
func (d *demoStreams) produceAll(ctx context.Context) error {
	p, err := produce.Open(ctx, []produce.Target{
		{Region: "primary", Broker: d.nats["primary"].URL, Stream: "ORDERS"},
		{Region: "standby", Broker: d.nats["standby"].URL, Stream: "ORDERS"}})
	if err != nil {
		return err
	}
	p.Timeout = time.Second
	ctx, d.cancel = context.WithCancel(ctx)
	d.done = make(chan struct{})
	go func() {
		defer close(d.done)
		defer p.Close()
		for i := 1; ctx.Err() == nil; i++ {
			id := fmt.Sprintf("order-%05d", i)
			if _, err := p.Send(ctx, id, fmt.Appendf(nil, `{"order": %d, "amount": %d}`, i, 10+i%90)); err == nil {
				d.mu.Lock()
				d.acked = append(d.acked, id)
				if d.dark {
					d.inDark++
				}
				d.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return nil
}

// goDark stops the primary's broker (with its region).
func (d *demoStreams) goDark() {
	d.mu.Lock()
	d.dark = true
	d.mu.Unlock()
	d.nats["primary"].Stop()
	delete(d.nats, "primary")
}

// comeBack starts the primary's broker again on its port and folder.
func (d *demoStreams) comeBack() error {
	d.mu.Lock()
	d.dark = false
	d.mu.Unlock()
	return d.startBroker("primary")
}

func (d *demoStreams) stopProducing() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
		d.cancel = nil
	}
}

func (d *demoStreams) stopAll() {
	d.stopProducing()
	for _, n := range d.nats {
		n.Stop()
	}
}

// waitCaughtUp waits until the primary's stream holds every order the
// standby's does (serve's catch-up copies what it missed while dark), as
// tandem status reports it.
func (d *demoStreams) waitCaughtUp(ctx context.Context, env *member.Env, w io.Writer) error {
	var st streams.Status
	err := poll(ctx, 30*time.Second, func() (bool, error) {
		st, _ = streams.Kind{}.Status(ctx, env, "orders").Detail.(streams.Status)
		p, s := st.Regions["primary"], st.Regions["standby"]
		return p.Error == "" && s.Error == "" && p.Missing == 0 && s.Missing == 0 && p.Produced >= s.Produced, nil
	})
	if err != nil {
		return fmt.Errorf("the primary's orders stream was not caught up: %w", err)
	}
	fmt.Fprintf(w, "orders: the standby's serve caught the primary's stream up with the %d orders it missed while dark (now %d events in each)\n",
		st.Regions["primary"].Replicated, st.Regions["primary"].Produced)
	return nil
}

// report stops the producer, waits until the sink has every event a
// region took, and prints what it counted in the sink's table.
func (d *demoStreams) report(ctx context.Context, w io.Writer) error {
	d.stopProducing()
	db, err := sql.Open("sqlite", d.sink+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	d.mu.Lock()
	acked, inDark := d.acked, d.inDark
	d.mu.Unlock()
	var rows, distinct, lost int
	count := func() (bool, error) {
		if err := db.QueryRowContext(ctx, `SELECT count(*), count(DISTINCT id) FROM orders`).Scan(&rows, &distinct); err != nil {
			return false, err
		}
		return distinct >= len(acked), nil
	}
	if err := poll(ctx, 60*time.Second, count); err != nil && !errors.Is(err, errGaveUp) {
		return err
	}
	seen := map[string]bool{}
	r, err := db.QueryContext(ctx, `SELECT DISTINCT id FROM orders`)
	if err != nil {
		return err
	}
	for r.Next() {
		var id string
		r.Scan(&id)
		seen[id] = true
	}
	r.Close()
	for _, id := range acked {
		if !seen[id] {
			lost++
		}
	}
	var byRegion []string
	r, err = db.QueryContext(ctx, `SELECT region, epoch, count(*) FROM orders GROUP BY region, epoch ORDER BY min(rowid)`)
	if err != nil {
		return err
	}
	for r.Next() {
		var region string
		var epoch, n int
		r.Scan(&region, &epoch, &n)
		byRegion = append(byRegion, fmt.Sprintf("%d in %s (epoch %d)", n, region, epoch))
	}
	r.Close()
	fmt.Fprintf(w, "orders stream: %d produced (%d while the primary was dark), %d processed once (%s), %d lost, %d duplicated\n",
		len(acked), inDark, distinct, strings.Join(byRegion, ", "), lost, rows-distinct)
	if lost > 0 || rows != distinct {
		return fmt.Errorf("the orders stream lost %d events and applied %d twice", lost, rows-distinct)
	}
	return nil
}
