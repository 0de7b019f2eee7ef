package autofail

import (
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/health"
	"tandem/internal/plan"
)

func report(region string, down bool, since time.Time) health.Report {
	return health.Report{Region: region, Down: down, Checks: []health.State{{Name: "api", Kind: "http", Down: down, Since: since,
		Last: &health.Result{OK: !down, Detail: map[bool]string{true: "status 503, want 2xx", false: "status 200"}[down]}}}}
}

func obs(observer, role string, at time.Time, reports ...health.Report) Observation {
	return Observation{Observer: observer, Role: role, At: at, Interval: 1, Regions: reports}
}

// Decide, case by case: a careful operator's answer to each situation.
func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC) // a Wednesday
	downAt := now.Add(-2 * time.Minute)
	pg := func(mut func(*config.AutoFailover)) *config.ProtectionGroup {
		p := &config.ProtectionGroup{Name: "lake", Primary: "east", Standby: "west",
			AutoFailover: config.AutoFailover{Mode: "failover", MinDown: config.Duration(time.Minute), MinInterval: config.Duration(time.Hour)}}
		if mut != nil {
			mut(&p.AutoFailover)
		}
		return p
	}
	westDown := obs("west", RoleRegion, now, report("east", true, downAt))
	westUp := obs("west", RoleRegion, now, report("east", false, time.Time{}))
	witDown := obs("witness", RoleWitness, now, report("east", true, downAt.Add(10*time.Second)))
	witUp := obs("witness", RoleWitness, now, report("east", false, time.Time{}))
	witStale := obs("witness", RoleWitness, now.Add(-time.Minute), report("east", true, downAt))
	for _, tc := range []struct {
		name  string
		pg    *config.ProtectionGroup
		obs   []Observation
		last  Record
		busy  string
		state string
		says  string
	}{
		{"primary up", pg(nil), []Observation{westUp, witUp}, Record{}, "", Healthy, "west sees east up"},
		{"standby has not observed", pg(nil), []Observation{witDown}, Record{}, "", Unknown, "no recent observation"},
		{"standby's own view stale", pg(nil), []Observation{obs("west", RoleRegion, now.Add(-time.Minute), report("east", true, downAt)), witDown}, Record{}, "", Unknown, "no recent observation"},
		{"no witness: a partition that isolates the standby looks the same", pg(nil), []Observation{westDown}, Record{}, "", Suspect, "no witness observer has reported lately"},
		{"witness silent (stale)", pg(nil), []Observation{westDown, witStale}, Record{}, "", Suspect, "no witness observer has reported lately"},
		{"witness still sees the primary: the standby is cut off", pg(nil), []Observation{westDown, witUp}, Record{}, "", Suspect, "still sees it up"},
		{"agreed, not for min_down yet", pg(func(a *config.AutoFailover) { a.MinDown = config.Duration(5 * time.Minute) }), []Observation{westDown, witDown}, Record{}, "", Down, "min_down"},
		{"alert-only", pg(func(a *config.AutoFailover) { a.Mode = "alert-only" }), []Observation{westDown, witDown}, Record{}, "", Withheld, "mode alert-only"},
		{"blocked window", pg(func(a *config.AutoFailover) {
			a.Blocked = []config.Window{{Days: []string{"wed"}, From: "09:00", To: "11:00"}}
		}), []Observation{westDown, witDown}, Record{}, "", Withheld, "blocked window"},
		{"outside the allowed windows", pg(func(a *config.AutoFailover) {
			a.Allowed = []config.Window{{Days: []string{"sat", "sun"}, From: "00:00", To: "23:59"}}
		}), []Observation{westDown, witDown}, Record{}, "", Withheld, "no allowed window"},
		{"inside an allowed window across midnight", pg(func(a *config.AutoFailover) {
			a.Allowed = []config.Window{{From: "22:00", To: "11:00"}}
		}), []Observation{westDown, witDown}, Record{}, "", Triggered, "east is down"},
		{"a run against this primary already happened", pg(nil), []Observation{westDown, witDown},
			Record{LastRun: now.Add(-30 * time.Second), Execution: "failover-1", Outcome: "failed: x", Decision: Decision{Epoch: 4}}, "", Withheld, "already ran"},
		{"min_interval since the last automatic run", pg(nil), []Observation{westDown, witDown},
			Record{LastRun: now.Add(-30 * time.Minute), Execution: "failover-0", Decision: Decision{Epoch: 3}}, "", Withheld, "min_interval"},
		{"a failover now would lose more than max_lag", pg(func(a *config.AutoFailover) { a.MaxLag = config.Duration(5 * time.Minute) }), []Observation{westDown, witDown}, Record{}, "", Withheld, "would lose 10m0s of replication lake, more than max_lag 5m0s"},
		{"max_lag and a member that cannot tell", pg(func(a *config.AutoFailover) { a.MaxLag = config.Duration(5 * time.Minute) }), []Observation{westDown, witDown}, Record{Decision: Decision{State: "unknown-lag"}}, "", Withheld, "cannot be told"},
		{"approval asked for", pg(func(a *config.AutoFailover) { a.Approval = true }), []Observation{westDown, witDown}, Record{}, "", AwaitingApproval, "tandem auto-failover approve --config x.yaml"},
		{"a plan run is unfinished: one plan at a time", pg(nil), []Observation{westDown, witDown}, Record{}, "switchover-1", Withheld, "switchover-1 is unfinished"},
		{"agreed, policy allows", pg(nil), []Observation{westDown, witDown}, Record{LastRun: now.Add(-2 * time.Hour), Decision: Decision{Epoch: 2}}, "", Triggered, "seen by west and witness"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Facts{Now: now, Primary: "east", Standby: "west", Epoch: 4, Observations: tc.obs, Last: tc.last, Busy: tc.busy, Hint: "--config x.yaml",
				Lags: []plan.MemberRPO{{Member: "replication lake", Lag: (10 * time.Minute).Seconds(), Known: tc.last.Decision.State != "unknown-lag"}}}
			d := Decide(tc.pg, f)
			if d.State != tc.state || !strings.Contains(d.Reason, tc.says) {
				t.Fatalf("%s: %s; want %s saying %q", d.State, d.Reason, tc.state, tc.says)
			}
			if d.State == Triggered && (!d.Since.Equal(downAt.Add(10*time.Second)) || len(d.Observers) != 2 || len(d.Checks) != 2) {
				t.Fatalf("triggered without its reasons: %+v", d)
			}
		})
	}
}

// Flapping: a primary that comes back before min_down resets the clock.
func TestFlappingResetsTheClock(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	pg := &config.ProtectionGroup{Name: "lake", Primary: "east", Standby: "west",
		AutoFailover: config.AutoFailover{Mode: "failover", MinDown: config.Duration(time.Minute), MinInterval: config.Duration(time.Hour)}}
	// Down two minutes ago, up, and down again 20 seconds ago: the
	// monitor's Since is the latest time the check went down.
	again := now.Add(-20 * time.Second)
	d := Decide(pg, Facts{Now: now, Primary: "east", Standby: "west", Epoch: 1, Observations: []Observation{
		obs("west", RoleRegion, now, report("east", true, again)),
		obs("witness", RoleWitness, now, report("east", true, again)),
	}})
	if d.State != Down {
		t.Fatalf("%s: %s", d.State, d.Reason)
	}
}

func TestWindow(t *testing.T) {
	w := config.Window{Days: []string{"fri"}, From: "22:00", To: "02:00"}
	for _, tc := range []struct {
		at   string
		want bool
	}{
		{"2026-12-04T23:00:00Z", true},  // Friday night
		{"2026-12-05T01:00:00Z", true},  // Saturday early: Friday's window
		{"2026-12-05T03:00:00Z", false}, // after it
		{"2026-12-04T01:00:00Z", false}, // Friday early: Thursday's window, not Friday's
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := w.Contains(at); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.at, got, tc.want)
		}
	}
}

// An approval holds for the primary's epoch it was given against.
func TestApprovalHoldsForItsEpoch(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	pg := &config.ProtectionGroup{Name: "lakehouse", Primary: "east", Standby: "west",
		AutoFailover: config.AutoFailover{Mode: "failover", MinDown: config.Duration(time.Minute), MinInterval: config.Duration(time.Hour), Approval: true}}
	o := []Observation{obs("west", RoleRegion, now, report("east", true, now.Add(-2*time.Minute))), obs("w", RoleWitness, now, report("east", true, now.Add(-2*time.Minute)))}
	if d := Decide(pg, Facts{Now: now, Primary: "east", Standby: "west", Epoch: 7, Observations: o, Approved: true}); d.State != Triggered {
		t.Fatalf("approved: %s: %s", d.State, d.Reason)
	}
	if d := Decide(pg, Facts{Now: now, Primary: "east", Standby: "west", Epoch: 7, Observations: o}); d.State != AwaitingApproval {
		t.Fatalf("not approved: %s: %s", d.State, d.Reason)
	}
}

// Two windows that meet at noon and midnight block the whole day, the
// last minute before midnight included.
func TestWindowsCoverTheDay(t *testing.T) {
	ws := []config.Window{{From: "00:00", To: "12:00"}, {From: "12:00", To: "00:00"}}
	for _, at := range []string{"2026-12-04T00:00:00Z", "2026-12-04T11:59:59Z", "2026-12-04T12:00:00Z", "2026-12-04T23:59:30Z"} {
		tm, _ := time.Parse(time.RFC3339, at)
		if !in(ws, tm) {
			t.Errorf("%s is in no window", at)
		}
	}
}
