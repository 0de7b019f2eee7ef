package main

import (
	"maps"
	"strings"
	"testing"

	"tandem/internal/integration"
)

// integrationConfig is seed 003's setup: the metadata exported from the
// primary instance and imported into the standby's (asynchronous jobs),
// the schedule parameters of ORDERS_SYNC read from the primary and
// written to the standby, ORDERS_SYNC a scheduled flow active in the
// primary only, ECHO a stateless one.
const integrationConfig = `
sync_jobs:
  - name: metadata
    every: 300ms
    max_age: 1m
    retry_wait: 200ms
    vars: {east: {url: "EASTURL"}, west: {url: "WESTURL"}}
    steps:
      - name: export
        in: primary
        http:
          method: POST
          url: "{{.Vars.url}}/ic/api/common/v1/exportServiceInstanceArchive"
          headers: {Authorization: "Bearer TOKEN"}
          body: '{"jobName": "dr_metadata", "overwrite": true}'
          expect: 202
          job: {interval: 50ms, timeout: 5s}
      - name: import
        in: standby
        http:
          method: POST
          url: "{{.Vars.url}}/ic/api/common/v1/importServiceInstanceArchive"
          headers: {Authorization: "Bearer TOKEN"}
          body: '{"archiveFile": "{{.Steps.export.json.archiveFile}}", "importActivateMode": "importOnly"}'
          expect: 202
          job:
            status_url: "{{.Vars.url}}/ic/api/common/v1/importServiceInstanceArchive/{{.Response.json.jobId}}"
            interval: 50ms
            timeout: 5s
  - name: params
    every: 300ms
    max_age: 1m
    retry_wait: 200ms
    vars: {east: {url: "EASTURL"}, west: {url: "WESTURL"}}
    steps:
      - name: read
        in: primary
        http:
          url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/schedule/parameters"
          headers: {Authorization: "Bearer TOKEN"}
      - name: write
        in: standby
        http:
          method: PUT
          url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/schedule/parameters"
          headers: {Authorization: "Bearer TOKEN"}
          body: '{"parameters": {{json .Steps.read.json.parameters}}}'
workflows:
  - name: orders_sync
    class: scheduled
    vars: {east: {url: "EASTURL"}, west: {url: "WESTURL"}}
    activate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/activate", headers: {Authorization: "Bearer TOKEN"}}}
    deactivate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/deactivate", headers: {Authorization: "Bearer TOKEN"}}}
    state:
      http: {url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC", headers: {Authorization: "Bearer TOKEN"}}
      field: status
      active: [ACTIVATED]
  - name: echo
    class: stateless
    vars: {east: {url: "EASTURL"}, west: {url: "WESTURL"}}
    activate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ECHO/activate", headers: {Authorization: "Bearer TOKEN"}}}
    deactivate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ECHO/deactivate", headers: {Authorization: "Bearer TOKEN"}}}
protection_groups:
  - name: lakehouse
    primary: east
    standby: west
    lease_ttl: 2s
    sync_jobs: [metadata, params]
    workflows: [orders_sync, echo]
`

// TestSyncJobs: the lease holder's serve keeps the standby instance's
// metadata and schedule parameters current through seed 003's
// asynchronous API; a failing import or parameter write keeps the last
// good state, is said in status with the server's answer, and recovers;
// a scheduled flow active in both regions stops a switchover; the
// switchover syncs one last time, moves the flows, and the jobs then run
// the other way; a returning old primary's serve pauses what it had
// active. The token never prints.
func TestSyncJobs(t *testing.T) {
	t.Parallel()
	const token = "oic-token-7d1e"
	store := integration.NewStore()
	east, err := integration.Start("east", token, store,
		integration.Integration{ID: "ORDERS_SYNC", Version: "01.00.0000", Pattern: "SCHEDULED", Status: "ACTIVATED", Params: map[string]string{"lastRun": "2026-12-01T08:00:00Z"}},
		integration.Integration{ID: "ECHO", Version: "01.02.0000", Pattern: "STATELESS", Status: "ACTIVATED"})
	if err != nil {
		t.Fatal(err)
	}
	defer east.Close()
	west, err := integration.Start("west", token, store)
	if err != nil {
		t.Fatal(err)
	}
	defer west.Close()
	dir, cfg := eastWest(t, strings.NewReplacer("EASTURL", east.URL, "WESTURL", west.URL, "TOKEN", token).Replace(integrationConfig))
	eastServe := startServe(t, cfg, "east")
	startServe(t, cfg, "west")
	waitFor(t, "east's serve did not take the lease", leaseIs(dir, "east"))

	flow := func(in *integration.Instance, id string) integration.Integration { return in.Integrations()[id] }
	waitFor(t, "the standby never got the metadata and parameters", func() bool {
		f := flow(west, "ORDERS_SYNC")
		return f.Version == "01.00.0000" && f.Status == "CONFIGURED" && f.Params["lastRun"] == "2026-12-01T08:00:00Z" && flow(west, "ECHO").Version == "01.02.0000"
	})
	status := func() string {
		_, out := tandem(t, nil, "status", "--config", cfg)
		if strings.Contains(out, token) {
			t.Fatalf("the token printed:\n%s", out)
		}
		return out
	}
	waitFor(t, "status never showed both jobs ok", func() bool {
		out := status()
		return strings.Contains(out, "sync job metadata: ok\n  last good sync") && strings.Contains(out, "sync job params: ok")
	})

	// New metadata and parameters in the primary reach the standby.
	f := flow(east, "ORDERS_SYNC")
	f.Version, f.Params = "01.01.0000", map[string]string{"lastRun": "2026-12-01T08:15:00Z"}
	east.Set(f)
	waitFor(t, "the standby never got the new version", func() bool {
		f := flow(west, "ORDERS_SYNC")
		return f.Version == "01.01.0000" && f.Params["lastRun"] == "2026-12-01T08:15:00Z"
	})

	// The import fails after a good export: the standby keeps what it had.
	west.SetFault("import", integration.FailJob)
	f.Version = "02.00.0000"
	east.Set(f)
	waitFor(t, "status never said the import fails", func() bool {
		out := status()
		return strings.Contains(out, "sync job metadata: failing") && strings.Contains(out, "step import (in the standby west)") && strings.Contains(out, "the job ended FAILED")
	})
	if v := flow(west, "ORDERS_SYNC").Version; v != "01.01.0000" {
		t.Fatalf("a failed import changed the standby: version %s", v)
	}
	west.SetFault("import", integration.Healthy)
	waitFor(t, "the standby never got version 2 once the import worked", func() bool { return flow(west, "ORDERS_SYNC").Version == "02.00.0000" })
	waitFor(t, "status never recovered", func() bool { return strings.Contains(status(), "sync job metadata: ok") })

	// A parameter that cannot be written: said with the server's answer.
	west.SetFault("params", integration.BadParam)
	waitFor(t, "status never said the write fails", func() bool {
		out := status()
		return strings.Contains(out, "sync job params: failing") && strings.Contains(out, "cannot be written while the integration is being edited")
	})
	west.SetFault("params", integration.Healthy)

	// ORDERS_SYNC active in both regions: status and the prechecks say so.
	w := flow(west, "ORDERS_SYNC")
	w.Status = "ACTIVATED"
	west.Set(w)
	waitFor(t, "status never said active in both", func() bool { return strings.Contains(status(), "workflow orders_sync: active-in-both") })
	run := expecter(t)
	run(1, "workflow orders_sync (scheduled) is active in east and west", "plan", "precheck", "--config", cfg, "switchover")
	w.Status = "CONFIGURED"
	west.Set(w)
	run(0, "workflow orders_sync is active in east", "plan", "precheck", "--config", cfg, "switchover")

	// The switchover: a last sync of each job, ORDERS_SYNC paused in east
	// and activated in west, ECHO activated in west and left running in
	// east.
	f.Version = "03.00.0000"
	east.Set(f)
	out := run(0, "RTO", "plan", "run", "--config", cfg, "switchover")
	for _, want := range []string{"sync_job.run:metadata", "sync job metadata: succeeded into west"} {
		if !strings.Contains(out, want) {
			t.Fatalf("switchover output lacks %q:\n%s", want, out)
		}
	}
	if flow(west, "ORDERS_SYNC").Version != "03.00.0000" || flow(west, "ORDERS_SYNC").Status != "ACTIVATED" || flow(east, "ORDERS_SYNC").Status != "CONFIGURED" {
		t.Fatalf("after the switchover: east %+v, west %+v", flow(east, "ORDERS_SYNC"), flow(west, "ORDERS_SYNC"))
	}
	if flow(east, "ECHO").Status != "ACTIVATED" || flow(west, "ECHO").Status != "ACTIVATED" {
		t.Fatalf("a stateless flow was paused: east %+v, west %+v", flow(east, "ECHO"), flow(west, "ECHO"))
	}
	// The jobs now run from west into east.
	w = flow(west, "ORDERS_SYNC")
	w.Version = "04.00.0000"
	west.Set(w)
	waitFor(t, "east never got west's metadata", func() bool { return flow(east, "ORDERS_SYNC").Version == "04.00.0000" })

	// East comes back with ORDERS_SYNC active (a restore from before):
	// its serve pauses it before anything else.
	eastServe.kill()
	e := flow(east, "ORDERS_SYNC")
	e.Status = "ACTIVATED"
	east.Set(e)
	startServe(t, cfg, "east")
	waitFor(t, "east's serve never paused ORDERS_SYNC", func() bool { return flow(east, "ORDERS_SYNC").Status == "CONFIGURED" })
	if flow(east, "ECHO").Status != "ACTIVATED" {
		t.Fatal("east's serve paused the stateless flow")
	}
	for route, n := range maps.All(east.Requests()) {
		if strings.Contains(route, "ECHO/deactivate") && n > 0 {
			t.Fatalf("ECHO was deactivated %d times", n)
		}
	}
}
