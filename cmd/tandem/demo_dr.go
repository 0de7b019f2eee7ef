package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/autofail"
	"tandem/internal/catalog"
	"tandem/internal/daemon"
	"tandem/internal/delta"
	"tandem/internal/etl"
	"tandem/internal/member"
	"tandem/internal/member/alias"
	"tandem/internal/member/streams"
	"tandem/internal/objstore/local"
	"tandem/internal/plan"
	"tandem/internal/tablegroup"
	"tandem/internal/tablesync"
)

// demoScheduler stands for each region's job scheduler: it answers the
// Databricks Jobs API's update call that pauses or unpauses a job's
// schedule, and a region that went dark answers nothing useful.
type demoScheduler struct {
	mu     sync.Mutex
	status map[int64]string // job id -> pause_status
	down   bool
	w      io.Writer
	srv    *http.Server
	addr   string
}

func startScheduler(w io.Writer) (*demoScheduler, error) {
	s := &demoScheduler{status: map[int64]string{101: "UNPAUSED", 201: "PAUSED"}, w: w}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/2.1/jobs/update", func(rw http.ResponseWriter, r *http.Request) {
		var req struct {
			JobID       int64 `json:"job_id"`
			NewSettings struct {
				Schedule struct {
					PauseStatus string `json:"pause_status"`
				} `json:"schedule"`
			} `json:"new_settings"`
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		if s.down && req.JobID == 101 {
			http.Error(rw, "the primary region's workspace does not answer", http.StatusServiceUnavailable)
			return
		}
		s.status[req.JobID] = req.NewSettings.Schedule.PauseStatus
		fmt.Fprintf(rw, "{}\n")
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(l)
	return s, nil
}

func (s *demoScheduler) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *demoScheduler) show(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(w, "scheduler: sales_etl is %s in primary (job 101) and %s in standby (job 201)\n", s.status[101], s.status[201])
}

const demoTopology = `aliases:
  - name: catalog
    driver: sqlite
    dsn: {primary: %[1]s/primary/catalog.db, standby: %[1]s/standby/catalog.db}
    switch:
      - CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, location TEXT NOT NULL)
      - INSERT INTO tables VALUES ({{quote .Alias}}, {{quote .Target}}) ON CONFLICT (name) DO UPDATE SET location = excluded.location
    names:
      gold: {primary: %[1]s/primary/lake/tables/gold, standby: %[1]s/standby/lake/tables/gold}
      silver: {primary: %[1]s/primary/lake/tables/silver, standby: %[1]s/standby/lake/tables/silver}
workflows:
  - name: sales_etl
    activate:
      http:
        method: POST
        url: http://%[2]s/api/2.1/jobs/update
        body: '{"job_id": {{.Vars.job_id}}, "new_settings": {"schedule": {"pause_status": "UNPAUSED"}}}'
    deactivate:
      http:
        method: POST
        url: http://%[2]s/api/2.1/jobs/update
        body: '{"job_id": {{.Vars.job_id}}, "new_settings": {"schedule": {"pause_status": "PAUSED"}}}'
    vars: {primary: {job_id: "101"}, standby: {job_id: "201"}}
witness:
  url: %[1]s/witness
protection_groups:
  - name: lakehouse
    primary: primary
    standby: standby
    lease_ttl: 3s
    auto_failover: {mode: failover, min_down: 1s}
    replications: [lake]
    groups: [sales]
    aliases: [catalog]
    workflows: [sales_etl]
    streams: [orders]
    steps:
      "workflow.deactivate:sales_etl": {timeout: 5s}
`

// demoDR is the end of the demo (steps 9 to 13): the primary goes dark in
// the middle of an ETL run, the failover plan runs from the standby, a query
// through the aliases is answered there, and a failback makes the old
// primary the standby.
func demoDR(ctx context.Context, dir, cfgPath string, tables map[string]*etl.Table, sched *demoScheduler, ds *demoStreams, step func(int, string, string), w io.Writer) error {
	po := planOptions{config: cfgPath}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	group := func(action, runID string) error {
		return runGroup(ctx, groupOptions{config: cfgPath, runID: runID}, "sales", action, w)
	}

	step(9, "The DR topology: a lease, aliases, a scheduler, a stream",
		`The protection group lakehouse holds the bucket replication, the table group,
the catalog aliases (logical table names readers use, in a SQLite catalog in
each region), the sales_etl workflow's schedule (paused in the standby) and
the orders stream: a NATS JetStream server in each region, every order
produced to both, processed only in the region holding the lease into a sink
database (outside both regions here) that records each order's id and the
fencing epoch with its effect. Each region runs its part of 'tandem serve
--region': here, inside the demo. The primary's takes the region lease in the
witness (the only region that may act as primary, with a fencing epoch) and
renews it; the standby's keeps the standby passive and the position it would
resume the stream from. Then the failover plan, generated from the topology, and the
switchover prechecks, which say whether a switchover would work right now.`)
	env := member.NewEnv(cfg, nil)
	regions := map[string]*demoRegion{}
	defer func() {
		for _, r := range regions {
			r.stop()
		}
	}()
	for _, region := range []string{"primary", "standby"} {
		r, err := startRegion(ctx, env, region, false, streams.Kind{})
		if err != nil {
			return err
		}
		regions[region] = r
	}
	if err := waitLease(ctx, env, "primary"); err != nil {
		return err
	}
	if err := runLease(ctx, leaseOptions{config: cfgPath}, "show", "lakehouse", w); err != nil {
		return err
	}
	if err := ds.produceAll(ctx); err != nil {
		return err
	}
	fmt.Fprintln(w, "orders: one produced to both regions every 20 ms from now on")
	a := alias.Find(cfg, "catalog")
	for _, region := range []string{"primary", "standby"} {
		var list []catalog.Alias
		for name, per := range a.Names {
			list = append(list, catalog.Alias{Alias: name, Target: per["primary"], Region: region})
		}
		if err := catalog.Switch(ctx, a.Driver, string(a.DSN[region]), a.Switch, list); err != nil {
			return err
		}
	}
	sched.show(w)
	fmt.Fprintln(w)
	if err := printPlanOf(ctx, po, plan.Failover, w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := runPrecheck(ctx, po, plan.Switchover, w); err == nil {
		return errors.New("the switchover prechecks missed the stray write in the replica")
	}
	fmt.Fprintf(w, "\nThe prechecks caught step 4's stray write in the standby's bucket: a\nswitchover would have made it part of the new primary. It is removed, the\nnext pass sees a clean replica, and the prechecks pass.\n\n")
	if err := os.Remove(filepath.Join(dir, "standby", "lake", "raw", "oops.csv")); err != nil {
		return err
	}
	if err := runReplicate(ctx, replicateOptions{config: cfgPath}, []string{"lake"}, io.Discard); err != nil {
		return err
	}
	if err := runPrecheck(ctx, po, plan.Switchover, w); err != nil {
		return err
	}

	step(10, "A drill: test the standby without touching the primary",
		`'tandem plan run drill-start' freezes the standby at a consistent point:
replication and syncs into it pause, and its tables are finalized to the
manifest. A tester reads the standby's gold there while the primary carries
on; 'drill-stop' lets replication resume.`)
	if err := runPlan(ctx, po, plan.DrillStart, w); err != nil {
		return err
	}
	if err := demoQueryAt(ctx, filepath.Join(dir, "standby", "lake", "tables", "gold"), "gold", w); err != nil {
		return err
	}
	err = runReplicate(ctx, replicateOptions{config: cfgPath}, []string{"lake"}, io.Discard)
	fmt.Fprintf(w, "a replication pass during the drill: %v\n\n", err)
	if err := runPlan(ctx, po, plan.DrillStop, w); err != nil {
		return err
	}

	step(11, "The primary goes dark in the middle of an ETL run",
		`Run 3 completes, and the sync copying it has done bronze when trouble starts:
run 4 has begun writing bronze, and then the primary region is gone: its
folders, its catalog, its scheduler. The standby holds bronze at run 3
(published by the interrupted sync) and silver and gold at run 2; its
manifest says run 2.`)
	if err := tables["bronze"].Append(ctx, "run-3", 1, 2000); err != nil {
		return err
	}
	if err := tables["gold"].Append(ctx, "run-3", 1, 500); err != nil {
		return err
	}
	if err := group("complete", "run-3"); err != nil {
		return err
	}
	standbyBronze, err := local.Open(filepath.Join(dir, "standby", "lake", "tables", "bronze"), false)
	if err != nil {
		return err
	}
	interrupted := &tablesync.Sync{Source: tables["bronze"].B, Target: standbyBronze}
	if _, err := interrupted.Run(ctx, -1); err != nil {
		return err
	}
	if err := tables["bronze"].Append(ctx, "run-4", 1, 2000); err != nil {
		return err
	}
	sched.setDown(true)
	regions["primary"].stop() // its serve is gone with it: the lease is not renewed
	delete(regions, "primary")
	ds.goDark() // and its broker: orders reach the standby only
	dark := filepath.Join(dir, "primary.dark")
	if err := os.Rename(filepath.Join(dir, "primary"), dark); err != nil {
		return err
	}
	fmt.Fprintf(w, "the primary region is dark (its folder is now %s)\n", dark)

	step(12, "Fail over, from the standby alone",
		`'tandem plan run failover' runs in the standby region and needs nothing from
the primary: it takes the lease once the primary's has expired (the primary
stops acting before that), tries to pause the workflow in the primary (which
does not answer: that step's error mode is continue), finalizes the group to
its manifest, makes the bucket writable, points the aliases at the standby's
tables, raises the orders sink's epoch to its own (the standby's serve then
delivers from the position it kept) and unpauses the workflow there. Every
step is recorded in the standby as it goes; a killed run is continued with
'tandem plan resume'.`)
	if err := runPlan(ctx, po, plan.Failover, w); err != nil {
		return err
	}
	sched.show(w)

	step(13, "Query through the aliases, and the measured RPO and RTO",
		`A reader asks the standby's catalog where gold is and reads it there. What the
failover lost is known exactly: the runs after the manifest's.`)
	if err := demoQuery(ctx, string(a.DSN["standby"]), "gold", w); err != nil {
		return err
	}
	if err := demoRPORTO(ctx, cfgPath, w); err != nil {
		return err
	}
	if err := ds.report(ctx, w); err != nil {
		return err
	}

	step(14, "The old primary comes back; fail back",
		`The primary region returns, stale: its scheduler still runs sales_etl (the
failover could not pause it there), and a replication pass started there still
thinks it copies into the standby. Its serve sees that another region holds the
lease and makes it passive before anything else: the workflow is paused again.
The stale pass is fenced: it writes nothing into the new primary.
'tandem plan run failback' then makes it the new standby: what it wrote after
the last manifest (the commits of runs 3 and 4) is moved aside, the tables and
the bucket are copied back from the new primary, and the lease records it as
the standby. From there, a 'tandem plan run switchover' moves the work back.`)
	if err := os.Rename(dark, filepath.Join(dir, "primary")); err != nil {
		return err
	}
	sched.setDown(false)
	sched.show(w)
	if err := ds.comeBack(); err != nil {
		return err
	}
	r, err := startRegion(ctx, env, "primary", false, streams.Kind{})
	if err != nil {
		return err
	}
	regions["primary"] = r
	p, err := waitPassive(ctx, env, "primary")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "the primary's serve: another region holds the lease (epoch %d): %s\n", p.Epoch, strings.Join(p.Log, "; "))
	if err := ds.waitCaughtUp(ctx, env, w); err != nil {
		return err
	}
	sched.show(w)
	err = runReplicate(ctx, replicateOptions{config: cfgPath}, []string{"lake"}, io.Discard)
	fmt.Fprintf(w, "the old primary's pass: %v\n\n", err)
	if err := runPlan(ctx, po, plan.Failback, w); err != nil {
		return err
	}
	sched.show(w)
	fmt.Fprintln(w)
	if err := runLease(ctx, leaseOptions{config: cfgPath}, "show", "lakehouse", w); err != nil {
		return err
	}

	step(15, "A run in the new primary, then a switchover back",
		`The workflow runs in the standby region now (run 5); its last task records the
completed run, which the returning region's records now keep. A planned
switchover moves the work back: the standby's workflow is paused, a last pass
and a last sync to run 5 drain it, the lease moves with the old standby as
the standby again, the primary's bucket and tables are its own again, the
aliases point back, and the workflow runs in the primary.`)
	for _, name := range []string{"bronze", "gold"} {
		t, err := etl.Open(ctx, mustLocal(filepath.Join(dir, "standby", "lake", "tables", name)), 5)
		if err != nil {
			return err
		}
		if err := t.Append(ctx, "run-5", 1, 700); err != nil {
			return err
		}
	}
	if err := group("complete", "run-5"); err != nil {
		return err
	}
	if err := runPlan(ctx, po, plan.Switchover, w); err != nil {
		return err
	}
	sched.show(w)
	if err := demoQuery(ctx, string(a.DSN["primary"]), "gold", w); err != nil {
		return err
	}
	if _, err := waitPassive(ctx, env, "standby"); err != nil { // its serve pauses it there
		return err
	}
	fmt.Fprintln(w, "\nReplication and group syncs run from the primary again (as 'tandem serve' would):")
	if err := runReplicate(ctx, replicateOptions{config: cfgPath}, []string{"lake"}, io.Discard); err != nil {
		return err
	}
	if err := group("sync", ""); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := demoStatus(ctx, cfgPath, w); err != nil {
		return err
	}

	step(16, "Automatic failover, decided with a witness",
		`Each region has a health check (here: its application's folder takes a write
and gives it back), and the protection group a policy: auto_failover, mode
failover, min_down 1s. Each region's serve runs the checks of both regions and
records what it sees next to the leases; so does a witness observer ('tandem
serve --witness NAME', on a machine outside both regions; in the demo, inside
it). The primary's application fails while its serve keeps running. The
standby's serve sees it down; the witness observer agrees; after min_down the
standby runs the failover plan by itself, and the primary's serve, reading
that decision in the witness, releases the lease rather than hold it to the
end. A standby that saw the primary down while the witness still saw it up
would do nothing but alert.`)
	for _, region := range []string{"primary", "standby"} {
		regions[region].stop()
		r, err := startRegion(ctx, env, region, true, streams.Kind{})
		if err != nil {
			return err
		}
		regions[region] = r
	}
	regions["witness"] = startObserver(ctx, env, "witness-observer")
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		w, err := env.Witness(ctx)
		if err != nil {
			return false, err
		}
		r, _, err := autofail.LoadRecord(ctx, w, "lakehouse")
		return err == nil && r.Decision.State == autofail.Healthy, err
	}); err != nil {
		return err
	}
	fmt.Fprintln(w, "both regions' serves and the witness observer see both regions up")
	down := time.Now()
	// Moved away in one step (a removal would race with the probes the
	// observers write into it).
	if err := os.Rename(filepath.Join(dir, "primary", "app"), filepath.Join(dir, "primary", "app.failed")); err != nil {
		return err
	}
	fmt.Fprintln(w, "the primary's application fails (its folder is gone); its serve still runs")
	var x *plan.Execution
	if err := poll(ctx, 60*time.Second, func() (bool, error) {
		ex, err := member.Executor(ctx, env, &cfg.ProtectionGroups[0], "standby", nil)
		if err != nil {
			return false, err
		}
		list, err := ex.List(ctx)
		if err != nil || len(list) == 0 || list[0].Trigger == nil || list[0].State != plan.Succeeded {
			return false, err
		}
		x = list[0]
		return true, nil
	}); err != nil {
		return fmt.Errorf("no automatic failover: %w", err)
	}
	fmt.Fprintf(w, "automatic failover %s: %s\n", x.ID, x.Trigger.Reason)
	fmt.Fprintf(w, "  %.1fs from the application's failure to the last step (RTO of the run %.1fs, from the decision)\n", x.Ended.Sub(down).Seconds(), x.RTO)
	if err := waitLease(ctx, env, "standby"); err != nil {
		return err
	}
	if err := runLease(ctx, leaseOptions{config: cfgPath}, "show", "lakehouse", w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return runExecutions(ctx, po, nil, w)
}

func printPlanOf(ctx context.Context, o planOptions, typ string, w io.Writer) error {
	_, p, err := loadPlan(ctx, o, typ, true)
	if err != nil {
		return err
	}
	return printPlan(w, p, false)
}

// demoQuery resolves a logical table name in a catalog and reads the Delta
// table it points at.
func demoQuery(ctx context.Context, catalogDSN, name string, w io.Writer) error {
	db, err := catalog.Open("sqlite", catalogDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	var loc string
	if err := db.QueryRowContext(ctx, `SELECT location FROM tables WHERE name = ?`, name).Scan(&loc); err != nil {
		return fmt.Errorf("catalog %s: %s: %w", catalogDSN, name, err)
	}
	fmt.Fprintf(w, "catalog %s: %s -> %s\n", catalogDSN, name, loc)
	return demoQueryAt(ctx, loc, name, w)
}

// demoQueryAt reads the Delta table in folder loc at its latest version
// with tandem's Delta reader: every row of every live file, deletion
// vectors applied.
func demoQueryAt(ctx context.Context, loc, name string, w io.Writer) error {
	t, err := delta.Open(ctx, mustLocal(loc))
	if err != nil {
		return err
	}
	snap, err := t.Snapshot(ctx, t.Log.Latest)
	if err != nil {
		return err
	}
	var rows, sum int64
	for row, err := range t.Rows(ctx, snap) {
		if err != nil {
			return err
		}
		rows++
		if id, ok := row["id"].(int64); ok {
			sum += id
		}
	}
	region := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(loc))))
	fmt.Fprintf(w, "read %s in the %s region at version %d: %d rows in %d files (deletion vectors applied), sum of id %d\n", name, region, snap.Version, rows, len(snap.Files), sum)
	return nil
}

// demoStatus runs `tandem status` and says when it would exit 4.
func demoStatus(ctx context.Context, cfgPath string, w io.Writer) error {
	err := runStatus(ctx, statusOptions{config: cfgPath}, w)
	var a attentionError
	if errors.As(err, &a) {
		fmt.Fprintln(w, "(tandem status exits 4 here: something above needs a person)")
		return nil
	}
	return err
}

// demoRegion is part of one region's 'tandem serve --region': it keeps the
// lease while the region holds it, keeps the region passive while another
// region holds it, and runs the region's part of the kinds it is given
// (the stream; sync jobs and endpoints).
type demoRegion struct{ stop func() }

func startRegion(ctx context.Context, env *member.Env, region string, auto bool, kinds ...member.Server) (*demoRegion, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &member.Serving{Env: env, Region: region, Reg: prometheus.NewRegistry()}
	s.KeepPassive(region, s.KeepLeases(ctx, region))
	for _, k := range kinds {
		if err := k.Serve(ctx, s); err != nil {
			cancel()
			return nil, err
		}
	}
	if auto {
		// Its health view in the witness, and automatic failover.
		if t, ok := autofail.Observer(env, region, autofail.RoleRegion, s.Reg); ok {
			s.Task(t)
		}
		for _, t := range autofail.Decider(s, region) {
			s.Task(t)
		}
	}
	wait := daemon.RunTasks(ctx, s.Tasks)
	return &demoRegion{stop: func() { cancel(); wait() }}, nil
}

// startObserver is 'tandem serve --witness name' inside the demo.
func startObserver(ctx context.Context, env *member.Env, name string) *demoRegion {
	ctx, cancel := context.WithCancel(ctx)
	t, _ := autofail.Observer(env, name, autofail.RoleWitness, prometheus.NewRegistry())
	wait := daemon.RunTasks(ctx, []daemon.Task{t})
	return &demoRegion{stop: func() { cancel(); wait() }}
}

// waitLease waits until region holds the lease.
func waitLease(ctx context.Context, env *member.Env, region string) error {
	return poll(ctx, 30*time.Second, func() (bool, error) {
		rec, ok, err := env.Lease(ctx, "lakehouse")
		return err == nil && ok && rec.Holder == region, err
	})
}

// waitPassive waits until region's serve made it passive under the lease
// now in force.
func waitPassive(ctx context.Context, env *member.Env, region string) (member.Passivity, error) {
	var p member.Passivity
	err := poll(ctx, 30*time.Second, func() (bool, error) {
		rec, _, err := env.Lease(ctx, "lakehouse")
		if err != nil {
			return false, err
		}
		var ok bool
		p, ok, err = env.LoadPassivity(ctx, "lakehouse", region)
		return err == nil && ok && p.Done && p.Epoch == rec.Epoch, err
	})
	return p, err
}

var errGaveUp = errors.New("gave up waiting")

func poll(ctx context.Context, limit time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errGaveUp
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mustLocal opens a folder that exists (the demo made it).
func mustLocal(dir string) *local.Bucket {
	b, err := local.Open(dir, false)
	if err != nil {
		panic(err)
	}
	return b
}

// demoRPORTO prints what the failover lost and how long it took.
func demoRPORTO(ctx context.Context, cfgPath string, w io.Writer) error {
	env, err := loadPlanEnv(planOptions{config: cfgPath})
	if err != nil {
		return err
	}
	ex, err := env.executor(ctx, "standby")
	if err != nil {
		return err
	}
	list, err := ex.List(ctx)
	if err != nil || len(list) == 0 {
		return errors.Join(err, errors.New("no execution recorded"))
	}
	x := list[0]
	st, err := env.env.RegionState(ctx, "standby")
	if err != nil {
		return err
	}
	m, _, _, err := tablegroup.LoadManifest(ctx, st.Sub("groups").Sub("sales"))
	if err != nil {
		return err
	}
	var vs []string
	for t, v := range m.Versions {
		vs = append(vs, fmt.Sprintf("%s@%d", t, v))
	}
	sort.Strings(vs)
	fmt.Fprintf(w, "RPO: the standby holds run %s (%s, completed %s); run-3, completed after it, and run-4, in flight, are lost\n",
		m.RunID, strings.Join(vs, " "), m.CutTime.Local().Format("15:04:05"))
	fmt.Fprintf(w, "RTO: %.1fs from the decision to fail over (%s) until the last step succeeded (execution %s),\n     most of it waiting for the primary's lease (ttl 3s) to expire\n",
		x.RTO, x.Decided.Local().Format("15:04:05"), x.ID)
	return nil
}
