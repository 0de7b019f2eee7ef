package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tandem/internal/daemon"
	"tandem/internal/delta/deltatest"
	"tandem/internal/postgres/pgtest"
)

// hooks is a job scheduler's API: it records the calls it gets and answers
// 503 for a region that is down.
type hooks struct {
	mu    sync.Mutex
	calls []string
	down  map[string]bool
	srv   *httptest.Server
}

func newHooks(t *testing.T) *hooks {
	h := &hooks{down: map[string]bool{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		region := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		if h.down[region] {
			http.Error(w, "region down", http.StatusServiceUnavailable)
			return
		}
		h.calls = append(h.calls, r.URL.Path)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hooks) setDown(region string, down bool) {
	h.mu.Lock()
	h.down[region] = down
	h.mu.Unlock()
}

func (h *hooks) called(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.calls, path)
}

// pgConn connects to dsn; the caller closes the connection.
func pgConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sqlOne(t *testing.T, dsn, query string) string {
	t.Helper()
	c := pgConn(t, dsn)
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(context.Background(), query).Scan(&s); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return s
}

func sqlExec(t *testing.T, dsn, stmt string) error {
	t.Helper()
	c := pgConn(t, dsn)
	defer c.Close(context.Background())
	_, err := c.Exec(context.Background(), stmt)
	return err
}

// TestPlanFailoverFailback runs the whole life of a protection group on
// real parts: folders as regions, a Spark-written Delta table, a PostgreSQL
// primary with a streaming standby, aliases as views in PostgreSQL, and a
// scheduler API over HTTP. The primary goes dark; the failover runs from
// the standby alone; the old primary comes back stale and is fenced; a
// failback makes it the standby; a switchover makes it primary again.
func TestPlanFailoverFailback(t *testing.T) {
	dir := t.TempDir()
	pgEast := pgtest.Primary(t)
	pgWest := pgtest.Standby(t, pgEast)
	h := newHooks(t)
	if err := sqlExec(t, pgEast.DSN(), `CREATE TABLE orders_east (region text); INSERT INTO orders_east VALUES ('east');
		CREATE TABLE orders_west (region text); INSERT INTO orders_west VALUES ('west');
		CREATE VIEW orders AS SELECT * FROM orders_east`); err != nil {
		t.Fatal(err)
	}

	// The table is at version 2 when its run completes; version 3 is the
	// next run, written after the last sync.
	bronze := filepath.Join(dir, "east/tables/bronze")
	deltatest.CopyTo(t, "snapshot-data3", bronze)
	v3 := filepath.Join(bronze, "_delta_log/00000000000000000003.json")
	held := filepath.Join(dir, "v3.json")
	if err := os.Rename(v3, held); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "east/lake/a.csv"), "a")
	os.MkdirAll(filepath.Join(dir, "west/lake"), 0o755)
	os.MkdirAll(filepath.Join(dir, "witness"), 0o755)
	cfg := filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.NewReplacer("DIR", dir, "PGEAST", pgEast.DSN(), "PGWEST", pgWest.DSN(), "HOOK", h.srv.URL).Replace(`
regions:
  - {name: east, state: DIR/east/.tandem}
  - {name: west, state: DIR/west/.tandem}
replication:
  - {name: lake, from: {region: east, url: DIR/east/lake}, to: {region: west, url: DIR/west/lake}, rpo: 1h, interval: 1h}
groups:
  - name: sales
    from: east
    to: west
    interval: 1h
    workflow: {name: etl}
    tables:
      - {name: bronze, from: DIR/east/tables/bronze, to: DIR/west/tables/bronze}
databases:
  - name: warehouse
    primary: {region: east, dsn: "PGEAST"}
    standby: {region: west, dsn: "PGWEST"}
aliases:
  - name: catalog
    driver: postgres
    database: warehouse
    names:
      orders: {east: orders_east, west: orders_west}
workflows:
  - name: etl
    activate: {http: {method: POST, url: "HOOK/{{.Region}}/activate"}}
    deactivate: {http: {method: POST, url: "HOOK/{{.Region}}/deactivate"}}
witness: {url: DIR/witness}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    lease_ttl: 2s
    replications: [lake]
    groups: [sales]
    databases: [warehouse]
    aliases: [catalog]
    workflows: [etl]
    steps:
      "database.fence:warehouse": {timeout: 10s}
      "workflow.deactivate:etl": {timeout: 10s}
`))
	run := expecter(t)

	// Before anything was copied, the prechecks say what is missing.
	out := run(1, "prechecks of switchover failed", "plan", "precheck", "--config", cfg, "switchover")
	for _, want := range []string{"FAIL check.replication:lake", "never completed a pass", "FAIL check.group:sales", "no manifest"} {
		if !strings.Contains(out, want) {
			t.Errorf("precheck output lacks %q:\n%s", want, out)
		}
	}
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	run(0, "run r1 completed", "group", "complete", "--config", cfg, "sales", "--run-id", "r1")
	run(0, "manifest written", "group", "sync", "--config", cfg, "sales")
	if err := os.Rename(held, v3); err != nil { // run r2 starts in east
		t.Fatal(err)
	}
	// Each region runs its serve: east's takes the lease and renews it,
	// west's keeps west passive. (Their copies run every hour: the test
	// runs its passes by hand.)
	eastServe := startServe(t, cfg, "east")
	startServe(t, cfg, "west")
	waitFor(t, "east's serve did not take the lease", leaseIs(dir, "east"))
	run(0, "held by east, epoch 1, standby west", "lease", "show", "--config", cfg, "lakehouse")
	out = run(0, "ok   check.database:warehouse", "plan", "precheck", "--config", cfg, "switchover")
	if strings.Contains(out, "FAIL") {
		t.Fatalf("prechecks failed on a healthy topology:\n%s", out)
	}
	run(0, "1. prechecks", "plan", "show", "--config", cfg, "failover")

	// A foreign write in the replica breaks a precondition.
	writeFile(t, filepath.Join(dir, "west/lake/oops.csv"), "x")
	run(0, "FOREIGN", "replicate", "--config", cfg, "lake")
	run(1, "holds 1 objects written there", "plan", "precheck", "--config", cfg, "switchover")
	os.Remove(filepath.Join(dir, "west/lake/oops.csv"))
	run(0, "copied    0 objects", "replicate", "--config", cfg, "lake")

	// A drill freezes the standby at a consistent point without touching
	// the primary: nothing is copied into it until the drill stops.
	out = run(0, "RTO", "plan", "run", "--config", cfg, "drill-start")
	if !strings.Contains(out, "paused for the drill") {
		t.Errorf("drill-start output:\n%s", out)
	}
	if got := sqlOne(t, pgWest.DSN(), `SELECT pg_is_wal_replay_paused()::text`); got != "true" {
		t.Fatalf("replay paused during the drill: %s", got)
	}
	writeFile(t, filepath.Join(dir, "east/lake/during-drill.csv"), "d")
	run(1, "a drill of lakehouse is in progress in west", "replicate", "--config", cfg, "lake")
	run(0, "RTO", "plan", "run", "--config", cfg, "drill-stop")
	if got := sqlOne(t, pgWest.DSN(), `SELECT pg_is_wal_replay_paused()::text`); got != "false" {
		t.Fatalf("replay paused after the drill: %s", got)
	}
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")

	// East goes dark: its serve, its folders, its database and its
	// scheduler.
	eastServe.kill()
	pgEast.Stop()
	h.setDown("east", true)
	if err := os.Rename(filepath.Join(dir, "east"), filepath.Join(dir, "east.dark")); err != nil {
		t.Fatal(err)
	}
	out = run(0, "RTO", "plan", "run", "--config", cfg, "failover")
	for _, want := range []string{
		"west holds the lease, epoch 2; east is fenced",
		"failed-ignored database.fence:warehouse",
		"failed-ignored workflow.deactivate:etl",
		"group sales holds run \"r1\"",
		"is writable",
		"1 aliases of catalog point at west",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("failover output lacks %q:\n%s", want, out)
		}
	}
	if got := sqlOne(t, pgWest.DSN(), `SELECT region FROM orders`); got != "west" {
		t.Fatalf("the alias reads %s after the failover", got)
	}
	if err := sqlExec(t, pgWest.DSN(), `INSERT INTO orders_west VALUES ('written after failover')`); err != nil {
		t.Fatalf("the promoted database refuses writes: %v", err)
	}
	if !h.called("/west/activate") {
		t.Fatal("the workflow was not activated in west")
	}
	run(0, "held by west, epoch 2, standby none", "lease", "show", "--config", cfg, "lakehouse")

	// East comes back, stale: its serve makes it passive at once (its
	// workflow paused again, which the failover could not do), and its
	// tandem copies nothing.
	if err := os.Rename(filepath.Join(dir, "east.dark"), filepath.Join(dir, "east")); err != nil {
		t.Fatal(err)
	}
	h.setDown("east", false)
	eastServe = startServe(t, cfg, "east")
	waitFor(t, "east's serve did not pause east's workflow", func() bool { return h.called("/east/deactivate") })
	// Its database is still down: status says what is not done yet.
	waitFor(t, "east's serve did not record what it did", func() bool {
		_, out := tandem(t, nil, "status", "--config", cfg)
		return strings.Contains(out, "east is NOT passive yet") && strings.Contains(out, "workflow etl is paused in east")
	})
	// A second failover would move west -> east: its prechecks stop it
	// before it changes anything, and the run ends: it stands in the way
	// of no other plan.
	run(1, "stopped in its prechecks and ended; nothing was changed", "plan", "run", "--config", cfg, "failover")
	writeFile(t, filepath.Join(dir, "east/lake/stale.csv"), "s")
	run(1, "fenced", "replicate", "--config", cfg, "lake")
	run(1, "fenced", "group", "sync", "--config", cfg, "sales")
	if _, err := os.Stat(filepath.Join(dir, "west/lake/stale.csv")); !os.IsNotExist(err) {
		t.Fatal("the stale primary's write reached the new primary")
	}

	// Failback: east's database is rebuilt as a standby of west (what a
	// user step or an operator does); until then the precheck says so.
	pgEast.Start() // back as it was: a primary of its own
	run(1, "rebuild it as a standby", "plan", "precheck", "--config", cfg, "failback")
	out = run(1, "database warehouse in east is not a standby (not in recovery)", "plan", "precheck", "--config", cfg, "switchover")
	if !strings.Contains(out, "east is not the standby of west (the standby is nobody): run a failback first") {
		t.Errorf("switchover prechecks before the failback:\n%s", out)
	}
	pgEast.Stop()
	pgEast.BaseBackup(pgWest)
	pgEast.Start()
	writeFile(t, filepath.Join(dir, "west/lake/new-in-west.csv"), "w")
	out = run(0, "RTO", "plan", "run", "--config", cfg, "failback")
	for _, want := range []string{"bronze in east: 1 log files written after the last manifest", "synced back from west", "west holds lakehouse (epoch 2) and replicates into east"} {
		if !strings.Contains(out, want) {
			t.Errorf("failback output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(v3); !os.IsNotExist(err) {
		t.Fatal("east's commit of the lost run is still in its log")
	}
	if data, err := os.ReadFile(filepath.Join(dir, "east/lake/new-in-west.csv")); err != nil || string(data) != "w" {
		t.Fatalf("west's new object did not reach east: %q %v", data, err)
	}
	run(0, "west/lake -> file://"+dir+"/east/lake", "replicate", "--config", cfg, "lake")
	// West's workflow completes a run; its sync now runs west -> east.
	run(0, "run w1 completed", "group", "complete", "--config", cfg, "sales", "--run-id", "w1")
	run(0, "manifest written", "group", "sync", "--config", cfg, "sales")

	// Switchover back to east: the precheck finds the stale primary's
	// write in the replica; once it is removed, a retry, pasted as
	// printed, goes on.
	out = run(1, "holds 1 objects written there, not by replication (for example [stale.csv])", "plan", "run", "--config", cfg, "switchover")
	retry := out[strings.Index(out, "`tandem plan retry ")+1:]
	retry = retry[:strings.Index(retry, "`")]
	if !strings.HasPrefix(retry, "tandem plan retry --config "+cfg+" switchover-") {
		t.Fatalf("the retry hint cannot be pasted: %q", retry)
	}
	os.Remove(filepath.Join(dir, "east/lake/stale.csv"))
	run(0, "copied    0 objects", "replicate", "--config", cfg, "lake")
	out = run(0, "RTO", strings.Fields(retry)[1:]...)
	if !strings.Contains(out, "east holds the lease, epoch 3, standby west") {
		t.Errorf("switchover output:\n%s", out)
	}
	if got := sqlOne(t, pgEast.DSN(), `SELECT count(*)::text FROM orders_west WHERE region = 'written after failover'`); got != "1" {
		t.Fatalf("east's database lacks west's write: %s", got)
	}
	if got := sqlOne(t, pgEast.DSN(), `SELECT region FROM orders`); got != "east" {
		t.Fatalf("the alias reads %s after switching back", got)
	}
	if err := sqlExec(t, pgWest.DSN(), `INSERT INTO orders_west VALUES ('x')`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("west was not fenced: %v", err)
	}
	run(0, "copied    0 objects", "replicate", "--config", cfg, "lake")
	run(0, "the standby already holds run w1", "group", "sync", "--config", cfg, "sales")

	// West's database was the primary: it is fenced, not a standby, until
	// it is rebuilt; status says so and exits 4.
	out = run(4, "protection group lakehouse: lease held by east, epoch 3, standby west", "status", "--config", cfg)
	for _, want := range []string{"replication lake: ok", "/east/lake -> ", "database warehouse: no-standby", "west is passive since"} {
		if !strings.Contains(out, want) {
			t.Errorf("status after switching back lacks %q:\n%s", want, out)
		}
	}
	out = run(0, "failover", "plan", "executions", "--config", cfg)
	if n := strings.Count(out, "succeeded"); n != 5 {
		t.Fatalf("executions: %d succeeded, want 5:\n%s", n, out)
	}
}

// TestPlanKillResume kills a plan run in the middle of a step, shows that a
// second run is refused while it is unfinished, resumes it, and walks a
// timed-out step through retry and a pause through approve.
func TestPlanKillResume(t *testing.T) {
	dir, cfg := eastWest(t, `
serve: {token: sekrit-token-123}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    user_groups:
      - name: slow
        before: promote
        steps:
          - name: export
            script: {command: [sh, -c, "echo started >> DIR/export.log; touch DIR/export.started; sleep 30"]}
      - name: checks
        after: promote
        steps:
          - name: smoke
            timeout: 1s
            script: {command: [sh, -c, "test -f DIR/fixed || sleep 5"]}
      - name: gate
        after: aliases
        steps:
          - {name: go-ahead, pause: true}
`)
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")

	// Kill the run while the export step runs.
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "plan", "run", "--config", cfg, "switchover")
	cmd.Env = append(os.Environ(), "TANDEM_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "export.started"))
	cmd.Process.Kill()
	cmd.Wait()

	run(1, "must be resumed, retried, skipped or canceled first", "plan", "run", "--config", cfg, "switchover")
	var list []struct {
		ID, State string
	}
	json.Unmarshal([]byte(run(0, "", "plan", "executions", "--config", cfg, "--json")), &list)
	if len(list) != 1 || list[0].State != "running" {
		t.Fatalf("executions: %+v", list)
	}
	id := list[0].ID

	// Resume: the export step runs again (quickly this time), the smoke
	// step times out and stops the plan.
	writeFile(t, filepath.Join(dir, "export.log"), "")
	os.WriteFile(cfg, []byte(strings.Replace(string(mustRead(t, cfg)), "sleep 30", "true", 1)), 0o644)
	out := run(1, "user:checks/smoke timed-out", "plan", "resume", "--config", cfg, id)
	if !strings.Contains(out, "succeeded      user:slow/export") {
		t.Fatalf("resume output:\n%s", out)
	}
	// Retry after the fix; the pause waits for approval.
	writeFile(t, filepath.Join(dir, "fixed"), "")
	bg := exec.Command(os.Args[0], "-test.run=^$", "--", "plan", "retry", "--config", cfg, id)
	bg.Env = append(os.Environ(), "TANDEM_MAIN=1")
	stdout, _ := bg.StdoutPipe()
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	var got []string
	for lines.Scan() {
		got = append(got, lines.Text())
		// The command is printed ready to paste, with --config.
		if strings.Contains(lines.Text(), "approve with: tandem plan approve --config "+cfg+" "+id+" user:gate/go-ahead") {
			break
		}
	}
	run(0, "approved", "plan", "approve", "--config", cfg, id, "user:gate/go-ahead")
	for lines.Scan() {
		got = append(got, lines.Text())
	}
	if err := bg.Wait(); err != nil {
		t.Fatalf("retry: %v\n%s", err, strings.Join(got, "\n"))
	}
	if !strings.Contains(strings.Join(got, "\n"), "succeeded: RTO") {
		t.Fatalf("retry output:\n%s", strings.Join(got, "\n"))
	}
	out = run(0, "succeeded", "plan", "executions", "--config", cfg, id)
	for _, want := range []string{"succeeded      user:checks/smoke", "succeeded      lease.move", "RTO"} {
		if !strings.Contains(out, want) {
			t.Errorf("execution lacks %q:\n%s", want, out)
		}
	}
	run(0, "held by west, epoch 1, standby east", "lease", "show", "--config", cfg, "lakehouse")

	// The run's report: one HTML file with no script and nothing it
	// loads, the RTO, every step, who approved, the configuration without
	// its secrets.
	file := filepath.Join(dir, "report.html")
	run(0, "wrote "+file, "report", "--config", cfg, id, "--out", file)
	page := mustReadString(t, file)
	for _, want := range []string{"switchover of lakehouse: <span class=\"succeeded\">succeeded</span>", "measured RTO</th><td><b>",
		"user:gate/go-ahead</td><td>approved by ", "user:checks/smoke, 2 attempts", "timed-out", "lease.move", "Prechecks (the RPO evidence at the decision)",
		"RPO: what the standby lacked at the decision", "<tr><td>replication lake</td><td>", "<td>15m0s</td>",
		"Configuration in force (secrets redacted)", "protection_groups"} {
		if !strings.Contains(page, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, never := range []string{"sekrit-token-123", "<script", "src=", "href="} {
		if strings.Contains(page, never) {
			t.Errorf("the report holds %q", never)
		}
	}
	out = run(0, "", "report", "--config", cfg, "--history", "--out", "-")
	if !strings.Contains(out, "Drills and failovers of lakehouse") || !strings.Contains(out, id) || !strings.Contains(out, "<rect") || !strings.Contains(out, "RPO over time") {
		t.Errorf("the history:\n%s", out)
	}
	run(2, "give an EXECUTION or --history", "report", "--config", cfg)
	run(2, "nosuch", "report", "--config", cfg, "nosuch")
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServeKeepsLease: serve in the primary region takes the lease that was
// never taken and keeps renewing it; when the lease is handed over to the
// other region, whose serve renews it from then on, east's serve stops
// acting as primary before west's starts (their tandem_lease_primary never
// sum to 2), east copies nothing more, and west's serve copies into east.
func TestServeKeepsLease(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], lease_ttl: 600ms}
`)
	writeFile(t, cfg, strings.Replace(string(mustRead(t, cfg)), "/west/lake}}", "/west/lake}, interval: 1s}", 1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := func(region string) (*daemon.Daemon, chan error) {
		done := make(chan error, 1)
		started := make(chan *daemon.Daemon, 1)
		go func() {
			done <- runServe(ctx, serveOptions{config: cfg, listen: "127.0.0.1:0", region: region}, started)
		}()
		select {
		case d := <-started:
			return d, done
		case err := <-done:
			t.Fatal(err)
		}
		return nil, nil
	}
	east, eastDone := serve("east")
	var first time.Time
	waitFor(t, "serve did not take and renew the lease", func() bool {
		var rec struct {
			Holder, Standby string
			Epoch           int64
			Renewed         time.Time
		}
		data, err := os.ReadFile(filepath.Join(dir, "witness/leases/lakehouse.json"))
		if err != nil || json.Unmarshal(data, &rec) != nil {
			return false
		}
		if rec.Holder != "east" || rec.Epoch != 1 || rec.Standby != "west" {
			t.Fatalf("lease %+v", rec)
		}
		if first.IsZero() {
			first = rec.Renewed
		}
		return rec.Renewed.After(first)
	})
	waitFor(t, "the first pass did not copy", func() bool { _, err := os.Stat(filepath.Join(dir, "west/lake/a.csv")); return err == nil })
	if m := get(t, "http://"+east.Addr()+"/metrics"); !strings.Contains(m, `tandem_lease_primary{group="lakehouse",region="east"} 1`) || !strings.Contains(m, `tandem_lease_epoch{group="lakehouse",region="east"} 1`) {
		t.Fatalf("lease metrics:\n%s", m)
	}
	west, westDone := serve("west")

	// Sample both regions' tandem_lease_primary through a planned
	// handover: never both.
	primary := func(d *daemon.Daemon, region string) int {
		if strings.Contains(get(t, "http://"+d.Addr()+"/metrics"), `tandem_lease_primary{group="lakehouse",region="`+region+`"} 1`) {
			return 1
		}
		return 0
	}
	stop := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				sampled <- nil
				return
			default:
			}
			e, w := primary(east, "east"), primary(west, "west")
			if e+w > 1 {
				sampled <- fmt.Errorf("both regions acted as primary (sample %d)", n)
				return
			}
			n++
		}
	}()
	run := expecter(t)
	run(0, "epoch 1", "lease", "release", "--config", cfg, "lakehouse", "--region", "east")
	run(0, "held by west, epoch 2, standby east", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "west", "--yes")
	writeFile(t, filepath.Join(dir, "west/lake/b.csv"), "b")
	waitFor(t, "west's serve did not copy into east", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "east/lake/b.csv"))
		return err == nil && string(data) == "b"
	})
	close(stop)
	if err := <-sampled; err != nil {
		t.Fatal(err)
	}
	run(0, "held by west, epoch 2", "lease", "show", "--config", cfg, "lakehouse") // east did not take it back
	if primary(east, "east") != 0 || primary(west, "west") != 1 {
		t.Fatal("after the handover, west must be the only primary")
	}
	writeFile(t, filepath.Join(dir, "east/lake/c.csv"), "c")
	time.Sleep(2 * time.Second) // two of east's intervals: it copies nothing
	if _, err := os.Stat(filepath.Join(dir, "west/lake/c.csv")); !os.IsNotExist(err) {
		t.Fatal("east's serve copied after it lost the lease")
	}
	cancel()
	for _, done := range []chan error{eastDone, westDone} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrechecksCatch: each broken precondition is named by the precheck
// that finds it, and nothing is changed.
func TestPrechecksCatch(t *testing.T) {
	dir, cfg := eastWest(t, `
workflows:
  - name: etl
    activate: {http: {url: "http://127.0.0.1:1/activate"}}
    deactivate: {script: {command: [/no/such/scheduler-cli]}}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], workflows: [etl]}
`)
	writeFile(t, cfg, strings.Replace(string(mustRead(t, cfg)), "/west/lake}}", "/west/lake}, rpo: 1s}", 1))
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	time.Sleep(1100 * time.Millisecond) // the watermark falls behind the 1s RPO
	out := run(1, "prechecks of switchover failed", "plan", "precheck", "--config", cfg, "switchover")
	for _, want := range []string{
		"FAIL check.replication:lake", "beyond its RPO of 1s",
		"FAIL check.workflow:etl", "activate in west: http http://127.0.0.1:1 is not reachable", "deactivate in east: script: exec: \"/no/such/scheduler-cli\": stat /no/such/scheduler-cli: no such file or directory",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("precheck output lacks %q:\n%s", want, out)
		}
	}
	// For a failover the same findings are warnings: they are what it loses.
	var res struct {
		OK     bool
		Checks []struct {
			ID          string
			OK, Warning bool
		}
	}
	if err := json.Unmarshal([]byte(run(0, "", "plan", "precheck", "--config", cfg, "failover", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if !res.OK || len(res.Checks) != 3 || res.Checks[1].ID != "check.replication:lake" || res.Checks[1].OK || !res.Checks[1].Warning {
		t.Errorf("failover prechecks: %+v", res)
	}
	// The lease moved to west with no standby (a failover by hand): a
	// switchover from west needs a failback first.
	run(0, "standby none", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "west", "--standby", "none")
	run(1, "east is not the standby of west (the standby is nobody): run a failback first", "plan", "precheck", "--config", cfg, "switchover")
	if _, err := os.Stat(filepath.Join(dir, "west/.tandem/plans")); !os.IsNotExist(err) {
		t.Fatal("a precheck recorded an execution")
	}
}

// eastWest writes two folder regions with a replication lake (one object in
// east), a witness, and extra config with DIR for the folder.
func eastWest(t *testing.T, extra string) (dir, cfg string) {
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "east/lake/a.csv"), "a")
	os.MkdirAll(filepath.Join(dir, "west/lake"), 0o755)
	os.MkdirAll(filepath.Join(dir, "witness"), 0o755)
	cfg = filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.ReplaceAll(`
regions:
  - {name: east, state: DIR/east/.tandem}
  - {name: west, state: DIR/west/.tandem}
replication:
  - {name: lake, from: {region: east, url: DIR/east/lake}, to: {region: west, url: DIR/west/lake}}
witness: {url: DIR/witness}
`+extra, "DIR", dir))
	return dir, cfg
}

// TestPrecheckDatabaseLag: a standby that has not replayed what the primary
// wrote, beyond max_lag, stops a switchover at its precheck.
func TestPrecheckDatabaseLag(t *testing.T) {
	pgEast := pgtest.Primary(t)
	pgWest := pgtest.Standby(t, pgEast)
	_, cfg := eastWest(t, strings.NewReplacer("PGEAST", pgEast.DSN(), "PGWEST", pgWest.DSN()).Replace(`
databases:
  - name: warehouse
    primary: {region: east, dsn: "PGEAST"}
    standby: {region: west, dsn: "PGWEST"}
    max_lag: 64KiB
serve: {rpo_every: 1s}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, databases: [warehouse]}
`))
	run := expecter(t)
	run(0, "ok   check.database:warehouse", "plan", "precheck", "--config", cfg, "switchover")
	if err := sqlExec(t, pgWest.DSN(), `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	if err := sqlExec(t, pgEast.DSN(), `CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	out := run(1, "bytes behind, more than max_lag 65536", "plan", "precheck", "--config", cfg, "switchover")
	if !strings.Contains(out, "FAIL check.database:warehouse") {
		t.Fatalf("precheck:\n%s", out)
	}
	// A failover does not look at the old primary: lag is what it loses.
	run(0, "ok   check.database:warehouse", "plan", "precheck", "--config", cfg, "failover")

	// serve's lag history counts it in WAL bytes, against max_lag.
	srv := startServe(t, cfg, "west")
	re := regexp.MustCompile(`"member":"database warehouse","lag":(\d+),"known":true,"target":65536,"unit":"bytes"`)
	waitFor(t, "no byte lag sampled", func() bool {
		m := re.FindStringSubmatch(get(t, srv.url(t)+"/api/v1/protection-groups/lakehouse/rpo"))
		if m == nil {
			return false
		}
		n, _ := strconv.Atoi(m[1])
		return n > 65536
	})
}

// TestFailoverWaitsThenCancel: a failover started while the primary's lease
// is still being renewed says at once that it waits, and how to go on; a
// failover killed after it took the lease and then canceled says what it
// left behind and the command that finishes it, which does.
func TestFailoverWaitsThenCancel(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    lease_ttl: 2s
    user_groups:
      - name: slow
        before: promote
        steps:
          - name: export
            script: {command: [sh, -c, "touch DIR/export.started; test -f DIR/fixed || sleep 30"]}
`)
	run := expecter(t)
	run(0, "held by east", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")

	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "plan", "run", "--config", cfg, "failover")
	cmd.Env = append(os.Environ(), "TANDEM_MAIN=1")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "export.started"))
	for _, want := range []string{
		"WAITING: east holds the lease of lakehouse",
		"it is being renewed",
		"tandem plan run --config " + cfg + " switchover",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("failover output lacks %q:\n%s", want, out.String())
		}
	}
	cmd.Process.Kill()
	cmd.Wait()

	var list []struct{ ID, State string }
	json.Unmarshal([]byte(run(0, "", "plan", "executions", "--config", cfg, "--json")), &list)
	if len(list) != 1 {
		t.Fatalf("executions: %+v", list)
	}
	id := list[0].ID
	got := run(0, "cancel done", "plan", "cancel", "--config", cfg, id)
	for _, want := range []string{"it had changed things; not done:", "user:slow/export (west)", "tandem plan resume --config " + cfg + " " + id} {
		if !strings.Contains(got, want) {
			t.Errorf("cancel output lacks %q:\n%s", want, got)
		}
	}
	// The resume comes after west's lease ran out with nobody renewing it:
	// resuming is the decision that west acts, so it renews it.
	waitFor(t, "west's lease to expire", func() bool {
		_, out := tandem(t, nil, "lease", "show", "--config", cfg, "lakehouse")
		return strings.Contains(out, "EXPIRED")
	})
	writeFile(t, filepath.Join(dir, "fixed"), "")
	run(0, "succeeded: RTO", "plan", "resume", "--config", cfg, id)
	run(0, "held by west", "lease", "show", "--config", cfg, "lakehouse")
}
