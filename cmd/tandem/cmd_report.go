package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/chromium"
	"tandem/internal/config"
	"tandem/internal/plan"
)

type reportOptions struct {
	planOptions
	out     string
	history bool
	pdf     bool
}

func newReportCommand() *cobra.Command {
	var o reportOptions
	c := &cobra.Command{
		Use:   "report --config FILE (EXECUTION | --history)",
		Short: "Write a plan run's report, or the history of drills and failovers, as one HTML file",
		Long: `Write a self-contained HTML file (no scripts, no files it loads) that a team
can hand to an auditor:

  EXECUTION    one plan run: what it was, who or what started it, the measured
               RTO and the part of it each group took, the timeline of every
               step with its output, the prechecks with their results (the RPO
               evidence at the decision: watermarks, lags, what a failover
               loses), who approved each approval step, and the configuration
               in force (secrets redacted)
  --history    every run of the protection group (drills, switchovers,
               failovers, failbacks) with its state and RTO, oldest first,
               with a chart of the RTO over time

--pdf writes the same document as a PDF (A4), printed by a headless Chromium
(Debian: apt-get install chromium; TANDEM_CHROMIUM names another browser).

--out names the file (default: tandem-report-EXECUTION.html or
tandem-history-GROUP.html in this folder, .pdf with --pdf; - writes to
standard output).

Exit status: 0 written, 1 failed, 2 bad arguments or an unknown execution.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if o.history == (len(args) == 1) {
				return usageError{fmt.Errorf("give an EXECUTION or --history (see tandem plan executions --config FILE)")}
			}
			return runReport(c.Context(), o, args, c.OutOrStdout())
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().StringVar(&o.pg, "protection-group", "", "the protection group (default: the only one)")
	c.Flags().StringVar(&o.out, "out", "", "the file to write (- for standard output)")
	c.Flags().BoolVar(&o.history, "history", false, "the history of every run instead of one run")
	c.Flags().BoolVar(&o.pdf, "pdf", false, "write a PDF (printed by a headless Chromium) instead of HTML")
	return c
}

func runReport(ctx context.Context, o reportOptions, args []string, w io.Writer) error {
	o.readOnly = true
	env, err := loadPlanEnv(o.planOptions)
	if err != nil {
		return err
	}
	var page bytes.Buffer
	name := ""
	if o.history {
		if err := writeHistory(ctx, &page, env); err != nil {
			return err
		}
		name = "tandem-history-" + env.pg.Name + ".html"
	} else {
		_, x, err := env.find(ctx, args[0])
		if err != nil {
			return usageError{err}
		}
		if err := writeReport(&page, x, env.cfg); err != nil {
			return err
		}
		name = "tandem-report-" + x.ID + ".html"
	}
	doc := page.Bytes()
	if o.pdf {
		if doc, err = chromium.PDF(ctx, doc); err != nil {
			return fmt.Errorf("--pdf: %w", err)
		}
		name = strings.TrimSuffix(name, ".html") + ".pdf"
	}
	switch o.out {
	case "-":
		_, err := w.Write(doc)
		return err
	case "":
		o.out = name
	}
	if err := os.WriteFile(o.out, doc, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s\n", o.out)
	return nil
}

// writeReport writes the report of x, with the configuration cfg in force
// (its JSON: secrets redacted).
func writeReport(w io.Writer, x *plan.Execution, cfg *config.Config) error {
	js, _ := json.MarshalIndent(cfg, "", "  ")
	r := reportData(x, string(js), cfg.Path())
	if pg, err := cfg.FindProtectionGroup(x.ProtectionGroup); err == nil {
		r.Target = time.Duration(pg.RTO).Seconds()
	}
	return reportPage.Execute(w, r)
}

// writeHistory writes the history page of env's protection group.
func writeHistory(ctx context.Context, w io.Writer, env *planEnv) error {
	all, errs := env.executions(ctx)
	slices.SortFunc(all, func(a, b *plan.Execution) int { return a.Decided.Compare(b.Decided) })
	return historyPage.Execute(w, historyData(env, all, errs))
}

// executions lists the protection group's runs in both regions, with the
// regions whose records could not be read.
func (e *planEnv) executions(ctx context.Context) ([]*plan.Execution, []string) {
	var all []*plan.Execution
	var errs []string
	for _, region := range []string{e.pg.Primary, e.pg.Standby} {
		ex, err := e.executor(ctx, region)
		if err == nil {
			var list []*plan.Execution
			if list, err = ex.List(ctx); err == nil {
				all = append(all, list...)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("the records in %s cannot be read: %v", region, err))
		}
	}
	return all, errs
}

type reportStep struct {
	*plan.StepRecord
	Group          string
	Offset, Length float64 // seconds from the decision, for the timeline
	Left, Width    float64 // percent of the run
}

type reportGroup struct {
	Name, State string
	Seconds     float64
	Percent     float64
}

type report struct {
	X                *plan.Execution
	Generated        string
	Decided, Ended   string
	Seconds          float64
	Groups           []reportGroup
	Steps, Prechecks []reportStep
	Approvals        []reportStep
	Config, CfgPath  string
	// Target is the protection group's rto (0: none set).
	Target float64
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
}

func reportData(x *plan.Execution, cfg, path string) report {
	r := report{X: x, Generated: time.Now().UTC().Format(time.RFC3339), Decided: stamp(&x.Decided), Ended: stamp(x.Ended), Config: cfg, CfgPath: path}
	end := time.Now()
	if x.Ended != nil {
		end = *x.Ended
	}
	r.Seconds = max(end.Sub(x.Decided).Seconds(), 0.001)
	for _, g := range x.Groups {
		var first, last *time.Time
		for _, s := range g.Steps {
			rs := reportStep{StepRecord: s, Group: g.Name}
			if s.Started != nil {
				rs.Offset = s.Started.Sub(x.Decided).Seconds()
				if first == nil || s.Started.Before(*first) {
					first = s.Started
				}
			}
			if s.Ended != nil && (last == nil || s.Ended.After(*last)) {
				last = s.Ended
			}
			rs.Length = s.Seconds()
			rs.Left = min(100*rs.Offset/r.Seconds, 100)
			rs.Width = max(min(100*rs.Length/r.Seconds, 100-rs.Left), 0.3)
			r.Steps = append(r.Steps, rs)
			if g.Name == "prechecks" {
				r.Prechecks = append(r.Prechecks, rs)
			}
			if strings.HasPrefix(s.Log, "approved by ") {
				r.Approvals = append(r.Approvals, rs)
			}
		}
		gs := 0.0
		if first != nil && last != nil {
			gs = last.Sub(*first).Seconds()
		}
		r.Groups = append(r.Groups, reportGroup{Name: g.Name, State: g.State, Seconds: gs, Percent: 100 * gs / r.Seconds})
	}
	return r
}

type history struct {
	Width     int
	Group     string
	Generated string
	Runs      []historyRun
	Errors    []string
	MaxRTO    float64
	MaxRPO    float64
}

type historyRun struct {
	*plan.Execution
	When   string
	Height float64 // of the chart's bar, percent
	X      int
	Y      float64
	// WorstLag is the largest known lag in time at the decision, of
	// Worst; Unknown counts members that could not tell.
	WorstLag  float64
	Worst     string
	Unknown   int
	RPOHeight float64
	RPOY      float64
}

func historyData(env *planEnv, all []*plan.Execution, errs []string) history {
	h := history{Group: env.pg.Name, Generated: time.Now().UTC().Format(time.RFC3339), Errors: errs, Width: 20 + 22*len(all)}
	for i, x := range all {
		hr := historyRun{Execution: x, When: x.Decided.UTC().Format("2006-01-02 15:04:05"), X: 10 + i*22}
		for _, m := range x.RPO {
			switch {
			case m.Unit != "": // counted (bytes, events): the report lists it
			case !m.Known:
				hr.Unknown++
			case hr.Worst == "" || m.Lag > hr.WorstLag:
				hr.WorstLag, hr.Worst = m.Lag, m.Member
			}
		}
		h.MaxRTO, h.MaxRPO = max(h.MaxRTO, x.RTO), max(h.MaxRPO, hr.WorstLag)
		h.Runs = append(h.Runs, hr)
	}
	bar := func(v, most float64) (height, y float64) {
		if most > 0 {
			height = max(100*v/most, 1)
		}
		return height, 105 - height
	}
	for i := range h.Runs {
		r := &h.Runs[i]
		r.Height, r.Y = bar(r.RTO, h.MaxRTO)
		r.RPOHeight, r.RPOY = bar(r.WorstLag, h.MaxRPO)
	}
	return h
}

const pageStyle = `<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#1b1f24;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eaeef2;padding:.3em .5em;text-align:left;vertical-align:top}
.succeeded{color:#1a7f37}.failed,.timed-out,.canceled{color:#cf222e}.skipped,.waiting,.queued,.running{color:#9a6700}
.bar{position:relative;height:.9em;background:#f6f8fa}.bar span{position:absolute;top:0;bottom:0;background:#0969da}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap;font-size:12px}.muted{color:#57606a}
</style>`

// dur writes seconds as a duration: 15m0s, 1.25s.
func dur(f float64) string {
	return time.Duration(f * float64(time.Second)).Round(10 * time.Millisecond).String()
}

// amount writes a lag in its unit: seconds as a duration, else "512 bytes".
func amount(f float64, unit string) string {
	if unit == "" {
		return dur(f)
	}
	return fmt.Sprintf("%.0f %s", f, unit)
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{"secs": func(f float64) string { return fmt.Sprintf("%.2fs", f) }, "dur": dur, "amount": amount}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tandem: {{.X.Type}} {{.X.ID}}</title>` + pageStyle + `</head><body>
<h1>{{.X.Type}} of {{.X.ProtectionGroup}}: <span class="{{.X.State}}">{{.X.State}}</span></h1>
<p class="muted">Execution {{.X.ID}} &middot; report written {{.Generated}} by tandem from the execution record</p>
<table>
<tr><th>from &rarr; to</th><td>{{.X.From}} &rarr; {{.X.To}}</td></tr>
<tr><th>decided</th><td>{{.Decided}}</td></tr>
<tr><th>ended</th><td>{{.Ended}}</td></tr>
<tr><th>measured RTO</th><td>{{if .X.RTO}}<b>{{secs .X.RTO}}</b> (from the decision until the last step succeeded){{else}}none: the run did not succeed{{end}}</td></tr>
<tr><th>RTO target</th><td>{{if .Target}}{{dur .Target}}{{if .X.RTO}}: {{if le .X.RTO .Target}}<span class="succeeded">met</span>{{else}}<span class="failed">missed</span>{{end}}{{end}}{{else}}none set (protection_groups[].rto){{end}}</td></tr>
<tr><th>started by</th><td>{{if .X.Trigger}}tandem (automatic): {{.X.Trigger.Reason}}{{else}}a person{{if .X.Runner}} ({{.X.Runner.Host}}, pid {{.X.Runner.PID}}){{end}}{{end}}</td></tr>
{{if .X.Error}}<tr><th>error</th><td class="failed">{{.X.Error}}</td></tr>{{end}}
</table>
<h2>Where the time went</h2>
<table><tr><th>group</th><th>state</th><th>seconds</th><th style="width:50%">share of the run</th></tr>
{{range .Groups}}<tr><td>{{.Name}}</td><td class="{{.State}}">{{.State}}</td><td>{{secs .Seconds}}</td><td><div class="bar"><span style="left:0;width:{{printf "%.1f" .Percent}}%"></span></div></td></tr>{{end}}
</table>
<h2>RPO: what the standby lacked at the decision</h2>
<p class="muted">{{if eq .X.Type "failover"}}A failover loses what the standby lacked: per member, how long its oldest change not yet in {{.X.To}} had waited.{{else}}Per member, how long its oldest change not yet in {{.X.To}} had waited; a {{.X.Type}} drains it before it switches.{{end}}</p>
<table><tr><th>member</th><th>lag at the decision</th><th>its RPO target</th><th>within</th></tr>
{{range .X.RPO}}<tr><td>{{.Member}}</td><td>{{if .Known}}{{amount .Lag .Unit}}{{else}}<span class="failed">unknown (it could not tell)</span>{{end}}</td><td>{{if .Target}}{{amount .Target .Unit}}{{else}}-{{end}}</td><td>{{if not .Known}}<span class="failed">unknown</span>{{else if not .Target}}-{{else if le .Lag .Target}}<span class="succeeded">yes</span>{{else}}<span class="failed">no</span>{{end}}</td></tr>{{else}}<tr><td colspan="4">no member that can tell its lag{{if not .X.Ended}} (or not measured yet){{end}}</td></tr>{{end}}
</table>
<h2>Prechecks (the RPO evidence at the decision)</h2>
<table><tr><th>step</th><th>region</th><th>result</th><th>what it found</th></tr>
{{range .Prechecks}}<tr><td>{{.Title}}<br><span class="muted">{{.ID}}</span></td><td>{{.Region}}</td><td class="{{.State}}">{{.State}}</td><td><pre>{{.Log}}{{.Error}}</pre></td></tr>{{else}}<tr><td colspan="4">none</td></tr>{{end}}
</table>
<h2>Approvals</h2>
<table>{{range .Approvals}}<tr><td>{{.ID}}</td><td>{{.Log}}</td></tr>{{else}}<tr><td>no step waited for an approval</td></tr>{{end}}</table>
<h2>Timeline of every step</h2>
<table><tr><th>group</th><th>step</th><th>region</th><th>state</th><th>started</th><th>took</th><th style="width:25%">when</th></tr>
{{range .Steps}}<tr><td>{{.Group}}</td><td>{{.Title}}<br><span class="muted">{{.ID}}{{if gt .Attempts 1}}, {{.Attempts}} attempts{{end}}</span>
{{if or .Log .Error}}<details><summary>output</summary><pre>{{.Log}}{{if .Error}}error: {{.Error}}{{end}}</pre></details>{{end}}</td>
<td>{{.Region}}</td><td class="{{.State}}">{{.State}}</td><td>+{{secs .Offset}}</td><td>{{secs .Length}}</td>
<td><div class="bar"><span style="left:{{printf "%.1f" .Left}}%;width:{{printf "%.1f" .Width}}%"></span></div></td></tr>{{end}}
</table>
<h2>Configuration in force (secrets redacted)</h2>
<p class="muted">{{.CfgPath}}, as loaded when this report was written</p>
<pre>{{.Config}}</pre>
</body></html>
`))

var historyPage = template.Must(template.New("history").Funcs(template.FuncMap{"secs": func(f float64) string { return fmt.Sprintf("%.1fs", f) }}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tandem: history of {{.Group}}</title>` + pageStyle + `</head><body>
<h1>Drills and failovers of {{.Group}}</h1>
<p class="muted">written {{.Generated}} by tandem from the execution records of both regions</p>
{{range .Errors}}<p class="failed">{{.}}</p>{{end}}
{{if .Runs}}<h2>RTO over time</h2>
<svg role="img" aria-label="RTO of each run" viewBox="0 0 {{.Width}} 110" width="100%" height="140" preserveAspectRatio="none">
{{range .Runs}}<rect x="{{.X}}" y="{{printf "%.1f" .Y}}" width="16" height="{{printf "%.1f" .Height}}" fill="{{if eq .State "succeeded"}}#0969da{{else}}#cf222e{{end}}"><title>{{.Type}} {{.ID}}: {{.State}}, RTO {{secs .RTO}}</title></rect>{{end}}
</svg>
<p class="muted">bar height: RTO (longest {{secs .MaxRTO}}); red: did not succeed</p>
<h2>RPO over time</h2>
<svg role="img" aria-label="RPO at each run's decision" viewBox="0 0 {{.Width}} 110" width="100%" height="140" preserveAspectRatio="none">
{{range .Runs}}<rect x="{{.X}}" y="{{printf "%.1f" .RPOY}}" width="16" height="{{printf "%.1f" .RPOHeight}}" fill="{{if .Unknown}}#cf222e{{else}}#8250df{{end}}"><title>{{.Type}} {{.ID}}: the standby lacked {{secs .WorstLag}} of {{or .Worst "no member"}}{{if .Unknown}}; {{.Unknown}} unknown{{end}}</title></rect>{{end}}
</svg>
<p class="muted">bar height: the largest lag of any member at the decision (largest {{secs .MaxRPO}}); red: some member could not tell</p>{{end}}
<h2>Every run</h2>
<table><tr><th>decided (UTC)</th><th>type</th><th>from &rarr; to</th><th>state</th><th>RTO</th><th>RPO at the decision</th><th>started by</th><th>execution</th></tr>
{{range .Runs}}<tr><td>{{.When}}</td><td>{{.Type}}</td><td>{{.From}} &rarr; {{.To}}</td><td class="{{.State}}">{{.State}}</td><td>{{if .RTO}}{{secs .RTO}}{{else}}-{{end}}</td><td>{{if .Worst}}{{secs .WorstLag}} ({{.Worst}}){{else}}-{{end}}{{if .Unknown}}, <span class="failed">{{.Unknown}} unknown</span>{{end}}</td><td>{{if .Trigger}}tandem (automatic){{else}}a person{{end}}</td><td>{{.ID}}</td></tr>{{else}}<tr><td colspan="8">no run yet</td></tr>{{end}}
</table>
</body></html>
`))
