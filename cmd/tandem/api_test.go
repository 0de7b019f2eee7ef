package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestOpenAPIMatchesRoutes: docs/openapi.yaml describes exactly the
// API's routes, and marks exactly the changing ones as needing the token.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	var doc struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `yaml:"security"`
		} `yaml:"paths"`
	}
	_, here, _, _ := runtime.Caller(0) // other tests change the working folder
	if err := yaml.Unmarshal(mustRead(t, filepath.Join(filepath.Dir(here), "../../docs/openapi.yaml")), &doc); err != nil {
		t.Fatal(err)
	}
	var inDoc, inCode []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			inDoc = append(inDoc, strings.ToUpper(method)+" "+path+" token="+map[bool]string{true: "yes", false: "no"}[len(op.Security) > 0])
		}
	}
	for _, r := range apiRoutes {
		inCode = append(inCode, r.method+" "+r.path+" token="+map[bool]string{true: "yes", false: "no"}[r.change])
	}
	slices.Sort(inDoc)
	slices.Sort(inCode)
	if !slices.Equal(inDoc, inCode) {
		t.Fatalf("docs/openapi.yaml:\n%s\nthe handlers:\n%s", strings.Join(inDoc, "\n"), strings.Join(inCode, "\n"))
	}
}

// TestAPI drives a plan run through serve's API: reads answer without the
// token (status, overview, prechecks, the lag history, the history page);
// a run is started by POST (a second press while it is unfinished answers
// 409 and starts nothing); its failed check is retried once fixed (skip
// without a step is 400); an approval without the token, or with a wrong
// one, is refused (401, one JSON error) and changes nothing; another
// continuation while serve runs it is 409; with the approval the run goes
// on and the lease moves, its record keeps the members' lag at the
// decision; unknown groups, executions and replications are 404; the
// run's report names who approved; a replica is promoted.
func TestAPI(t *testing.T) {
	t.Parallel()
	dir, cfg := eastWest(t, `
serve: {token: right-token, rpo_every: 1s}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    replications: [lake]
    user_groups:
      - name: checks
        after: promote
        steps:
          - name: smoke
            script: {command: [sh, -c, "test -f DIR/fixed"]}
      - name: gate
        after: aliases
        steps:
          - {name: go-ahead, pause: true}
`)
	expecter(t)(0, "copied    1 objects", "replicate", "--config", cfg, "lake")
	srv := startServe(t, cfg, "west")
	base := srv.url(t) + "/api/v1"
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	expect := func(method, path, token, body string, want int, wantOut string) string {
		t.Helper()
		code, out := call(method, path, token, body)
		if code != want || !strings.Contains(out, wantOut) {
			t.Fatalf("%s %s: %d, want %d with %q:\n%s", method, path, code, want, wantOut, out)
		}
		return out
	}
	// Every changing route refuses a request without the token or with a
	// wrong one, before it looks at anything.
	fill := strings.NewReplacer("/api/v1", "", "{pg}", "lakehouse", "{type}", "switchover", "{id}", "nosuch", "{name}", "lake", "{group}", "nosuch")
	for _, rt := range apiRoutes {
		if rt.change {
			expect(rt.method, fill.Replace(rt.path), "", "", 401, `{"error":"a valid bearer token is required (serve.token)"}`)
			expect(rt.method, fill.Replace(rt.path), "right-token-not", "", 401, `bearer token`)
		}
	}
	expect("GET", "/status", "", "", 200, `"protection_groups"`)
	expect("GET", "/protection-groups", "", "", 200, `"name":"lakehouse"`)
	expect("GET", "/protection-groups/lakehouse/lease", "", "", 200, `"taken":false`)
	expect("GET", "/protection-groups/lakehouse/plans/switchover", "", "", 200, `user:gate/go-ahead`)
	expect("GET", "/protection-groups/nosuch/lease", "", "", 404, `{"error":`)
	expect("GET", "/protection-groups/lakehouse/plans/sideways", "", "", 404, `unknown plan type`)
	expect("GET", "/protection-groups/lakehouse/executions/nosuch", "", "", 404, `has no execution \"nosuch\"`)
	expect("GET", "/protection-groups/lakehouse/overview", "", "", 200, `"noun":"replication","health":"ok"`)
	expect("GET", "/protection-groups/lakehouse/plans/switchover/prechecks", "", "", 200, `"id":"check.replication:lake","region":"west","ok":true`)
	waitFor(t, "no lag sample", func() bool {
		_, x := call("GET", "/protection-groups/lakehouse/rpo", "", "")
		return strings.Contains(x, `"member":"replication lake"`) && strings.Contains(x, `"target":900`) && strings.Contains(x, `"history":[{`)
	})
	expect("GET", "/protection-groups/lakehouse/history", "", "", 200, "Drills and failovers of lakehouse")

	// Two people press "switchover" at once: one run, the other told.
	runPath := "/protection-groups/lakehouse/plans/switchover/run"
	expect("POST", runPath, "", "", 401, `bearer token`)
	out := expect("POST", runPath, "right-token", "", 202, `"execution":"switchover-`)
	var started struct{ Execution string }
	json.Unmarshal([]byte(out), &started)
	id := started.Execution
	expect("POST", runPath, "right-token", "", 409, "another plan execution is not finished")
	// The smoke check fails and stops the run; fixed, a retry goes on.
	// The execution failed (not only its step: the run that failed the
	// step holds the execution until it records the end).
	waitFor(t, "the smoke check never failed", func() bool {
		_, x := call("GET", "/protection-groups/lakehouse/executions/"+id, "", "")
		var ex struct {
			State  string
			Runner json.RawMessage
		}
		json.Unmarshal([]byte(x), &ex)
		return ex.State == "failed" && ex.Runner == nil
	})
	retry := "/protection-groups/lakehouse/executions/" + id + "/retry"
	expect("POST", retry, "", "", 401, `bearer token`)
	expect("POST", "/protection-groups/lakehouse/executions/"+id+"/skip", "right-token", "", 400, `skip needs the step`)
	writeFile(t, filepath.Join(dir, "fixed"), "")
	expect("POST", retry, "right-token", `{"step": "user:checks/smoke"}`, 202, `"action":"retry"`)
	waitFor(t, "the run never waited for its approval", func() bool {
		_, x := call("GET", "/protection-groups/lakehouse/executions/"+id, "", "")
		return strings.Contains(x, `"state":"waiting-for-approval"`)
	})
	approve := "/protection-groups/lakehouse/executions/" + id + "/approve"
	expect("POST", approve, "", "", 401, `{"error":"a valid bearer token is required (serve.token)"}`)
	expect("POST", approve, "wrong-token", "", 401, `bearer token`)
	expect("POST", approve, "right-token", "not json", 400, `the body is not`)
	// Serve runs it: nobody else may continue it meanwhile.
	expect("POST", "/protection-groups/lakehouse/executions/"+id+"/skip", "right-token", `{"step": "user:gate/go-ahead"}`, 409, "is being run by")
	time.Sleep(300 * time.Millisecond)
	if _, x := call("GET", "/protection-groups/lakehouse/executions/"+id, "", ""); !strings.Contains(x, `"state":"waiting-for-approval"`) {
		t.Fatalf("a refused approval changed the run:\n%s", x)
	}
	expect("POST", approve, "right-token", `{"step": "user:gate/go-ahead", "by": "ops on call"}`, 200, `"approved":"user:gate/go-ahead"`)
	waitFor(t, "the approved run never succeeded", func() bool {
		_, x := call("GET", "/protection-groups/lakehouse/executions/"+id, "", "")
		return strings.Contains(x, `"state":"succeeded"`) && strings.Contains(x, `"rto_seconds"`)
	})
	expect("GET", "/protection-groups/lakehouse/lease", "", "", 200, `"holder":"west"`)
	expect("GET", "/protection-groups/lakehouse/executions/"+id+"/report", "", "", 200, "approved by ops on call (through the HTTP API from 127.0.0.1")
	expect("POST", "/protection-groups/lakehouse/executions/"+id+"/cancel", "right-token", "", 409, "already ended (succeeded)")
	expect("POST", "/protection-groups/lakehouse/executions/"+id+"/resume", "right-token", "", 409, "already succeeded")
	expect("GET", "/protection-groups/lakehouse/executions/"+id, "", "", 200, `"rpo":[{"member":"replication lake","lag":`)

	// A bucket's promotion, and a workflow run's completion.
	expect("POST", "/replications/nosuch/promote", "right-token", "", 404, "nosuch")
	expect("POST", "/replications/lake/promote", "", "", 401, "bearer token")
	expect("POST", "/replications/lake/promote", "right-token", "", 200, `"promotion":{`)
	expect("POST", "/groups/nosuch/complete?run_id=1", "right-token", "", 404, "nosuch")
}
