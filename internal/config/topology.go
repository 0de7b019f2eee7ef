package config

import (
	"fmt"
	"slices"
	"strings"
	"text/template"
	"time"
)

// Database is a PostgreSQL primary with a streaming standby in another
// region.
type Database struct {
	Name    string `yaml:"name" json:"name"`
	Primary DBSide `yaml:"primary" json:"primary"`
	Standby DBSide `yaml:"standby" json:"standby"`
	// MaxLag is how far (WAL bytes) the standby may be behind for a
	// switchover's precheck to pass (default 16MiB).
	MaxLag Size `yaml:"max_lag" json:"max_lag"`
}

// DBSide is one server of a database pair.
type DBSide struct {
	Region string `yaml:"region" json:"region"`
	// DSN is a PostgreSQL connection string (URL or key=value); it often
	// holds a password.
	DSN Secret `yaml:"dsn" json:"dsn"`
}

// Side returns the server in region, if any.
func (d *Database) Side(region string) (DBSide, bool) {
	switch region {
	case d.Primary.Region:
		return d.Primary, true
	case d.Standby.Region:
		return d.Standby, true
	}
	return DBSide{}, false
}

// Aliases are logical names in a catalog database that point at a region's
// physical tables or locations (views, synonyms, or rows of a catalog
// table). A plan re-points them all in one transaction.
type Aliases struct {
	Name string `yaml:"name" json:"name"`
	// Driver is sqlite (the embedded default) or postgres.
	Driver string `yaml:"driver" json:"driver"`
	// DSN per region: the catalog the region's readers use. A region
	// missing here uses Database's server in that region.
	DSN      map[string]Secret `yaml:"dsn" json:"dsn,omitempty"`
	Database string            `yaml:"database" json:"database,omitempty"`
	// Switch are the statements run for each alias, as Go templates with
	// .Alias, .Target and .Region, and the functions ident (a quoted
	// identifier) and quote (a string literal). Default: drop and create a
	// view.
	Switch []string `yaml:"switch" json:"switch"`
	// Names maps each alias to its physical name per region.
	Names map[string]map[string]string `yaml:"names" json:"names"`
}

// DefaultAliasSwitch re-creates a view over the region's table and checks
// that it reads (SQLite resolves a view only when it is read).
var DefaultAliasSwitch = []string{
	`DROP VIEW IF EXISTS {{ident .Alias}}`,
	`CREATE VIEW {{ident .Alias}} AS SELECT * FROM {{ident .Target}}`,
	`SELECT * FROM {{ident .Alias}} LIMIT 0`,
}

// Workflow is a scheduled job to activate in the primary region and to
// keep paused in the standby.
type WorkflowSwitch struct {
	Name       string `yaml:"name" json:"name"`
	Activate   Action `yaml:"activate" json:"activate"`
	Deactivate Action `yaml:"deactivate" json:"deactivate"`
	// Vars per region, for the templates (.Vars.job_id).
	Vars map[string]map[string]string `yaml:"vars" json:"vars,omitempty"`
}

// Action is one thing a step does: an HTTP request, SQL statements, a
// script, or a pause for approval. Its strings are Go templates with
// .Region, .Plan, .From, .To, .Execution and .Vars.
type Action struct {
	HTTP   *HTTPAction   `yaml:"http" json:"http,omitempty"`
	SQL    *SQLAction    `yaml:"sql" json:"sql,omitempty"`
	Script *ScriptAction `yaml:"script" json:"script,omitempty"`
	// Pause waits for `tandem plan approve`.
	Pause bool `yaml:"pause" json:"pause,omitempty"`
}

// HTTPAction is a request; a status outside 2xx (or other than Expect) fails.
type HTTPAction struct {
	Method  string            `yaml:"method" json:"method"`
	URL     Secret            `yaml:"url" json:"url"`
	Headers map[string]Secret `yaml:"headers" json:"headers,omitempty"`
	Body    string            `yaml:"body" json:"body,omitempty"`
	Expect  int               `yaml:"expect" json:"expect,omitempty"`
}

// SQLAction runs statements in one transaction.
type SQLAction struct {
	Driver     string   `yaml:"driver" json:"driver"`
	DSN        Secret   `yaml:"dsn" json:"dsn"`
	Statements []string `yaml:"statements" json:"statements"`
}

// ScriptAction runs a program; a non-zero exit fails.
type ScriptAction struct {
	Command []string          `yaml:"command" json:"command"`
	Dir     string            `yaml:"dir" json:"dir,omitempty"`
	Env     map[string]Secret `yaml:"env" json:"env,omitempty"`
}

// StepSettings tune a step.
type StepSettings struct {
	// Timeout bounds one try (default 10m for built-in steps, 5m for user
	// steps; a pause waits up to 24h).
	Timeout Duration `yaml:"timeout" json:"timeout,omitempty"`
	// OnError is stop (default) or continue.
	OnError  string `yaml:"on_error" json:"on_error,omitempty"`
	Retries  int    `yaml:"retries" json:"retries,omitempty"`
	Disabled bool   `yaml:"disabled" json:"disabled,omitempty"`
}

// UserGroup is a group of user steps placed in the generated plans before
// or after a built-in group.
type UserGroup struct {
	Name   string `yaml:"name" json:"name"`
	Before string `yaml:"before" json:"before,omitempty"`
	After  string `yaml:"after" json:"after,omitempty"`
	// Plans lists the plan types the group is in (default: all).
	Plans []string   `yaml:"plans" json:"plans,omitempty"`
	Steps []UserStep `yaml:"steps" json:"steps"`
}

// UserStep is a step the user defines.
type UserStep struct {
	Name         string `yaml:"name" json:"name"`
	Action       `yaml:",inline"`
	StepSettings `yaml:",inline"`
	// Region whose name the templates see as .Region (default: the
	// plan's target region).
	Region string `yaml:"region" json:"region,omitempty"`
}

// PlanTypes are the plans tandem generates.
var PlanTypes = []string{"switchover", "failover", "failback", "drill-start", "drill-stop"}

// BuiltinGroups are the built-in plan groups (each plan type runs them in
// its own fixed order: `tandem plan show`).
var BuiltinGroups = []string{"prechecks", "quiesce", "drain", "lease", "reverse", "promote", "aliases", "activate"}

func (c *Config) topologyDefaults() {
	for i := range c.Databases {
		if c.Databases[i].MaxLag == 0 {
			c.Databases[i].MaxLag = 16 << 20
		}
	}
	for i := range c.Aliases {
		if len(c.Aliases[i].Switch) == 0 {
			c.Aliases[i].Switch = DefaultAliasSwitch
		}
	}
}

var aliasFuncs = template.FuncMap{"ident": func(string) string { return "" }, "quote": func(string) string { return "" }}

func (c *Config) validateTopology(regions map[string]*Region) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	unique := func(f, kind, name string, seen map[string]bool) {
		if !nameRe.MatchString(name) || seen[name] {
			bad(f+".name", "%q is not a valid or unique %s name", name, kind)
		}
		seen[name] = true
	}
	seen := map[string]bool{}
	for i, d := range c.Databases {
		f := fmt.Sprintf("databases[%d]", i)
		unique(f, "database", d.Name, seen)
		for _, s := range []struct {
			n string
			s DBSide
		}{{"primary", d.Primary}, {"standby", d.Standby}} {
			if regions[s.s.Region] == nil {
				bad(f+"."+s.n+".region", "unknown region %q", s.s.Region)
			}
			if s.s.DSN == "" {
				bad(f+"."+s.n+".dsn", "required: a PostgreSQL connection string")
			}
		}
		if d.Primary.Region == d.Standby.Region {
			bad(f+".standby.region", "%q must differ from the primary's region", d.Standby.Region)
		}
	}
	seen = map[string]bool{}
	for i, a := range c.Aliases {
		f := fmt.Sprintf("aliases[%d]", i)
		unique(f, "aliases", a.Name, seen)
		if a.Driver != "sqlite" && a.Driver != "postgres" {
			bad(f+".driver", "%q is not sqlite or postgres", a.Driver)
		}
		for r := range a.DSN {
			if regions[r] == nil {
				bad(f+".dsn."+r, "unknown region %q", r)
			}
		}
		if a.Database != "" && c.FindDatabase(a.Database) == nil {
			bad(f+".database", "unknown database %q", a.Database)
		}
		for j, s := range a.Switch {
			if _, err := template.New("").Funcs(aliasFuncs).Parse(s); err != nil {
				bad(fmt.Sprintf("%s.switch[%d]", f, j), "%v", err)
			}
		}
		if len(a.Names) == 0 {
			bad(f+".names", "required: each alias with its physical name per region")
		}
		for n, per := range a.Names {
			for r := range per {
				if regions[r] == nil {
					bad(f+".names."+n+"."+r, "unknown region %q", r)
				}
			}
		}
	}
	seen = map[string]bool{}
	for i, w := range c.Workflows {
		f := fmt.Sprintf("workflows[%d]", i)
		unique(f, "workflow", w.Name, seen)
		errs = append(errs, validateAction(f+".activate", w.Activate, false)...)
		errs = append(errs, validateAction(f+".deactivate", w.Deactivate, false)...)
		for r := range w.Vars {
			if regions[r] == nil {
				bad(f+".vars."+r, "unknown region %q", r)
			}
		}
	}
	for i := range c.ProtectionGroups {
		errs = append(errs, c.validateMembers(fmt.Sprintf("protection_groups[%d]", i), &c.ProtectionGroups[i], regions)...)
	}
	return errs
}

func (c *Config) validateMembers(f string, pg *ProtectionGroup, regions map[string]*Region) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	pair := []string{pg.Primary, pg.Standby}
	for j, name := range pg.Databases {
		d := c.FindDatabase(name)
		ff := fmt.Sprintf("%s.databases[%d]", f, j)
		switch {
		case d == nil:
			bad(ff, "unknown database %q", name)
		case !slices.Contains(pair, d.Primary.Region) || !slices.Contains(pair, d.Standby.Region):
			bad(ff, "database %q is not between %s and %s", name, pg.Primary, pg.Standby)
		}
	}
	for j, name := range pg.Aliases {
		if c.FindAliases(name) == nil {
			bad(fmt.Sprintf("%s.aliases[%d]", f, j), "unknown aliases %q", name)
		}
	}
	for j, name := range pg.Workflows {
		if c.FindWorkflow(name) == nil {
			bad(fmt.Sprintf("%s.workflows[%d]", f, j), "unknown workflow %q", name)
		}
	}
	groups := map[string]bool{}
	for _, g := range BuiltinGroups {
		groups[g] = true
	}
	for j, ug := range pg.UserGroups {
		gf := fmt.Sprintf("%s.user_groups[%d]", f, j)
		if !nameRe.MatchString(ug.Name) || groups[ug.Name] {
			bad(gf+".name", "%q is not a valid name or is taken (built-in groups: %s)", ug.Name, strings.Join(BuiltinGroups, ", "))
		}
		groups[ug.Name] = true
		switch {
		case (ug.Before == "") == (ug.After == ""):
			bad(gf, "set exactly one of before and after (a built-in group: %s)", strings.Join(BuiltinGroups, ", "))
		case !slices.Contains(BuiltinGroups, ug.Before+ug.After):
			bad(gf, "%q is not a built-in group (%s)", ug.Before+ug.After, strings.Join(BuiltinGroups, ", "))
		}
		for k, p := range ug.Plans {
			if !slices.Contains(PlanTypes, p) {
				bad(fmt.Sprintf("%s.plans[%d]", gf, k), "%q is not a plan type (%s)", p, strings.Join(PlanTypes, ", "))
			}
		}
		if len(ug.Steps) == 0 {
			bad(gf+".steps", "required: at least one step")
		}
		names := map[string]bool{}
		for k, s := range ug.Steps {
			sf := fmt.Sprintf("%s.steps[%d]", gf, k)
			if !nameRe.MatchString(s.Name) || names[s.Name] {
				bad(sf+".name", "%q is not a valid or unique step name", s.Name)
			}
			names[s.Name] = true
			errs = append(errs, validateAction(sf, s.Action, true)...)
			errs = append(errs, validateSettings(sf, s.StepSettings)...)
			if s.Region != "" && !slices.Contains(pair, s.Region) {
				bad(sf+".region", "%q is not %s or %s", s.Region, pg.Primary, pg.Standby)
			}
		}
	}
	for id, s := range pg.Steps {
		errs = append(errs, validateSettings(f+".steps."+id, s)...)
	}
	return errs
}

func validateSettings(f string, s StepSettings) []error {
	var errs []error
	if s.OnError != "" && s.OnError != "stop" && s.OnError != "continue" {
		errs = append(errs, fmt.Errorf("%s.on_error: %q is not stop or continue", f, s.OnError))
	}
	if s.Retries < 0 || s.Retries > 100 {
		errs = append(errs, fmt.Errorf("%s.retries: %d is out of range (0 to 100)", f, s.Retries))
	}
	if s.Timeout != 0 && time.Duration(s.Timeout) < time.Second {
		errs = append(errs, fmt.Errorf("%s.timeout: %s is too short (at least 1s)", f, time.Duration(s.Timeout)))
	}
	return errs
}

func validateAction(f string, a Action, pauseOK bool) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	n := 0
	for _, set := range []bool{a.HTTP != nil, a.SQL != nil, a.Script != nil, a.Pause && pauseOK} {
		if set {
			n++
		}
	}
	if n != 1 {
		kinds := "http, sql or script"
		if pauseOK {
			kinds = "http, sql, script or pause"
		}
		bad(f, "set exactly one of %s", kinds)
	}
	tmpl := func(field, s string) {
		if _, err := template.New("").Option("missingkey=error").Parse(s); err != nil {
			bad(field, "%v", err)
		}
	}
	if h := a.HTTP; h != nil {
		if !strings.HasPrefix(string(h.URL), "http://") && !strings.HasPrefix(string(h.URL), "https://") {
			bad(f+".http.url", "must start with http:// or https://")
		}
		tmpl(f+".http.url", string(h.URL))
		tmpl(f+".http.body", h.Body)
	}
	if s := a.SQL; s != nil {
		if s.Driver != "sqlite" && s.Driver != "postgres" {
			bad(f+".sql.driver", "%q is not sqlite or postgres", s.Driver)
		}
		if s.DSN == "" || len(s.Statements) == 0 {
			bad(f+".sql", "dsn and statements are required")
		}
		for i, st := range s.Statements {
			tmpl(fmt.Sprintf("%s.sql.statements[%d]", f, i), st)
		}
	}
	if s := a.Script; s != nil && len(s.Command) == 0 {
		bad(f+".script.command", "required: the program and its arguments")
	}
	return errs
}

// FindDatabase returns the named database pair, or nil.
func (c *Config) FindDatabase(name string) *Database {
	for i := range c.Databases {
		if c.Databases[i].Name == name {
			return &c.Databases[i]
		}
	}
	return nil
}

// FindAliases returns the named aliases, or nil.
func (c *Config) FindAliases(name string) *Aliases {
	for i := range c.Aliases {
		if c.Aliases[i].Name == name {
			return &c.Aliases[i]
		}
	}
	return nil
}

// FindWorkflow returns the named workflow, or nil.
func (c *Config) FindWorkflow(name string) *WorkflowSwitch {
	for i := range c.Workflows {
		if c.Workflows[i].Name == name {
			return &c.Workflows[i]
		}
	}
	return nil
}
