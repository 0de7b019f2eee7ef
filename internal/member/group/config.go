package group

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tandem/internal/config"
	"tandem/internal/location"
)

// Group is a set of Delta tables copied as one unit at workflow-run
// boundaries (a sync group: the file's groups[] section).
type Group struct {
	Name  string `yaml:"name" json:"name"`
	Owner string `yaml:"owner" json:"owner,omitempty"`
	// From and To are regions.
	From string `yaml:"from" json:"from"`
	To   string `yaml:"to" json:"to"`
	// Workflow, when set, makes the group's cut the end of the last
	// completed run; without it each sync copies the tables' latest
	// versions (standalone tables).
	Workflow *Workflow       `yaml:"workflow" json:"workflow,omitempty"`
	Tables   []Table         `yaml:"tables" json:"tables"`
	Interval config.Duration `yaml:"interval" json:"interval"`
	// Under `tandem serve`: a sync every Interval (default 15m); a failed
	// sync is tried again up to Retries times (default 3), waiting
	// RetryWait (default 1m) doubled each time.
	Retries   int             `yaml:"retries" json:"retries"`
	RetryWait config.Duration `yaml:"retry_wait" json:"retry_wait"`
	Notify    *config.Notify  `yaml:"notify" json:"notify,omitempty"`
}

// MemberName is its name.
func (g Group) MemberName() string { return g.Name }

// Workflow names the workflow that writes a group's tables.
type Workflow struct {
	Name string `yaml:"name" json:"name"`
	// RunID says how the tables' commits name the run that made them, so
	// that a completed run is cut at its own last commit: job
	// (commitInfo.job, as Databricks writes it), txn (a txn action whose
	// appId is the run id), txn:APP (the txn action of app APP, whose
	// version is the run id), user_metadata (commitInfo.userMetadata is the
	// run id, or a JSON object with a run_id). Empty: commits name no run,
	// and `group complete` cuts at the latest versions.
	RunID string `yaml:"run_id" json:"run_id,omitempty"`
	// Databricks is the job that runs the workflow, per region: its runs
	// are read from the Jobs API instead of `group complete`. The short
	// form (host, token, job_id) is the job in the group's from region.
	Databricks Jobs `yaml:"databricks" json:"databricks,omitempty"`
}

// Jobs are the Databricks jobs of a workflow by region.
type Jobs map[string]*Databricks

// Databricks is a job of the Jobs API 2.1 of a workspace.
type Databricks struct {
	Host  string        `yaml:"host" json:"host"`
	Token config.Secret `yaml:"token" json:"token"`
	JobID int64         `yaml:"job_id" json:"job_id"`
}

// fromRegion is the key of the short form until defaults names the region.
const fromRegion = ""

// UnmarshalYAML takes the short form (one job) or a map by region.
func (j *Jobs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			if k := n.Content[i].Value; k == "host" || k == "token" || k == "job_id" {
				var d Databricks
				if err := decodeStrict(n, &d); err != nil {
					return err
				}
				*j = Jobs{fromRegion: &d}
				return nil
			}
		}
	}
	m := map[string]*Databricks{}
	if err := decodeStrict(n, &m); err != nil {
		return err
	}
	*j = m
	return nil
}

// decodeStrict decodes a node refusing unknown keys, with their line.
func decodeStrict(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("line %d: databricks: %s", n.Line, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// Job returns the workflow's job in region, if it has one there.
func (w *Workflow) Job(region string) *Databricks {
	if w == nil {
		return nil
	}
	return w.Databricks[region]
}

// Table is one table of a group: its location in each region.
type Table struct {
	Name string `yaml:"name" json:"name"`
	From string `yaml:"from" json:"from" tandem:"path"`
	To   string `yaml:"to" json:"to" tandem:"path"`
}

const (
	sectionKey = "groups"
	refKey     = "groups"
)

// Groups returns the configured groups.
func Groups(c *config.Config) []Group { return config.Get[[]Group](c, sectionKey) }

// Find finds a group by name.
func Find(c *config.Config, name string) (*Group, error) {
	if g := config.Find[Group](c, sectionKey, name); g != nil {
		return g, nil
	}
	return nil, fmt.Errorf("no group named %q in %s (known: %s)", name, c.Path(), strings.Join(c.Names(sectionKey), ", "))
}

// section is the kind's configuration section.
func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "group",
		New: func() any { return new([]Group) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Group) {
				defaults(&(*v.(*[]Group))[i])
			}
		},
		Validate: func(ck *config.Check, v any) { validate(ck, *v.(*[]Group)) },
		Names:    config.NamesOf[Group],
		CheckRef: func(ck *config.Check, pg *config.ProtectionGroup, field, name string) {
			g, _ := Find(ck.Config(), name)
			if pair := []string{pg.Primary, pg.Standby}; !slices.Contains(pair, g.From) || !slices.Contains(pair, g.To) {
				ck.Bad(field, "group %q is not between %s and %s", name, pg.Primary, pg.Standby)
			}
		},
		Locations: func(c *config.Config, name string) []config.Owned {
			g, err := Find(c, name)
			if err != nil {
				return nil
			}
			var out []config.Owned
			for _, t := range g.Tables {
				out = append(out, config.Owned{Region: g.From, URL: t.From}, config.Owned{Region: g.To, URL: t.To})
			}
			return out
		},
		Owned: func(c *config.Config, v any) []config.Owned {
			var out []config.Owned
			for _, g := range *v.(*[]Group) {
				for _, t := range g.Tables {
					out = append(out, config.Owned{Region: g.From, URL: t.From}, config.Owned{Region: g.To, URL: t.To})
				}
			}
			return out
		},
	}
}

func defaults(g *Group) {
	if g.Interval == 0 {
		g.Interval = config.Duration(15 * time.Minute)
	}
	if g.Retries == 0 {
		g.Retries = 3
	}
	if g.RetryWait == 0 {
		g.RetryWait = config.Duration(time.Minute)
	}
	if w := g.Workflow; w != nil {
		if d, ok := w.Databricks[fromRegion]; ok {
			delete(w.Databricks, fromRegion)
			if _, set := w.Databricks[g.From]; !set {
				w.Databricks[g.From] = d
			}
		}
	}
	g.Notify.Default(g.Owner)
}

func validate(ck *config.Check, all []Group) {
	names := map[string]bool{}
	for i, g := range all {
		f := fmt.Sprintf("%s[%d]", sectionKey, i)
		ck.Name(f+".name", "group", g.Name, names)
		ck.Region(f+".from", g.From)
		ck.Region(f+".to", g.To)
		if len(g.Tables) == 0 {
			ck.Bad(f+".tables", "a group needs at least one table")
		}
		if w := g.Workflow; w != nil {
			if w.Name == "" {
				ck.Bad(f+".workflow.name", "required")
			}
			if r := w.RunID; r != "" && r != "job" && r != "txn" && r != "user_metadata" && !(strings.HasPrefix(r, "txn:") && len(r) > 4) {
				ck.Bad(f+".workflow.run_id", "%q is not job, txn, txn:APP_ID or user_metadata", r)
			}
			for region, d := range w.Databricks {
				df := f + ".workflow.databricks"
				if region != g.From || len(w.Databricks) > 1 {
					df += "." + region
					if region != g.From && region != g.To {
						ck.Bad(df, "%q is not the group's from or to region (%s, %s)", region, g.From, g.To)
					}
				}
				if d == nil {
					ck.Bad(df, "required: host, token and job_id")
					continue
				}
				if !strings.HasPrefix(d.Host, "https://") && !strings.HasPrefix(d.Host, "http://") {
					ck.Bad(df+".host", "%q must be the workspace URL (https://...)", d.Host)
				}
				if d.Token == "" {
					ck.Bad(df+".token", "required (use ${DATABRICKS_TOKEN})")
				}
				if d.JobID <= 0 {
					ck.Bad(df+".job_id", "required: the id of the job that writes the tables")
				}
			}
		}
		if time.Duration(g.Interval) < time.Second {
			ck.Bad(f+".interval", "%s is too short (at least 1s)", time.Duration(g.Interval))
		}
		if g.Retries < 1 {
			ck.Bad(f+".retries", "%d is out of range (at least 1)", g.Retries)
		}
		ck.Notify(f+".notify", g.Notify)
		tnames := map[string]bool{}
		for j, t := range g.Tables {
			tf := fmt.Sprintf("%s.tables[%d]", f, j)
			if !config.ValidName(t.Name) || tnames[t.Name] {
				ck.Bad(tf+".name", "%q is not a valid or unique table name", t.Name)
			}
			tnames[t.Name] = true
			from, ok1 := ck.Location(tf+".from", t.From)
			to, ok2 := ck.Location(tf+".to", t.To)
			if !ok1 || !ok2 {
				continue
			}
			if location.Overlaps(from, ck.Endpoint(g.From), to, ck.Endpoint(g.To)) {
				ck.Bad(tf, "from %s and to %s overlap", from, to)
			}
			ck.Target(tf+".to", tf, to, g.To, true)
		}
	}
}
