// Package endpoint is the member kind of endpoints (endpoints[] in the
// configuration and in protection groups): one name clients use, pointed
// at the primary region's target. Three ways to point it:
//
//   - dns: an RFC 2136 dynamic update signed with TSIG, as a
//     compare-and-swap (package dnsupdate): the update's prerequisite is
//     the record the plan expects, so a stale region cannot swing it back;
//   - api: a hosted DNS's HTTP API (Route 53, OCI DNS, Cloudflare style):
//     a templated read of the current record and a templated update;
//   - forward: every region's serve listens on an address and forwards
//     each connection to the lease holder's target, refusing while no
//     region holds the lease.
//
// Plans check that the name points at the current primary, that its TTL
// is short enough and that the new primary's target answers, then switch
// it after the lease moved.
package endpoint

import (
	"cmp"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tandem/internal/config"
	"tandem/internal/dnsupdate"
)

// Endpoint is one name pointed at the primary region's target.
type Endpoint struct {
	Name string `yaml:"name" json:"name"`
	// Targets are, per region, what the name points at while the region is
	// primary: addresses (A, AAAA), a host name (CNAME), or host:port
	// (forward).
	Targets map[string]Values `yaml:"targets" json:"targets"`
	// Probe is, per region, what must answer for the region to take over:
	// host:port (a TCP connection) or an http(s) URL (any answer below
	// 500). Default: a forward target itself.
	Probe map[string]config.Secret `yaml:"probe" json:"probe,omitempty"`

	DNS     *DNS     `yaml:"dns" json:"dns,omitempty"`
	API     *API     `yaml:"api" json:"api,omitempty"`
	Forward *Forward `yaml:"forward" json:"forward,omitempty"`
}

// Values is one value or a list of them.
type Values []string

// UnmarshalYAML takes a scalar or a sequence.
func (v *Values) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*v = Values{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*v = l
	return nil
}

// DNS is a name on an authoritative server that takes dynamic updates.
type DNS struct {
	// Server is the primary authoritative server, host:port.
	Server string `yaml:"server" json:"server"`
	Zone   string `yaml:"zone" json:"zone"`
	// Name is the record switched (app.example.com).
	Name string `yaml:"name" json:"name"`
	// Type is A (default), AAAA or CNAME.
	Type string `yaml:"type" json:"type"`
	// TTL of the record written (default 60s); MaxTTL is the precheck's
	// ceiling on the TTL the name has now (default 300s): clients keep an
	// answer that long after a switch.
	TTL    config.Duration `yaml:"ttl" json:"ttl"`
	MaxTTL config.Duration `yaml:"max_ttl" json:"max_ttl"`
	Key    *Key            `yaml:"key" json:"key,omitempty"`
}

// Key is a TSIG key: its secret inline or in a file (base64, as in the
// server's key file). It never prints.
type Key struct {
	Name       string        `yaml:"name" json:"name"`
	Algorithm  string        `yaml:"algorithm" json:"algorithm,omitempty"`
	Secret     config.Secret `yaml:"secret" json:"secret,omitempty"`
	SecretFile string        `yaml:"secret_file" json:"secret_file,omitempty" tandem:"path"`
}

// API switches the name through a hosted DNS's HTTP API. Its templates
// see .Value (the new record: the values joined by commas), .Expected (the
// record the plan expects now), .Region and .Vars.
type API struct {
	// Read is a request whose JSON answer holds the current record at
	// Field (a dotted path); optional, but without it no precheck or
	// status can say where the name points, and the switch cannot compare
	// before it swaps.
	Read  *config.Action `yaml:"read" json:"read,omitempty"`
	Field string         `yaml:"field" json:"field,omitempty"`
	// Update points the name at .Value (an HTTP request, or an
	// asynchronous job: http.job); an API with conditional updates should
	// be given .Expected.
	Update config.Action `yaml:"update" json:"update"`
	// Vars for the templates, per region.
	Vars map[string]map[string]string `yaml:"vars" json:"vars,omitempty"`
}

// Forward is the forwarder every region's serve runs.
type Forward struct {
	// Listen is, per region, the address its serve listens on.
	Listen map[string]string `yaml:"listen" json:"listen"`
}

const (
	sectionKey = "endpoints"
	refKey     = "endpoints"
)

// All returns the configured endpoints.
func All(c *config.Config) []Endpoint { return config.Get[[]Endpoint](c, sectionKey) }

// Find returns the named endpoint, or nil.
func Find(c *config.Config, name string) *Endpoint { return config.Find[Endpoint](c, sectionKey, name) }

// MemberName is its name.
func (e Endpoint) MemberName() string { return e.Name }

// Way names how the endpoint is pointed.
func (e *Endpoint) Way() string {
	switch {
	case e.DNS != nil:
		return "dns"
	case e.API != nil:
		return "api"
	}
	return "forward"
}

func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "endpoint",
		New: func() any { return new([]Endpoint) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Endpoint) {
				if d := (*v.(*[]Endpoint))[i].DNS; d != nil {
					if d.Type == "" {
						d.Type = "A"
					}
					d.Type = strings.ToUpper(d.Type)
					if d.TTL == 0 {
						d.TTL = config.Duration(time.Minute)
					}
					if d.MaxTTL == 0 {
						d.MaxTTL = config.Duration(5 * time.Minute)
					}
				}
			}
		},
		Validate: func(ck *config.Check, v any) { validate(ck, *v.(*[]Endpoint)) },
		Names:    config.NamesOf[Endpoint],
		CheckRef: func(ck *config.Check, pg *config.ProtectionGroup, field, name string) {
			e := Find(ck.Config(), name)
			for _, r := range []string{pg.Primary, pg.Standby} {
				if len(e.Targets[r]) == 0 {
					ck.Bad(field, "endpoint %s has no target in region %s of protection group %s: add targets.%s", name, r, pg.Name, r)
				}
				if e.Forward != nil && e.Forward.Listen[r] == "" {
					ck.Bad(field, "endpoint %s forwards, but has no forward.listen address for region %s: add forward.listen.%s", name, r, r)
				}
			}
		},
	}
}

func validate(ck *config.Check, all []Endpoint) {
	names := map[string]bool{}
	for i := range all {
		e := &all[i]
		f := fmt.Sprintf("%s[%d]", sectionKey, i)
		ck.Name(f+".name", "endpoint", e.Name, names)
		n := 0
		for _, set := range []bool{e.DNS != nil, e.API != nil, e.Forward != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			ck.Bad(f, "set exactly one of dns, api or forward: how the name is pointed at the primary")
		}
		if len(e.Targets) == 0 {
			ck.Bad(f+".targets", "required: what the name points at in each region")
		}
		for r, vals := range e.Targets {
			tf := f + ".targets." + r
			if !ck.Region(tf, r) {
				continue
			}
			if len(vals) == 0 {
				ck.Bad(tf, "required: at least one value")
			}
			for _, v := range vals {
				if err := checkTarget(e, v); err != nil {
					ck.Bad(tf, "%q: %v", v, err)
				}
			}
		}
		for r, p := range e.Probe {
			if ck.Region(f+".probe."+r, r) {
				if err := checkProbe(string(p)); err != nil {
					ck.Bad(f+".probe."+r, "%v", err)
				}
			}
		}
		if d := e.DNS; d != nil {
			if _, _, err := net.SplitHostPort(d.Server); err != nil {
				ck.Bad(f+".dns.server", "%q is not host:port of the authoritative server", d.Server)
			}
			if d.Zone == "" || d.Name == "" {
				ck.Bad(f+".dns", "zone and name are required")
			} else if z, nm := strings.TrimSuffix(strings.ToLower(d.Zone), "."), strings.TrimSuffix(strings.ToLower(d.Name), "."); nm != z && !strings.HasSuffix(nm, "."+z) {
				ck.Bad(f+".dns.name", "%s is not in zone %s", d.Name, d.Zone)
			}
			if _, ok := dnsupdate.Types[d.Type]; !ok {
				ck.Bad(f+".dns.type", "%q is not A, AAAA or CNAME", d.Type)
			}
			if d.Type == "CNAME" {
				for r, vals := range e.Targets {
					if len(vals) > 1 {
						ck.Bad(f+".targets."+r, "a CNAME points at one name, not %d", len(vals))
					}
				}
			}
			if time.Duration(d.TTL) < time.Second || time.Duration(d.TTL) > time.Duration(d.MaxTTL) {
				ck.Bad(f+".dns.ttl", "%s is out of range (1s to max_ttl %s)", time.Duration(d.TTL), time.Duration(d.MaxTTL))
			}
			if k := d.Key; k != nil {
				if k.Name == "" {
					ck.Bad(f+".dns.key.name", "required: the key's name on the server")
				}
				if (k.Secret == "") == (k.SecretFile == "") {
					ck.Bad(f+".dns.key", "set one of secret or secret_file")
				}
				if _, ok := dnsupdate.Algorithms[strings.ToLower(cmp.Or(k.Algorithm, "hmac-sha256"))]; !ok {
					ck.Bad(f+".dns.key.algorithm", "%q is not hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224 or hmac-sha1", k.Algorithm)
				}
			}
		}
		if a := e.API; a != nil {
			ck.Action(f+".api.update", a.Update, false)
			if a.Read != nil {
				ck.Action(f+".api.read", *a.Read, false)
				if a.Read.HTTP == nil && a.Read.Script == nil {
					ck.Bad(f+".api.read", "must be http or script: its answer holds the record")
				}
			}
			if a.Read != nil && a.Field == "" {
				ck.Bad(f+".api.field", "required with read: the dotted path of the record in read's answer")
			}
			for r := range a.Vars {
				ck.Region(f+".api.vars."+r, r)
			}
		}
		if fw := e.Forward; fw != nil {
			for r, addr := range fw.Listen {
				if ck.Region(f+".forward.listen."+r, r) {
					if _, _, err := net.SplitHostPort(addr); err != nil {
						ck.Bad(f+".forward.listen."+r, "%q is not host:port", addr)
					}
				}
			}
		}
	}
}

func checkTarget(e *Endpoint, v string) error {
	switch {
	case e.Forward != nil:
		if _, _, err := net.SplitHostPort(v); err != nil {
			return fmt.Errorf("a forward target is host:port")
		}
	case e.DNS != nil && e.DNS.Type == "A":
		if ip := net.ParseIP(v); ip == nil || ip.To4() == nil {
			return fmt.Errorf("not an IPv4 address (type A)")
		}
	case e.DNS != nil && e.DNS.Type == "AAAA":
		if ip := net.ParseIP(v); ip == nil || ip.To4() != nil {
			return fmt.Errorf("not an IPv6 address (type AAAA)")
		}
	case v == "" || strings.ContainsAny(v, " \t\n\"\\"):
		return fmt.Errorf("not a value a record can hold")
	}
	return nil
}

func checkProbe(p string) error {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		if _, err := url.Parse(p); err != nil {
			return fmt.Errorf("not a URL")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(p); err != nil {
		return fmt.Errorf("%q is not host:port or an http(s) URL", config.Secret(p))
	}
	return nil
}

// server is the dnsupdate.Server of d, with its key's secret read.
func (d *DNS) server() (dnsupdate.Server, error) {
	s := dnsupdate.Server{Addr: d.Server, Zone: d.Zone}
	if k := d.Key; k != nil {
		secret := string(k.Secret)
		if k.SecretFile != "" {
			b, err := os.ReadFile(k.SecretFile)
			if err != nil {
				return s, fmt.Errorf("dns.key.secret_file: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		s.Key = &dnsupdate.Key{Name: k.Name, Algorithm: k.Algorithm, Secret: secret}
	}
	return s, nil
}
