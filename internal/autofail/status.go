package autofail

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"tandem/internal/member"
)

func init() { member.RegisterStatus(status) }

// Status is the automatic-failover part of `tandem status`: what every
// observer saw lately, with each check's state, last result and history,
// and each protection group's last decision.
type Status struct {
	Observations []Observation             `json:"observations"`
	Decisions    map[string]Record         `json:"decisions"`
	Practice     map[string]PracticeRecord `json:"practice"`
}

func status(ctx context.Context, env *member.Env) (member.Part, bool) {
	watched := false
	for _, r := range env.Cfg.Regions {
		watched = watched || len(r.Health.Checks) > 0
	}
	for _, pg := range env.Cfg.ProtectionGroups {
		watched = watched || pg.Practice != nil
	}
	if !watched || env.Cfg.Witness == nil {
		return member.Part{}, false // observations and decisions live in the witness
	}
	p := member.Part{Key: "health", Title: "health and automatic failover"}
	w, err := env.Witness(ctx)
	if err != nil {
		p.Lines, p.Attention, p.Detail = []string{"the witness does not answer: " + err.Error()}, true, Status{}
		return p, true
	}
	st := Status{Decisions: map[string]Record{}}
	obs, err := LoadObservations(ctx, w)
	if err != nil {
		p.Lines, p.Attention = append(p.Lines, "observations in the witness cannot be read: "+err.Error()), true
	}
	slices.SortFunc(obs, func(a, b Observation) int { return strings.Compare(a.Observer, b.Observer) })
	st.Observations = obs
	now := time.Now()
	for _, o := range obs {
		age := now.Sub(o.At).Round(100 * time.Millisecond)
		if o.stale(now) {
			p.Lines = append(p.Lines, fmt.Sprintf("%s (%s): SILENT, last reported %s ago", o.Observer, o.Role, age))
			p.Attention = true
			continue
		}
		var views []string
		for _, r := range o.Regions {
			if !r.Down {
				views = append(views, r.Region+" up")
				continue
			}
			p.Attention = true
			views = append(views, r.Region+" DOWN ("+strings.Join(failing("", r), "; ")+")")
		}
		p.Lines = append(p.Lines, fmt.Sprintf("%s (%s, %s ago): %s", o.Observer, o.Role, age, strings.Join(views, ", ")))
	}
	st.Practice = map[string]PracticeRecord{}
	for i := range env.Cfg.ProtectionGroups {
		pg := &env.Cfg.ProtectionGroups[i]
		if pg.Practice != nil {
			pr, err := LoadPractice(ctx, env, pg.Name)
			switch {
			case err != nil:
				p.Lines, p.Attention = append(p.Lines, fmt.Sprintf("practice drills of %s: the record cannot be read: %v", pg.Name, err)), true
			case pr.At.IsZero():
				p.Lines = append(p.Lines, fmt.Sprintf("practice drills of %s: every %s, none yet", pg.Name, time.Duration(pg.Practice.Every)))
			default:
				st.Practice[pg.Name] = pr
				p.Lines = append(p.Lines, fmt.Sprintf("practice drills of %s: every %s; the last, %s in %s: %s", pg.Name, time.Duration(pg.Practice.Every), pr.At.Local().Format("2006-01-02 15:04:05"), pr.Standby, pr.Outcome))
				p.Attention = p.Attention || strings.HasPrefix(pr.Outcome, "failed")
			}
		}
		if pg.AutoFailover.Mode == "off" {
			continue
		}
		rec, _, err := LoadRecord(ctx, w, pg.Name)
		if err != nil {
			p.Lines, p.Attention = append(p.Lines, fmt.Sprintf("automatic failover of %s: its record cannot be read: %v", pg.Name, err)), true
			continue
		}
		st.Decisions[pg.Name] = rec
		d := rec.Decision
		if d.State == "" {
			p.Lines = append(p.Lines, fmt.Sprintf("automatic failover of %s (mode %s): no decision yet (the standby's serve decides)", pg.Name, pg.AutoFailover.Mode))
			continue
		}
		p.Lines = append(p.Lines, fmt.Sprintf("automatic failover of %s (mode %s): %s at %s: %s", pg.Name, pg.AutoFailover.Mode, strings.ToUpper(d.State), d.At.Local().Format("15:04:05"), d.Reason))
		if !rec.LastRun.IsZero() {
			p.Lines = append(p.Lines, fmt.Sprintf("  last automatic run %s (%s): %s", rec.LastRun.Local().Format("2006-01-02 15:04:05"), rec.Execution, rec.Outcome))
		}
		p.Attention = p.Attention || d.State != Healthy
	}
	p.Detail = st
	return p, true
}
