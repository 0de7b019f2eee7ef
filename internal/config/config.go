// Package config loads tandem's YAML configuration: regions (where each keeps
// its state, how to reach its object store) and what to replicate between
// them. Loading is strict: unknown keys are errors, ${VAR} is expanded from
// the environment (an unset variable is an error), defaults are applied, and
// Validate reports every problem with the field it is about. Later
// capabilities add sections; they do not change these.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tandem/internal/location"
	s3store "tandem/internal/objstore/s3"
)

// Config is a whole configuration file: the regions, the witness, the
// protection groups and `serve`, which this package owns, and the sections
// of the member kinds (replication, groups, databases, ...), which their
// packages register (RegisterSection) and read (Get).
type Config struct {
	Regions []Region `yaml:"regions" json:"regions"`
	// Witness is where the region leases live: a location both regions
	// reach, ideally in a third place.
	Witness          *Witness          `yaml:"witness" json:"witness,omitempty"`
	ProtectionGroups []ProtectionGroup `yaml:"-" json:"protection_groups,omitempty"`
	Serve            Serve             `yaml:"serve" json:"serve"`

	path     string
	sections map[string]any    // section key -> *[]T
	lines    map[string]int    // path -> line, from the file (keys)
	values   map[[2]int]string // line, column -> path (keys)
}

// Region is one cloud region (or, on a laptop, one folder).
type Region struct {
	Name string `yaml:"name" json:"name"`
	// State is where tandem keeps its records for the work whose target is
	// in this region: a folder or s3://bucket/prefix in this region.
	State string `yaml:"state" json:"state" tandem:"path"`
	S3    S3     `yaml:"s3" json:"s3"`
	// Health is how the region is watched (package health).
	Health Health `yaml:"health" json:"health,omitzero"`
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

// Notify says whom to tell about a group's syncs.
type Notify struct {
	// On lists the outcomes worth a notification: failure (default),
	// success.
	On []string `yaml:"on" json:"on"`
	// Webhook receives a JSON POST; its URL often carries a token.
	Webhook Secret       `yaml:"webhook" json:"webhook,omitempty"`
	Email   *EmailNotify `yaml:"email" json:"email,omitempty"`
}

// Default fills in defaults: notify on failure, mail to owner.
func (n *Notify) Default(owner string) {
	if n == nil {
		return
	}
	if len(n.On) == 0 {
		n.On = []string{"failure"}
	}
	if n.Email != nil && len(n.Email.To) == 0 && owner != "" {
		n.Email.To = []string{owner}
	}
}

// EmailNotify sends mail over SMTP.
type EmailNotify struct {
	SMTP     string   `yaml:"smtp" json:"smtp"` // host:port
	From     string   `yaml:"from" json:"from"`
	To       []string `yaml:"to" json:"to,omitempty"` // default: the group's owner
	Username string   `yaml:"username" json:"username,omitempty"`
	Password Secret   `yaml:"password" json:"password,omitempty"`
}

// Witness is the location of the region leases.
type Witness struct {
	URL string `yaml:"url" json:"url" tandem:"path"`
	S3  S3     `yaml:"s3" json:"s3"`
}

// ProtectionGroup is what fails over together: a primary and a standby
// region, and the members between them, listed by kind (replications,
// groups, databases, aliases, workflows: Members). It has one region lease.
type ProtectionGroup struct {
	Name    string `yaml:"name" json:"name"`
	Primary string `yaml:"primary" json:"primary"`
	Standby string `yaml:"standby" json:"standby"`
	// UserGroups are inserted into the generated plans.
	UserGroups []UserGroup `yaml:"user_groups" json:"user_groups,omitempty"`
	// Steps tune built-in steps by id (as `tandem plan show` prints them).
	Steps map[string]StepSettings `yaml:"steps" json:"steps,omitempty"`
	// LeaseTTL is how long a lease lasts without renewal (default 30s).
	LeaseTTL Duration `yaml:"lease_ttl" json:"lease_ttl"`
	// RTO is the recovery time a run should take at most, from its
	// decision (0: none set); reports and the dashboard measure against it.
	RTO Duration `yaml:"rto" json:"rto,omitempty"`
	// AutoFailover is the trigger policy of automatic failover.
	AutoFailover AutoFailover `yaml:"auto_failover" json:"auto_failover"`
	// Practice schedules drills (package autofail).
	Practice *Practice `yaml:"practice" json:"practice,omitempty"`
	// Notify receives the protection group's alerts (package alert).
	Notify *Notify `yaml:"notify" json:"notify,omitempty"`

	members map[string][]string // section Ref -> names
}

// Serve configures `tandem serve`.
type Serve struct {
	// Listen is the address of the metrics and health endpoints.
	Listen string `yaml:"listen" json:"listen"`
	// Token, when set, is required as a bearer token by the endpoints that
	// change state (POST /groups/{group}/complete, the API's POSTs).
	Token Secret `yaml:"token" json:"token,omitempty"`
	// ProtectReads requires the token for the API's reads too.
	ProtectReads bool `yaml:"protect_reads" json:"protect_reads,omitempty"`
	// RPOEvery is how often serve samples every member's lag for the
	// dashboard's RPO history (the last hour's worth of samples is kept).
	RPOEvery Duration `yaml:"rpo_every" json:"rpo_every"`
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

// valueError is a value that does not parse, named by its line and column
// (for the path). It is a yaml.TypeError, so that decoding goes on and
// every such error is reported at once.
func valueError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: ", n.Line, n.Column) + fmt.Sprintf(format, args...)}}
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	switch {
	case err != nil:
		return valueError(n, "%q is not a duration (use 30s, 5m, 1h)", n.Value)
	case v < 0:
		return valueError(n, "%q is negative", n.Value)
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

// MaxSize is the largest size a setting takes: 5TiB, S3's largest object.
const MaxSize = 5 << 40

func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil {
		return valueError(n, "%q is not a size (use 64MiB, 5MB or bytes)", n.Value)
	}
	mult := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m[2]]
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || v > MaxSize/mult {
		return valueError(n, "%q is too large (at most 5TiB)", n.Value)
	}
	*s = Size(v * mult)
	return nil
}

// FileMode is a file's permission bits, written in octal: 0640, "0o640".
type FileMode fs.FileMode

// ParseFileMode reads octal permission bits (0640, 0o640).
func ParseFileMode(s string) (FileMode, bool) {
	u, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(s), "0o"), 8, 32)
	return FileMode(u), err == nil && u <= 0o777
}

func (m *FileMode) UnmarshalYAML(n *yaml.Node) error {
	v, ok := ParseFileMode(n.Value)
	if !ok {
		return valueError(n, "%q is not a file mode (use octal permission bits, such as 0640)", n.Value)
	}
	*m = v
	return nil
}

func (m FileMode) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf(`"%04o"`, uint32(m))), nil
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

// Load reads, expands, decodes, defaults and validates a file. Its error
// lists every problem found, each with its line and path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := parse(data, filepath.Dir(abs))
	if err != nil {
		var msgs []string
		for _, e := range flatten(err) {
			msgs = append(msgs, e.Error())
		}
		if len(msgs) == 1 {
			return nil, fmt.Errorf("config %s: %s", path, msgs[0])
		}
		return nil, fmt.Errorf("config %s: %d problems:\n  %s", path, len(msgs), strings.Join(msgs, "\n  "))
	}
	c.path = path
	return c, nil
}

// flatten lists the errors joined in err.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Path is the file the configuration was loaded from.
func (c *Config) Path() string { return c.path }

// Parse decodes a configuration from YAML text. It reports every problem
// at once: unknown keys, values that do not parse and what validation
// finds, in the order of their lines.
// Relative folder paths are taken as they are (Load makes them relative to
// the file).
func Parse(data []byte) (*Config, error) { return parse(data, "") }

func parse(data []byte, dir string) (*Config, error) {
	data, err := expand(data)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	derr := c.decode(data, dir)
	if derr != nil && c.lines == nil {
		return nil, derr // not YAML
	}
	c.defaults()
	var errs []error
	if derr != nil {
		for _, e := range flatten(derr) {
			if _, ok := e.(placed); !ok {
				e = errors.New(c.withPath(e.Error()))
			}
			errs = append(errs, e)
		}
	}
	if verr := c.Validate(); verr != nil {
		errs = append(errs, flatten(verr)...)
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b error) int { return cmp.Compare(lineNumber(a), lineNumber(b)) })
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// lineNumber is the line an error names first, or a large number.
func lineNumber(err error) int {
	if m := lineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1 << 30
}

func (c *Config) defaults() {
	for i := range c.Regions {
		c.Regions[i].Health.defaults()
	}
	for i := range c.ProtectionGroups {
		if c.ProtectionGroups[i].LeaseTTL == 0 {
			c.ProtectionGroups[i].LeaseTTL = Duration(30 * time.Second)
		}
		c.ProtectionGroups[i].AutoFailover.defaults()
	}
	for _, s := range Sections() {
		if v, ok := c.sections[s.Key]; ok && s.Defaults != nil {
			s.Defaults(c, v)
		}
	}
	if c.Serve.RPOEvery == 0 {
		c.Serve.RPOEvery = Duration(15 * time.Second)
	}
	if c.Serve.Listen == "" {
		c.Serve.Listen = "127.0.0.1:9750"
	}
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// ValidName reports whether s is a valid name: lowercase letters, digits,
// - and _, starting with a letter or digit.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// Validate reports every problem, each with the field it is about.
func (c *Config) Validate() error {
	ck := &Check{c: c, regions: map[string]*Region{}}
	if len(c.Regions) == 0 {
		ck.Bad("regions", "at least one region is required")
	}
	if c.Serve.ProtectReads && c.Serve.Token == "" {
		ck.Bad("serve.protect_reads", "needs serve.token: the token the reads must carry")
	}
	if c.Serve.RPOEvery < Duration(time.Second) {
		ck.Bad("serve.rpo_every", "%s is below 1s: each sample asks every member for its lag", time.Duration(c.Serve.RPOEvery))
	}
	for i := range c.Regions {
		r := &c.Regions[i]
		f := fmt.Sprintf("regions[%d]", i)
		switch {
		case !nameRe.MatchString(r.Name):
			ck.Bad(f+".name", "%q is not a valid name (lowercase letters, digits, - and _)", r.Name)
		case ck.regions[r.Name] != nil:
			ck.Bad(f+".name", "region %q is defined twice", r.Name)
		default:
			ck.regions[r.Name] = r
		}
		if r.State == "" {
			ck.Bad(f+".state", "required: where tandem keeps its records in this region")
		} else if l, err := location.Parse(r.State); err != nil {
			ck.Bad(f+".state", "%v", err)
		} else {
			ck.states = append(ck.states, Placed{Field: "regions[" + r.Name + "].state", Loc: l, Endpoint: r.S3.Endpoint})
		}
		if err := s3store.CheckEndpoint(r.S3.Endpoint); err != nil {
			ck.Bad(f+".s3.endpoint", "%v", err)
		}
		if (r.S3.AccessKeyID == "") != (r.S3.SecretAccessKey == "") {
			ck.Bad(f+".s3", "access_key_id and secret_access_key go together")
		}
		validateHealth(ck, f+".health", &r.Health)
	}
	for _, s := range Sections() {
		if v, ok := c.sections[s.Key]; ok && s.Validate != nil {
			s.Validate(ck, v)
		}
	}
	c.validateProtection(ck)
	for _, check := range checks {
		check(ck)
	}
	var errs []error
	for _, e := range ck.errs {
		errs = append(errs, c.atLine(e))
	}
	return errors.Join(errs...)
}

// atLine prefixes a validation error "field: msg" with the field's line,
// when the configuration came from a file.
func (c *Config) atLine(err error) error {
	field, _, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.HasPrefix(field, "line ") {
		return err
	}
	if n := c.lineOf(field); n > 0 {
		return fmt.Errorf("line %d: %w", n, err)
	}
	return err
}

var checks []func(*Check)

// RegisterCheck adds a validation that needs more than the sections (the
// step ids a protection group tunes, which only the generated plans know).
func RegisterCheck(f func(*Check)) { checks = append(checks, f) }

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

// Region returns the named region.
func (c *Config) Region(name string) *Region {
	for i := range c.Regions {
		if c.Regions[i].Name == name {
			return &c.Regions[i]
		}
	}
	return nil
}
