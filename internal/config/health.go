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
		for _, set := range []bool{c.HTTP != nil, c.TCP != nil, c.SQL != nil, c.Store != nil, c.ReplayLag != nil, c.Script != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			ck.Bad(cf, "set exactly one of http, tcp, sql, store, replay_lag or script")
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
		}
	}
}
