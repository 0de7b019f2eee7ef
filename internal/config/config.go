// Package config loads tandem's YAML configuration: regions (where each keeps
// its state, how to reach its object store) and what to replicate between
// them. Loading is strict: unknown keys are errors, ${VAR} is expanded from
// the environment (an unset variable is an error), defaults are applied, and
// Validate reports every problem with the field it is about. Later
// capabilities add sections; they do not change these.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tandem/internal/location"
	s3store "tandem/internal/objstore/s3"
)

// Config is a whole configuration file.
type Config struct {
	Regions     []Region      `yaml:"regions" json:"regions"`
	Replication []Replication `yaml:"replication" json:"replication"`
	Groups      []Group       `yaml:"groups" json:"groups,omitempty"`
	// Witness is where the region leases live: a location both regions
	// reach, ideally in a third place.
	Witness          *Witness          `yaml:"witness" json:"witness,omitempty"`
	ProtectionGroups []ProtectionGroup `yaml:"protection_groups" json:"protection_groups,omitempty"`
	// Members of protection groups that are not replicated by tandem
	// itself (topology.go).
	Databases []Database       `yaml:"databases" json:"databases,omitempty"`
	Aliases   []Aliases        `yaml:"aliases" json:"aliases,omitempty"`
	Workflows []WorkflowSwitch `yaml:"workflows" json:"workflows,omitempty"`
	Serve     Serve            `yaml:"serve" json:"serve"`

	path string
}

// Region is one cloud region (or, on a laptop, one folder).
type Region struct {
	Name string `yaml:"name" json:"name"`
	// State is where tandem keeps its records for the work whose target is
	// in this region: a folder or s3://bucket/prefix in this region.
	State string `yaml:"state" json:"state"`
	S3    S3     `yaml:"s3" json:"s3"`
}

// S3 says how to reach the region's S3-compatible service. Credentials left
// empty come from the standard AWS environment and files.
type S3 struct {
	Endpoint        string `yaml:"endpoint" json:"endpoint,omitempty"`
	Region          string `yaml:"region" json:"region,omitempty"`
	PathStyle       bool   `yaml:"path_style" json:"path_style,omitempty"`
	Profile         string `yaml:"profile" json:"profile,omitempty"`
	AccessKeyID     string `yaml:"access_key_id" json:"access_key_id,omitempty"`
	SecretAccessKey Secret `yaml:"secret_access_key" json:"secret_access_key,omitempty"`
	SessionToken    Secret `yaml:"session_token" json:"session_token,omitempty"`
}

// Options converts to the backend's options.
func (s S3) Options() s3store.Options {
	return s3store.Options{
		Endpoint: s.Endpoint, Region: s.Region, PathStyle: s.PathStyle, Profile: s.Profile,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: string(s.SecretAccessKey), SessionToken: string(s.SessionToken),
	}
}

// Replication keeps a target bucket equal to a source bucket.
type Replication struct {
	Name string `yaml:"name" json:"name"`
	From Side   `yaml:"from" json:"from"`
	To   Side   `yaml:"to" json:"to"`
	// Interval between passes under `tandem serve` (default 1m).
	Interval Duration `yaml:"interval" json:"interval"`
	// Delete removes target objects that tandem copied and the source no
	// longer has.
	Delete  bool     `yaml:"delete" json:"delete"`
	Exclude []string `yaml:"exclude" json:"exclude,omitempty"`
	// Transfers is the number of objects copied at once (default 16).
	Transfers          int      `yaml:"transfers" json:"transfers"`
	Retries            int      `yaml:"retries" json:"retries"`
	RetryBackoff       Duration `yaml:"retry_backoff" json:"retry_backoff"`
	MultipartThreshold Size     `yaml:"multipart_threshold" json:"multipart_threshold"`
	PartSize           Size     `yaml:"part_size" json:"part_size"`
	// RPO is the most the watermark may lag before status calls the pair
	// late (default 15m).
	RPO Duration `yaml:"rpo" json:"rpo"`
}

// Side is one end of a replication.
type Side struct {
	Region string `yaml:"region" json:"region"`
	URL    string `yaml:"url" json:"url"`
}

// Group is a set of Delta tables copied as one unit at workflow-run
// boundaries (a sync group).
type Group struct {
	Name  string `yaml:"name" json:"name"`
	Owner string `yaml:"owner" json:"owner,omitempty"`
	// From and To are regions.
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
	// Workflow, when set, makes the group's cut the end of the last
	// completed run (reported by 'tandem group complete'); without it each
	// sync copies the tables' latest versions (standalone tables).
	Workflow *Workflow    `yaml:"workflow" json:"workflow,omitempty"`
	Tables   []GroupTable `yaml:"tables" json:"tables"`
	// Under `tandem serve`: a sync every Interval (default 15m); a failed
	// sync is tried again up to Retries times (default 3), waiting
	// RetryWait (default 1m) doubled each time.
	Interval  Duration `yaml:"interval" json:"interval"`
	Retries   int      `yaml:"retries" json:"retries"`
	RetryWait Duration `yaml:"retry_wait" json:"retry_wait"`
	Notify    *Notify  `yaml:"notify" json:"notify,omitempty"`
}

// Notify says whom to tell about a group's syncs.
type Notify struct {
	// On lists the outcomes worth a notification: failure (default),
	// success.
	On []string `yaml:"on" json:"on"`
	// Webhook receives a JSON POST; its URL often carries a token.
	Webhook Secret       `yaml:"webhook" json:"webhook,omitempty"`
	Email   *EmailNotify `yaml:"email" json:"email,omitempty"`
}

// EmailNotify sends mail over SMTP.
type EmailNotify struct {
	SMTP     string   `yaml:"smtp" json:"smtp"` // host:port
	From     string   `yaml:"from" json:"from"`
	To       []string `yaml:"to" json:"to,omitempty"` // default: the group's owner
	Username string   `yaml:"username" json:"username,omitempty"`
	Password Secret   `yaml:"password" json:"password,omitempty"`
}

// Workflow names the workflow that writes a group's tables. Without
// Databricks, the workflow reports its runs with 'tandem group complete'.
type Workflow struct {
	Name       string      `yaml:"name" json:"name"`
	Databricks *Databricks `yaml:"databricks" json:"databricks,omitempty"`
}

// Databricks is the Jobs API 2.1 of the workspace that runs the workflow.
type Databricks struct {
	Host  string `yaml:"host" json:"host"`
	Token Secret `yaml:"token" json:"token"`
	JobID int64  `yaml:"job_id" json:"job_id"`
}

// GroupTable is one table of a group: its location in each region.
type GroupTable struct {
	Name string `yaml:"name" json:"name"`
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
}

// Witness is the location of the region leases.
type Witness struct {
	URL string `yaml:"url" json:"url"`
	S3  S3     `yaml:"s3" json:"s3"`
}

// ProtectionGroup is what fails over together: a primary and a standby
// region, and the replications and table groups between them. It has one
// region lease.
type ProtectionGroup struct {
	Name         string   `yaml:"name" json:"name"`
	Primary      string   `yaml:"primary" json:"primary"`
	Standby      string   `yaml:"standby" json:"standby"`
	Replications []string `yaml:"replications" json:"replications,omitempty"`
	Groups       []string `yaml:"groups" json:"groups,omitempty"`
	Databases    []string `yaml:"databases" json:"databases,omitempty"`
	Aliases      []string `yaml:"aliases" json:"aliases,omitempty"`
	Workflows    []string `yaml:"workflows" json:"workflows,omitempty"`
	// UserGroups are inserted into the generated plans.
	UserGroups []UserGroup `yaml:"user_groups" json:"user_groups,omitempty"`
	// Steps tune built-in steps by id (as `tandem plan show` prints them).
	Steps map[string]StepSettings `yaml:"steps" json:"steps,omitempty"`
	// LeaseTTL is how long a lease lasts without renewal (default 30s).
	LeaseTTL Duration `yaml:"lease_ttl" json:"lease_ttl"`
}

// Serve configures `tandem serve`.
type Serve struct {
	// Listen is the address of the metrics and health endpoints.
	Listen string `yaml:"listen" json:"listen"`
	// Token, when set, is required as a bearer token by the endpoints that
	// change state (POST /groups/{group}/complete).
	Token Secret `yaml:"token" json:"token,omitempty"`
}

// Secret is a string that never prints.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "<redacted>"
}

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }
func (s Secret) MarshalYAML() (any, error)    { return s.String(), nil }

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use 30s, 5m, 1h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Size is a byte count written as "64MiB", "5MB" or a number.
type Size int64

var sizeRe = regexp.MustCompile(`^([0-9]+)\s*([KMGT]i?B|B)?$`)

func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil {
		return fmt.Errorf("line %d: %q is not a size (use 64MiB, 5MB or bytes)", n.Line, n.Value)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m[2]]
	*s = Size(v * mult)
	return nil
}

var envRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expand replaces ${VAR} outside comments; an unset variable is an error
// naming its line.
func expand(data []byte) ([]byte, error) {
	var errs []error
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		code := line[:commentStart(line)]
		code = envRe.ReplaceAllFunc(code, func(m []byte) []byte {
			name := string(m[2 : len(m)-1])
			v, ok := os.LookupEnv(name)
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: environment variable %s is not set", i+1, name))
			}
			return []byte(v)
		})
		lines[i] = append(code, line[commentStart(line):]...)
	}
	return bytes.Join(lines, []byte("\n")), errors.Join(errs...)
}

// commentStart is where a YAML comment begins in line (len(line) if none):
// a # at the start or after a space, outside quotes.
func commentStart(line []byte) int {
	var quote byte
	for i, c := range line {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return i
		}
	}
	return len(line)
}

// Load reads, expands, decodes, defaults and validates a file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// Path is the file the configuration was loaded from.
func (c *Config) Path() string { return c.path }

// Parse decodes a configuration from YAML text.
func Parse(data []byte) (*Config, error) {
	data, err := expand(data)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) defaults() {
	for i := range c.Replication {
		r := &c.Replication[i]
		if r.Interval == 0 {
			r.Interval = Duration(time.Minute)
		}
		if r.Transfers == 0 {
			r.Transfers = 16
		}
		if r.Retries == 0 {
			r.Retries = 3
		}
		if r.RetryBackoff == 0 {
			r.RetryBackoff = Duration(30 * time.Second)
		}
		if r.MultipartThreshold == 0 {
			r.MultipartThreshold = 64 << 20
		}
		if r.PartSize == 0 {
			r.PartSize = 16 << 20
		}
		if r.RPO == 0 {
			r.RPO = Duration(15 * time.Minute)
		}
	}
	for i := range c.Groups {
		g := &c.Groups[i]
		if g.Interval == 0 {
			g.Interval = Duration(15 * time.Minute)
		}
		if g.Retries == 0 {
			g.Retries = 3
		}
		if g.RetryWait == 0 {
			g.RetryWait = Duration(time.Minute)
		}
		if g.Notify != nil && len(g.Notify.On) == 0 {
			g.Notify.On = []string{"failure"}
		}
		if g.Notify != nil && g.Notify.Email != nil && len(g.Notify.Email.To) == 0 && g.Owner != "" {
			g.Notify.Email.To = []string{g.Owner}
		}
	}
	for i := range c.ProtectionGroups {
		if c.ProtectionGroups[i].LeaseTTL == 0 {
			c.ProtectionGroups[i].LeaseTTL = Duration(30 * time.Second)
		}
	}
	c.topologyDefaults()
	if c.Serve.Listen == "" {
		c.Serve.Listen = "127.0.0.1:9750"
	}
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// placed is a location a field names, for overlap checks.
type placed struct {
	field    string
	loc      location.Location
	endpoint string
}

// Validate reports every problem, each with the field it is about.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Regions) == 0 {
		bad("regions", "at least one region is required")
	}
	regions := map[string]*Region{}
	for i := range c.Regions {
		r := &c.Regions[i]
		f := fmt.Sprintf("regions[%d]", i)
		switch {
		case !nameRe.MatchString(r.Name):
			bad(f+".name", "%q is not a valid name (lowercase letters, digits, - and _)", r.Name)
		case regions[r.Name] != nil:
			bad(f+".name", "region %q is defined twice", r.Name)
		default:
			regions[r.Name] = r
		}
		if r.State == "" {
			bad(f+".state", "required: where tandem keeps its records in this region")
		} else if _, err := location.Parse(r.State); err != nil {
			bad(f+".state", "%v", err)
		}
		if r.S3.Endpoint != "" && !strings.HasPrefix(r.S3.Endpoint, "http://") && !strings.HasPrefix(r.S3.Endpoint, "https://") {
			bad(f+".s3.endpoint", "%q must start with http:// or https://", r.S3.Endpoint)
		}
		if (r.S3.AccessKeyID == "") != (r.S3.SecretAccessKey == "") {
			bad(f+".s3", "access_key_id and secret_access_key go together")
		}
	}
	names := map[string]bool{}
	var targets []placed
	var states []placed
	for _, r := range c.Regions {
		if l, err := location.Parse(r.State); err == nil {
			states = append(states, placed{"regions[" + r.Name + "].state", l, r.S3.Endpoint})
		}
	}
	for i := range c.Replication {
		r := &c.Replication[i]
		f := fmt.Sprintf("replication[%d]", i)
		switch {
		case !nameRe.MatchString(r.Name):
			bad(f+".name", "%q is not a valid name (lowercase letters, digits, - and _)", r.Name)
		case names[r.Name]:
			bad(f+".name", "replication %q is defined twice", r.Name)
		}
		names[r.Name] = true
		var locs [2]*location.Location
		for j, side := range []struct {
			name string
			s    Side
		}{{"from", r.From}, {"to", r.To}} {
			sf := f + "." + side.name
			if regions[side.s.Region] == nil {
				bad(sf+".region", "unknown region %q", side.s.Region)
			}
			l, err := location.Parse(side.s.URL)
			if err != nil {
				bad(sf+".url", "%v", err)
				continue
			}
			locs[j] = &l
		}
		if locs[0] != nil && locs[1] != nil {
			ep := func(s Side) string {
				if reg := regions[s.Region]; reg != nil {
					return reg.S3.Endpoint
				}
				return ""
			}
			if location.Overlaps(*locs[0], ep(r.From), *locs[1], ep(r.To)) {
				bad(f, "from %s and to %s overlap: a replica cannot be inside its source or hold it", locs[0], locs[1])
			}
			for _, t := range targets {
				if location.Overlaps(t.loc, t.endpoint, *locs[1], ep(r.To)) {
					bad(f+".to.url", "%s overlaps the target of %s", locs[1], t.field)
				}
			}
			for _, s := range states {
				for j, l := range locs {
					side := []string{"from", "to"}[j]
					if location.Overlaps(s.loc, s.endpoint, *l, ep([]Side{r.From, r.To}[j])) && !excludes(r.Exclude, *l, s.loc) {
						bad(f+"."+side+".url", "%s overlaps %s (%s): keep tandem's records outside replicated locations", l, s.field, s.loc)
					}
				}
			}
			targets = append(targets, placed{f, *locs[1], ep(r.To)})
		}
		if r.Transfers < 1 || r.Transfers > 1024 {
			bad(f+".transfers", "%d is out of range (1 to 1024)", r.Transfers)
		}
		if r.Retries < 1 {
			bad(f+".retries", "%d is out of range (at least 1)", r.Retries)
		}
		if r.PartSize < 5<<20 {
			bad(f+".part_size", "%d bytes is below S3's minimum part of 5MiB", r.PartSize)
		}
		if time.Duration(r.Interval) < time.Second {
			bad(f+".interval", "%s is too short (at least 1s)", time.Duration(r.Interval))
		}
		for j, x := range r.Exclude {
			if x == "" || strings.HasPrefix(x, "/") {
				bad(fmt.Sprintf("%s.exclude[%d]", f, j), "%q must be a non-empty key prefix relative to the url", x)
			}
		}
	}
	errs = append(errs, c.validateGroups(regions, targets)...)
	errs = append(errs, c.validateProtection(regions)...)
	errs = append(errs, c.validateTopology(regions)...)
	return errors.Join(errs...)
}

func (c *Config) validateGroups(regions map[string]*Region, targets []placed) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	names := map[string]bool{}
	for i, g := range c.Groups {
		f := fmt.Sprintf("groups[%d]", i)
		switch {
		case !nameRe.MatchString(g.Name):
			bad(f+".name", "%q is not a valid name (lowercase letters, digits, - and _)", g.Name)
		case names[g.Name]:
			bad(f+".name", "group %q is defined twice", g.Name)
		}
		names[g.Name] = true
		for _, side := range []struct{ field, region string }{{"from", g.From}, {"to", g.To}} {
			if regions[side.region] == nil {
				bad(f+"."+side.field, "unknown region %q", side.region)
			}
		}
		if len(g.Tables) == 0 {
			bad(f+".tables", "a group needs at least one table")
		}
		if g.Workflow != nil && g.Workflow.Name == "" {
			bad(f+".workflow.name", "required")
		}
		if g.Workflow != nil && g.Workflow.Databricks != nil {
			d := g.Workflow.Databricks
			if !strings.HasPrefix(d.Host, "https://") && !strings.HasPrefix(d.Host, "http://") {
				bad(f+".workflow.databricks.host", "%q must be the workspace URL (https://...)", d.Host)
			}
			if d.Token == "" {
				bad(f+".workflow.databricks.token", "required (use ${DATABRICKS_TOKEN})")
			}
			if d.JobID <= 0 {
				bad(f+".workflow.databricks.job_id", "required: the id of the job that writes the tables")
			}
		}
		if time.Duration(g.Interval) < time.Second {
			bad(f+".interval", "%s is too short (at least 1s)", time.Duration(g.Interval))
		}
		if g.Retries < 1 {
			bad(f+".retries", "%d is out of range (at least 1)", g.Retries)
		}
		if n := g.Notify; n != nil {
			for j, on := range n.On {
				if on != "success" && on != "failure" {
					bad(fmt.Sprintf("%s.notify.on[%d]", f, j), "%q is not success or failure", on)
				}
			}
			if n.Webhook != "" && !strings.HasPrefix(string(n.Webhook), "http://") && !strings.HasPrefix(string(n.Webhook), "https://") {
				bad(f+".notify.webhook", "must be an http:// or https:// URL")
			}
			if e := n.Email; e != nil {
				if _, _, err := net.SplitHostPort(e.SMTP); err != nil {
					bad(f+".notify.email.smtp", "%q is not host:port", e.SMTP)
				}
				if e.From == "" {
					bad(f+".notify.email.from", "required")
				}
				if len(e.To) == 0 {
					bad(f+".notify.email.to", "required (or set the group's owner)")
				}
			}
			if n.Webhook == "" && n.Email == nil {
				bad(f+".notify", "needs a webhook or an email")
			}
		}
		tnames := map[string]bool{}
		for j, t := range g.Tables {
			tf := fmt.Sprintf("%s.tables[%d]", f, j)
			if !nameRe.MatchString(t.Name) || tnames[t.Name] {
				bad(tf+".name", "%q is not a valid or unique table name", t.Name)
			}
			tnames[t.Name] = true
			from, err1 := location.Parse(t.From)
			if err1 != nil {
				bad(tf+".from", "%v", err1)
			}
			to, err2 := location.Parse(t.To)
			if err2 != nil {
				bad(tf+".to", "%v", err2)
			}
			if err1 != nil || err2 != nil {
				continue
			}
			if location.Overlaps(from, c.endpoint(g.From), to, c.endpoint(g.To)) {
				bad(tf, "from %s and to %s overlap", from, to)
			}
			for _, other := range targets {
				if location.Overlaps(other.loc, other.endpoint, to, c.endpoint(g.To)) && !strings.HasPrefix(to.String(), other.loc.String()) {
					bad(tf+".to", "%s overlaps the target of %s", to, other.field)
				}
			}
			targets = append(targets, placed{tf, to, c.endpoint(g.To)})
		}
	}
	return errs
}

func (c *Config) validateProtection(regions map[string]*Region) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Witness != nil {
		if _, err := location.Parse(c.Witness.URL); err != nil {
			bad("witness.url", "%v", err)
		}
	}
	if len(c.ProtectionGroups) > 0 && c.Witness == nil {
		bad("witness", "required by protection_groups: the location of the region leases")
	}
	names := map[string]bool{}
	for i, pg := range c.ProtectionGroups {
		f := fmt.Sprintf("protection_groups[%d]", i)
		if !nameRe.MatchString(pg.Name) || names[pg.Name] {
			bad(f+".name", "%q is not a valid or unique name", pg.Name)
		}
		names[pg.Name] = true
		if regions[pg.Primary] == nil {
			bad(f+".primary", "unknown region %q", pg.Primary)
		}
		if regions[pg.Standby] == nil || pg.Standby == pg.Primary {
			bad(f+".standby", "%q must be a region other than the primary", pg.Standby)
		}
		for j, r := range pg.Replications {
			if !slices.ContainsFunc(c.Replication, func(x Replication) bool { return x.Name == r }) {
				bad(fmt.Sprintf("%s.replications[%d]", f, j), "unknown replication %q", r)
			}
		}
		for j, g := range pg.Groups {
			if !slices.ContainsFunc(c.Groups, func(x Group) bool { return x.Name == g }) {
				bad(fmt.Sprintf("%s.groups[%d]", f, j), "unknown group %q", g)
			}
		}
	}
	return errs
}

// FindProtectionGroup finds a protection group by name.
func (c *Config) FindProtectionGroup(name string) (*ProtectionGroup, error) {
	var known []string
	for i := range c.ProtectionGroups {
		if c.ProtectionGroups[i].Name == name {
			return &c.ProtectionGroups[i], nil
		}
		known = append(known, c.ProtectionGroups[i].Name)
	}
	return nil, fmt.Errorf("no protection group named %q in %s (known: %s)", name, c.path, strings.Join(known, ", "))
}

func (c *Config) endpoint(region string) string {
	if r := c.Region(region); r != nil {
		return r.S3.Endpoint
	}
	return ""
}

// Exclusions are the key prefixes a replication leaves alone: its own
// exclude list and every group table inside its source or target, which
// the group copies at run boundaries instead.
func (c *Config) Exclusions(r *Replication) []string {
	out := slices.Clone(r.Exclude)
	add := func(outer Side, inner string, innerRegion string) {
		o, err1 := location.Parse(outer.URL)
		in, err2 := location.Parse(inner)
		if err1 != nil || err2 != nil || c.endpoint(outer.Region) != c.endpoint(innerRegion) {
			return
		}
		if rel, ok := location.Rel(o, in); ok && !slices.Contains(out, rel) {
			out = append(out, rel)
		}
	}
	// Both ends, whichever way the lease makes them run.
	for _, g := range c.Groups {
		for _, t := range g.Tables {
			for _, side := range []Side{r.From, r.To} {
				add(side, t.From, g.From)
				add(side, t.To, g.To)
			}
		}
	}
	return out
}

// FindGroup finds a group by name.
func (c *Config) FindGroup(name string) (*Group, error) {
	var known []string
	for i := range c.Groups {
		if c.Groups[i].Name == name {
			return &c.Groups[i], nil
		}
		known = append(known, c.Groups[i].Name)
	}
	return nil, fmt.Errorf("no group named %q in %s (known: %s)", name, c.path, strings.Join(known, ", "))
}

// excludes reports whether state sits inside loc under an excluded prefix.
func excludes(exclude []string, loc, st location.Location) bool {
	rel, ok := location.Rel(loc, st)
	return ok && slices.ContainsFunc(exclude, func(x string) bool { return strings.HasPrefix(rel, x) })
}

// Region returns the named region.
func (c *Config) Region(name string) *Region {
	for i := range c.Regions {
		if c.Regions[i].Name == name {
			return &c.Regions[i]
		}
	}
	return nil
}

// FindReplication finds a replication by name or by target URL.
func (c *Config) FindReplication(nameOrURL string) (*Replication, error) {
	for i := range c.Replication {
		r := &c.Replication[i]
		if r.Name == nameOrURL || r.To.URL == nameOrURL {
			return r, nil
		}
		if a, err := location.Parse(r.To.URL); err == nil {
			if b, err := location.Parse(nameOrURL); err == nil && a == b {
				return r, nil
			}
		}
	}
	var known []string
	for _, r := range c.Replication {
		known = append(known, r.Name)
	}
	return nil, fmt.Errorf("no replication named %q or with that target in %s (known: %s)", nameOrURL, c.path, strings.Join(known, ", "))
}
