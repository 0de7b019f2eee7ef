// Package cdcpair is the member kind of change data capture pairs (cdc[] in
// the configuration and in protection groups): tables of a PostgreSQL
// source (a primary and its streaming standbys) replicated by logical
// decoding into a PostgreSQL target in the other region (package cdc),
// following a failover of the source on its own.
//
// The serve of the target's region runs it while the source's region holds
// the lease; every target transaction is fenced by the lease (fence.Guard
// from Env.Conditions) and by the epoch recorded in the target, which a
// plan raises when the lease moves (cdc.stop). A switchover drains it; a
// failover's plan validates the target against the source after the lease
// moved, when the source answers.
package cdcpair

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"tandem/internal/cdc"
	"tandem/internal/config"
	"tandem/internal/member/database"
)

// Pair is one replication of tables from a source into a target.
type Pair struct {
	Name string `yaml:"name" json:"name"`
	// Source are the source primary and its standbys, any order: tandem
	// replicates from the one that accepts writes. Database names a
	// databases[] pair instead (its primary and standby).
	Source   []config.Secret `yaml:"source" json:"source,omitempty"`
	Database string          `yaml:"database" json:"database,omitempty"`
	Target   Target          `yaml:"target" json:"target"`
	// Tables are schema.table names (public when there is no schema).
	Tables []string `yaml:"tables" json:"tables"`
	// AuditColumns maps a table to a timestamp column the application sets
	// on every change: a gap after a source failover is backfilled from it,
	// and tandem validate --around compares a window of it.
	AuditColumns map[string]string `yaml:"audit_columns" json:"audit_columns,omitempty"`
	// Slot and Publication in the source (default tandem_NAME).
	Slot        string `yaml:"slot" json:"slot"`
	Publication string `yaml:"publication" json:"publication"`
	// MaxLag (bytes of WAL) and RPO (seconds behind) bound the lag a
	// switchover's precheck accepts (defaults 16MiB and 1m).
	MaxLag config.Size     `yaml:"max_lag" json:"max_lag"`
	RPO    config.Duration `yaml:"rpo" json:"rpo"`
	// Batch bounds the row changes of one target transaction (default
	// 10000).
	Batch int `yaml:"batch" json:"batch"`
	// Journal is how long the target keeps the keys of each applied
	// transaction, to report those a source failover lost (default 24h).
	Journal config.Duration `yaml:"journal" json:"journal"`
	// Margin widens an audit-column backfill (default 1m): the clocks of
	// the source's servers may differ.
	Margin config.Duration `yaml:"margin" json:"margin"`
	// Window is the half-width of the audit-column window a failover's
	// validation compares around the failover (default 1h; tables without
	// an audit column are compared whole).
	Window config.Duration `yaml:"window" json:"window"`
}

// Target is where the tables are replicated to.
type Target struct {
	Region string        `yaml:"region" json:"region"`
	DSN    config.Secret `yaml:"dsn" json:"dsn"`
}

const (
	sectionKey = "cdc"
	refKey     = "cdc"
)

// All returns the configured pairs.
func All(c *config.Config) []Pair { return config.Get[[]Pair](c, sectionKey) }

// Find returns the named pair, or nil.
func Find(c *config.Config, name string) *Pair { return config.Find[Pair](c, sectionKey, name) }

// MemberName is its name.
func (p Pair) MemberName() string { return p.Name }

// Sources are the DSNs of the source's servers.
func (p *Pair) Sources(c *config.Config) []string {
	var out []string
	if d := database.Find(c, p.Database); d != nil {
		out = append(out, string(d.Primary.DSN), string(d.Standby.DSN))
	}
	for _, s := range p.Source {
		out = append(out, string(s))
	}
	return out
}

// Options are the replicator's options for p.
func (p *Pair) Options(c *config.Config) cdc.Options {
	return cdc.Options{Pair: p.Name, Sources: p.Sources(c), Target: string(p.Target.DSN), Tables: p.Tables, Audit: p.AuditColumns,
		Slot: p.Slot, Publication: p.Publication, Batch: p.Batch, Keep: time.Duration(p.Journal), Margin: time.Duration(p.Margin)}
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "cdc pair",
		New: func() any { return new([]Pair) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Pair) {
				p := &(*v.(*[]Pair))[i]
				name := "tandem_" + strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9_]`).ReplaceAllString(p.Name, "_"))
				if p.Slot == "" {
					p.Slot = name
				}
				if p.Publication == "" {
					p.Publication = name
				}
				if p.MaxLag == 0 {
					p.MaxLag = 16 << 20
				}
				if p.RPO == 0 {
					p.RPO = config.Duration(time.Minute)
				}
				if p.Batch == 0 {
					p.Batch = 10000
				}
				if p.Journal == 0 {
					p.Journal = config.Duration(24 * time.Hour)
				}
				if p.Margin == 0 {
					p.Margin = config.Duration(time.Minute)
				}
				if p.Window == 0 {
					p.Window = config.Duration(time.Hour)
				}
				for j, t := range p.Tables {
					if !strings.Contains(t, ".") {
						p.Tables[j] = "public." + t
					}
				}
				for t, col := range p.AuditColumns {
					if !strings.Contains(t, ".") {
						delete(p.AuditColumns, t)
						p.AuditColumns["public."+t] = col
					}
				}
			}
		},
		Validate: func(ck *config.Check, v any) {
			seen := map[string]bool{}
			for i, p := range *v.(*[]Pair) {
				f := fmt.Sprintf("%s[%d]", sectionKey, i)
				ck.Name(f+".name", "cdc pair", p.Name, seen)
				switch {
				case p.Database == "" && len(p.Source) == 0:
					ck.Bad(f+".source", "required: the source primary's connection string and its standbys' (or database: a databases[] pair)")
				case p.Database != "" && database.Find(ck.Config(), p.Database) == nil:
					ck.Bad(f+".database", "%q is not a databases[] pair", p.Database)
				}
				ck.Region(f+".target.region", p.Target.Region)
				if p.Target.DSN == "" {
					ck.Bad(f+".target.dsn", "required: the target's PostgreSQL connection string")
				}
				if len(p.Tables) == 0 {
					ck.Bad(f+".tables", "required: the tables to replicate (schema.table)")
				}
				for j, t := range p.Tables {
					s, n, _ := strings.Cut(t, ".")
					if !identRE.MatchString(s) || !identRE.MatchString(n) || strings.Count(t, ".") != 1 {
						ck.Bad(fmt.Sprintf("%s.tables[%d]", f, j), "%q is not schema.table in lower case letters, digits and _", t)
					}
					if slices.Index(p.Tables, t) != j {
						ck.Bad(fmt.Sprintf("%s.tables[%d]", f, j), "%q is listed twice", t)
					}
				}
				for t := range p.AuditColumns {
					if !slices.Contains(p.Tables, t) {
						ck.Bad(f+".audit_columns."+t, "%q is not one of tables", t)
					}
				}
				for k, s := range map[string]string{"slot": p.Slot, "publication": p.Publication} {
					if !identRE.MatchString(s) || len(s) > 63 {
						ck.Bad(f+"."+k, "%q is not a name PostgreSQL takes (lower case letters, digits and _, at most 63)", s)
					}
				}
				if p.Batch < 1 || p.Batch > 1_000_000 {
					ck.Bad(f+".batch", "%d is out of range (1 to 1000000)", p.Batch)
				}
				for k, d := range map[string]config.Duration{"rpo": p.RPO, "journal": p.Journal, "margin": p.Margin, "window": p.Window} {
					if d < 0 {
						ck.Bad(f+"."+k, "%s is negative", time.Duration(d))
					}
				}
				if p.MaxLag < 0 {
					ck.Bad(f+".max_lag", "is negative")
				}
			}
		},
		Names: config.NamesOf[Pair],
		CheckRef: func(ck *config.Check, pg *config.ProtectionGroup, field, name string) {
			p := Find(ck.Config(), name)
			if p.Target.Region != pg.Primary && p.Target.Region != pg.Standby {
				ck.Bad(field, "cdc pair %q replicates into %s, which is not %s or %s", name, p.Target.Region, pg.Primary, pg.Standby)
			}
		},
	}
}
