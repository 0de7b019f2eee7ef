package group_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/databricks"
	"tandem/internal/lease"
	"tandem/internal/member"
	_ "tandem/internal/member/all"
	"tandem/internal/member/group"
	"tandem/internal/objstore/local"
	"tandem/internal/state"
)

func load(t *testing.T, dir, databricksYAML string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(strings.ReplaceAll(`
regions:
  - {name: east, state: DIR/east/.tandem}
  - {name: west, state: DIR/west/.tandem}
groups:
  - name: sales
    from: east
    to: west
    workflow:
      name: etl
      databricks: `+databricksYAML+`
    tables: [{name: gold, from: DIR/east/gold, to: DIR/west/gold}]
witness: {url: DIR/witness}
protection_groups:
  - {name: dr, primary: east, standby: west, groups: [sales]}
`, "DIR", dir)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestRunSourceFollowsTheLease: the cut reads the runs of the job in the
// region the group copies from now; after a failback the job there.
func TestRunSourceFollowsTheLease(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"east/gold", "west/gold", "witness"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	ctx := context.Background()
	cfg := load(t, dir, `{east: {host: "https://east.example", token: a, job_id: 1}, west: {host: "https://west.example", token: b, job_id: 2}}`)
	env := member.NewEnv(cfg, nil)
	host := func() string {
		gc, _ := group.Find(cfg, "sales")
		cur, err := group.Current(ctx, env, gc)
		if err != nil {
			t.Fatal(err)
		}
		g, err := group.Open(ctx, env, cur, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return g.Runs.(*databricks.Client).Host
	}
	if got := host(); got != "https://east.example" {
		t.Fatalf("before any role change the cut reads %s", got)
	}
	// After a failover and a failback: west holds the lease, east is its
	// standby; the group copies west -> east.
	wb, _ := local.Open(filepath.Join(dir, "witness"), true)
	w := &lease.Lease{Store: state.Store{Bucket: wb}.Sub("leases"), Group: "dr", Region: "west", TTL: time.Hour, Standby: "east"}
	if _, err := w.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if got := host(); got != "https://west.example" {
		t.Fatalf("after the role change the cut reads %s, not west's job", got)
	}

	// The short form is the from region's job; the other region has none,
	// and a cut there says which setting is missing.
	cfg = load(t, dir, `{host: "https://east.example", token: a, job_id: 1}`)
	env = member.NewEnv(cfg, nil)
	gc, _ := group.Find(cfg, "sales")
	cur, _ := group.Current(ctx, env, gc)
	g, err := group.Open(ctx, env, cur, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Runs.Runs(ctx); err == nil || !strings.Contains(err.Error(), "set groups[].workflow.databricks.west") {
		t.Fatalf("no job in west: %v", err)
	}
}
