// Package alias is the member kind of catalog aliases (aliases[] in the
// configuration and in protection groups): logical names in a catalog
// database (views, synonyms, rows of a catalog table) that point at a
// region's physical tables, re-pointed all at once by package catalog when
// a region becomes primary.
package alias

import (
	"context"
	"fmt"
	"text/template"

	"tandem/internal/catalog"
	"tandem/internal/config"
	"tandem/internal/member"
	"tandem/internal/member/database"
	"tandem/internal/plan"
)

// Aliases are logical names in a catalog database that point at a
// region's physical tables or locations. A plan re-points them all in one
// transaction.
type Aliases struct {
	Name string `yaml:"name" json:"name"`
	// Driver is sqlite (the embedded default) or postgres.
	Driver string `yaml:"driver" json:"driver"`
	// DSN per region: the catalog the region's readers use. A region
	// missing here uses Database's server in that region.
	DSN      map[string]config.Secret `yaml:"dsn" json:"dsn,omitempty"`
	Database string                   `yaml:"database" json:"database,omitempty"`
	// Switch are the statements run for each alias, as Go templates with
	// .Alias, .Target and .Region, and the functions ident (a quoted
	// identifier) and quote (a string literal). Default: drop and create a
	// view.
	Switch []string `yaml:"switch" json:"switch"`
	// Names maps each alias to its physical name per region.
	Names map[string]map[string]string `yaml:"names" json:"names"`
}

const (
	sectionKey = "aliases"
	refKey     = "aliases"
	// Switch re-points every alias of a member, in one transaction.
	Switch = "aliases.switch"
)

// All returns the configured aliases.
func All(c *config.Config) []Aliases { return config.Get[[]Aliases](c, sectionKey) }

// Find returns the named aliases, or nil.
func Find(c *config.Config, name string) *Aliases { return config.Find[Aliases](c, sectionKey, name) }

// MemberName is its name.
func (a Aliases) MemberName() string { return a.Name }

var funcs = template.FuncMap{"ident": func(string) string { return "" }, "quote": func(string) string { return "" }}

func init() { member.Register(Kind{}) }

// section is the kind's configuration section.
func section() config.Section {
	return config.Section{
		Key: sectionKey, Ref: refKey, Noun: "aliases",
		New: func() any { return new([]Aliases) },
		Defaults: func(c *config.Config, v any) {
			for i := range *v.(*[]Aliases) {
				if a := &(*v.(*[]Aliases))[i]; len(a.Switch) == 0 {
					a.Switch = catalog.DefaultSwitch
				}
			}
		},
		Validate: validate,
		Names:    config.NamesOf[Aliases],
	}
}

func validate(ck *config.Check, v any) {
	seen := map[string]bool{}
	for i, a := range *v.(*[]Aliases) {
		f := fmt.Sprintf("%s[%d]", sectionKey, i)
		ck.Name(f+".name", "aliases", a.Name, seen)
		if a.Driver != "sqlite" && a.Driver != "postgres" {
			ck.Bad(f+".driver", "%q is not sqlite or postgres", a.Driver)
		}
		for r := range a.DSN {
			ck.Region(f+".dsn."+r, r)
		}
		if a.Database != "" && database.Find(ck.Config(), a.Database) == nil {
			ck.Bad(f+".database", "unknown database %q", a.Database)
		}
		for j, s := range a.Switch {
			if _, err := template.New("").Funcs(funcs).Parse(s); err != nil {
				ck.Bad(fmt.Sprintf("%s.switch[%d]", f, j), "%v", err)
			}
		}
		if len(a.Names) == 0 {
			ck.Bad(f+".names", "required: each alias with its physical name per region")
		}
		for n, per := range a.Names {
			for r := range per {
				ck.Region(f+".names."+n+"."+r, r)
			}
		}
	}
}

// Kind is the aliases kind.
type Kind struct{}

var _ member.Kind = Kind{}

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Switch} }

// Steps: a switchover or failover points the aliases at the new primary.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	if p.Type != plan.Switchover && p.Type != plan.Failover {
		return nil
	}
	return []member.Placed{{Group: "aliases", Step: plan.NewStep(Switch, name, p.To, "point the aliases at "+p.To+"'s tables, in one transaction", "stop")}}
}

// Do re-points every alias in the region's catalog.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	a := Find(x.Cfg, x.Step.Member)
	region := x.Step.Region
	dsn, err := DSN(x.Cfg, a, region)
	if err != nil {
		return err
	}
	var list []catalog.Alias
	for name, per := range a.Names {
		target, ok := per[region]
		if !ok {
			return fmt.Errorf("aliases %s: %s has no name in region %s", a.Name, name, region)
		}
		list = append(list, catalog.Alias{Alias: name, Target: target, Region: region})
	}
	if err := catalog.Switch(ctx, a.Driver, dsn, a.Switch, list); err != nil {
		return fmt.Errorf("aliases %s: %w", a.Name, err)
	}
	x.Printf("%d aliases of %s point at %s", len(list), a.Name, region)
	return nil
}

// DSN is the catalog readers of region use.
func DSN(c *config.Config, a *Aliases, region string) (string, error) {
	if dsn, ok := a.DSN[region]; ok {
		return string(dsn), nil
	}
	if d := database.Find(c, a.Database); d != nil {
		if side, ok := d.Side(region); ok {
			return string(side.DSN), nil
		}
	}
	return "", fmt.Errorf("aliases %s: no catalog for region %s (set dsn.%s or database)", a.Name, region, region)
}

// Status: aliases keep no records; status says how many there are.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	a := Find(env.Cfg, name)
	return member.Report{Kind: refKey, Member: name, Health: "ok",
		Lines:  []string{fmt.Sprintf("%d aliases in a %s catalog; a switchover or failover points them at the new primary", len(a.Names), a.Driver)},
		Detail: map[string]any{"aliases": name, "health": "ok", "count": len(a.Names)}}
}
