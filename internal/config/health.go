package config

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"tandem/internal/location"
)

// Health is how a region is watched (regions[].health): its checks, run
// every Interval with Timeout each; a check that failed Failures times in
// a row makes the region down (package health).
type Health struct {
	Interval Duration      `yaml:"interval" json:"interval"`
	Timeout  Duration      `yaml:"timeout" json:"timeout"`
	Failures int           `yaml:"failures" json:"failures"`
	Checks   []HealthCheck `yaml:"checks" json:"checks"`
}

// HealthCheck is one check: exactly one of its kinds.
type HealthCheck struct {
	Name string `yaml:"name" json:"name"`
	// HTTP: a GET (or Method) whose status is Status (default any 2xx),
	// whose body matches Body (a regular expression) when set, answered
	// within Latency when set.
	HTTP *HTTPCheck `yaml:"http" json:"http,omitempty"`
	// TCP: a connection to Address.
	TCP *TCPCheck `yaml:"tcp" json:"tcp,omitempty"`
	// SQL: Query returns a row (whose first column is Expect when set).
	SQL *SQLCheck `yaml:"sql" json:"sql,omitempty"`
	// Store: a probe object written, read back and deleted under URL.
	Store *StoreCheck `yaml:"store" json:"store,omitempty"`
	// ReplayLag: a PostgreSQL standby has replayed all but at most Max
	// bytes of the WAL it received.
	ReplayLag *ReplayLagCheck `yaml:"replay_lag" json:"replay_lag,omitempty"`
	// Script: a program that exits 0.
	Script *ScriptAction `yaml:"script" json:"script,omitempty"`
	// StreamLag: a stream's broker in the region answers, and the events
	// of the region's log after its position in the sink are at most Max.
	StreamLag *StreamLagCheck `yaml:"stream_lag" json:"stream_lag,omitempty"`
}

type StreamLagCheck struct {
	Stream string `yaml:"stream" json:"stream"`
	Max    int64  `yaml:"max" json:"max"`
}

type HTTPCheck struct {
	Method  string            `yaml:"method" json:"method,omitempty"`
	URL     Secret            `yaml:"url" json:"url"`
	Headers map[string]Secret `yaml:"headers" json:"headers,omitempty"`
	Status  int               `yaml:"status" json:"status,omitempty"`
	Body    string            `yaml:"body" json:"body,omitempty"`
	Latency Duration          `yaml:"latency" json:"latency,omitempty"`
}

type TCPCheck struct {
	Address string `yaml:"address" json:"address"`
}

type SQLCheck struct {
	Driver string `yaml:"driver" json:"driver"`
	DSN    Secret `yaml:"dsn" json:"dsn"`
	Query  string `yaml:"query" json:"query"`
	Expect string `yaml:"expect" json:"expect,omitempty"`
}

type StoreCheck struct {
	URL string `yaml:"url" json:"url" tandem:"path"`
}

type ReplayLagCheck struct {
	DSN Secret `yaml:"dsn" json:"dsn"`
	Max Size   `yaml:"max" json:"max"`
}

// Kind names the check's kind.
func (h HealthCheck) Kind() string {
	switch {
	case h.HTTP != nil:
		return "http"
	case h.TCP != nil:
		return "tcp"
	case h.SQL != nil:
		return "sql"
	case h.Store != nil:
		return "store"
	case h.ReplayLag != nil:
		return "replay_lag"
	case h.Script != nil:
		return "script"
	case h.StreamLag != nil:
		return "stream_lag"
	}
	return ""
}

func (h *Health) defaults() {
	if h.Interval == 0 {
		h.Interval = Duration(10 * time.Second)
	}
	if h.Timeout == 0 {
		h.Timeout = Duration(5 * time.Second)
	}
	if h.Failures == 0 {
		h.Failures = 3
	}
	for i := range h.Checks {
		c := &h.Checks[i]
		if c.SQL != nil && c.SQL.Query == "" {
			c.SQL.Query = "select 1"
		}
		if c.StreamLag != nil && c.StreamLag.Max == 0 {
			c.StreamLag.Max = 1000
		}
		if c.ReplayLag != nil && c.ReplayLag.Max == 0 {
			c.ReplayLag.Max = 16 << 20
		}
		if c.HTTP != nil && c.HTTP.Method == "" {
			c.HTTP.Method = "GET"
		}
	}
}

func validateHealth(ck *Check, f string, h *Health) {
	if len(h.Checks) == 0 {
		return
	}
	if time.Duration(h.Interval) < 100*time.Millisecond {
		ck.Bad(f+".interval", "%s is too short (at least 100ms)", time.Duration(h.Interval))
	}
	if h.Timeout > h.Interval {
		ck.Bad(f+".timeout", "%s is longer than the interval (%s): a check would still run when the next one starts", time.Duration(h.Timeout), time.Duration(h.Interval))
	}
	if h.Failures < 1 || h.Failures > 100 {
		ck.Bad(f+".failures", "%d is out of range (1 to 100 consecutive failures)", h.Failures)
	}
	names := map[string]bool{}
	for i, c := range h.Checks {
		cf := fmt.Sprintf("%s.checks[%d]", f, i)
		ck.Name(cf+".name", "check", c.Name, names)
		n := 0
		for _, set := range []bool{c.HTTP != nil, c.TCP != nil, c.SQL != nil, c.Store != nil, c.ReplayLag != nil, c.Script != nil, c.StreamLag != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			ck.Bad(cf, "set exactly one of http, tcp, sql, store, replay_lag, stream_lag or script")
			continue
		}
		switch {
		case c.HTTP != nil:
			u := string(c.HTTP.URL)
			if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				ck.Bad(cf+".http.url", "must start with http:// or https://")
			}
			if c.HTTP.Status != 0 && (c.HTTP.Status < 100 || c.HTTP.Status > 599) {
				ck.Bad(cf+".http.status", "%d is not an HTTP status", c.HTTP.Status)
			}
			if _, err := regexp.Compile(c.HTTP.Body); err != nil {
				ck.Bad(cf+".http.body", "not a regular expression: %v", err)
			}
			if c.HTTP.Latency > h.Timeout {
				ck.Bad(cf+".http.latency", "%s is longer than the timeout (%s)", time.Duration(c.HTTP.Latency), time.Duration(h.Timeout))
			}
		case c.TCP != nil:
			if _, _, err := net.SplitHostPort(c.TCP.Address); err != nil {
				ck.Bad(cf+".tcp.address", "%q is not host:port", c.TCP.Address)
			}
		case c.SQL != nil:
			if c.SQL.Driver != "sqlite" && c.SQL.Driver != "postgres" {
				ck.Bad(cf+".sql.driver", "%q is not sqlite or postgres", c.SQL.Driver)
			}
			if c.SQL.DSN == "" {
				ck.Bad(cf+".sql.dsn", "required")
			}
		case c.Store != nil:
			if _, err := location.Parse(c.Store.URL); err != nil {
				ck.Bad(cf+".store.url", "%v", err)
			}
		case c.ReplayLag != nil:
			if c.ReplayLag.DSN == "" {
				ck.Bad(cf+".replay_lag.dsn", "required: a connection string of the standby server")
			}
		case c.Script != nil:
			if len(c.Script.Command) == 0 {
				ck.Bad(cf+".script.command", "required")
			}
		case c.StreamLag != nil:
			if c.StreamLag.Stream == "" {
				ck.Bad(cf+".stream_lag.stream", "required: the name of a streams[] entry")
			}
			if c.StreamLag.Max < 0 {
				ck.Bad(cf+".stream_lag.max", "must not be negative")
			}
		}
	}
}

// AutoFailover is a protection group's trigger policy
// (protection_groups[].auto_failover): when the standby's serve and the
// witness observer agree that the primary region is down, what tandem
// does (package autofail).
type AutoFailover struct {
	// Mode is off (the default: nothing is watched), alert-only (the
	// decision is taken and said, nothing runs) or failover (the failover
	// plan runs).
	Mode string `yaml:"mode" json:"mode"`
	// MinDown is how long the primary must have been seen down by every
	// observer before the failover runs (default 1m).
	MinDown Duration `yaml:"min_down" json:"min_down"`
	// MinInterval is the least time between two automatic runs (default
	// 1h): after one, the next decision only alerts until it passed.
	MinInterval Duration `yaml:"min_interval" json:"min_interval"`
	// Blocked windows never run a failover; with Allowed windows, only
	// those do.
	Blocked []Window `yaml:"blocked" json:"blocked,omitempty"`
	Allowed []Window `yaml:"allowed" json:"allowed,omitempty"`
	// MaxLag is the most a failover may lose: while a member lags more
	// (a replication's watermark, a group's completed run not yet in the
	// standby), or cannot tell, the decision is withheld. 0: no ceiling.
	MaxLag Duration `yaml:"max_lag" json:"max_lag,omitempty"`
	// Approval makes a decision to fail over wait for a person:
	// `tandem auto-failover approve`.
	Approval bool `yaml:"approval" json:"approval,omitempty"`
}

// Window is a weekly time range in UTC: the days it applies to (mon ...
// sun; all when empty) and from-to as HH:MM (to may be earlier than from:
// across midnight).
type Window struct {
	Days []string `yaml:"days" json:"days,omitempty"`
	From string   `yaml:"from" json:"from"`
	To   string   `yaml:"to" json:"to"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func clock(s string) (int, bool) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

// Contains reports whether t (in UTC) falls in the window.
func (w Window) Contains(t time.Time) bool {
	t = t.UTC()
	from, _ := clock(w.From)
	to, _ := clock(w.To)
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	if from > to && m < to {
		day = (day + 6) % 7 // after midnight: the window started the day before
	}
	if len(w.Days) > 0 {
		found := false
		for _, d := range w.Days {
			found = found || weekdays[strings.ToLower(d)] == day
		}
		if !found {
			return false
		}
	}
	if from <= to {
		return m >= from && m < to
	}
	return m >= from || m < to
}

func (a *AutoFailover) defaults() {
	if a.Mode == "" {
		a.Mode = "off"
	}
	if a.MinDown == 0 {
		a.MinDown = Duration(time.Minute)
	}
	if a.MinInterval == 0 {
		a.MinInterval = Duration(time.Hour)
	}
}

func validateAutoFailover(ck *Check, f string, a *AutoFailover, pg *ProtectionGroup) {
	switch a.Mode {
	case "off":
		return
	case "alert-only", "failover":
	default:
		ck.Bad(f+".mode", "%q is not off, alert-only or failover", a.Mode)
		return
	}
	for _, r := range []string{pg.Primary, pg.Standby} {
		if reg := ck.regions[r]; reg != nil && len(reg.Health.Checks) == 0 {
			ck.Bad(f, "region %s has no health checks (regions[].health.checks): nothing would tell that it is down", r)
		}
	}
	for kind, ws := range map[string][]Window{"blocked": a.Blocked, "allowed": a.Allowed} {
		for i, w := range ws {
			validateWindow(ck, fmt.Sprintf("%s.%s[%d]", f, kind, i), w)
		}
	}
}

func validateWindow(ck *Check, f string, w Window) {
	if _, ok := clock(w.From); !ok {
		ck.Bad(f+".from", "%q is not a time of day (HH:MM, UTC)", w.From)
	}
	if _, ok := clock(w.To); !ok || w.To == w.From {
		ck.Bad(f+".to", "%q is not a time of day (HH:MM, UTC) other than from", w.To)
	}
	for _, d := range w.Days {
		if _, ok := weekdays[strings.ToLower(d)]; !ok {
			ck.Bad(f+".days", "%q is not a day (mon, tue, wed, thu, fri, sat, sun)", d)
		}
	}
}

// Practice is a protection group's scheduled drill
// (protection_groups[].practice): every Every, within Window when set,
// the standby's serve runs drill-start, the standby region's health
// checks, and drill-stop, and records and tells the outcome.
type Practice struct {
	Every  Duration `yaml:"every" json:"every"`
	Window *Window  `yaml:"window" json:"window,omitempty"`
}

func validatePractice(ck *Check, f string, p *Practice) {
	if p == nil {
		return
	}
	if time.Duration(p.Every) < time.Second {
		ck.Bad(f+".every", "%s is too short (at least 1s; a drill a week is 168h)", time.Duration(p.Every))
	}
	if p.Window != nil {
		validateWindow(ck, f+".window", *p.Window)
	}
}
