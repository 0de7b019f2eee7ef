package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"tandem/internal/integration"
	"tandem/internal/loopback"
	"tandem/internal/member"
	"tandem/internal/member/endpoint"
	"tandem/internal/member/syncjob"
	"tandem/internal/plan"
)

// demoIntegrationConfig is seed 003's integration platform: an instance
// per region behind one endpoint (the forwarder of each region's serve),
// its design-time metadata exported from the primary and imported into
// the standby as asynchronous jobs, the schedule parameters of a flow
// copied over, and flows kept active in one region (scheduled) or both
// (stateless).
const demoIntegrationConfig = `regions:
  - {name: primary, state: %[1]s/primary/.tandem}
  - {name: standby, state: %[1]s/standby/.tandem}
witness: {url: %[1]s/witness}
endpoints:
  - name: integration
    targets: {primary: %[2]s, standby: %[3]s}
    forward: {listen: {primary: %[4]s, standby: %[5]s}}
sync_jobs:
  - name: metadata
    every: 1s
    vars: &urls {primary: {url: "http://%[2]s"}, standby: {url: "http://%[3]s"}}
    steps:
      - name: export
        in: primary
        http:
          method: POST
          url: "{{.Vars.url}}/ic/api/common/v1/exportServiceInstanceArchive"
          headers: {Authorization: "Bearer %[6]s"}
          body: '{"jobName": "dr_metadata", "overwrite": true}'
          expect: 202
          job: {interval: 100ms, timeout: 1m}
      - name: import
        in: standby
        http:
          method: POST
          url: "{{.Vars.url}}/ic/api/common/v1/importServiceInstanceArchive"
          headers: {Authorization: "Bearer %[6]s"}
          body: '{"archiveFile": "{{.Steps.export.json.archiveFile}}", "importActivateMode": "importOnly"}'
          expect: 202
          job:
            status_url: "{{.Vars.url}}/ic/api/common/v1/importServiceInstanceArchive/{{.Response.json.jobId}}"
            interval: 100ms
            timeout: 1m
  - name: schedule_params
    every: 1s
    vars: *urls
    steps:
      - name: read
        in: primary
        http:
          url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/schedule/parameters"
          headers: {Authorization: "Bearer %[6]s"}
      - name: write
        in: standby
        http:
          method: PUT
          url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/schedule/parameters"
          headers: {Authorization: "Bearer %[6]s"}
          body: '{"parameters": {{json .Steps.read.json.parameters}}}'
workflows:
  - name: orders_sync
    class: scheduled
    vars: *urls
    activate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/activate", headers: {Authorization: "Bearer %[6]s"}}}
    deactivate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC/deactivate", headers: {Authorization: "Bearer %[6]s"}}}
    state:
      http: {url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ORDERS_SYNC", headers: {Authorization: "Bearer %[6]s"}}
      field: status
      active: [ACTIVATED]
  - name: echo
    class: stateless
    vars: *urls
    activate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ECHO/activate", headers: {Authorization: "Bearer %[6]s"}}}
    deactivate: {http: {method: POST, url: "{{.Vars.url}}/ic/api/integration/v1/integrations/ECHO/deactivate", headers: {Authorization: "Bearer %[6]s"}}}
protection_groups:
  - name: integration
    primary: primary
    standby: standby
    lease_ttl: 3s
    endpoints: [integration]
    sync_jobs: [metadata, schedule_params]
    workflows: [orders_sync, echo]
`

// demoIntegration is step 17: seed 003's integration platform kept
// current and switched over behind one endpoint.
func demoIntegration(ctx context.Context, dir string, step func(int, string, string), w io.Writer) error {
	step(17, "An integration platform behind one endpoint",
		`An integration instance runs in each region (it answers the REST API of an
integration platform: metadata export and import as asynchronous jobs, flows,
schedule parameters). Clients use one endpoint: here the forwarder each
region's serve runs, which sends every connection to the lease holder's
instance (a DNS name updated with TSIG, or a hosted DNS's API, work the same
way). The primary's serve runs two sync jobs: the metadata (export from the
primary, import into the standby, each a job polled until COMPLETED) and the
schedule parameters of ORDERS_SYNC. ORDERS_SYNC is a scheduled flow: active
in one region only; ECHO is stateless and runs in both. Then a switchover.`)
	const token = "demo-integration-token"
	store := integration.NewStore()
	prim, err := integration.Start("primary", token, store,
		integration.Integration{ID: "ORDERS_SYNC", Version: "01.00.0000", Pattern: "SCHEDULED", Status: "ACTIVATED", Params: map[string]string{"lastRun": "2026-12-01T08:00:00Z"}},
		integration.Integration{ID: "ECHO", Version: "01.02.0000", Pattern: "STATELESS", Status: "ACTIVATED"})
	if err != nil {
		return err
	}
	defer prim.Close()
	stby, err := integration.Start("standby", token, store,
		integration.Integration{ID: "ECHO", Version: "01.02.0000", Pattern: "STATELESS", Status: "ACTIVATED"})
	if err != nil {
		return err
	}
	defer stby.Close()
	idir := filepath.Join(dir, "integration")
	if err := os.MkdirAll(filepath.Join(idir, "witness"), 0o755); err != nil {
		return err
	}
	var listen [2]string
	for i := range listen {
		if listen[i], err = loopback.Addr(); err != nil {
			return err
		}
	}
	cfgPath := filepath.Join(idir, "tandem.yaml")
	text := fmt.Sprintf(demoIntegrationConfig, idir, strings.TrimPrefix(prim.URL, "http://"), strings.TrimPrefix(stby.URL, "http://"), listen[0], listen[1], token)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		return err
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	env := member.NewEnv(cfg, nil)
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for _, region := range []string{"primary", "standby"} {
		r, err := startRegion(ctx, env, region, false, syncjob.Kind{}, endpoint.Kind{})
		if err != nil {
			return err
		}
		stops = append(stops, r.stop)
	}
	fmt.Fprintf(w, "configuration: %s\n", cfgPath)
	flows := func() {
		for _, in := range []*integration.Instance{prim, stby} {
			all := in.Integrations()
			for _, id := range slices.Sorted(maps.Keys(all)) {
				f := all[id]
				fmt.Fprintf(w, "  %-8s %-12s %-10s %-10s %s\n", in.Name, f.ID, f.Version, f.Status, paramsOf(f))
			}
		}
	}
	ask := func() error {
		var who string
		err := poll(ctx, 30*time.Second, func() (bool, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen[1]+"/ic/api/integration/v1/integrations", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			who = resp.Header.Get("X-Instance")
			return who != "", nil
		})
		fmt.Fprintf(w, "a client's request through the endpoint (the standby's forwarder, %s) is answered by the %s instance\n", listen[1], who)
		return err
	}
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		f := stby.Integrations()["ORDERS_SYNC"]
		return f.Version == "01.00.0000" && f.Params["lastRun"] == "2026-12-01T08:00:00Z", nil
	}); err != nil {
		return fmt.Errorf("the standby never got the metadata: %w", err)
	}
	fmt.Fprintln(w, "the standby's instance imported the metadata (not activated) and the schedule parameters:")
	flows()
	if err := ask(); err != nil {
		return err
	}
	f := prim.Integrations()["ORDERS_SYNC"]
	f.Version, f.Params = "01.01.0000", map[string]string{"lastRun": "2026-12-01T08:15:00Z"}
	prim.Set(f)
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		g := stby.Integrations()["ORDERS_SYNC"]
		return g.Version == f.Version && g.Params["lastRun"] == f.Params["lastRun"], nil
	}); err != nil {
		return fmt.Errorf("the standby never got the new version: %w", err)
	}
	fmt.Fprintln(w, "ORDERS_SYNC is edited in the primary and runs once more; the next syncs bring both over:")
	flows()
	fmt.Fprintln(w)
	if err := demoStatus(ctx, cfgPath, w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if err := runPlan(ctx, planOptions{config: cfgPath}, plan.Switchover, w); err != nil {
		return err
	}
	fmt.Fprintln(w, "after the switchover: ORDERS_SYNC runs in the new primary only, ECHO in both, and the metadata syncs the other way:")
	flows()
	return ask()
}

func paramsOf(f integration.Integration) string {
	if len(f.Params) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.Params)) {
		parts = append(parts, k+"="+f.Params[k])
	}
	return strings.Join(parts, " ")
}
