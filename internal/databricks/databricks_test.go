package databricks

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/delta/deltatest"
	"tandem/internal/objstore/local"
	"tandem/internal/state"
	"tandem/internal/tablegroup"
)

// api answers like the Jobs API 2.1 runs/list, two runs a page.
func api(t *testing.T, runs []map[string]any) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/2.1/jobs/runs/list" || r.URL.Query().Get("job_id") != "42" {
			http.Error(w, `{"error_code":"INVALID_PARAMETER_VALUE"}`, 400)
			return
		}
		if r.Header.Get("Authorization") != "Bearer dapi-s3cret" {
			http.Error(w, `{"error_code":"PERMISSION_DENIED"}`, http.StatusForbidden)
			return
		}
		start := 0
		fmt.Sscan(r.URL.Query().Get("page_token"), &start)
		end := min(start+2, len(runs))
		page := map[string]any{"runs": runs[start:end], "has_more": end < len(runs)}
		if end < len(runs) {
			page["next_page_token"] = fmt.Sprint(end)
		}
		json.NewEncoder(w).Encode(page)
	}))
}

func run(id int64, start, end time.Time, life, result string) map[string]any {
	r := map[string]any{"run_id": id, "job_id": 42, "start_time": start.UnixMilli(),
		"state": map[string]any{"life_cycle_state": life, "result_state": result}}
	if !end.IsZero() {
		r["end_time"] = end.UnixMilli()
	}
	return r
}

// copyTable copies a Spark-written table, then sets, for every commit,
// commitInfo.job.jobRunId to runOf(version) (when not "") and the file's
// time to timeOf(version).
func copyTable(t *testing.T, name string, runOf func(int) string, timeOf func(int) time.Time) string {
	dst := t.TempDir()
	src := filepath.Join(deltatest.Dir(t), name)
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, _ := os.ReadFile(p)
		var v int
		if n, _ := fmt.Sscanf(filepath.Base(p), "%020d.json", &v); n == 1 && strings.HasSuffix(p, ".json") && strings.Contains(rel, "_delta_log") {
			data = withJob(t, data, runOf(v))
			defer os.Chtimes(filepath.Join(dst, rel), timeOf(v), timeOf(v))
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	return dst
}

func withJob(t *testing.T, commit []byte, runID string) []byte {
	if runID == "" {
		return commit
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(commit)))
	sc.Buffer(nil, 1<<20)
	seen := false
	for sc.Scan() {
		line := sc.Text()
		var m map[string]map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["commitInfo"] != nil {
			m["commitInfo"]["job"] = map[string]any{"jobId": "42", "jobRunId": runID, "runId": "9" + runID}
			b, _ := json.Marshal(m)
			line, seen = string(b), true
		}
		out = append(out, line)
	}
	if !seen {
		out = append(out, fmt.Sprintf(`{"commitInfo":{"job":{"jobId":"42","jobRunId":%q}}}`, runID))
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

func TestRunsAndCut(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	srv := api(t, []map[string]any{
		run(103, h(6), time.Time{}, "RUNNING", ""), // in flight
		run(102, h(4), h(5), "TERMINATED", "SUCCESS"),
		run(101, h(2), h(3), "TERMINATED", "FAILED"), // 102 retried on top of it
		run(100, h(0), h(1), "TERMINATED", "SUCCESS"),
	})
	defer srv.Close()
	c := &Client{Host: srv.URL, Token: "dapi-s3cret", JobID: 42}
	runs, err := c.Runs(context.Background())
	if err != nil || len(runs) != 4 || runs[0].Status != "running" || runs[1].Status != "success" || runs[2].Status != "failed" {
		t.Fatalf("runs %+v, %v", runs, err)
	}

	// bronze: commits 0-5 by run 100, 6-9 by the failed 101, 10-11 by 102,
	// 12-13 by 103 (in flight). silver: 0-1 by 100, 2 by 102, 3 by 103.
	bronzeRun := func(v int) string {
		switch {
		case v <= 5:
			return "100"
		case v <= 9:
			return "101"
		case v <= 11:
			return "102"
		}
		return "103"
	}
	silverRun := func(v int) string { return map[int]string{0: "100", 1: "100", 2: "102", 3: "103"}[v] }
	now := func(int) time.Time { return time.Now() }
	// gold has no job ids (another writer's tool): its file times place
	// commits 0-3 within runs 100 and 102, 4-5 after run 102 ended.
	goldTime := func(v int) time.Time {
		return map[int]time.Time{0: h(0).Add(time.Minute), 1: h(0).Add(2 * time.Minute), 2: h(4).Add(time.Minute), 3: h(4).Add(30 * time.Minute), 4: h(6).Add(time.Minute), 5: h(7)}[v]
	}
	tables := map[string]string{
		"bronze": copyTable(t, "basic-with-inserts-deletes-checkpoint", bronzeRun, now),
		"silver": copyTable(t, "snapshot-data3", silverRun, now),
		"gold":   copyTable(t, "snapshot-repartitioned", func(int) string { return "" }, goldTime),
	}
	stb, _ := local.Open(t.TempDir(), false)
	g := &tablegroup.Group{Name: "sales", Workflow: true, Runs: c, State: state.Store{Bucket: stb}.Sub("sales")}
	for _, name := range []string{"bronze", "silver", "gold"} {
		src, _ := local.Open(tables[name], false)
		dst, _ := local.Open(t.TempDir(), false)
		g.Tables = append(g.Tables, tablegroup.Table{Name: name, Source: src, Target: dst})
	}
	cut, err := g.CurrentCut(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"bronze": 11, "silver": 2, "gold": 3}
	for k, v := range want {
		if cut.Versions[k] != v {
			t.Errorf("%s cut at %d, want %d", k, cut.Versions[k], v)
		}
	}
	if cut.RunID != "102" || cut.Rule != "runs:time" || !cut.Time.Equal(h(5)) {
		t.Errorf("cut %+v", cut)
	}
	res, err := g.Sync(context.Background())
	if err != nil || res.Manifest.RunID != "102" || res.Manifest.Rule != "runs:time" {
		t.Fatalf("sync %+v, %v", res.Manifest, err)
	}
}

func TestBadToken(t *testing.T) {
	srv := api(t, nil)
	defer srv.Close()
	_, err := (&Client{Host: srv.URL, Token: "wrong-token-xyz", JobID: 42}).Runs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refused the token") || strings.Contains(err.Error(), "wrong-token-xyz") {
		t.Fatalf("err = %v", err)
	}
	_, err = (&Client{Host: "http://127.0.0.1:1", Token: "wrong-token-xyz", JobID: 42}).Runs(context.Background())
	if err == nil || strings.Contains(err.Error(), "wrong-token-xyz") {
		t.Fatalf("unreachable: %v", err)
	}
}
