// Package plan generates DR plans from a protection group's topology and
// runs them durably. A plan is groups run in order, each a set of steps run
// in parallel. Built-in groups come in a fixed order (prechecks, lease,
// quiesce, drain, reverse, promote, aliases, activate); the steps in them
// are the protection group's own (lease, drills, user steps) and those its
// members contribute (Build asks for them; package member asks each kind).
// User groups are placed before or after a built-in group. A plan is plain
// data: what each step does is looked up by its Kind in an Actions
// implementation (package member), so plans can be shown, stored with
// their execution and compared when one is resumed.
package plan

import (
	"encoding/json"
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
	// Trigger, for a run tandem started by itself, says why.
	Trigger *Trigger `json:"trigger,omitempty"`
}

// Trigger is why tandem started a plan run by itself: what was seen down,
// by whom, since when.
type Trigger struct {
	Reason string `json:"reason"`
	// Region is the region seen down, Since when every observer agreed.
	Region string    `json:"region"`
	Since  time.Time `json:"since"`
	// Observers are who saw it down (the standby's serve, the witness),
	// Checks the failing checks each saw, with their last result.
	Observers []string `json:"observers"`
	Checks    []string `json:"checks"`
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

// Step kinds of the protection group itself; members' kinds define theirs
// (package member and its kinds). Checks run in the prechecks group.
const (
	CheckLease    = "check.lease"
	CheckEndpoint = "check.endpoint" // a user step's endpoint answers

	LeaseMove    = "lease.move"    // release in From, take in To
	LeaseAcquire = "lease.acquire" // take in To once From's lease expired
	LeaseStandby = "lease.standby" // record To as the standby of the holder

	DrillMark   = "drill.mark"
	DrillUnmark = "drill.unmark"

	UserStep = "user"
)

// OwnKinds are the step kinds above: no member kind may claim one.
var OwnKinds = []string{CheckLease, CheckEndpoint, LeaseMove, LeaseAcquire, LeaseStandby, DrillMark, DrillUnmark, UserStep}

// Placed is a step and the built-in group it runs in.
type Placed struct {
	Group string
	Step  *Step
}

// MarshalJSON writes the timeout as a duration string ("10m0s").
func (s Step) MarshalJSON() ([]byte, error) {
	type plain Step
	return json.Marshal(struct {
		plain
		Timeout string `json:"timeout"`
	}{plain(s), s.Timeout.String()})
}

// UnmarshalJSON reads a timeout written as a string or in nanoseconds.
func (s *Step) UnmarshalJSON(data []byte) error {
	type plain Step
	var v struct {
		*plain
		Timeout json.RawMessage `json:"timeout"`
	}
	v.plain = (*plain)(s)
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	var text string
	switch {
	case len(v.Timeout) == 0:
	case json.Unmarshal(v.Timeout, &text) == nil:
		d, err := time.ParseDuration(text)
		if err != nil {
			return fmt.Errorf("step %s: timeout: %w", s.ID, err)
		}
		s.Timeout = d
	default:
		var ns int64
		if err := json.Unmarshal(v.Timeout, &ns); err != nil {
			return fmt.Errorf("step %s: timeout: %w", s.ID, err)
		}
		s.Timeout = time.Duration(ns)
	}
	return nil
}

// NewStep is a built-in step with the default timeout.
func NewStep(kind, member, region, title, onError string) *Step {
	return &Step{ID: id(kind, member), Kind: kind, Member: member, Region: region, Title: title, Timeout: DefaultTimeout, OnError: onError}
}

// WarnOnFailover is the error mode of a precheck whose failure is the RPO
// about to be lost: it stops a switchover, a failover goes on.
func WarnOnFailover(typ string) string {
	if typ == Failover {
		return "continue"
	}
	return "stop"
}

// Build generates the plan of type typ for protection group pg, moving
// from region from toward region to (see Plan): the protection group's own
// steps (the lease, drills, user steps and their prechecks), the steps the
// members contribute (members is asked with the plan's type and regions
// set), user groups placed around the built-in groups, and the step
// settings of pg.
func Build(pg *config.ProtectionGroup, typ, from, to string, members func(p *Plan) []Placed) (*Plan, error) {
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
	add := func(group string, s *Step) { groups[group].Steps = append(groups[group].Steps, s) }

	add("prechecks", NewStep(CheckLease, "", to, "the witness answers and the lease is where this plan expects it", "stop"))
	var late []Placed // after the members' prechecks
	for _, ug := range pg.UserGroups {
		if slices.Contains(ug.Plans, typ) || len(ug.Plans) == 0 {
			for _, s := range ug.Steps {
				if !s.Pause && !s.Disabled {
					late = append(late, Placed{"prechecks", NewStep(CheckEndpoint, "user/"+ug.Name+"/"+s.Name, to, "the step's endpoint answers", WarnOnFailover(typ))})
				}
			}
		}
	}
	switch typ {
	case Switchover:
		late = append(late, Placed{"lease", NewStep(LeaseMove, "", to, "release the lease in "+from+" and take it in "+to, "stop")})
	case Failover:
		add("lease", NewStep(LeaseAcquire, "", to, "take the lease once "+from+"'s has expired", "stop"))
	case Failback:
		late = append(late, Placed{"lease", NewStep(LeaseStandby, "", from, "record "+to+" as the standby: replication runs toward it", "stop")})
	case DrillStart:
		add("quiesce", NewStep(DrillMark, "", to, "pause replication and syncs into "+to+" for the drill", "stop"))
	}
	for _, ps := range members(p) {
		if groups[ps.Group] == nil {
			return nil, fmt.Errorf("step %s: %q is not a built-in group", ps.Step.ID, ps.Group)
		}
		add(ps.Group, ps.Step)
	}
	for _, ps := range late {
		add(ps.Group, ps.Step)
	}
	if typ == DrillStop {
		add("reverse", NewStep(DrillUnmark, "", to, "resume replication and syncs into "+to, "stop"))
	}
	if typ == Failover {
		for _, s := range groups["quiesce"].Steps {
			s.Timeout = OldPrimaryTimeout // it is probably gone: do not wait long
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

// GroupOf names the group a step is in.
func (p *Plan) GroupOf(id string) string {
	for _, g := range p.Groups {
		for _, s := range g.Steps {
			if s.ID == id {
				return g.Name
			}
		}
	}
	return ""
}
