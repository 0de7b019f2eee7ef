package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"tandem/internal/delta/deltatest"
)

// TestVersion: tandem version, --version and version --json name the
// version and the Go release.
func TestVersion(t *testing.T) {
	run := expecter(t)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := run(0, "tandem ", args...)
		if !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
			t.Errorf("%v: %q", args, out)
		}
	}
	var v struct{ Version, Go, Platform string }
	if err := json.Unmarshal([]byte(run(0, "", "version", "--json")), &v); err != nil || v.Version == "" || v.Go != runtime.Version() {
		t.Errorf("version --json: %+v %v", v, err)
	}
	// A test binary records no commit, and says so.
	if out := run(0, "", "version"); !strings.Contains(out, "commit unknown") {
		t.Errorf("version without a commit: %q", out)
	}
}

// TestVersionCommit: a binary built from this checkout with -buildvcs=true
// names the commit it was built from, in text and in JSON.
func TestVersionCommit(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("this test needs the git checkout tandem is built from: git rev-parse HEAD: %v", err)
	}
	commit := strings.TrimSpace(string(head))
	bin := filepath.Join(t.TempDir(), "tandem")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "commit "+commit[:12]) {
		t.Errorf("--version: %q %v, want commit %s", out, err, commit[:12])
	}
	out, err = exec.Command(bin, "version", "--json").Output()
	var v struct{ Commit string }
	if err != nil || json.Unmarshal(out, &v) != nil || v.Commit != commit {
		t.Errorf("version --json: %s %v, want commit %s", out, err, commit)
	}
}

// TestConfigLookup: without --config, tandem reads $TANDEM_CONFIG, else
// ./tandem.yaml; relative paths in the file are relative to the file, not
// to the folder tandem runs in; with no configuration anywhere it says
// where it looked (exit 2).
func TestConfigLookup(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "site/east/lake/a.csv"), "a")
	writeFile(t, filepath.Join(dir, "site/tandem.yaml"), `
regions:
  - {name: east, state: east/.tandem}
  - {name: west, state: west/.tandem}
replication:
  - {name: lake, from: {region: east, url: east/lake}, to: {region: west, url: west/lake}}
`)
	elsewhere := filepath.Join(dir, "elsewhere")
	os.MkdirAll(elsewhere, 0o755)
	os.MkdirAll(filepath.Join(dir, "site/west/lake"), 0o755)
	env := []string{"TANDEM_CONFIG=" + filepath.Join(dir, "site/tandem.yaml"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "xdg")}
	if code, out := tandemIn(t, elsewhere, env, "replicate", "lake"); code != 0 || !strings.Contains(out, "copied    1 objects") {
		t.Fatalf("TANDEM_CONFIG: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "site/west/lake/a.csv")); err != nil {
		t.Fatalf("relative paths were not taken from the config file's folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "west")); !os.IsNotExist(err) {
		t.Fatal("relative paths were taken from the working folder")
	}
	noEnv := []string{"TANDEM_CONFIG=", "XDG_CONFIG_HOME=" + filepath.Join(dir, "xdg")}
	if code, out := tandemIn(t, filepath.Join(dir, "site"), noEnv, "status"); code != 0 || !strings.Contains(out, "replication lake: ok") {
		t.Fatalf("./tandem.yaml: exit %d\n%s", code, out)
	}
	code, out := tandemIn(t, elsewhere, noEnv, "status")
	if code != 2 || !strings.Contains(out, "no configuration: give --config FILE, set TANDEM_CONFIG, or put it at tandem.yaml or "+filepath.Join(dir, "xdg/tandem/tandem.yaml")) {
		t.Fatalf("no configuration: exit %d\n%s", code, out)
	}
}

// salesGroup is a group of one table, bronze, from east to west.
const salesGroup = `
groups:
  - name: sales
    from: east
    to: west
    tables: [{name: bronze, from: DIR/east/tables/bronze, to: DIR/west/tables/bronze}]
`

// TestDryRun: --dry-run on replicate, table sync, group sync and plan run
// says what would happen and changes nothing, in the data or the records.
func TestDryRun(t *testing.T) {
	dir, cfg := eastWest(t, salesGroup+`
protection_groups:
  - {name: lakehouse, primary: east, standby: west, replications: [lake], groups: [sales]}
`)
	deltatest.CopyTo(t, "snapshot-data3", filepath.Join(dir, "east/tables/bronze"))
	writeFile(t, filepath.Join(dir, "west/lake/stale.csv"), "old")
	before := tree(t, filepath.Join(dir, "west"))
	run := expecter(t)

	out := run(0, "would copy   a.csv", "replicate", "--dry-run", "--delete", filepath.Join(dir, "east/lake"), filepath.Join(dir, "west/lake"))
	for _, want := range []string{"would delete stale.csv", "dry run: would copy 1 objects (1 B) and delete 1", "nothing was written"} {
		if !strings.Contains(out, want) {
			t.Errorf("replicate --dry-run lacks %q:\n%s", want, out)
		}
	}
	var sum struct {
		DryRun      bool     `json:"dry_run"`
		WouldCopy   []string `json:"would_copy"`
		WouldDelete []string `json:"would_delete"`
	}
	json.Unmarshal([]byte(run(0, "", "replicate", "--dry-run", "--delete", "--json", filepath.Join(dir, "east/lake"), filepath.Join(dir, "west/lake"))), &sum)
	if !sum.DryRun || len(sum.WouldCopy) != 1 || len(sum.WouldDelete) != 1 || sum.WouldDelete[0] != "stale.csv" {
		t.Errorf("replicate --dry-run --json: %+v", sum)
	}
	run(0, "dry run: would copy 1 objects", "replicate", "--config", cfg, "--dry-run", "lake")
	run(0, "dry run: to version 3, would copy 4 files", "table", "sync", "--dry-run", filepath.Join(dir, "east/tables/bronze"), filepath.Join(dir, "west/scratch"))
	run(0, "bronze     version 3: would copy 4 files", "group", "sync", "--config", cfg, "--dry-run", "sales")
	if after := tree(t, filepath.Join(dir, "west")); after != before {
		t.Errorf("a dry run changed west:\nbefore %s\nafter  %s", before, after)
	}

	// A plan's dry run: its prechecks pass once the replica and the group
	// are level; it records no execution and moves no lease.
	os.Remove(filepath.Join(dir, "west/lake/stale.csv")) // a foreign object stops a switchover
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	run(0, "manifest written", "group", "sync", "--config", cfg, "sales")
	before = tree(t, dir)
	out = run(0, "dry run: nothing was changed; to run it: tandem plan run --config "+cfg+" switchover", "plan", "run", "--config", cfg, "--dry-run", "switchover")
	if !strings.Contains(out, "replication.promote:lake") || !strings.Contains(out, "ok   check.group:sales") {
		t.Errorf("plan run --dry-run shows no plan or prechecks:\n%s", out)
	}
	if after := tree(t, dir); after != before {
		t.Errorf("a plan's dry run changed files:\nbefore %s\nafter  %s", before, after)
	}
	run(1, "never taken", "lease", "show", "--config", cfg, "lakehouse")
}

// tree lists the files under dir with their sizes.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel+":"+map[bool]string{true: "dir", false: "file"}[fi.IsDir()])
		}
		return nil
	})
	return strings.Join(out, " ")
}

// TestProgressEvents: with --json --progress, replicate, table sync and
// group sync print progress events as JSON lines, the last of them at the
// totals, and then the summary as the last line.
func TestProgressEvents(t *testing.T) {
	dir, cfg := eastWest(t, salesGroup)
	deltatest.CopyTo(t, "snapshot-data3", filepath.Join(dir, "east/tables/bronze"))
	for i := range 50 {
		writeFile(t, filepath.Join(dir, "east/lake", strings.Repeat("x", i%7+1), "f"+string(rune('a'+i%26))+".csv"), strings.Repeat("y", i))
	}
	for _, c := range []struct {
		op   string
		args []string
		key  string // a key of the summary
	}{
		{"replicate", []string{"replicate", "--config", cfg, "lake"}, "objects_copied"},
		{"table sync", []string{"table", "sync", filepath.Join(dir, "east/tables/bronze"), filepath.Join(dir, "west/copy")}, "files_copied"},
		{"group sync", []string{"group", "sync", "--config", cfg, "sales"}, "manifest"},
	} {
		code, out := tandem(t, nil, append(c.args, "--json", "--progress")...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", c.op, code, out)
		}
		var events []map[string]any
		var last map[string]any
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: a line is not JSON: %q (%v)", c.op, sc.Text(), err)
			}
			if m["event"] == "progress" {
				events = append(events, m)
			}
			last = m
		}
		if len(events) == 0 || last["event"] != nil || last[c.key] == nil {
			t.Fatalf("%s: %d progress events, last line %v:\n%s", c.op, len(events), last, out)
		}
		end := events[len(events)-1]
		if end["operation"] != c.op || end["total_known"] != true || end["done"] != end["total"] || end["total"].(float64) == 0 || end["eta_seconds"] != 0.0 {
			t.Errorf("%s: last event %v", c.op, end)
		}
	}
}

// TestPastedHint: the command a canceled plan prints to go on is run
// exactly as printed, and finishes the plan.
func TestPastedHint(t *testing.T) {
	dir, cfg := eastWest(t, `
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    user_groups:
      - name: gate
        after: promote
        steps:
          - name: check
            script: {command: [sh, -c, "test -f DIR/ok"]}
`)
	run := expecter(t)
	run(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	out := run(1, "user:gate/check failed", "plan", "run", "--config", cfg, "switchover")
	retry := pasted(t, out, "Fix the cause, then `")
	writeFile(t, filepath.Join(dir, "ok"), "")
	if code, out := tandem(t, nil, retry...); code != 0 || !strings.Contains(out, "succeeded: RTO") {
		t.Fatalf("the printed retry %v: exit %d\n%s", retry, code, out)
	}
}

// pasted is the command printed in out after marker, up to the closing
// backquote, as arguments (without "tandem").
func pasted(t *testing.T, out, marker string) []string {
	t.Helper()
	i := strings.Index(out, marker)
	if i < 0 {
		t.Fatalf("no %q in:\n%s", marker, out)
	}
	line := out[i+len(marker):]
	line = line[:strings.IndexAny(line, "`\n")]
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "tandem" {
		t.Fatalf("not a tandem command: %q", line)
	}
	return f[1:]
}

// TestDebugLogs: --log-level debug says what a pass decides, object by
// object; the default says nothing of it.
func TestDebugLogs(t *testing.T) {
	dir, cfg := eastWest(t, "")
	run := expecter(t)
	out := run(0, `level=DEBUG msg=copy pair=lake key=a.csv size=1 why="not in the target"`, "--log-level", "debug", "replicate", "--config", cfg, "--dry-run", "lake")
	if !strings.Contains(out, "configuration loaded") {
		t.Errorf("no debug line about the configuration:\n%s", out)
	}
	if out := run(0, "copied    1 objects", "replicate", filepath.Join(dir, "east/lake"), filepath.Join(dir, "west/lake")); strings.Contains(out, "DEBUG") {
		t.Errorf("debug lines without --log-level debug:\n%s", out)
	}
}
