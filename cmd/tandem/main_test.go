package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/daemon"
	"tandem/internal/delta/deltatest"
	"tandem/internal/objstore/s3/s3test"
)

// TestMain lets tests run the real command in a child process:
// TANDEM_MAIN=1 with the arguments after "--".
func TestMain(m *testing.M) {
	if os.Getenv("TANDEM_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"tandem"}, os.Args[i+1:]...)
				break
			}
		}
		main()
	}
	os.Exit(m.Run())
}

// tandem runs the command and returns its exit code and combined output.
func tandem(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	return tandemIn(t, "", env, args...)
}

// tandemIn runs the command in folder dir ("": this one).
func tandemIn(t *testing.T, dir string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(append(os.Environ(), "TANDEM_MAIN=1"), env...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// expecter returns a function that runs tandem and fails the test unless
// it exits with want and prints wantOut; it returns the output.
func expecter(t *testing.T) func(want int, wantOut string, args ...string) string {
	return func(want int, wantOut string, args ...string) string {
		t.Helper()
		code, out := tandem(t, nil, args...)
		if code != want || !strings.Contains(out, wantOut) {
			t.Fatalf("%v: exit %d, want %d; output lacks %q:\n%s", args, code, want, wantOut, out)
		}
		return out
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReplicateOneShot(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(src, "a/b.csv"), "1,2\n")
	writeFile(t, filepath.Join(src, "c.json"), "{}")
	writeFile(t, filepath.Join(dst, "stale"), "x")
	writeFile(t, filepath.Join(src, "tables/t/0.json"), "group-owned")
	code, out := tandem(t, nil, "replicate", "--json", "--delete", "--exclude", "tables/", src, dst)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var sum struct {
		Objects int64   `json:"objects_copied"`
		Deleted int64   `json:"objects_deleted"`
		Bytes   int64   `json:"bytes_copied"`
		Seconds float64 `json:"seconds"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("not one JSON summary: %v\n%s", err, out)
	}
	if sum.Objects != 2 || sum.Deleted != 1 || sum.Bytes != 6 {
		t.Fatalf("summary %+v", sum)
	}
	if _, err := os.Stat(filepath.Join(dst, "tables")); !os.IsNotExist(err) {
		t.Fatal("an excluded prefix was copied")
	}
	// Nothing of tandem's own is left in the target: a diff -r of the two
	// finds only the excluded prefix.
	if got, want := topNames(t, dst), "a c.json"; got != want {
		t.Fatalf("the target holds %q, want %q", got, want)
	}
}

// topNames is the names in dir, sorted and joined by spaces.
func topNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

func TestBadInput(t *testing.T) {
	srv := s3test.Shared(t)
	bucket := srv.NewBucket(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writeFile(t, filepath.Join(src, "k"), "v")
	writeFile(t, filepath.Join(dst, "keep"), "must survive")
	// Links that make a way look elsewhere than it leads.
	os.MkdirAll(filepath.Join(src, "inner"), 0o755)
	os.Symlink(filepath.Join(src, "inner"), filepath.Join(dir, "looks-elsewhere"))
	os.Symlink(dst, filepath.Join(dir, "dst-alias"))
	writeFile(t, filepath.Join(dir, "bad.yaml"), "regions:\n  - name: a\n    state: /tmp/x\n    colour: blue\n")
	writeFile(t, filepath.Join(dir, "endpoint.yaml"), "regions:\n  - {name: a, state: /tmp/x, s3: {endpoint: \"http://admin:hunter2@127.0.0.1:9000\"}}\n")
	writeFile(t, filepath.Join(dir, "webhook.yaml"), strings.ReplaceAll(`regions:
  - {name: a, state: DIR/a/.tandem}
  - {name: b, state: DIR/b/.tandem}
groups:
  - name: g
    from: a
    to: b
    tables: [{name: t, from: DIR/a/t, to: DIR/b/t}]
    notify: {webhook: "https://hooks.example/T%zz/hunter2"}
`, "DIR", dir))
	writeFile(t, filepath.Join(dir, "open.yaml"), strings.ReplaceAll("regions:\n  - {name: a, state: DIR/a/.tandem}\n  - {name: b, state: DIR/b/.tandem}\nreplication:\n  - {name: r, from: {region: a, url: DIR/src}, to: {region: b, url: DIR/dst}}\n", "DIR", dir))
	creds := []string{"AWS_ACCESS_KEY_ID=" + s3test.Access, "AWS_SECRET_ACCESS_KEY=" + s3test.Secret, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	wrong := []string{"AWS_ACCESS_KEY_ID=" + s3test.Access, "AWS_SECRET_ACCESS_KEY=not-the-secret-xyz", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"malformed config", nil, []string{"status", "--config", filepath.Join(dir, "bad.yaml")}, 2, "line 4: regions[0].colour: unknown key"},
		{"credentials in an endpoint", nil, []string{"config", "check", "--config", filepath.Join(dir, "endpoint.yaml")}, 2, "regions[0].s3.endpoint: endpoint http://admin@127.0.0.1:9000: credentials do not belong in the endpoint URL"},
		{"webhook that does not parse", nil, []string{"config", "check", "--config", filepath.Join(dir, "webhook.yaml")}, 2, "groups[0].notify.webhook: https://(a URL that does not parse, not shown) is not a valid URL"},
		{"credentials in a URL that does not parse", nil, []string{"replicate", "s3://AKIA:hun/ter2@bucket/x", dst}, 2, "location s3://(a URL that does not parse, not shown) is not a valid URL"},
		{"credentials in a flag endpoint", nil, []string{"replicate", "--endpoint", "http://admin:hunter2@127.0.0.1:1", "s3://bucket/x", dst}, 2, "credentials do not belong in the endpoint URL"},
		{"serve open to the network without a token", nil, []string{"serve", "--config", filepath.Join(dir, "open.yaml"), "--listen", "0.0.0.0:0"}, 2, "set serve.token"},
		{"negative table version", nil, []string{"table", "sync", "--version", "-5", src, dst}, 2, "--version -5: give a table version"},
		{"table version -1 given for the latest", nil, []string{"table", "sync", "--version", "-1", src, dst}, 2, "--version -1: give a table version"},
		{"table version not a number", nil, []string{"table", "sync", "--version", "last", src, dst}, 2, `invalid argument "last" for "--version" flag: give a table version`},
		{"table version's default in the help", nil, []string{"table", "sync", "--help"}, 0, "version to sync to (default latest)"},
		{"empty exclude", nil, []string{"replicate", "--exclude", "", src, dst}, 2, `--exclude "": give a non-empty key prefix`},
		{"bad log level", nil, []string{"--log-level", "chatty", "status", "--config", filepath.Join(dir, "open.yaml")}, 2, `--log-level "chatty": use debug, info, warn or error`},
		{"missing config", nil, []string{"status", "--config", filepath.Join(dir, "none.yaml")}, 2, "none.yaml: no such file"},
		{"unknown scheme", nil, []string{"replicate", "gs://b/x", dst, "--delete"}, 2, `unknown scheme "gs"`},
		{"missing source folder", nil, []string{"replicate", "--delete", filepath.Join(dir, "nope"), dst}, 2, "nope does not exist"},
		{"overlap", nil, []string{"replicate", "--delete", dir, dst}, 2, "overlap"},
		{"target inside the source through a link", nil, []string{"replicate", src, filepath.Join(dir, "looks-elsewhere")}, 2, "overlap"},
		{"state inside the target through a link", nil, []string{"replicate", "--state", filepath.Join(dir, "dst-alias", ".tandem"), src, dst}, 2, "must be outside SRC and DST"},
		{"file mode that lets others write", nil, []string{"replicate", "--file-mode", "0664", src, dst}, 2, "--file-mode \"0664\": 0664 lets the group or others write"},
		{"missing source bucket", creds, []string{"replicate", "--delete", "--endpoint", srv.Endpoint, "--path-style", "s3://no-such-bucket/x", dst}, 2, `bucket "no-such-bucket" does not exist`},
		{"wrong credentials", wrong, []string{"replicate", "--delete", "--endpoint", srv.Endpoint, "--path-style", "s3://" + bucket + "/x", dst}, 1, "refused the credentials"},
		{"unreachable endpoint", creds, []string{"replicate", "--delete", "--endpoint", "http://127.0.0.1:1", "--path-style", "s3://" + bucket + "/x", dst}, 1, "cannot reach endpoint http://127.0.0.1:1"},
		{"bad flag", nil, []string{"replicate", "--transfers", "zero", src, dst}, 2, "invalid argument"},
		{"missing argument", nil, []string{"plan", "run", "--config", filepath.Join(dir, "bad.yaml")}, 2, "tandem: plan run: accepts 1 arg(s), received 0 (usage: tandem plan run --config FILE TYPE"},
		{"unknown command", nil, []string{"plan", "teleport"}, 2, `tandem: plan: unknown command "teleport"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := tandem(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output does not say %q:\n%s", code, tc.code, tc.want, out)
			}
			for _, secret := range []string{"not-the-secret-xyz", s3test.Secret, "hunter2", "hun/", "ter2"} {
				if strings.Contains(out, secret) {
					t.Fatalf("a secret (%s) was printed:\n%s", secret, out)
				}
			}
			if strings.Contains(out, "tandem: tandem") {
				t.Fatalf("the error prefix is doubled:\n%s", out)
			}
			if data, err := os.ReadFile(filepath.Join(dst, "keep")); err != nil || string(data) != "must survive" {
				t.Fatalf("the target was changed: %q, %v", data, err)
			}
		})
	}
}

func TestServePromoteStatus(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "primary/lake/a.csv"), "a")
	writeFile(t, filepath.Join(dir, "primary/lake/b/c.csv"), "bc")
	os.MkdirAll(filepath.Join(dir, "standby/lake"), 0o755)
	cfg := filepath.Join(dir, "tandem.yaml")
	replicationOnly := demoConfig[:strings.Index(demoConfig, "groups:")]
	writeFile(t, cfg, strings.ReplaceAll(replicationOnly, "%[1]s", dir))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, serveOptions{config: cfg, listen: "127.0.0.1:0"}, started) }()
	var d *daemon.Daemon
	select {
	case d = <-started:
	case err := <-done:
		t.Fatal(err)
	}
	base := "http://" + d.Addr()
	// Ready once the first pass is done.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("serve never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`tandem_replication_objects_copied_total{pair="lake"} 2`,
		`tandem_replication_bytes_copied_total{pair="lake"} 3`,
		`tandem_replication_lag_seconds{pair="lake"}`,
		`tandem_replication_watermark_timestamp_seconds{pair="lake"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if st := get(t, base+"/status"); !strings.Contains(st, `"health":"ok"`) {
		t.Errorf("status: %s", st)
	}
	// Promote while serve runs: its next pass writes nothing into the
	// target, and serve stays up for status and metrics.
	var out bytes.Buffer
	if err := runPromote(ctx, promoteOptions{config: cfg}, filepath.Join(dir, "standby/lake"), &out); !strings.Contains(fmt.Sprint(err), "add --yes to confirm") {
		t.Fatalf("promote without --yes and no terminal: %v", err)
	}
	if err := runPromote(ctx, promoteOptions{config: cfg, yes: true}, filepath.Join(dir, "standby/lake"), &out); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "primary/lake/after.csv"), "after")
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(get(t, base+"/metrics"), `tandem_replication_passes_total{pair="lake",result="error"}`) {
		if time.Now().After(deadline) {
			t.Fatal("no pass ran after the promotion")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "standby/lake/after.csv")); !os.IsNotExist(err) {
		t.Fatalf("a pass wrote into the promoted target: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runStatus(context.Background(), statusOptions{config: cfg, json: true}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"health": "promoted"`) {
		t.Fatalf("status after promotion: %s", out.String())
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	dir := t.TempDir()
	if err := runDemo(context.Background(), demoOptions{dir: dir}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"standby  ORDERS_SYNC  01.01.0000 CONFIGURED lastRun=2026-12-01T08:15:00Z",
		"is answered by the primary instance", "is answered by the standby instance", "sync job metadata: ok",
		"copied    301 objects", "copied    30 objects", "deleted 5", "FOREIGN   1 objects",
		`the standby now holds run "run-1" (bronze@1, gold@1, silver@2)`, "the primary is at bronze@2, gold@1, silver@3 (run 2 in flight)",
		`the standby now holds run "run-2" (bronze@3, gold@2, silver@4)`,
		"FAIL check.replication:lake", "holds 1 objects written there, not by replication (for example [raw/oops.csv])",
		"standby holds the lease, epoch 2; primary is fenced",
		"failed-ignored workflow.deactivate:sales_etl",
		"bronze at version 3 (1 log files of a sync that did not finish moved to _tandem_moved_aside/",
		"2 aliases of catalog point at standby",
		"sales_etl is UNPAUSED in primary (job 101) and UNPAUSED in standby (job 201)",
		"gold -> " + dir + "/standby/lake/tables/gold", "read gold in the standby region at version 2: 1000 rows in 2 files (deletion vectors applied)",
		"RPO: the standby holds run run-2", "RTO: ",
		"the old primary's pass: replication lake into file://" + dir + "/standby/lake: fenced: standby holds the lease of lakehouse (epoch 2), not primary",
		"bronze in primary: 2 log files written after the last manifest",
		"sales_etl is PAUSED in primary (job 101) and UNPAUSED in standby (job 201)",
		"held by standby, epoch 2, standby primary",
		"a drill of lakehouse is in progress in standby", "replication and syncs into standby resume",
		"primary holds the lease, epoch 3, standby standby",
		`the records of primary -> standby start at run "run-5"`,
		"sales_etl is UNPAUSED in primary (job 101) and PAUSED in standby (job 201)",
		"read gold in the primary region at version 3: 1700 rows in 3 files (deletion vectors applied)",
		"the primary's serve: another region holds the lease (epoch 2): workflow sales_etl is paused in primary",
		"standby is passive since",
		"group sales: the standby already holds run run-5",
		"replication lake: ok", "group sales: ok",
		"0 lost, 0 duplicated", "orders: the standby's serve caught the primary's stream up", "stream orders: ok",
		"the sink takes deliveries from standby under epoch 2 only",
		"both regions' serves and the witness observer see both regions up",
		"primary is down: seen by standby and witness-observer since",
		"lakehouse: held by standby, epoch 4, standby none",
		"== 18. Reports for the auditors", "the last failover, failover-", "  replication lake: ", "history.html",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	// The commands it suggests run as printed.
	try := out.String()[strings.Index(out.String(), "Try:"):]
	for _, cmd := range []string{"status", "plan executions", "plan show", "report", "serve"} {
		line := invocation() + " " + cmd + " --config " + filepath.Join(dir, "tandem.yaml")
		i := strings.Index(try, line)
		if i < 0 {
			t.Errorf("the demo does not suggest %q:\n%s", line, try)
			continue
		}
		args := strings.Fields(strings.TrimPrefix(try[i:strings.Index(try[i:], "\n")+i], invocation()))
		if cmd == "serve" {
			if !slices.Contains(args, "--region") {
				t.Errorf("the serve it suggests has no --region: %v", args)
			}
			continue
		}
		if code, out := tandem(t, nil, args...); code != 0 && code != exitAttend {
			t.Errorf("%v, as the demo prints it: exit %d\n%s", args, code, out)
		}
	}
	if err := runDemo(context.Background(), demoOptions{dir: dir}, io.Discard); err == nil {
		t.Error("a second demo in the same folder did not refuse")
	}
}

func TestTableSync(t *testing.T) {
	src := filepath.Join(deltatest.Dir(t), "basic-with-inserts-deletes-checkpoint")
	dst := filepath.Join(t.TempDir(), "gold")
	if code, out := tandem(t, nil, "table", "sync", "--version", "3", src, dst); code != 0 || !strings.Contains(out, "version   3 (from an empty target)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if got := topNames(t, dst); strings.Contains(got, ".tandem-") {
		t.Fatalf("the table sync left a folder of its own in the target: %s", got)
	}
	code, out := tandem(t, nil, "table", "sync", "--json", src, dst)
	var res struct {
		Version, FromVersion int64
	}
	json.Unmarshal([]byte(out), &res)
	if code != 0 || res.Version != 13 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// A commit written in the standby: the sync stops and says what to do.
	f, _ := os.OpenFile(filepath.Join(dst, "_delta_log", "00000000000000000013.json"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"commitInfo":{"operation":"standby write"}}` + "\n")
	f.Close()
	code, out = tandem(t, nil, "table", "sync", src, dst)
	if code != 1 || !strings.Contains(out, "commit 13") || !strings.Contains(out, "--full-resync") {
		t.Fatalf("diverged: exit %d:\n%s", code, out)
	}
	code, out = tandem(t, nil, "table", "sync", "--full-resync", src, dst)
	if code != 0 || !strings.Contains(out, "7 already there") {
		t.Fatalf("full resync: exit %d:\n%s", code, out)
	}
	aside, _ := filepath.Glob(filepath.Join(dst, "_tandem_moved_aside", "*", "_delta_log", "00000000000000000013.json"))
	if len(aside) != 1 {
		t.Fatal("the diverged log was not kept aside")
	}
	if data, _ := os.ReadFile(aside[0]); !strings.Contains(string(data), "standby write") {
		t.Fatal("the moved-aside commit is not the diverged one")
	}
}

func TestGroupCommands(t *testing.T) {
	dir := t.TempDir()
	deltatest.CopyTo(t, "snapshot-data3", filepath.Join(dir, "primary/lake/tables/bronze"))
	deltatest.CopyTo(t, "dv-with-columnmapping", filepath.Join(dir, "primary/lake/tables/silver"))
	writeFile(t, filepath.Join(dir, "primary/lake/raw/in.csv"), "1,2\n")
	os.MkdirAll(filepath.Join(dir, "standby/lake"), 0o755)
	cfg := filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.ReplaceAll(`
regions:
  - {name: primary, state: DIR/primary/.tandem}
  - {name: standby, state: DIR/standby/.tandem}
replication:
  - name: lake
    from: {region: primary, url: DIR/primary/lake}
    to: {region: standby, url: DIR/standby/lake}
groups:
  - name: sales
    from: primary
    to: standby
    workflow: {name: sales_etl}
    tables:
      - {name: bronze, from: DIR/primary/lake/tables/bronze, to: DIR/standby/lake/tables/bronze}
      - {name: silver, from: DIR/primary/lake/tables/silver, to: DIR/standby/lake/tables/silver}
`, "DIR", dir))
	if code, out := tandem(t, nil, "group", "sync", "--config", cfg, "sales"); code != 1 || !strings.Contains(out, "no completed workflow run") {
		t.Fatalf("sync before a run: exit %d:\n%s", code, out)
	}
	if code, out := tandem(t, nil, "group", "complete", "--config", cfg, "sales", "--run-id", "r1"); code != 0 || !strings.Contains(out, "bronze@3, silver@15") {
		t.Fatalf("complete: exit %d:\n%s", code, out)
	}
	// Bucket replication copies the lake but not the group's tables.
	if code, out := tandem(t, nil, "replicate", "--config", cfg, "lake"); code != 0 {
		t.Fatalf("replicate: exit %d:\n%s", code, out)
	}
	filepath.WalkDir(filepath.Join(dir, "standby/lake/tables"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("bucket replication copied %s, which belongs to a group", p)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, "standby/lake/raw/in.csv")); err != nil {
		t.Fatal(err)
	}
	if code, out := tandem(t, nil, "group", "sync", "--config", cfg, "sales"); code != 0 || !strings.Contains(out, `holds run "r1" (bronze@3, silver@15)`) {
		t.Fatalf("sync: exit %d:\n%s", code, out)
	}
	if code, out := tandem(t, nil, "group", "sync", "--config", cfg, "sales"); code != 0 || !strings.Contains(out, "already holds run r1") {
		t.Fatalf("second sync: exit %d:\n%s", code, out)
	}
	var st bytes.Buffer
	if err := runStatus(context.Background(), statusOptions{config: cfg}, &st); err != nil || !strings.Contains(st.String(), `group sales: ok`) ||
		!strings.Contains(st.String(), `standby holds run "r1" (bronze@3, silver@15)`) || !strings.Contains(st.String(), "unchanged (manual)") {
		t.Fatalf("status: %v\n%s", err, st.String())
	}
	// At failover, finalize needs only the standby: remove the primary.
	os.RemoveAll(filepath.Join(dir, "primary"))
	if code, out := tandem(t, nil, "group", "finalize", "--config", cfg, "sales"); code != 0 || !strings.Contains(out, "silver     at version 15") {
		t.Fatalf("finalize: exit %d:\n%s", code, out)
	}
}

// TestServeGroups runs serve with a group: a failed round (no completed run
// yet) notifies the owner after its retries; once the workflow reports a
// completed run over HTTP, the next round syncs it and says so.
func TestServeGroups(t *testing.T) {
	events := make(chan map[string]any, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e map[string]any
		json.NewDecoder(r.Body).Decode(&e)
		events <- e
	}))
	defer hook.Close()
	dir := t.TempDir()
	deltatest.CopyTo(t, "snapshot-data3", filepath.Join(dir, "primary/bronze"))
	cfg := filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.ReplaceAll(strings.ReplaceAll(`
regions:
  - {name: primary, state: DIR/primary/.tandem}
  - {name: standby, state: DIR/standby/.tandem}
groups:
  - name: sales
    owner: data@example.com
    from: primary
    to: standby
    workflow: {name: sales_etl}
    interval: 1s
    retries: 2
    retry_wait: 10ms
    notify: {on: [failure, success], webhook: HOOK/hooks/T0KEN}
    tables:
      - {name: bronze, from: DIR/primary/bronze, to: DIR/standby/bronze}
serve:
  token: t0p-secret
`, "DIR", dir), "HOOK", hook.URL))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	started := make(chan *daemon.Daemon, 1)
	go func() { done <- runServe(ctx, serveOptions{config: cfg, listen: "127.0.0.1:0"}, started) }()
	d := <-started
	next := func() map[string]any {
		select {
		case e := <-events:
			return e
		case err := <-done:
			t.Fatalf("serve ended: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no notification")
		}
		return nil
	}
	if e := next(); e["status"] != "failed" || !strings.Contains(e["error"].(string), "no completed workflow run") {
		t.Fatalf("first event %v", e)
	}
	// The workflow's last task reports the run over HTTP.
	post := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+d.Addr()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/groups/sales/complete?run_id=r7", "", 401},
		{"/groups/sales/complete?run_id=r7", "wrong", 401},
		{"/groups/sales/complete", "t0p-secret", 400},
		{"/groups/nope/complete?run_id=r7", "t0p-secret", 404},
		{"/groups/sales/complete?run_id=r7", "t0p-secret", 200},
	} {
		if got := post(c.path, c.token); got != c.want {
			t.Fatalf("POST %s (token %q) = %d, want %d", c.path, c.token, got, c.want)
		}
	}
	for {
		e := next()
		if e["status"] == "succeeded" {
			if e["run_id"] != "r7" {
				t.Fatalf("success event %v", e)
			}
			break
		}
	}
	cancel()
	<-done
	if _, err := os.Stat(filepath.Join(dir, "standby/bronze/_delta_log/00000000000000000003.json")); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseCommands(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "witness"), 0o755)
	cfg := filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.ReplaceAll(`
regions:
  - {name: east, state: DIR/east/.tandem}
  - {name: west, state: DIR/west/.tandem}
witness:
  url: DIR/witness
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 1h}
`, "DIR", dir))
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"lease", "show", "--config", cfg, "lakehouse"}, 1, "never taken"},
		{[]string{"lease", "acquire", "--config", cfg, "lakehouse", "--region", "east"}, 0, "held by east, epoch 1"},
		{[]string{"lease", "acquire", "--config", cfg, "lakehouse", "--region", "west"}, 1, "east holds lakehouse (epoch 1)"},
		{[]string{"lease", "acquire", "--config", cfg, "lakehouse", "--region", "mars"}, 2, `--region "mars" is neither`},
		{[]string{"lease", "release", "--config", cfg, "lakehouse", "--region", "west"}, 1, "west does not hold lakehouse"},
		{[]string{"lease", "release", "--config", cfg, "lakehouse", "--region", "east"}, 0, "held by nobody (RELEASED at"},
		// Taking the lease east had asks first; without a terminal,
		// --yes is required and nothing changes.
		{[]string{"lease", "acquire", "--config", cfg, "lakehouse", "--region", "west"}, 2, "This makes west the primary of lakehouse, taking the lease east had"},
		{[]string{"lease", "show", "--config", cfg, "lakehouse"}, 0, "held by nobody (RELEASED at"},
		{[]string{"lease", "acquire", "--config", cfg, "lakehouse", "--region", "west", "-y"}, 0, "held by west, epoch 2"},
		{[]string{"lease", "show", "--config", cfg, "lakehouse"}, 0, "held by west, epoch 2"},
	}
	for _, s := range steps {
		code, out := tandem(t, nil, s.args...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Fatalf("%v: exit %d, want %d; output lacks %q:\n%s", s.args, code, s.code, s.want, out)
		}
	}
}

// TestExpiredLeaseReadsTheSame: a lease whose holder stopped renewing reads
// EXPIRED in lease show, status (which exits 4: nobody acts as primary) and
// the prechecks, and as "expired" in their JSON.
func TestExpiredLeaseReadsTheSame(t *testing.T) {
	_, cfg := eastWest(t, `
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], lease_ttl: 200ms}
`)
	run := expecter(t)
	run(0, "held by east, epoch 1", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
	time.Sleep(300 * time.Millisecond)
	run(0, "lakehouse: EXPIRED at", "lease", "show", "--config", cfg, "lakehouse")
	run(0, `"state": "expired"`, "lease", "show", "--config", cfg, "lakehouse", "--json")
	run(4, "protection group lakehouse: lease EXPIRED at", "status", "--config", cfg)
	run(4, `"lease_state": "expired"`, "status", "--config", cfg, "--json")
	run(0, "lease of lakehouse: EXPIRED at", "plan", "precheck", "--config", cfg, "failover")
}

// TestStalePrimaryIsFenced: once the standby holds the lease, a tandem
// acting for the old primary publishes nothing.
func TestStalePrimaryIsFenced(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "witness"), 0o755)
	deltatest.CopyTo(t, "snapshot-data3", filepath.Join(dir, "east/tables/bronze"))
	writeFile(t, filepath.Join(dir, "east/lake/a.csv"), "a")
	os.MkdirAll(filepath.Join(dir, "west/lake"), 0o755)
	cfg := filepath.Join(dir, "tandem.yaml")
	writeFile(t, cfg, strings.ReplaceAll(`
regions:
  - {name: east, state: DIR/east/.tandem}
  - {name: west, state: DIR/west/.tandem}
replication:
  - {name: lake, from: {region: east, url: DIR/east/lake}, to: {region: west, url: DIR/west/lake}}
groups:
  - name: sales
    from: east
    to: west
    tables:
      - {name: bronze, from: DIR/east/tables/bronze, to: DIR/west/tables/bronze}
witness:
  url: DIR/witness
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], groups: [sales], lease_ttl: 1h}
`, "DIR", dir))
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake") // no lease yet: epoch 0
	run(0, "held by east, epoch 1", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "east")
	run(0, "manifest written", "group", "sync", "--config", cfg, "sales")
	// Failover: east releases (or its lease expires), west takes over.
	run(0, "epoch 1", "lease", "release", "--config", cfg, "lakehouse", "--region", "east")
	run(0, "held by west, epoch 2, standby none", "lease", "acquire", "--config", cfg, "lakehouse", "--region", "west", "--standby", "none", "--yes")
	writeFile(t, filepath.Join(dir, "east/lake/b.csv"), "b")
	run(1, "fenced", "replicate", "--config", cfg, "lake")
	run(1, "west holds the lease of lakehouse (epoch 2), not east", "group", "sync", "--config", cfg, "sales")
	if _, err := os.Stat(filepath.Join(dir, "west/lake/b.csv")); !os.IsNotExist(err) {
		t.Fatal("a fenced pass copied into the new primary")
	}
	var m struct{ Epoch int64 }
	data, _ := os.ReadFile(filepath.Join(dir, "west/.tandem/groups/sales/manifest.json"))
	json.Unmarshal(data, &m)
	if m.Epoch != 1 {
		t.Fatalf("manifest epoch %d, want 1", m.Epoch)
	}
}

// server is a `tandem serve` running in a child process.
type server struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startServe runs `tandem serve --config cfg --region region` on a port of
// its own; it stops with the test (SIGTERM) unless killed before.
func startServe(t *testing.T, cfg, region string, extra ...string) *server {
	t.Helper()
	args := append([]string{"-test.run=^$", "--", "serve", "--config", cfg, "--region", region, "--listen", "127.0.0.1:0"}, extra...)
	s := &server{cmd: exec.Command(os.Args[0], args...), out: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), "TANDEM_MAIN=1")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.stop() })
	return s
}

// stop ends the serve cleanly.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// url is the serve's address, once its log names it: http://host:port.
func (s *server) url(t *testing.T) string {
	t.Helper()
	var m []string
	waitFor(t, "serve never listened", func() bool {
		m = regexp.MustCompile(`msg=serving addr=(\S+)`).FindStringSubmatch(s.out.String())
		return m != nil
	})
	return "http://" + m[1]
}

// kill ends it at once, as a region that goes dark.
func (s *server) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// waitFor polls ok until it holds or 30s passed.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaseIs reports whether the witness in dir names holder for the
// protection group lakehouse.
func leaseIs(dir, holder string) func() bool {
	return func() bool {
		var rec struct{ Holder string }
		data, err := os.ReadFile(filepath.Join(dir, "witness/leases/lakehouse.json"))
		return err == nil && json.Unmarshal(data, &rec) == nil && rec.Holder == holder
	}
}
