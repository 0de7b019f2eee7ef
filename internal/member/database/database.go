// Package database is the member kind of PostgreSQL primary/standby pairs
// (databases[] in the configuration and in protection groups): package
// postgres fences the old primary, waits for the standby to catch up,
// promotes it, checks that a rebuilt old primary follows, and pauses
// replay for drills. A region that lost the lease fences its server if it
// still accepts writes (Passive).
package database

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"tandem/internal/config"
	"tandem/internal/member"
	"tandem/internal/plan"
	"tandem/internal/postgres"
)

// Database is a PostgreSQL primary with a streaming standby in another
// region.
type Database struct {
	Name    string `yaml:"name" json:"name"`
	Primary Side   `yaml:"primary" json:"primary"`
	Standby Side   `yaml:"standby" json:"standby"`
	// MaxLag is how far (WAL bytes) the standby may be behind for a
	// switchover's precheck to pass (default 16MiB).
	MaxLag config.Size `yaml:"max_lag" json:"max_lag"`
}

// Side is one server of a database pair.
type Side struct {
	Region string `yaml:"region" json:"region"`
	// DSN is a PostgreSQL connection string (URL or key=value); it often
	// holds a password.
	DSN config.Secret `yaml:"dsn" json:"dsn"`
}

// Side returns the server in region, if any.
func (d *Database) Side(region string) (Side, bool) {
	switch region {
	case d.Primary.Region:
		return d.Primary, true
	case d.Standby.Region:
		return d.Standby, true
	}
	return Side{}, false
}

const (
	sectionKey = "databases"
	refKey     = "databases"
)

// Step kinds.
const (
	Check      = "check.database"
	Reinstated = "check.reinstated"
	Fence      = "database.fence"
	Catchup    = "database.catchup"
	Promote    = "database.promote"
	Reinstate  = "database.reinstate"
	Pause      = "database.pause-replay"
	Resume     = "database.resume-replay"
)

// Databases returns the configured pairs.
func Databases(c *config.Config) []Database { return config.Get[[]Database](c, sectionKey) }

// Find returns the named pair, or nil.
func Find(c *config.Config, name string) *Database { return config.Find[Database](c, sectionKey, name) }

// MemberName is its name.
func (d Database) MemberName() string { return d.Name }

func init() { member.Register(Kind{}) }

// section is the kind's configuration section.
func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "database",
		New: func() any { return new([]Database) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Database) {
				if d := &(*v.(*[]Database))[i]; d.MaxLag == 0 {
					d.MaxLag = 16 << 20
				}
			}
		},
		Validate: func(ck *config.Check, v any) {
			seen := map[string]bool{}
			for i, d := range *v.(*[]Database) {
				f := fmt.Sprintf("%s[%d]", sectionKey, i)
				ck.Name(f+".name", "database", d.Name, seen)
				for _, s := range []struct {
					n string
					s Side
				}{{"primary", d.Primary}, {"standby", d.Standby}} {
					ck.Region(f+"."+s.n+".region", s.s.Region)
					if s.s.DSN == "" {
						ck.Bad(f+"."+s.n+".dsn", "required: a PostgreSQL connection string")
					}
				}
				if d.Primary.Region == d.Standby.Region {
					ck.Bad(f+".standby.region", "%q must differ from the primary's region", d.Standby.Region)
				}
			}
		},
		Names: config.NamesOf[Database],
		CheckRef: func(ck *config.Check, pg *config.ProtectionGroup, field, name string) {
			d := Find(ck.Config(), name)
			if pair := []string{pg.Primary, pg.Standby}; !slices.Contains(pair, d.Primary.Region) || !slices.Contains(pair, d.Standby.Region) {
				ck.Bad(field, "database %q is not between %s and %s", name, pg.Primary, pg.Standby)
			}
		},
	}
}

// Kind is the database pair kind.
type Kind struct{}

var (
	_ member.Kind    = Kind{}
	_ member.Passive = Kind{}
)

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string {
	return []string{Check, Reinstated, Fence, Catchup, Promote, Reinstate, Pause, Resume}
}

// Steps: a switchover fences the primary, lets the standby catch up and
// promotes it; a failover fences the old primary if it answers and
// promotes; a failback checks that the old primary follows and clears its
// fence; drills pause and resume replay.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	var out []member.Placed
	add := func(group, kind, region, title, onError string) {
		out = append(out, member.Placed{Group: group, Step: plan.NewStep(kind, name, region, title, onError)})
	}
	switch p.Type {
	case plan.Switchover:
		add("prechecks", Check, p.To, "the standby is in recovery and within its lag", "stop")
		add("quiesce", Fence, p.From, "make the primary refuse writes", "stop")
		add("drain", Catchup, p.To, "wait until the standby replayed all the fenced primary wrote", "stop")
		add("promote", Promote, p.To, "promote the standby and wait until it accepts writes", "stop")
	case plan.Failover:
		add("prechecks", Check, p.To, "the standby is in recovery and within its lag", "stop")
		add("quiesce", Fence, p.From, "fence the old primary, if it answers", "continue")
		add("promote", Promote, p.To, "promote the standby and wait until it accepts writes", "stop")
	case plan.Failback:
		add("prechecks", Reinstated, p.To, "the old primary was rebuilt and streams from the new one", "stop")
		add("reverse", Reinstate, p.To, "clear the old primary's fence; it follows "+p.From, "stop")
	case plan.DrillStart:
		add("prechecks", Check, p.To, "the standby is in recovery and within its lag", "stop")
		add("quiesce", Pause, p.To, "freeze the standby's replay", "stop")
	case plan.DrillStop:
		add("reverse", Resume, p.To, "resume the standby's replay", "stop")
	}
	return out
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	d := Find(x.Cfg, x.Step.Member)
	if d == nil {
		return fmt.Errorf("unknown database %q", x.Step.Member)
	}
	p := x.Plan
	side, _ := d.Side(x.Step.Region)
	dsn := string(side.DSN)
	switch x.Step.Kind {
	case Check:
		return check(ctx, x, d)
	case Reinstated:
		ss, err := postgres.Following(ctx, dsn, int64(d.MaxLag))
		if err != nil {
			return member.Failed("database %s in %s: %v", d.Name, p.To, err)
		}
		x.Printf("database %s in %s follows the primary, at %s", d.Name, p.To, ss.LSN)
		return nil
	case Fence:
		lsn, err := postgres.Fence(ctx, dsn)
		if err == nil {
			x.Printf("%s (%s) refuses writes; WAL ends at %s", d.Name, x.Step.Region, lsn)
		}
		return err
	case Catchup:
		old, _ := d.Side(p.From)
		ps, err := postgres.Check(ctx, string(old.DSN))
		if err != nil {
			return err
		}
		if !ps.ReadOnly {
			return fmt.Errorf("%s in %s is not fenced: the standby cannot catch up with a primary that still writes", d.Name, p.From)
		}
		if err := postgres.WaitReplay(ctx, dsn, ps.LSN); err != nil {
			return err
		}
		x.Printf("the standby in %s replayed up to %s", x.Step.Region, ps.LSN)
		return nil
	case Promote:
		if err := postgres.Promote(ctx, dsn); err != nil {
			return err
		}
		x.Printf("%s in %s is primary and accepts writes", d.Name, x.Step.Region)
		return nil
	case Reinstate:
		ss, err := postgres.Following(ctx, dsn, int64(d.MaxLag))
		if err != nil {
			return err
		}
		if err := postgres.Unfence(ctx, dsn); err != nil {
			return err
		}
		x.Printf("%s in %s streams from the primary, replayed %s", d.Name, x.Step.Region, ss.LSN)
		return nil
	case Pause:
		return postgres.PauseReplay(ctx, dsn)
	default: // Resume
		return postgres.ResumeReplay(ctx, dsn)
	}
}

func check(ctx context.Context, x *member.Exec, d *Database) error {
	p := x.Plan
	standby, _ := d.Side(p.To)
	ss, err := postgres.Check(ctx, string(standby.DSN))
	if err != nil {
		return member.Failed("database %s in %s: %v", d.Name, p.To, err)
	}
	if !ss.InRecovery {
		return member.Failed("database %s in %s is not a standby (not in recovery)", d.Name, p.To)
	}
	x.Printf("database %s in %s: standby at %s, %d bytes received and not replayed, streaming %v", d.Name, p.To, ss.LSN, ss.Lag, ss.Streaming)
	if p.Type != plan.Switchover {
		return nil
	}
	primary, _ := d.Side(p.From)
	ps, err := postgres.Check(ctx, string(primary.DSN))
	if err != nil {
		return member.Failed("database %s in %s (the primary) does not answer: %v", d.Name, p.From, err)
	}
	behind, err := postgres.Behind(ctx, string(standby.DSN), ps.LSN)
	if err != nil {
		return err
	}
	x.Printf("database %s: the standby is %d bytes behind the primary (at most %d)", d.Name, behind, int64(d.MaxLag))
	if behind > int64(d.MaxLag) {
		return member.Failed("database %s: the standby is %d bytes behind, more than max_lag %d", d.Name, behind, int64(d.MaxLag))
	}
	return nil
}

// Passivate fences the server in region if it accepts writes: an old
// primary that came back after a failover refuses writes again.
func (Kind) Passivate(ctx context.Context, env *member.Env, pg *config.ProtectionGroup, name, region string, w io.Writer) error {
	d := Find(env.Cfg, name)
	side, ok := d.Side(region)
	if !ok {
		return nil
	}
	s, err := postgres.Check(ctx, string(side.DSN))
	if err != nil {
		return fmt.Errorf("database %s in %s: %w", name, region, err)
	}
	switch {
	case s.InRecovery:
		fmt.Fprintf(w, "database %s in %s is a standby: it refuses writes\n", name, region)
		return nil
	case s.ReadOnly:
		fmt.Fprintf(w, "database %s in %s is fenced: it refuses writes\n", name, region)
		return nil
	}
	lsn, err := postgres.Fence(ctx, string(side.DSN))
	if err != nil {
		return fmt.Errorf("database %s in %s accepts writes and could not be fenced: %w", name, region, err)
	}
	fmt.Fprintf(w, "database %s in %s accepted writes: fenced, WAL ends at %s\n", name, region, lsn)
	return nil
}

// Backlog is the WAL the standby has not replayed of what the primary
// (the server that accepts writes) has written, against max_lag.
func (Kind) Backlog(ctx context.Context, env *member.Env, name string) (float64, float64, string, bool) {
	d := Find(env.Cfg, name)
	bound := float64(d.MaxLag)
	var primaryLSN, standby string
	for _, side := range []Side{d.Primary, d.Standby} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := postgres.Check(cctx, string(side.DSN))
		cancel()
		switch {
		case err != nil:
		case s.InRecovery:
			standby = string(side.DSN)
		case !s.ReadOnly:
			primaryLSN = s.LSN
		}
	}
	if primaryLSN == "" || standby == "" {
		return 0, bound, "bytes", false
	}
	behind, err := postgres.Behind(ctx, standby, primaryLSN)
	return float64(behind), bound, "bytes", err == nil
}

// Status is one database pair in `tandem status`.
type Status struct {
	Database string                     `json:"database"`
	Health   string                     `json:"health"` // ok, lagging, standby-down, primary-down, two-primaries, no-primary
	Servers  map[string]postgres.Status `json:"servers"`
	Errors   map[string]string          `json:"errors,omitempty"`
}

// Status asks both servers, each within a few seconds.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	d := Find(env.Cfg, name)
	st := Status{Database: name, Servers: map[string]postgres.Status{}, Errors: map[string]string{}}
	var lines []string
	writable, standbys := 0, 0
	for _, side := range []Side{d.Primary, d.Standby} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := postgres.Check(cctx, string(side.DSN))
		cancel()
		if err != nil {
			st.Errors[side.Region] = err.Error()
			lines = append(lines, fmt.Sprintf("%s: does not answer: %v", side.Region, err))
			continue
		}
		st.Servers[side.Region] = s
		role := "primary"
		switch {
		case s.InRecovery:
			standbys++
			role = fmt.Sprintf("standby, replayed %s, %d bytes behind what it received, streaming %v", s.LSN, s.Lag, s.Streaming)
		case s.ReadOnly:
			role = "fenced primary (refuses writes), at " + s.LSN
		default:
			writable++
			role = "primary accepting writes, at " + s.LSN
		}
		lines = append(lines, fmt.Sprintf("%s: %s", side.Region, role))
	}
	switch {
	case writable > 1:
		st.Health = "two-primaries"
	case len(st.Errors) == 2:
		st.Health = "unreachable"
	case len(st.Errors) == 1:
		st.Health = "server-down"
	case writable == 0:
		st.Health = "no-primary"
	case standbys == 0:
		st.Health = "no-standby"
		lines = append(lines, "no server is a standby: rebuild the old primary as a standby of the new one (pg_basebackup -R or pg_rewind), then run a failback")
	default:
		st.Health = "ok"
		for _, s := range st.Servers {
			if s.InRecovery && (s.Lag > int64(d.MaxLag) || !s.Streaming) {
				st.Health = "lagging"
			}
		}
	}
	if st.Health == "two-primaries" {
		lines = append(lines, "BOTH servers accept writes: fence the one that lost the lease (tandem serve --region R does it)")
	}
	return member.Report{Kind: refKey, Member: name, Health: st.Health, Attention: st.Health != "ok", Detail: st, Lines: lines}
}
