package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/daemon"
)

// TestRecordsSayWhatHappened: a pass killed with -9 shows as interrupted
// in status at once (not running until the next pass); with delete off,
// the source's deletes that stay in the target are counted and shown.
func TestRecordsSayWhatHappened(t *testing.T) {
	dir, cfg := eastWest(t, "")
	for i := range 3000 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("east/lake/d/%04d.csv", i)), "x")
	}
	run := expecter(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "replicate", "--config", cfg, "lake")
	cmd.Env = append(os.Environ(), "TANDEM_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pass never started", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "west/.tandem/replication/lake/status.json"))
		return err == nil && strings.Contains(string(data), `"running"`)
	})
	cmd.Process.Kill()
	cmd.Wait()
	out := run(4, "replication lake: interrupted", "status", "--config", cfg)
	if !strings.Contains(out, "INTERRUPTED a pass started") || !strings.Contains(out, "stopped without finishing") {
		t.Fatalf("status after a killed pass:\n%s", out)
	}
	var doc struct {
		Replication []struct {
			Health string `json:"health"`
		} `json:"replication"`
		Attention bool `json:"attention"`
	}
	json.NewDecoder(strings.NewReader(run(4, "", "status", "--config", cfg, "--json"))).Decode(&doc)
	if len(doc.Replication) != 1 || doc.Replication[0].Health != "interrupted" || !doc.Attention {
		t.Fatalf("status --json after a killed pass: %+v", doc)
	}
	run(0, "copied", "replicate", "--config", cfg, "lake") // the next pass converges
	run(0, "replication lake: ok", "status", "--config", cfg)
	// ... and removes what the killed one had staged.
	stages, _ := filepath.Glob(filepath.Join(dir, "west/lake/.tandem-stage-*"))
	var staged []string // files, at any depth (a staging folder has subfolders)
	for _, stage := range stages {
		filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				staged = append(staged, p)
			}
			return nil
		})
	}
	if len(stages) > 1 || len(staged) > 0 {
		t.Fatalf("after the next pass: staging folders %v holding %v", stages, staged)
	}

	// Deletes in the source are not applied (delete is off): counted.
	for i := range 5 {
		os.Remove(filepath.Join(dir, fmt.Sprintf("east/lake/d/%04d.csv", i)))
	}
	run(0, "copied    0 objects", "replicate", "--config", cfg, "lake")
	out = run(0, "replication lake: ok", "status", "--config", cfg)
	if !strings.Contains(out, "5 objects deleted in the source are still in the target (delete: false)") {
		t.Fatalf("pending deletes are not shown:\n%s", out)
	}
}

// TestSecondServeWaits: a second serve for the same region waits, saying
// so, while the first one runs; it takes over once the first one stops.
func TestSecondServeWaits(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], lease_ttl: 1s}
`)
	first := startServe(t, cfg, "east")
	waitFor(t, "the first serve did not take the lease", leaseIs(dir, "east"))
	second := startServe(t, cfg, "east")
	waitFor(t, "the second serve did not say it waits", func() bool {
		return strings.Contains(second.out.String(), "another tandem serve acts for this region; waiting until it stops")
	})
	if strings.Contains(second.out.String(), "pass done") {
		t.Fatalf("the second serve copied while the first ran:\n%s", second.out.String())
	}
	first.kill()
	writeFile(t, filepath.Join(dir, "east/lake/later.csv"), "l")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "west/lake/later.csv")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second serve did not take over once the first was gone:\n%s", second.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWitnessUnreachable: a writer that cannot read the witness writes
// nothing, says why, and loses nothing: the next pass, with the witness
// back, copies everything. Status works meanwhile from the standby's own
// records, says what it could not reach, and exits 4. The first lease
// acquire makes the witness folder; once it was found, neither a lease
// acquire nor a serve makes it again (empty, it would read as a lease never
// taken), and neither a serve nor status makes the state folder of a
// region that is gone.
func TestWitnessUnreachable(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake]}
`)
	os.Remove(filepath.Join(dir, "witness"))
	run := expecter(t)
	run(0, "held by east", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	writeFile(t, filepath.Join(dir, "east/lake/b.csv"), "b")
	// The witness goes away (an unmounted share, a region down).
	if err := os.Rename(filepath.Join(dir, "witness"), filepath.Join(dir, "witness.gone")); err != nil {
		t.Fatal(err)
	}
	out := run(1, "the witness, which holds the region leases, cannot be opened", "replicate", "--config", cfg, "lake")
	if _, err := os.Stat(filepath.Join(dir, "west/lake/b.csv")); !os.IsNotExist(err) {
		t.Fatalf("a pass without the witness wrote into the target:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "witness")); !os.IsNotExist(err) {
		t.Fatal("a writer made an empty witness, in which no lease was ever taken")
	}
	run(1, "region east found it there on", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
	// The primary's region goes dark too; the standby's serve starts.
	if err := os.Rename(filepath.Join(dir, "east"), filepath.Join(dir, "east.gone")); err != nil {
		t.Fatal(err)
	}
	west := startServe(t, cfg, "west")
	waitFor(t, "the standby's serve did not say the witness does not answer", func() bool {
		return strings.Contains(west.out.String(), "the witness does not answer")
	})
	out = run(4, "protection group lakehouse: the witness does not answer", "status", "--config", cfg)
	for _, want := range []string{"showing the newest records, of east -> west", "watermark  "} {
		if !strings.Contains(out, want) {
			t.Fatalf("status without the witness lacks %q:\n%s", want, out)
		}
	}
	west.stop()
	for _, gone := range []string{"witness", "east"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Fatalf("serve or status made %s again while it was gone:\n%s", gone, west.out.String())
		}
	}
	os.Rename(filepath.Join(dir, "east.gone"), filepath.Join(dir, "east"))
	os.Rename(filepath.Join(dir, "witness.gone"), filepath.Join(dir, "witness"))
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
}

// TestCanceledFailoverIsNamed: a failover canceled after the lease moved
// (its workflow is paused in both regions) leaves a state that status
// names, with the command that goes on, which works when pasted.
func TestCanceledFailoverIsNamed(t *testing.T) {
	h := newHooks(t)
	dir, cfg := eastWest(t, strings.ReplaceAll(`
workflows:
  - name: etl
    activate: {http: {method: POST, url: "HOOK/{{.Region}}/activate"}}
    deactivate: {http: {method: POST, url: "HOOK/{{.Region}}/deactivate"}}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    lease_ttl: 1s
    replications: [lake]
    workflows: [etl]
    user_groups:
      - name: gate
        after: lease
        plans: [failover]
        steps: [{name: go-ahead, pause: true}]
`, "HOOK", h.srv.URL))
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	run(0, "held by east", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
	bg := exec.Command(os.Args[0], "-test.run=^$", "--", "plan", "run", "--config", cfg, "failover")
	bg.Env = append(os.Environ(), "TANDEM_MAIN=1")
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failover did not take the lease", leaseIs(dir, "west"))
	var list []struct{ ID, State string }
	waitFor(t, "the failover did not wait for approval", func() bool {
		_, out := tandem(t, nil, "plan", "executions", "--config", cfg, "--json")
		json.NewDecoder(strings.NewReader(out)).Decode(&list)
		if len(list) == 0 {
			return false
		}
		_, one := tandem(t, nil, "plan", "executions", "--config", cfg, list[0].ID)
		return strings.Contains(one, "waiting-for-approval")
	})
	run(0, "cancel requested", "plan", "cancel", "--config", cfg, list[0].ID)
	bg.Wait()
	out := run(4, "CANCELED after it changed things", "status", "--config", cfg)
	for _, want := range []string{"not done: ", "workflow.activate:etl (west) canceled", "to go on from where it stopped: tandem plan resume --config " + cfg + " " + list[0].ID} {
		if !strings.Contains(out, want) {
			t.Fatalf("status after a canceled failover lacks %q:\n%s", want, out)
		}
	}
	repair := out[strings.Index(out, "tandem plan resume"):]
	repair = strings.TrimSpace(repair[:strings.Index(repair, "\n")])
	bg = exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, strings.Fields(repair)[1:]...)...)
	bg.Env = append(os.Environ(), "TANDEM_MAIN=1")
	var bgOut lockedBuffer
	bg.Stdout, bg.Stderr = &bgOut, &bgOut
	if err := bg.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the resumed failover did not wait at its pause again", func() bool {
		_, one := tandem(t, nil, "plan", "executions", "--config", cfg, list[0].ID)
		return strings.Contains(one, "waiting-for-approval")
	})
	run(0, "approved", "plan", "approve", "--config", cfg, list[0].ID)
	if err := bg.Wait(); err != nil {
		t.Fatalf("the pasted repair failed: %v\n%s", err, bgOut.String())
	}
	if !h.called("/west/activate") {
		t.Fatal("the resumed failover did not activate the workflow in west")
	}
}

// TestServeWithPrimaryGone: after a failover, with the old primary's
// folders gone altogether, serve in the new primary starts, keeps its lease,
// and answers metrics and status; what it cannot reach, it reports.
func TestServeWithPrimaryGone(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], lease_ttl: 2s}
`)
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	run(0, "succeeded: RTO", "plan", "run", "--config", cfg, "failover")
	if err := os.RemoveAll(filepath.Join(dir, "east")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, serveOptions{config: cfg, listen: "127.0.0.1:0", region: "west"}, started)
	}()
	var d *daemon.Daemon
	select {
	case d = <-started:
	case err := <-done:
		t.Fatalf("serve in the new primary did not start with the old one gone: %v", err)
	}
	base := "http://" + d.Addr()
	renewed := func() time.Time {
		var rec struct {
			Holder  string
			Renewed time.Time
		}
		data, _ := os.ReadFile(filepath.Join(dir, "witness/leases/lakehouse.json"))
		json.Unmarshal(data, &rec)
		return rec.Renewed
	}
	first := renewed()
	waitFor(t, "serve did not renew west's lease", func() bool { return renewed().After(first) })
	if m := get(t, base+"/metrics"); !strings.Contains(m, `tandem_lease_primary{group="lakehouse",region="west"} 1`) {
		t.Fatalf("metrics:\n%s", m)
	}
	if st := get(t, base+"/status"); !strings.Contains(st, `"protection_group":"lakehouse"`) {
		t.Fatalf("status: %s", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLostLeaseRecordNotRetaken: a lease record lost with its witness (a
// witness folder swapped for an empty one, a record deleted) is never read
// as a lease never taken by the configured primary's serve, neither while
// it runs nor after a restart (what it saw is kept in its region's state):
// taking it again would start over at epoch 1 while another region may
// hold it. An explicit lease acquire still can.
func TestLostLeaseRecordNotRetaken(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 1s, replications: [lake]}
`)
	record := filepath.Join(dir, "witness/leases/lakehouse.json")
	east := startServe(t, cfg, "east")
	waitFor(t, "the primary's serve did not take the lease never taken", leaseIs(dir, "east"))
	waitFor(t, "the primary's serve did not record the lease it saw", func() bool {
		data, _ := os.ReadFile(filepath.Join(dir, "east/.tandem/witness-seen.json"))
		return strings.Contains(string(data), `"lakehouse"`)
	})
	for _, restart := range []bool{false, true} {
		if restart {
			east.stop()
			east = startServe(t, cfg, "east")
		}
		if err := os.Remove(record); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("the serve (restarted: %v) did not say the record is gone:\n", restart), func() bool {
			return strings.Contains(east.out.String(), "is gone from the witness, though it was held (by east, epoch 1)")
		})
		// It stopped acting as primary: its right cannot be confirmed.
		if m := get(t, east.url(t)+"/metrics"); !strings.Contains(m, `tandem_lease_primary{group="lakehouse",region="east"} 0`) {
			t.Fatalf("the serve (restarted: %v) still acts as primary after the record was lost", restart)
		}
		// Many rounds of Keep (every 50 ms at this TTL) later, still not
		// taken again.
		time.Sleep(2 * time.Second)
		if _, err := os.Stat(record); !os.IsNotExist(err) {
			t.Fatalf("the serve (restarted: %v) took again a lease whose record was lost:\n%s", restart, east.out.String())
		}
	}
	east.stop()
	expecter(t)(0, "held by east, epoch 1", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
}
