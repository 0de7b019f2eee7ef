package all_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	_ "tandem/internal/member/all"
	"tandem/internal/member/bucket"
	"tandem/internal/member/group"
)

// The whole configuration file, with every member kind's section, is
// tested here, where the kinds are registered.

func TestGood(t *testing.T) {
	t.Setenv("TANDEM_TEST_KEY", "AKIAEXAMPLE")
	t.Setenv("TANDEM_TEST_SECRET", "very-secret-value")
	files, _ := filepath.Glob("testdata/*.good.yaml")
	if len(files) == 0 {
		t.Fatal("no good configs")
	}
	for _, f := range files {
		c, err := config.Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		out, _ := json.Marshal(c)
		if strings.Contains(string(out), "very-secret-value") {
			t.Errorf("%s: secret printed: %s", f, out)
		}
	}
	c, _ := config.Load("testdata/s3.good.yaml")
	r := bucket.Replications(c)[0]
	if r.PartSize != 32<<20 || time.Duration(r.RPO) != 5*time.Minute || time.Duration(r.Interval) != time.Minute || r.Retries != 3 {
		t.Errorf("values and defaults: %+v", r)
	}
	if got := c.Region("us-west").S3.Options().SecretAccessKey; got != "very-secret-value" {
		t.Errorf("secret not passed to the backend: %q", got)
	}
	if s := c.Region("us-west").S3.SecretAccessKey.String(); s != "<redacted>" {
		t.Errorf("Secret.String() = %q", s)
	}
}

func TestBad(t *testing.T) {
	for file, wants := range map[string][]string{
		"unknown-key.bad.yaml": {"line 4: regions[0].colour: unknown key"},
		"unset-env.bad.yaml":   {"line 5", "TANDEM_UNSET_VARIABLE is not set"},
		"duration.bad.yaml":    {"line 6", `"often" is not a duration`},
		"refs.bad.yaml": {
			`regions[1].name: region "primary" is defined twice`,
			`regions[1].state: location "gs://nope" has unknown scheme "gs"`,
			`replication[0].to.region: unknown region "mars"`,
			"replication[0]: from file:///tmp/p/lake and to file:///tmp/p/lake/replica overlap",
			"replication[0].part_size: 1048576 bytes is outside S3's part sizes (5MiB to 5GiB)",
			"replication[0].interval: 10ms is too short",
			`replication[1].name: "Bad Name" is not a valid name`,
			`replication[1].from.url: location "ftp://x" has unknown scheme "ftp"`,
		},
		"integration.bad.yaml": {
			`endpoints[0].targets.mars: unknown region "mars"`,
			`endpoints[0].dns.server: "nohost" is not host:port of the authoritative server`,
			`endpoints[0].dns.name: app.other.test is not in zone example.test`,
			`endpoints[0].dns.type: "MX" is not A, AAAA or CNAME`,
			`endpoints[0].dns.ttl: 10m0s is out of range (1s to max_ttl 5m0s)`,
			`endpoints[0].dns.key: set one of secret or secret_file`,
			`endpoints[0].dns.key.algorithm: "md5" is not hmac-sha256`,
			`endpoints[1]: set exactly one of dns, api or forward`,
			`endpoints[1].api.field: required with read`,
			`sync_jobs[0].max_age: 10s is shorter than every (1m0s)`,
			`sync_jobs[0].steps[0].in: "elsewhere" is not primary or standby`,
			`sync_jobs[0].steps[0].http.job.status_url: must start with http:// or https://`,
			`sync_jobs[0].steps[0].http.job.interval: 1ms is too short`,
			`sync_jobs[0].steps[0].http.job: state "DONE" is both a success and a failure`,
			`sync_jobs[0].steps[1].name: step "export" is defined twice`,
			`sync_jobs[0].steps[1].script.command: required`,
			`sync_jobs[1].steps: required: the actions of one sync`,
			`workflows[0].class: "hourly" is not one of scheduled, polling, event, stateless`,
			`workflows[0].state: must be http or script`,
			`workflows[0].state.active: required`,
			`protection_groups[0].endpoints[0]: endpoint fwd forwards, but has no forward.listen address for region west`,
		},
		"topology.bad.yaml": {
			`databases[0].standby.dsn: required`,
			`databases[0].standby.region: "east" must differ from the primary's region`,
			`aliases[0].driver: "oracle" is not sqlite or postgres`,
			`aliases[0].dsn.mars: unknown region "mars"`,
			`aliases[0].switch[0]: template`,
			`aliases[0].names: required`,
			`workflows[0].activate: set exactly one of http, sql or script`,
			`workflows[0].activate.http.url: must start with http:// or https://`,
			`workflows[0].deactivate: set exactly one of http, sql or script`,
			`protection_groups[0].replications[0]: unknown replication "nope"`,
			`protection_groups[0].databases[0]: unknown database "missing"`,
			`protection_groups[0].databases[1]: database "elsewhere" is not between east and west`,
			`protection_groups[0].aliases[0]: unknown aliases "unknown"`,
			`protection_groups[0].workflows[1]: unknown workflow "ghost"`,
			`protection_groups[0].user_groups[0].name: "promote" is not a valid name or is taken`,
			`protection_groups[0].user_groups[1]: "teleport" is not a built-in group`,
			`protection_groups[0].user_groups[1].plans[0]: "rollback" is not a plan type`,
			`protection_groups[0].user_groups[1].steps[0]: set exactly one of http, sql, script or pause`,
			`protection_groups[0].user_groups[1].steps[0].on_error: "shrug" is not stop or continue`,
			`protection_groups[0].user_groups[1].steps[0].retries: -1 is out of range`,
			`protection_groups[0].user_groups[1].steps[0].timeout: 10ms is too short`,
		},
		"all-at-once.bad.yaml": {
			`config testdata/all-at-once.bad.yaml: 6 problems:`,
			`line 8: replication[0].intervall: unknown key (did you mean "interval"?)`,
			`line 9: replication[0].retry_backoff: "-5s" is negative`,
			`line 10: replication[0].part_size: "99999999TiB" is too large (at most 5TiB)`,
			`line 19: groups[1].tables[0].to: file:///tmp/aao/west/t/orders overlaps the target of groups[0].tables[0]`,
			`line 26: protection_groups[0].lease_ttl: 1ms is too short`,
			`line 28: protection_groups[0].steps.replicaton.promote:lake: no plan of lakehouse has a step with this id (did you mean "replication.promote:lake"?)`,
		},
		"streams.bad.yaml": {
			`streams[0].regions.east.broker: want nats://host:port or kafka://host:port[,host:port]`,
			`streams[0].regions.mars: unknown region "mars"`,
			`streams[0].regions.mars.stream: required`,
			`streams[0].regions.mars.subject: a Kafka topic has no subject`,
			`streams[0].sink: set exactly one of sql (statements in a database) or http`,
			`streams[2].sink.http.url: must start with http:// or https://`,
			`streams[2].sink.ledger: required`,
			`streams[0].batch: want 1 to 10000 events, got -1`,
			`streams[1].sink.sql.driver: want sqlite or postgres, got "oracle"`,
			`streams[1].sink.sql.dsn: required`,
			`streams[1].sink.sql.statements: required`,
			`protection_groups[0].streams[0]: stream "clicks" has no end in west, a region of dr`,
			`protection_groups[0].streams[1]: unknown stream "nope"`,
		},
		"health.bad.yaml": {
			"regions[0].health.interval: 10ms is too short",
			"regions[0].health.timeout: 1s is longer than the interval",
			"regions[0].health.failures: -1 is out of range",
			"regions[0].health.checks[0].http.url: must start with http:// or https://",
			"regions[0].health.checks[0].http.status: 999 is not an HTTP status",
			"regions[0].health.checks[0].http.body: not a regular expression",
			"regions[0].health.checks[1].name",
			`regions[0].health.checks[1].tcp.address: "no-port" is not host:port`,
			"regions[0].health.checks[2]: set exactly one of http, tcp, sql, store, replay_lag, stream_lag or script",
			`regions[0].health.checks[3].sql.driver: "oracle" is not sqlite or postgres`,
			"regions[0].health.checks[3].sql.dsn: required",
			"regions[0].health.checks[4].replay_lag.dsn: required",
			"regions[0].health.checks[5].script.command: required",
			`protection_groups[0].auto_failover.mode: "sometimes" is not off, alert-only or failover`,
			"protection_groups[1].auto_failover: region west has no health checks",
			`protection_groups[1].auto_failover.blocked[0].from: "25:00" is not a time of day`,
			`protection_groups[1].auto_failover.blocked[0].days: "someday" is not a day`,
			"protection_groups[1].practice.every: 10ms is too short",
			`protection_groups[1].practice.window.from: "x" is not a time of day`,
		},
		"state-inside.bad.yaml": {
			"replication[0].from.url: file:///tmp/p/lake overlaps regions[primary].state",
			"replication[1].to.url: file:///tmp/s/lake/sub overlaps the target of replication[0]",
		},
	} {
		_, err := config.Load(filepath.Join("testdata", file))
		if err == nil {
			t.Errorf("%s: loaded without error", file)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not say %q:\n%v", file, w, err)
			}
		}
	}
}

func TestExcludedStateIsAllowed(t *testing.T) {
	_, err := config.Parse([]byte(`
regions:
  - {name: primary, state: /tmp/p/lake/.tandem}
  - {name: standby, state: /tmp/s/.tandem}
replication:
  - name: lake
    from: {region: primary, url: /tmp/p/lake}
    to: {region: standby, url: /tmp/s/lake}
    exclude: [.tandem/]
`))
	if err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"regions: []", "regions:\n  - name: a\n    state: /x\n", "replication:\n  - name: x\n    part_size: 5MiB\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted a config that does not validate")
		}
	})
}

// TestExamples loads the example configs shipped in examples/.
func TestExamples(t *testing.T) {
	t.Setenv("OCI_NAMESPACE", "acme")
	t.Setenv("DATABRICKS_TOKEN", "dapi-secret")
	t.Setenv("WEST_ACCESS_KEY_ID", "AKIAEXAMPLE")
	t.Setenv("WEST_SECRET_ACCESS_KEY", "secret")
	files, _ := filepath.Glob("../../../examples/*.yaml")
	if len(files) < 2 {
		t.Fatalf("examples: %v", files)
	}
	for _, f := range files {
		if _, err := config.Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestGroups(t *testing.T) {
	c, err := config.Parse([]byte(`
regions:
  - {name: primary, state: /r/p/.tandem}
  - {name: standby, state: /r/s/.tandem}
replication:
  - name: lake
    from: {region: primary, url: /r/p/lake}
    to: {region: standby, url: /r/s/lake}
    exclude: [tmp/]
groups:
  - name: sales
    owner: data@example.com
    from: primary
    to: standby
    workflow: {name: sales_etl}
    tables:
      - {name: bronze, from: /r/p/lake/tables/bronze, to: /r/s/lake/tables/bronze}
      - {name: gold, from: /r/p/warehouse/gold, to: /r/s/warehouse/gold}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := bucket.Replications(c)[0]
	if got := bucket.Exclusions(c, &r); !slices.Equal(got, []string{"tmp/", "tables/bronze/"}) {
		t.Fatalf("exclusions %v", got)
	}
	// Run the other way after a role change, it leaves the same tables alone.
	if got := bucket.Exclusions(c, bucket.Reversed(&r)); !slices.Equal(got, []string{"tmp/", "tables/bronze/"}) {
		t.Fatalf("exclusions of the reverse %v", got)
	}
	if g, err := group.Find(c, "sales"); err != nil || g.Workflow.Name != "sales_etl" || len(g.Tables) != 2 {
		t.Fatalf("%+v %v", g, err)
	}
	_, err = config.Parse([]byte(`
regions:
  - {name: primary, state: /r/p/.tandem}
groups:
  - name: sales
    from: primary
    to: nowhere
    workflow: {}
    tables:
      - {name: bronze, from: /r/p/b, to: /r/p/b/copy}
      - {name: bronze, from: "gs://x", to: /r/s/b}
  - name: empty
    from: primary
    to: primary
`))
	for _, want := range []string{
		`groups[0].to: unknown region "nowhere"`,
		"groups[0].workflow.name: required",
		"groups[0].tables[0]: from file:///r/p/b and to file:///r/p/b/copy overlap",
		`groups[0].tables[1].name: "bronze" is not a valid or unique table name`,
		`groups[0].tables[1].from: location "gs://x" has unknown scheme "gs"`,
		"groups[1].tables: a group needs at least one table",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func TestProtectionGroups(t *testing.T) {
	_, err := config.Parse([]byte(`
regions:
  - {name: east, state: /r/e/.tandem}
  - {name: west, state: /r/w/.tandem}
protection_groups:
  - {name: lakehouse, primary: east, standby: east, replications: [nope], groups: [missing]}
`))
	for _, want := range []string{
		"witness: required by protection_groups",
		`protection_groups[0].standby: "east" must be a region other than the primary`,
		`protection_groups[0].replications[0]: unknown replication "nope"`,
		`protection_groups[0].groups[0]: unknown group "missing"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}
