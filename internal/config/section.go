package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"tandem/internal/location"
	"tandem/internal/redact"
)

// Section is a top-level part of the configuration file that one kind of
// protection-group member owns (replication, groups, databases, ...). The
// kind's package registers it (through package member); the file is
// decoded strictly into a struct made of the fixed sections and every
// registered one, so unknown keys are errors with their line, as for the
// rest of the file.
type Section struct {
	// Key is the section's key in the file ("replication").
	Key string
	// Ref is the key protection groups list its members under
	// ("replications").
	Ref string
	// Noun names one member's kind in a sentence ("replication",
	// "group", "aliases").
	Noun string
	// New returns a pointer to the section's empty value: a *[]T.
	New func() any
	// Defaults fills in defaults in v, the decoded *[]T.
	Defaults func(c *Config, v any)
	// Validate reports every problem of v through ck, with its field.
	Validate func(ck *Check, v any)
	// Names lists the members' names in v.
	Names func(v any) []string
	// CheckRef reports, through ck at field, why protection group pg may
	// not list member (the member exists: Names has it).
	CheckRef func(ck *Check, pg *ProtectionGroup, field, member string)
	// Owned are the locations the section's members copy as units of
	// their own (a table group's tables); bucket replication leaves them
	// alone (Config.Owned).
	Owned func(c *Config, v any) []Owned
	// Locations are the object-store locations member copies into or out
	// of, in both regions: a region that takes the lease revokes the
	// writes under way in those in its region.
	Locations func(c *Config, member string) []Owned
}

// Owned is a location a member copies as a unit of its own.
type Owned struct {
	Region, URL string
}

var (
	sectionsMu sync.Mutex
	sections   []Section
)

// RegisterSection adds a section. It panics on a duplicate or reserved key.
func RegisterSection(s Section) {
	sectionsMu.Lock()
	defer sectionsMu.Unlock()
	for _, o := range sections {
		if o.Key == s.Key || o.Ref == s.Ref {
			panic("config: section " + s.Key + " registered twice")
		}
	}
	if slices.Contains([]string{"regions", "witness", "protection_groups", "serve"}, s.Key) {
		panic("config: section key " + s.Key + " is reserved")
	}
	sections = append(sections, s)
}

// Sections returns the registered sections, in registration order.
func Sections() []Section {
	sectionsMu.Lock()
	defer sectionsMu.Unlock()
	return slices.Clone(sections)
}

// Get returns the value of section key in c (nil or empty when the file
// has none): config.Get[[]Replication](c, "replication").
func Get[T any](c *Config, key string) T {
	var zero T
	v, ok := c.sections[key]
	if !ok {
		return zero
	}
	p, ok := v.(*T)
	if !ok {
		return zero
	}
	return *p
}

// Names lists the members of section key.
func (c *Config) Names(key string) []string {
	for _, s := range Sections() {
		if v, ok := c.sections[s.Key]; ok && s.Key == key {
			return s.Names(v)
		}
	}
	return nil
}

// Named is a member's configuration: it has a name.
type Named interface{ MemberName() string }

// Find returns the member called name in section key (nil if none).
func Find[T Named](c *Config, key, name string) *T {
	all := Get[[]T](c, key)
	for i := range all {
		if all[i].MemberName() == name {
			return &all[i]
		}
	}
	return nil
}

// NamesOf lists the names in a section value (a *[]T): a Section's Names.
func NamesOf[T Named](v any) []string {
	var out []string
	for _, m := range *v.(*[]T) {
		out = append(out, m.MemberName())
	}
	return out
}

// Set replaces the value of section key (for tools that build a
// configuration in code).
func Set[T any](c *Config, key string, v T) {
	if c.sections == nil {
		c.sections = map[string]any{}
	}
	c.sections[key] = &v
}

// Members returns the names pg lists under key (a section's Ref).
func (pg *ProtectionGroup) Members(key string) []string { return pg.members[key] }

// SetMembers replaces the names pg lists under key.
func (pg *ProtectionGroup) SetMembers(key string, names []string) {
	if pg.members == nil {
		pg.members = map[string][]string{}
	}
	pg.members[key] = names
}

// HasMembers reports whether pg lists any member of any kind.
func (pg *ProtectionGroup) HasMembers() bool {
	for _, m := range pg.members {
		if len(m) > 0 {
			return true
		}
	}
	return false
}

// decode decodes the file into c: the fixed sections and every registered
// one, strictly.
func (c *Config) decode(data []byte, dir string) error {
	secs := Sections()
	pgFields := []reflect.StructField{{Name: "Base", Type: reflect.TypeFor[ProtectionGroup](), Tag: `yaml:",inline"`}}
	for i, s := range secs {
		pgFields = append(pgFields, reflect.StructField{Name: fmt.Sprintf("R%d", i), Type: reflect.TypeFor[[]string](), Tag: reflect.StructTag(fmt.Sprintf(`yaml:%q`, s.Ref))})
	}
	pgType := reflect.StructOf(pgFields)
	fields := []reflect.StructField{
		{Name: "Base", Type: reflect.TypeFor[Config](), Tag: `yaml:",inline"`},
		{Name: "PGs", Type: reflect.SliceOf(pgType), Tag: `yaml:"protection_groups"`},
	}
	for i, s := range secs {
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("S%d", i), Type: reflect.TypeOf(s.New()).Elem(), Tag: reflect.StructTag(fmt.Sprintf(`yaml:%q`, s.Key))})
	}
	v := reflect.New(reflect.StructOf(fields)).Elem()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return decodeError(err)
	}
	k := &keys{dir: dir, lines: map[string]int{}, values: map[[2]int]string{}}
	k.walk(&doc, v.Type(), "")
	errs := k.errs
	if len(doc.Content) > 0 {
		if err := doc.Decode(v.Addr().Interface()); err != nil {
			errs = append(errs, decodeError(err))
		}
	}
	*c = v.Field(0).Interface().(Config)
	c.sections = map[string]any{}
	for i, s := range secs {
		p := s.New()
		reflect.ValueOf(p).Elem().Set(v.Field(2 + i))
		c.sections[s.Key] = p
	}
	pgs := v.Field(1)
	c.ProtectionGroups = make([]ProtectionGroup, pgs.Len())
	for i := range pgs.Len() {
		pg := pgs.Index(i).Field(0).Interface().(ProtectionGroup)
		for j, s := range secs {
			if names := pgs.Index(i).Field(1 + j).Interface().([]string); len(names) > 0 {
				pg.SetMembers(s.Ref, names)
			}
		}
		c.ProtectionGroups[i] = pg
	}
	c.lines, c.values = k.lines, k.values
	return errors.Join(errs...)
}

// decodeError turns the YAML decoder's errors into tandem's: one per line,
// without Go type names.
func decodeError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var errs []error
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			errs = append(errs, errors.New(l))
		}
	}
	return errors.Join(errs...)
}

// MarshalJSON prints the configuration in file order, every section
// included, secrets redacted.
func (c *Config) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	put := func(key string, v any) error {
		data, err := marshal(v)
		if err != nil {
			return err
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:", key)
		b.Write(data)
		return nil
	}
	if err := put("regions", c.Regions); err != nil {
		return nil, err
	}
	for _, s := range Sections() {
		if v, ok := c.sections[s.Key]; ok && reflect.ValueOf(v).Elem().Len() > 0 {
			if err := put(s.Key, v); err != nil {
				return nil, err
			}
		}
	}
	if c.Witness != nil {
		if err := put("witness", c.Witness); err != nil {
			return nil, err
		}
	}
	if len(c.ProtectionGroups) > 0 {
		if err := put("protection_groups", c.ProtectionGroups); err != nil {
			return nil, err
		}
	}
	if err := put("serve", c.Serve); err != nil {
		return nil, err
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalJSON prints a protection group with its members by kind.
func (pg ProtectionGroup) MarshalJSON() ([]byte, error) {
	type plain ProtectionGroup // no MarshalJSON
	data, err := marshal(plain(pg))
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	keys := []string{"name", "primary", "standby"}
	for _, s := range Sections() {
		if names := pg.members[s.Ref]; len(names) > 0 {
			raw, _ := marshal(names)
			m[s.Ref] = raw
			keys = append(keys, s.Ref)
		}
	}
	keys = append(keys, "lease_ttl", "rto", "user_groups", "steps", "auto_failover", "practice", "notify")
	n := 0
	for _, k := range keys {
		raw, ok := m[k]
		if !ok {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		fmt.Fprintf(&b, "%q:", k)
		b.Write(raw)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshal is json.Marshal without HTML escaping (config check prints URLs
// and templates as written).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// Locations returns the data locations of the members pg lists, in
// region.
func (c *Config) Locations(pg *ProtectionGroup, region string) []Owned {
	var out []Owned
	for _, s := range Sections() {
		if s.Locations == nil {
			continue
		}
		for _, m := range pg.Members(s.Ref) {
			for _, l := range s.Locations(c, m) {
				if l.Region == region {
					out = append(out, l)
				}
			}
		}
	}
	return out
}

// Owned returns every location the members of any section copy as units
// of their own.
func (c *Config) Owned() []Owned {
	var out []Owned
	for _, s := range Sections() {
		if s.Owned != nil {
			if v, ok := c.sections[s.Key]; ok {
				out = append(out, s.Owned(c, v)...)
			}
		}
	}
	return out
}

// Check collects the problems of a configuration, each with its field, and
// the locations seen so far, so that overlaps across sections are found.
type Check struct {
	c       *Config
	errs    []error
	regions map[string]*Region
	targets []Placed
	states  []Placed
}

// Placed is a location a field names.
type Placed struct {
	Field    string
	Loc      location.Location
	Endpoint string
	Unit     bool // a unit of its own inside another target (Target)
}

// Config is the configuration being checked.
func (ck *Check) Config() *Config { return ck.c }

// Bad reports a problem of field.
func (ck *Check) Bad(field, format string, args ...any) {
	ck.errs = append(ck.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Err adds errors found elsewhere.
func (ck *Check) Err(errs ...error) { ck.errs = append(ck.errs, errs...) }

// Region reports field when region is not a configured region.
func (ck *Check) Region(field, region string) bool {
	if ck.regions[region] == nil {
		ck.Bad(field, "unknown region %q", region)
		return false
	}
	return true
}

// Name reports field unless name is a valid name not in seen, and adds
// it to seen.
func (ck *Check) Name(field, kind, name string, seen map[string]bool) {
	switch {
	case !nameRe.MatchString(name):
		ck.Bad(field, "%q is not a valid name (lowercase letters, digits, - and _)", name)
	case seen[name]:
		ck.Bad(field, "%s %q is defined twice", kind, name)
	}
	seen[name] = true
}

// Endpoint is the S3 endpoint of region ("" for AWS or folders).
func (ck *Check) Endpoint(region string) string { return ck.c.endpoint(region) }

// Location parses a location a field names, reporting a bad one.
func (ck *Check) Location(field, url string) (location.Location, bool) {
	l, err := location.Parse(url)
	if err != nil {
		ck.Bad(field, "%v", err)
		return location.Location{}, false
	}
	return l, true
}

// Target records that owner (a member's field) writes into loc, in
// region, and reports at field an overlap with a target recorded before.
// A unit (a group's table) may lie inside a target that is not one (a
// replicated bucket, which leaves the units in it alone); two units never
// overlap, nor do two buckets.
func (ck *Check) Target(field, owner string, loc location.Location, region string, unit bool) {
	ep := ck.Endpoint(region)
	for _, t := range ck.targets {
		if !location.Overlaps(t.Loc, t.Endpoint, loc, ep) {
			continue
		}
		inner, outer := loc, t.Loc
		if t.Unit {
			inner, outer = t.Loc, loc
		}
		if unit == t.Unit || inner.String() == outer.String() || !strings.HasPrefix(inner.String(), outer.String()) {
			ck.Bad(field, "%s overlaps the target of %s: two members would write the same objects", loc, t.Field)
		}
	}
	ck.targets = append(ck.targets, Placed{Field: owner, Loc: loc, Endpoint: ep, Unit: unit})
}

// States are the regions' state locations.
func (ck *Check) States() []Placed { return ck.states }

// Notify checks a notification setting at field (nil is none).
func (ck *Check) Notify(field string, n *Notify) {
	if n == nil {
		return
	}
	for j, on := range n.On {
		if on != "success" && on != "failure" {
			ck.Bad(fmt.Sprintf("%s.on[%d]", field, j), "%q is not success or failure", on)
		}
	}
	if n.Webhook != "" {
		if u, err := redact.Parse(string(n.Webhook)); err != nil {
			ck.Bad(field+".webhook", "%v", err)
		} else if u.Scheme != "http" && u.Scheme != "https" {
			ck.Bad(field+".webhook", "must be an http:// or https:// URL")
		}
	}
	if e := n.Email; e != nil {
		if _, _, err := net.SplitHostPort(e.SMTP); err != nil {
			ck.Bad(field+".email.smtp", "%q is not host:port", e.SMTP)
		}
		if e.From == "" {
			ck.Bad(field+".email.from", "required")
		}
		if len(e.To) == 0 {
			ck.Bad(field+".email.to", "required (or set the owner)")
		}
	}
	if n.Webhook == "" && n.Email == nil {
		ck.Bad(field, "needs a webhook or an email")
	}
}

// Action checks an action (see validateAction).
func (ck *Check) Action(field string, a Action, pauseOK bool) {
	ck.errs = append(ck.errs, validateAction(field, a, pauseOK)...)
}
