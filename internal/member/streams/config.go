// Package streams is the member kind of event streams (streams[] in the
// configuration and in protection groups): every event is produced to the
// stream of both regions (package produce, `tandem stream produce`,
// POST /streams/NAME/events under serve), the region holding the lease
// delivers them to an SQL sink under its fencing epoch (package stream),
// the other region keeps the position it would resume from, and the
// holder's serve catches a region up with the events it missed. Plans
// drain the old primary and fence the sink at the new epoch.
package streams

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/member"
	"tandem/internal/stream"
	"tandem/produce"
)

// Stream is one event stream with an end in each region and one sink.
type Stream struct {
	Name string `yaml:"name" json:"name"`
	// Regions are the stream's end in each region, by region name.
	Regions map[string]End `yaml:"regions" json:"regions"`
	Sink    Sink           `yaml:"sink" json:"sink"`
	// Batch is the most events delivered in one transaction (default 256).
	Batch int `yaml:"batch" json:"batch"`
	// MaxLag is how many events a region may lack from the other for a
	// switchover's precheck to pass (default 1000).
	MaxLag int64 `yaml:"max_lag" json:"max_lag"`
	// CatchUpAfter is how long an event may be in one region only before
	// the catch-up copies it to the other (default 5s).
	CatchUpAfter config.Duration `yaml:"catch_up_after" json:"catch_up_after"`
}

// End is a stream in one region.
type End struct {
	// Broker is nats://host:port or kafka://host:port[,host:port]; a NATS
	// URL may hold credentials (user:password@), which never print.
	Broker Broker `yaml:"broker" json:"broker"`
	// Stream is the JetStream stream or the Kafka topic (one partition).
	Stream string `yaml:"stream" json:"stream"`
	// Subject is the NATS subject events are published on (default: the
	// stream's only subject).
	Subject string `yaml:"subject" json:"subject,omitempty"`
	// Consumer names the position this region's processing keeps in the
	// sink (default: the stream's name).
	Consumer string `yaml:"consumer" json:"consumer,omitempty"`
}

// Broker is a broker URL that prints without its credentials.
type Broker string

func (b Broker) String() string { return stream.Redact(string(b)) }

// MarshalJSON prints it without credentials.
func (b Broker) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// Sink is where events take effect: SQL statements, or an HTTP call with
// tandem's records in a ledger database.
type Sink struct {
	SQL  *SQLSink  `yaml:"sql" json:"sql,omitempty"`
	HTTP *HTTPSink `yaml:"http" json:"http,omitempty"`
	// Ledger is the database of an HTTP sink's records (ids, positions,
	// the epoch fence).
	Ledger *Database `yaml:"ledger" json:"ledger,omitempty"`
}

// Database is a database tandem keeps a stream's records in.
type Database struct {
	// Driver is sqlite or postgres.
	Driver string        `yaml:"driver" json:"driver"`
	DSN    config.Secret `yaml:"dsn" json:"dsn"`
}

// SQLSink applies each event with statements in one transaction, beside
// tandem's records.
type SQLSink struct {
	Database `yaml:",inline"`
	// Statements run for each event not applied before: $1 id, $2 data,
	// $3 epoch, $4 region, $5 position.
	Statements []string `yaml:"statements" json:"statements"`
}

// HTTPSink sends each event in a request with an Idempotency-Key.
type HTTPSink struct {
	URL     config.Secret            `yaml:"url" json:"url"`
	Method  string                   `yaml:"method" json:"method,omitempty"`
	Headers map[string]config.Secret `yaml:"headers" json:"headers,omitempty"`
	Timeout config.Duration          `yaml:"timeout" json:"timeout,omitempty"`
}

const (
	sectionKey = "streams"
	refKey     = "streams"
)

// All returns the configured streams.
func All(c *config.Config) []Stream { return config.Get[[]Stream](c, sectionKey) }

// Find returns the named stream, or nil.
func Find(c *config.Config, name string) *Stream { return config.Find[Stream](c, sectionKey, name) }

// MemberName is its name.
func (s Stream) MemberName() string { return s.Name }

// Spec is the stream's end in region.
func (s *Stream) Spec(region string) stream.Spec {
	e := s.Regions[region]
	return stream.Spec{Broker: string(e.Broker), Stream: e.Stream, Subject: e.Subject}
}

// Consumer is the key of region's position in the sink.
func (s *Stream) Consumer(region string) string {
	c := s.Regions[region].Consumer
	if c == "" {
		c = s.Name
	}
	return region + "/" + c
}

// Targets are the stream's ends for a producer, in region order.
func (s *Stream) Targets() []produce.Target {
	var out []produce.Target
	for _, r := range s.regionNames() {
		sp := s.Spec(r)
		out = append(out, produce.Target{Region: r, Broker: sp.Broker, Stream: sp.Stream, Subject: sp.Subject})
	}
	return out
}

func (s *Stream) regionNames() []string {
	var rs []string
	for r := range s.Regions {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

func checkDatabase(ck *config.Check, f string, d Database) {
	if d.Driver != "sqlite" && d.Driver != "postgres" {
		ck.Bad(f+".driver", "want sqlite or postgres, got %q", d.Driver)
	}
	if d.DSN == "" {
		ck.Bad(f+".dsn", "required: the database's connection string (a file for sqlite)")
	}
}

func init() { member.Register(Kind{}) }

func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "stream",
		New: func() any { return new([]Stream) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Stream) {
				s := &(*v.(*[]Stream))[i]
				if s.Batch == 0 {
					s.Batch = 256
				}
				if s.MaxLag == 0 {
					s.MaxLag = 1000
				}
				if s.CatchUpAfter == 0 {
					s.CatchUpAfter = config.Duration(5 * time.Second)
				}
			}
		},
		Validate: func(ck *config.Check, v any) {
			seen := map[string]bool{}
			for i, s := range *v.(*[]Stream) {
				f := fmt.Sprintf("%s[%d]", sectionKey, i)
				ck.Name(f+".name", "stream", s.Name, seen)
				if len(s.Regions) != 2 {
					ck.Bad(f+".regions", "want the stream's end in each of two regions, got %d", len(s.Regions))
				}
				for _, r := range s.regionNames() {
					e, rf := s.Regions[r], f+".regions."+r
					ck.Region(rf, r)
					scheme, hosts, ok := strings.Cut(string(e.Broker), "://")
					if !ok || hosts == "" || (scheme != "nats" && scheme != "kafka") {
						ck.Bad(rf+".broker", "want nats://host:port or kafka://host:port[,host:port]")
					}
					if e.Stream == "" {
						ck.Bad(rf+".stream", "required: the JetStream stream or the Kafka topic")
					}
					if scheme == "kafka" && strings.Contains(hosts, "@") {
						ck.Bad(rf+".broker", "tandem does not speak SASL to Kafka yet: give the brokers without credentials")
					}
					if e.Subject != "" && scheme == "kafka" {
						ck.Bad(rf+".subject", "a Kafka topic has no subject: remove it")
					}
				}
				sf := f + ".sink"
				switch sk := s.Sink; {
				case (sk.SQL == nil) == (sk.HTTP == nil):
					ck.Bad(sf, "set exactly one of sql (statements in a database) or http (a call with an Idempotency-Key, and a ledger)")
				case sk.SQL != nil:
					checkDatabase(ck, sf+".sql", sk.SQL.Database)
					if len(sk.SQL.Statements) == 0 {
						ck.Bad(sf+".sql.statements", "required: the statements that apply one event ($1 id, $2 data, $3 epoch, $4 region, $5 position)")
					}
					if sk.Ledger != nil {
						ck.Bad(sf+".ledger", "an SQL sink keeps tandem's records in its own database: remove the ledger")
					}
				default:
					if u := string(sk.HTTP.URL); !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
						ck.Bad(sf+".http.url", "must start with http:// or https://")
					}
					if sk.Ledger == nil {
						ck.Bad(sf+".ledger", "required: the database tandem keeps the ids, positions and epoch of an HTTP sink in (driver, dsn)")
					} else {
						checkDatabase(ck, sf+".ledger", *sk.Ledger)
					}
				}
				if s.Batch < 0 || s.Batch > 10000 {
					ck.Bad(f+".batch", "want 1 to 10000 events, got %d", s.Batch)
				}
				if s.MaxLag < 0 {
					ck.Bad(f+".max_lag", "must not be negative")
				}
			}
		},
		Names: config.NamesOf[Stream],
		CheckRef: func(ck *config.Check, pg *config.ProtectionGroup, field, name string) {
			s := Find(ck.Config(), name)
			for _, r := range []string{pg.Primary, pg.Standby} {
				if _, ok := s.Regions[r]; !ok {
					ck.Bad(field, "stream %q has no end in %s, a region of %s", name, r, pg.Name)
				}
			}
		},
	}
}
