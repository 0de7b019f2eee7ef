package config

import (
	"fmt"
	"slices"
	"strings"
	"text/template"
	"time"

	"tandem/internal/location"
	s3store "tandem/internal/objstore/s3"
)

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
	// Job makes the request the start of an asynchronous job, polled
	// until it reaches a success or failure state.
	Job *JobPoll `yaml:"job" json:"job,omitempty"`
}

// JobPoll is how an asynchronous job started by an HTTP request is
// followed: its status is read from a URL until its state is one of
// Success or Failure. A start answered 409 (a job already runs) or 429 is
// tried again after Interval until Timeout.
type JobPoll struct {
	// StatusURL is the job's status URL, a template that also sees the
	// start's answer (.Response.json.jobId, .Response.headers.Location);
	// default: the Location header of the start's answer.
	StatusURL Secret `yaml:"status_url" json:"status_url,omitempty"`
	// Headers of the status requests (default: the start's).
	Headers map[string]Secret `yaml:"headers" json:"headers,omitempty"`
	// State is the field of the status answer that holds the job's state,
	// a dotted path (default "status").
	State string `yaml:"state" json:"state,omitempty"`
	// Success and Failure are the final states (default COMPLETED or
	// SUCCEEDED; FAILED, ERROR, CANCELLED or ABORTED). Any other state
	// waits.
	Success []string `yaml:"success" json:"success,omitempty"`
	Failure []string `yaml:"failure" json:"failure,omitempty"`
	// Interval between status reads (default 2s), Timeout of the whole
	// job (default 30m).
	Interval Duration `yaml:"interval" json:"interval,omitempty"`
	Timeout  Duration `yaml:"timeout" json:"timeout,omitempty"`
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
	Dir     string            `yaml:"dir" json:"dir,omitempty" tandem:"path"`
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

// validateProtection checks the witness and the protection groups: their
// regions, the members they list (each kind's CheckRef), user groups and
// step settings.
func (c *Config) validateProtection(ck *Check) {
	if c.Witness != nil {
		if _, err := location.Parse(c.Witness.URL); err != nil {
			ck.Bad("witness.url", "%v", err)
		}
		if err := s3store.CheckEndpoint(c.Witness.S3.Endpoint); err != nil {
			ck.Bad("witness.s3.endpoint", "%v", err)
		}
	}
	if len(c.ProtectionGroups) > 0 && c.Witness == nil {
		ck.Bad("witness", "required by protection_groups: the location of the region leases")
	}
	names := map[string]bool{}
	for i := range c.ProtectionGroups {
		pg := &c.ProtectionGroups[i]
		f := fmt.Sprintf("protection_groups[%d]", i)
		if !nameRe.MatchString(pg.Name) || names[pg.Name] {
			ck.Bad(f+".name", "%q is not a valid or unique name", pg.Name)
		}
		names[pg.Name] = true
		if ck.regions[pg.Primary] == nil {
			ck.Bad(f+".primary", "unknown region %q", pg.Primary)
		}
		if ck.regions[pg.Standby] == nil || pg.Standby == pg.Primary {
			ck.Bad(f+".standby", "%q must be a region other than the primary", pg.Standby)
		}
		if time.Duration(pg.LeaseTTL) < 100*time.Millisecond {
			ck.Bad(f+".lease_ttl", "%s is too short (at least 100ms)", time.Duration(pg.LeaseTTL))
		}
		validateAutoFailover(ck, f+".auto_failover", &pg.AutoFailover, pg)
		ck.Notify(f+".notify", pg.Notify)
		validatePractice(ck, f+".practice", pg.Practice)
		for _, s := range Sections() {
			var known []string
			if v, ok := c.sections[s.Key]; ok {
				known = s.Names(v)
			}
			for j, name := range pg.Members(s.Ref) {
				ff := fmt.Sprintf("%s.%s[%d]", f, s.Ref, j)
				if !slices.Contains(known, name) {
					ck.Bad(ff, "unknown %s %q%s", s.Noun, name, suggest(name, known))
				} else if s.CheckRef != nil {
					s.CheckRef(ck, pg, ff, name)
				}
			}
		}
		c.validateUserGroups(ck, f, pg)
	}
}

func (c *Config) validateUserGroups(ck *Check, f string, pg *ProtectionGroup) {
	pair := []string{pg.Primary, pg.Standby}
	groups := map[string]bool{}
	for _, g := range BuiltinGroups {
		groups[g] = true
	}
	for j, ug := range pg.UserGroups {
		gf := fmt.Sprintf("%s.user_groups[%d]", f, j)
		if !nameRe.MatchString(ug.Name) || groups[ug.Name] {
			ck.Bad(gf+".name", "%q is not a valid name or is taken (built-in groups: %s)", ug.Name, strings.Join(BuiltinGroups, ", "))
		}
		groups[ug.Name] = true
		switch {
		case (ug.Before == "") == (ug.After == ""):
			ck.Bad(gf, "set exactly one of before and after (a built-in group: %s)", strings.Join(BuiltinGroups, ", "))
		case !slices.Contains(BuiltinGroups, ug.Before+ug.After):
			ck.Bad(gf, "%q is not a built-in group (%s)", ug.Before+ug.After, strings.Join(BuiltinGroups, ", "))
		}
		for k, p := range ug.Plans {
			if !slices.Contains(PlanTypes, p) {
				ck.Bad(fmt.Sprintf("%s.plans[%d]", gf, k), "%q is not a plan type (%s)", p, strings.Join(PlanTypes, ", "))
			}
		}
		if len(ug.Steps) == 0 {
			ck.Bad(gf+".steps", "required: at least one step")
		}
		names := map[string]bool{}
		for k, s := range ug.Steps {
			sf := fmt.Sprintf("%s.steps[%d]", gf, k)
			if !nameRe.MatchString(s.Name) || names[s.Name] {
				ck.Bad(sf+".name", "%q is not a valid or unique step name", s.Name)
			}
			names[s.Name] = true
			ck.Action(sf, s.Action, true)
			ck.Err(validateSettings(sf, s.StepSettings)...)
			if s.Region != "" && !slices.Contains(pair, s.Region) {
				ck.Bad(sf+".region", "%q is not %s or %s", s.Region, pg.Primary, pg.Standby)
			}
		}
	}
	for id, s := range pg.Steps {
		ck.Err(validateSettings(f+".steps."+id, s)...)
	}
}

// Suggest is " (did you mean X?)" when one of known is close to name.
func Suggest(name string, known []string) string { return suggest(name, known) }

func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
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
		if _, err := template.New("").Funcs(template.FuncMap{"json": func(any) string { return "" }}).Option("missingkey=error").Parse(s); err != nil {
			bad(field, "%v", err)
		}
	}
	if h := a.HTTP; h != nil {
		if u := string(h.URL); !strings.HasPrefix(u, "{{") && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			bad(f+".http.url", "must start with http:// or https:// (or a template that gives one)")
		}
		tmpl(f+".http.url", string(h.URL))
		tmpl(f+".http.body", h.Body)
		if j := h.Job; j != nil {
			tmpl(f+".http.job.status_url", string(j.StatusURL))
			if u := string(j.StatusURL); u != "" && !strings.HasPrefix(u, "{{") && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				bad(f+".http.job.status_url", "must start with http:// or https:// (or be a template)")
			}
			if j.Interval != 0 && time.Duration(j.Interval) < 10*time.Millisecond {
				bad(f+".http.job.interval", "%s is too short (at least 10ms)", time.Duration(j.Interval))
			}
			if j.Timeout != 0 && time.Duration(j.Timeout) < time.Duration(j.Interval) {
				bad(f+".http.job.timeout", "%s is shorter than the interval", time.Duration(j.Timeout))
			}
			for _, st := range j.Success {
				if slices.Contains(j.Failure, st) {
					bad(f+".http.job", "state %q is both a success and a failure", st)
				}
			}
		}
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
