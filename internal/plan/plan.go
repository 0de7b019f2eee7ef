// Package plan generates DR plans from a protection group's topology and
// runs them durably. A plan is groups run in order, each a set of steps run
// in parallel. Built-in groups come in a fixed order (prechecks, lease,
// quiesce, drain, reverse, promote, aliases, activate); the steps in them
// follow from the members (replications, table groups, databases, aliases,
// workflows) and the plan type. User groups are placed before or after a
// built-in group. A plan is plain data: what each step does is looked up by
// its Kind in an Actions implementation (package members), so plans can be
// shown, stored with their execution and compared when one is resumed.
package plan

import (
	"fmt"
	"slices"
	"time"

	"tandem/internal/config"
)

// Types of plan.
const (
	Switchover = "switchover" // planned: the primary is healthy and hands over
	Failover   = "failover"   // the primary is gone: the standby takes over
	Failback   = "failback"   // after a failover: the old primary becomes the standby
	DrillStart = "drill-start"
	DrillStop  = "drill-stop"
)

// Plan is a generated plan.
type Plan struct {
	Type            string `json:"type"`
	ProtectionGroup string `json:"protection_group"`
	// From is the region that is primary when the plan starts, To the
	// region it acts toward: the new primary (switchover, failover), the
	// reinstated standby (failback), the standby drilled (drills).
	From string `json:"from"`
	To   string `json:"to"`
	// Home is the region whose state holds the execution records: the
	// region that is primary when the plan ends, or the drilled standby.
	Home   string   `json:"home"`
	Groups []*Group `json:"groups"`
}

// Group is a set of steps run in parallel.
type Group struct {
	Name  string  `json:"name"`
	User  bool    `json:"user,omitempty"`
	Steps []*Step `json:"steps"`
}

// Step is one action of a plan.
type Step struct {
	// ID is unique in the plan: kind:member, or user:group/step.
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Member string `json:"member,omitempty"`
	// Region is where the step acts.
	Region   string        `json:"region"`
	Title    string        `json:"title"`
	Timeout  time.Duration `json:"timeout"`
	OnError  string        `json:"on_error"` // stop or continue
	Retries  int           `json:"retries,omitempty"`
	Disabled bool          `json:"disabled,omitempty"`
	// User is the user step's definition.
	User *config.UserStep `json:"-"`
}

// Pause reports whether the step waits for approval.
func (s *Step) Pause() bool { return s.User != nil && s.User.Pause }

// Default timeouts.
const (
	DefaultTimeout     = 10 * time.Minute
	DefaultUserTimeout = 5 * time.Minute
	DefaultPause       = 24 * time.Hour
	// OldPrimaryTimeout bounds a failover's best-effort steps in the lost
	// region.
	OldPrimaryTimeout = time.Minute
)

// Step kinds. Checks run in the prechecks group.
const (
	CheckLease       = "check.lease"
	CheckReplication = "check.replication"
	CheckGroup       = "check.group"
	CheckDatabase    = "check.database"
	CheckReinstated  = "check.reinstated"
	CheckEndpoint    = "check.endpoint"

	LeaseMove    = "lease.move"    // release in From, take in To
	LeaseAcquire = "lease.acquire" // take in To once From's lease expired
	LeaseStandby = "lease.standby" // record To as the standby of the holder

	ReplicationSync    = "replication.sync"
	ReplicationPromote = "replication.promote"
	ReplicationReverse = "replication.reverse"

	GroupSync     = "group.sync"
	GroupFinalize = "group.finalize"
	GroupReverse  = "group.reverse"

	DatabaseFence     = "database.fence"
	DatabaseCatchup   = "database.catchup"
	DatabasePromote   = "database.promote"
	DatabaseReinstate = "database.reinstate"
	DatabasePause     = "database.pause-replay"
	DatabaseResume    = "database.resume-replay"

	DrillMark   = "drill.mark"
	DrillUnmark = "drill.unmark"

	AliasesSwitch      = "aliases.switch"
	WorkflowActivate   = "workflow.activate"
	WorkflowDeactivate = "workflow.deactivate"

	UserStep = "user"
)

// Build generates the plan of type typ for protection group pg, moving
// from region from toward region to (see Plan).
func Build(cfg *config.Config, pg *config.ProtectionGroup, typ, from, to string) (*Plan, error) {
	if !slices.Contains(config.PlanTypes, typ) {
		return nil, fmt.Errorf("unknown plan type %q (%v)", typ, config.PlanTypes)
	}
	if from == to || !slices.Contains([]string{pg.Primary, pg.Standby}, from) || !slices.Contains([]string{pg.Primary, pg.Standby}, to) {
		return nil, fmt.Errorf("a %s plan of %s moves between %s and %s, not from %q to %q", typ, pg.Name, pg.Primary, pg.Standby, from, to)
	}
	p := &Plan{Type: typ, ProtectionGroup: pg.Name, From: from, To: to, Home: to}
	if typ == Failback {
		p.Home = from
	}
	groups := map[string]*Group{}
	for _, name := range config.BuiltinGroups {
		groups[name] = &Group{Name: name}
	}
	add := func(group, kind, member, region, title string, onError string) {
		groups[group].Steps = append(groups[group].Steps, &Step{
			ID: id(kind, member), Kind: kind, Member: member, Region: region, Title: title,
			Timeout: DefaultTimeout, OnError: onError,
		})
	}
	warnOnFailover := "stop"
	if typ == Failover {
		warnOnFailover = "continue" // what it finds is the RPO about to be lost
	}

	// Prechecks.
	add("prechecks", CheckLease, "", to, "the witness answers and the lease is where this plan expects it", "stop")
	switch typ {
	case Switchover, Failover, DrillStart:
		for _, r := range pg.Replications {
			add("prechecks", CheckReplication, r, to, "watermark within the RPO, no foreign writes in the replica", warnOnFailover)
		}
		for _, g := range pg.Groups {
			add("prechecks", CheckGroup, g, to, "a complete manifest to finalize to", "stop")
		}
		for _, d := range pg.Databases {
			add("prechecks", CheckDatabase, d, to, "the standby is in recovery and within its lag", "stop")
		}
	case Failback:
		for _, d := range pg.Databases {
			add("prechecks", CheckReinstated, d, to, "the old primary was rebuilt and streams from the new one", "stop")
		}
	}
	for _, w := range pg.Workflows {
		add("prechecks", CheckEndpoint, "workflow/"+w, to, "the workflow's endpoints answer", warnOnFailover)
	}
	for _, ug := range pg.UserGroups {
		if slices.Contains(ug.Plans, typ) || len(ug.Plans) == 0 {
			for _, s := range ug.Steps {
				if !s.Pause && !s.Disabled {
					add("prechecks", CheckEndpoint, "user/"+ug.Name+"/"+s.Name, to, "the step's endpoint answers", warnOnFailover)
				}
			}
		}
	}

	switch typ {
	case Switchover:
		for _, w := range pg.Workflows {
			add("quiesce", WorkflowDeactivate, w, from, "pause the workflow in the old primary", "stop")
		}
		for _, d := range pg.Databases {
			add("quiesce", DatabaseFence, d, from, "make the primary refuse writes", "stop")
			add("drain", DatabaseCatchup, d, to, "wait until the standby replayed all the fenced primary wrote", "stop")
		}
		for _, r := range pg.Replications {
			add("drain", ReplicationSync, r, to, "a last replication pass", "stop")
		}
		for _, g := range pg.Groups {
			add("drain", GroupSync, g, to, "a last sync to the last completed run", "stop")
		}
		add("lease", LeaseMove, "", to, "release the lease in "+from+" and take it in "+to, "stop")
	case Failover:
		add("lease", LeaseAcquire, "", to, "take the lease once "+from+"'s has expired", "stop")
		for _, w := range pg.Workflows {
			add("quiesce", WorkflowDeactivate, w, from, "pause the workflow in the old primary, if it answers", "continue")
		}
		for _, d := range pg.Databases {
			add("quiesce", DatabaseFence, d, from, "fence the old primary, if it answers", "continue")
		}
		for _, s := range groups["quiesce"].Steps {
			s.Timeout = OldPrimaryTimeout // it is probably gone: do not wait long
		}
	case Failback:
		for _, w := range pg.Workflows {
			add("quiesce", WorkflowDeactivate, w, to, "keep the workflow paused in the returning region", "stop")
		}
		for _, r := range pg.Replications {
			add("reverse", ReplicationReverse, r, to, "replicate "+from+" back into "+to, "stop")
		}
		for _, g := range pg.Groups {
			add("reverse", GroupReverse, g, to, "move aside what "+to+" wrote after the last manifest, then sync back", "stop")
		}
		for _, d := range pg.Databases {
			add("reverse", DatabaseReinstate, d, to, "clear the old primary's fence; it follows "+from, "stop")
		}
		add("lease", LeaseStandby, "", from, "record "+to+" as the standby: replication runs toward it", "stop")
	case DrillStart:
		add("quiesce", DrillMark, "", to, "pause replication and syncs into "+to+" for the drill", "stop")
		for _, d := range pg.Databases {
			add("quiesce", DatabasePause, d, to, "freeze the standby's replay", "stop")
		}
		for _, g := range pg.Groups {
			add("promote", GroupFinalize, g, to, "bring the standby tables to the last manifest", "stop")
		}
	case DrillStop:
		for _, d := range pg.Databases {
			add("reverse", DatabaseResume, d, to, "resume the standby's replay", "stop")
		}
		add("reverse", DrillUnmark, "", to, "resume replication and syncs into "+to, "stop")
	}
	if typ == Switchover || typ == Failover {
		for _, r := range pg.Replications {
			add("promote", ReplicationPromote, r, to, "stop replication and make the replica writable", "stop")
		}
		for _, g := range pg.Groups {
			add("promote", GroupFinalize, g, to, "finalize the tables to the last manifest and pause the sync", "stop")
		}
		for _, d := range pg.Databases {
			add("promote", DatabasePromote, d, to, "promote the standby and wait until it accepts writes", "stop")
		}
		for _, a := range pg.Aliases {
			add("aliases", AliasesSwitch, a, to, "point the aliases at "+to+"'s tables, in one transaction", "stop")
		}
		for _, w := range pg.Workflows {
			add("activate", WorkflowActivate, w, to, "activate the workflow in the new primary", "stop")
		}
	}

	// Order: built-in groups, user groups around them, empty ones dropped.
	var order []*Group
	for _, name := range Order(typ) {
		order = append(order, userGroups(pg, typ, to, func(ug config.UserGroup) bool { return ug.Before == name })...)
		order = append(order, groups[name])
		order = append(order, userGroups(pg, typ, to, func(ug config.UserGroup) bool { return ug.After == name })...)
	}
	for _, g := range order {
		if len(g.Steps) == 0 {
			continue
		}
		for _, s := range g.Steps {
			if set, ok := pg.Steps[s.ID]; ok {
				apply(s, set)
			}
		}
		p.Groups = append(p.Groups, g)
	}
	return p, nil
}

// Order is the fixed order of the built-in groups in a plan type. The lease
// moves after the old primary is quiesced and drained in a switchover, but
// first in a failover: it is what fences the old primary. A failback records
// the new standby only once it was brought level.
func Order(typ string) []string {
	switch typ {
	case Failover:
		return []string{"prechecks", "lease", "quiesce", "drain", "reverse", "promote", "aliases", "activate"}
	case Failback:
		return []string{"prechecks", "quiesce", "drain", "reverse", "lease", "promote", "aliases", "activate"}
	}
	return []string{"prechecks", "quiesce", "drain", "lease", "reverse", "promote", "aliases", "activate"}
}

func userGroups(pg *config.ProtectionGroup, typ, to string, where func(config.UserGroup) bool) []*Group {
	var out []*Group
	for _, ug := range pg.UserGroups {
		if !where(ug) || len(ug.Plans) > 0 && !slices.Contains(ug.Plans, typ) {
			continue
		}
		g := &Group{Name: ug.Name, User: true}
		for i := range ug.Steps {
			us := &ug.Steps[i]
			region := us.Region
			if region == "" {
				region = to
			}
			s := &Step{ID: id(UserStep, ug.Name+"/"+us.Name), Kind: UserStep, Member: ug.Name + "/" + us.Name,
				Region: region, Title: describe(us.Action), Timeout: DefaultUserTimeout, OnError: "stop", User: us}
			if us.Pause {
				s.Timeout = DefaultPause
			}
			apply(s, us.StepSettings)
			g.Steps = append(g.Steps, s)
		}
		out = append(out, g)
	}
	return out
}

func apply(s *Step, set config.StepSettings) {
	if set.Timeout > 0 {
		s.Timeout = time.Duration(set.Timeout)
	}
	if set.OnError != "" {
		s.OnError = set.OnError
	}
	if set.Retries > 0 {
		s.Retries = set.Retries
	}
	s.Disabled = s.Disabled || set.Disabled
}

func describe(a config.Action) string {
	switch {
	case a.HTTP != nil:
		m := a.HTTP.Method
		if m == "" {
			m = "HTTP"
		}
		return m + " request"
	case a.SQL != nil:
		return fmt.Sprintf("%d SQL statements (%s)", len(a.SQL.Statements), a.SQL.Driver)
	case a.Script != nil:
		return "script " + a.Script.Command[0]
	case a.Pause:
		return "wait for `tandem plan approve`"
	}
	return ""
}

func id(kind, member string) string {
	if member == "" {
		return kind
	}
	return kind + ":" + member
}

// Step finds a step by ID.
func (p *Plan) Step(id string) *Step {
	for _, g := range p.Groups {
		for _, s := range g.Steps {
			if s.ID == id {
				return s
			}
		}
	}
	return nil
}
