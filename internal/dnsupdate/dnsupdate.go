// Package dnsupdate points a DNS name at a new target with an RFC 2136
// dynamic update signed with TSIG, as a compare-and-swap: the update's
// prerequisite is the record the caller expects, so a writer with a stale
// view (a region that lost the lease, a plan run twice) cannot swing the
// name back. It asks the authoritative server directly, never a resolver's
// cache.
package dnsupdate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Server is an authoritative server that takes updates for a zone.
type Server struct {
	// Addr is host:port (port 53 when left out).
	Addr string
	// Zone is the zone the name is in (example.com.).
	Zone string
	// Key signs updates (and queries, when set); nil sends them unsigned.
	Key *Key
	// Timeout of one exchange (default 5s).
	Timeout time.Duration
}

// Key is a TSIG key. Its secret is base64, as in the server's key file.
type Key struct {
	Name      string
	Algorithm string // hmac-sha256 (default), hmac-sha512, hmac-sha1, ...
	Secret    string
}

// Record is what a name holds: its values (addresses for A and AAAA, a
// name for CNAME) and their TTL.
type Record struct {
	Values []string
	TTL    uint32
}

// ErrMismatch: the name does not hold what the caller expected; nothing
// was changed.
var ErrMismatch = errors.New("the name does not hold the expected record")

// Algorithms are the TSIG algorithms a key may name.
var Algorithms = map[string]string{
	"hmac-sha256": dns.HmacSHA256, "hmac-sha512": dns.HmacSHA512, "hmac-sha384": dns.HmacSHA384,
	"hmac-sha224": dns.HmacSHA224, "hmac-sha1": dns.HmacSHA1,
}

// Types are the record types a name may be switched between.
var Types = map[string]uint16{"A": dns.TypeA, "AAAA": dns.TypeAAAA, "CNAME": dns.TypeCNAME}

func (s Server) addr() string {
	if _, _, err := net.SplitHostPort(s.Addr); err != nil {
		return net.JoinHostPort(s.Addr, "53")
	}
	return s.Addr
}

func (s Server) client(proto string) (*dns.Client, error) {
	c := &dns.Client{Net: proto, Timeout: s.Timeout}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if s.Key != nil {
		if _, ok := Algorithms[s.algorithm()]; !ok {
			return nil, fmt.Errorf("TSIG algorithm %q is not one of hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224, hmac-sha1", s.Key.Algorithm)
		}
		c.TsigSecret = map[string]string{dns.Fqdn(s.Key.Name): s.Key.Secret}
	}
	return c, nil
}

func (s Server) algorithm() string {
	if s.Key == nil || s.Key.Algorithm == "" {
		return "hmac-sha256"
	}
	return strings.ToLower(s.Key.Algorithm)
}

func (s Server) sign(m *dns.Msg) {
	if s.Key != nil {
		m.SetTsig(dns.Fqdn(s.Key.Name), Algorithms[s.algorithm()], 300, time.Now().Unix())
	}
}

// exchange sends m over TCP (updates and their answers are small, but TCP
// is never truncated) and checks the answer's signature.
func (s Server) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	c, err := s.client("tcp")
	if err != nil {
		return nil, err
	}
	s.sign(m)
	r, _, err := c.ExchangeContext(ctx, m, s.addr())
	if err != nil {
		if errors.Is(err, dns.ErrSig) || errors.Is(err, dns.ErrSecret) || errors.Is(err, dns.ErrKeyAlg) || errors.Is(err, dns.ErrAuth) {
			return nil, fmt.Errorf("DNS server %s: the answer's TSIG signature does not verify with key %s: %w", s.Addr, s.Key.Name, err)
		}
		return nil, fmt.Errorf("DNS server %s: %w", s.Addr, err)
	}
	if t := r.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		return nil, fmt.Errorf("DNS server %s refused TSIG key %s: %s (check the key's name, algorithm and secret against the server's)",
			s.Addr, s.Key.Name, rcode(int(t.Error)))
	}
	return r, nil
}

func rcode(c int) string {
	if s, ok := dns.RcodeToString[c]; ok {
		return s
	}
	return fmt.Sprint(c)
}

// Lookup asks the server what name holds of type typ (A, AAAA, CNAME). A
// name that does not exist holds nothing (no error).
func (s Server) Lookup(ctx context.Context, name, typ string) (Record, error) {
	t, ok := Types[strings.ToUpper(typ)]
	if !ok {
		return Record{}, fmt.Errorf("record type %q is not A, AAAA or CNAME", typ)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	m.RecursionDesired = false
	r, err := s.exchange(ctx, m)
	if err != nil {
		return Record{}, err
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeRefused, dns.RcodeNotAuth:
		return Record{}, fmt.Errorf("DNS server %s answered %s for %s: it does not serve zone %s to this key", s.Addr, rcode(r.Rcode), name, s.Zone)
	default:
		return Record{}, fmt.Errorf("DNS server %s answered %s for %s", s.Addr, rcode(r.Rcode), name)
	}
	var rec Record
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != t || !strings.EqualFold(rr.Header().Name, dns.Fqdn(name)) {
			continue
		}
		rec.Values = append(rec.Values, value(rr))
		rec.TTL = rr.Header().Ttl
	}
	slices.Sort(rec.Values)
	return rec, nil
}

func value(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.A:
		return r.A.String()
	case *dns.AAAA:
		return r.AAAA.String()
	case *dns.CNAME:
		return strings.ToLower(r.Target)
	}
	return rr.String()
}

// rrs builds the records of name with values.
func rrs(name, typ string, ttl uint32, values []string) ([]dns.RR, error) {
	var out []dns.RR
	for _, v := range values {
		if strings.ToUpper(typ) == "CNAME" {
			v = dns.Fqdn(v)
		}
		rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", dns.Fqdn(name), ttl, strings.ToUpper(typ), v))
		if err != nil {
			return nil, fmt.Errorf("%s record %q: %w", typ, v, err)
		}
		out = append(out, rr)
	}
	return out, nil
}

// Normalize returns values as Lookup reports them (sorted; names lower
// case and fully qualified).
func Normalize(typ string, values []string) []string {
	out := slices.Clone(values)
	for i, v := range out {
		if strings.ToUpper(typ) == "CNAME" {
			out[i] = strings.ToLower(dns.Fqdn(v))
		} else if ip := net.ParseIP(v); ip != nil {
			out[i] = ip.String()
		}
	}
	slices.Sort(out)
	return out
}

// Swap points name at want if it holds expect: one update whose
// prerequisite is every value of expect (RFC 2136 "RRset exists, value
// dependent"), deleting the RRset and adding want with ttl. If name holds
// want already, nothing is sent (a rerun is a no-op). If it holds
// something else, nothing changes and the error wraps ErrMismatch with
// what it holds.
func (s Server) Swap(ctx context.Context, name, typ string, ttl uint32, expect, want []string) error {
	expect, want = Normalize(typ, expect), Normalize(typ, want)
	cur, err := s.Lookup(ctx, name, typ)
	if err != nil {
		return err
	}
	switch {
	case slices.Equal(cur.Values, want):
		return nil
	case !slices.Equal(cur.Values, expect):
		return fmt.Errorf("%s holds %s, not %s as expected: %w", name, show(cur.Values), show(expect), ErrMismatch)
	}
	prereq, err := rrs(name, typ, 0, expect)
	if err != nil {
		return err
	}
	add, err := rrs(name, typ, ttl, want)
	if err != nil {
		return err
	}
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(s.Zone))
	m.Used(prereq)
	m.RemoveRRset(add[:1])
	m.Insert(add)
	r, err := s.exchange(ctx, m)
	if err != nil {
		return err
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
		return nil
	case dns.RcodeNXRrset, dns.RcodeYXRrset, dns.RcodeNameError:
		now, _ := s.Lookup(ctx, name, typ)
		if slices.Equal(now.Values, want) {
			return nil
		}
		return fmt.Errorf("the update's prerequisite failed (%s): %s holds %s now, not %s: %w", rcode(r.Rcode), name, show(now.Values), show(expect), ErrMismatch)
	case dns.RcodeNotAuth, dns.RcodeNotZone:
		return fmt.Errorf("DNS server %s answered %s to the update of %s: it is not authoritative for zone %s, or does not let this key update it (check the endpoint's dns.zone and dns.key)", s.Addr, rcode(r.Rcode), name, s.Zone)
	case dns.RcodeRefused:
		return fmt.Errorf("DNS server %s refused the update of %s in zone %s: the key may not update it (check the server's update ACL and the endpoint's dns.key)", s.Addr, name, s.Zone)
	}
	return fmt.Errorf("DNS server %s answered %s to the update of %s", s.Addr, rcode(r.Rcode), name)
}

func show(values []string) string {
	if len(values) == 0 {
		return "nothing"
	}
	return strings.Join(values, ", ")
}
