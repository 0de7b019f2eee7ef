package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/config"
	"tandem/internal/member"
	"tandem/internal/plan"
	"tandem/internal/runner"
)

type planOptions struct {
	config string
	pg     string
	json   bool
	dryRun bool
	// readOnly: the command changes nothing (show, precheck, --dry-run),
	// so it creates no folder either (member.Env.ReadOnly).
	readOnly bool
}

func newPlanCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "plan",
		Short: "Show, check and run DR plans: switchover, failover, failback, drills",
		Long: `A DR plan moves a protection group's work between its regions. Plans are
generated from the configuration: built-in groups in a fixed order (prechecks,
lease, quiesce, drain, reverse, promote, aliases, activate), with the steps
the members need, and the user groups placed before or after them. Groups
run in order; the steps of a group run in parallel.

  switchover   planned: the primary is healthy, is drained and hands over
  failover     the primary is gone: the standby takes the lease and takes over
  failback     after a failover: the returning region becomes the standby
  drill-start  freeze the standby at a consistent point to test it
  drill-stop   let replication into the standby resume

The direction comes from the region lease: a plan moves from the region that
holds it (or the configured primary, before any lease) to the other. Every run
is recorded in the state of the region that is primary at its end, as it
goes; a run that was killed is continued with 'plan resume'.`,
	}
	c.AddCommand(newPlanShowCommand(), newPlanPrecheckCommand(), newPlanRunCommand(), newPlanExecutionsCommand())
	for _, a := range []struct{ use, short string }{
		{"resume EXECUTION", "Continue an execution that was interrupted or killed"},
		{"retry EXECUTION [STEP]", "Run the failed steps (or STEP) again and continue"},
		{"skip EXECUTION STEP", "Go on without a failed step"},
		{"cancel EXECUTION", "Stop an execution; a running one stops at its next poll"},
		{"approve EXECUTION [STEP]", "Approve a pause step (or every waiting one)"},
	} {
		c.AddCommand(newPlanActCommand(a.use, a.short))
	}
	return c
}

func planFlags(c *cobra.Command, o *planOptions) {
	configFlag(c.Flags(), &o.config)
	c.Flags().StringVar(&o.pg, "protection-group", "", "the protection group (default: the only one)")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
}

// planEnv is what every plan command needs.
type planEnv struct {
	cfg *config.Config
	env *member.Env
	pg  *config.ProtectionGroup
}

func loadPlanEnv(o planOptions) (*planEnv, error) {
	env, err := loadEnv(o.config, newLogger(0))
	if err != nil {
		return nil, err
	}
	env.ReadOnly = o.readOnly || o.dryRun
	cfg := env.Cfg
	var pg *config.ProtectionGroup
	switch {
	case o.pg != "":
		if pg, err = cfg.FindProtectionGroup(o.pg); err != nil {
			return nil, usageError{err}
		}
	case len(cfg.ProtectionGroups) == 1:
		pg = &cfg.ProtectionGroups[0]
	case len(cfg.ProtectionGroups) == 0:
		return nil, usageError{fmt.Errorf("%s has no protection_groups: plans move a protection group", o.config)}
	default:
		return nil, usageError{errors.New("--protection-group is required: the config has more than one")}
	}
	return &planEnv{cfg: cfg, env: env, pg: pg}, nil
}

// hint is what a printed plan command needs to run as pasted: --config,
// and --protection-group when the file has more than one.
func (e *planEnv) hint() string { return e.env.Hint(e.pg) }

// build generates a plan of typ in the direction the lease says now. With
// lenient, a witness that does not answer gives the plan from the
// configured primary, with a warning (plan show).
func (e *planEnv) build(ctx context.Context, typ string, lenient bool) (*plan.Plan, error) {
	if !slices.Contains(config.PlanTypes, typ) {
		return nil, usageError{fmt.Errorf("unknown plan type %q (%s)", typ, strings.Join(config.PlanTypes, ", "))}
	}
	if lenient {
		if _, _, err := e.env.Lease(ctx, e.pg.Name); err != nil {
			fmt.Fprintf(os.Stderr, "tandem: the witness does not answer (%v); showing the plan from the configured primary\n", err)
			return member.Build(e.env, e.pg, typ, e.pg.Primary, e.pg.Standby)
		}
	}
	return member.PlanNow(ctx, e.env, e.pg, typ)
}

// loadPlan loads the configuration and builds a plan of typ.
func loadPlan(ctx context.Context, o planOptions, typ string, lenient bool) (*planEnv, *plan.Plan, error) {
	env, err := loadPlanEnv(o)
	if err != nil {
		return nil, nil, err
	}
	p, err := env.build(ctx, typ, lenient)
	return env, p, err
}

func (e *planEnv) executor(ctx context.Context, home string) (*plan.Executor, error) {
	return member.Executor(ctx, e.env, e.pg, home, newLogger(0))
}

// find looks for an execution in both regions' records.
func (e *planEnv) find(ctx context.Context, id string) (*plan.Executor, *plan.Execution, error) {
	var errs []error
	for _, region := range []string{e.pg.Standby, e.pg.Primary} {
		ex, err := e.executor(ctx, region)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		x, _, err := ex.Load(ctx, id)
		if err == nil {
			return ex, x, nil
		}
		errs = append(errs, err)
	}
	return nil, nil, usageError{errors.Join(errs...)}
}

func newPlanShowCommand() *cobra.Command {
	var o planOptions
	c := &cobra.Command{
		Use:   "show --config FILE TYPE",
		Short: "Print the plan the configuration gives now",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.readOnly = true
			_, p, err := loadPlan(c.Context(), o, args[0], true)
			if err != nil {
				return err
			}
			return printPlan(os.Stdout, p, o.json)
		},
	}
	planFlags(c, &o)
	return c
}

// checkResult is one precheck's outcome.
type checkResult struct {
	ID      string `json:"id"`
	Region  string `json:"region"`
	OK      bool   `json:"ok"`
	Warning bool   `json:"warning,omitempty"` // failed, but the plan goes on
	Output  string `json:"output,omitempty"`
	Error   string `json:"error,omitempty"`
}

func newPlanPrecheckCommand() *cobra.Command {
	var o planOptions
	c := &cobra.Command{
		Use:   "precheck --config FILE TYPE",
		Short: "Run a plan's prechecks now, changing nothing (suitable for a schedule)",
		Long: `Run the prechecks of a plan without running it: lease reachable and held by the
expected region, replication watermarks within their RPO and replicas free of
foreign writes, group manifests complete, standby databases in recovery and
within their lag, and every step's endpoint answering. Exit status 1 when a
check that would stop the plan fails; warnings (for example the RPO a
failover would lose) do not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.readOnly = true
			return runPrecheck(c.Context(), o, args[0], os.Stdout)
		},
	}
	planFlags(c, &o)
	return c
}

func runPrecheck(ctx context.Context, o planOptions, typ string, w io.Writer) error {
	env, p, err := loadPlan(ctx, o, typ, false)
	if err != nil {
		return err
	}
	pc := runPrechecks(ctx, env, p)
	if o.json {
		if err := writeJSON(w, pc); err != nil {
			return err
		}
	} else {
		pc.print(w)
	}
	return pc.err()
}

// prechecks are the outcomes of a plan's prechecks.
type prechecks struct {
	Plan   string        `json:"plan"`
	From   string        `json:"from"`
	To     string        `json:"to"`
	OK     bool          `json:"ok"`
	Checks []checkResult `json:"checks"`
	failed int
}

// runPrechecks runs the prechecks of p at once, changing nothing.
func runPrechecks(ctx context.Context, env *planEnv, p *plan.Plan) prechecks {
	steps := &member.Steps{Env: env.env}
	var checks []*plan.Step
	for _, g := range p.Groups {
		if g.Name == "prechecks" {
			checks = g.Steps
		}
	}
	results := make([]checkResult, len(checks))
	var wg sync.WaitGroup
	for i, s := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, min(s.Timeout, time.Minute))
			defer cancel()
			var out strings.Builder
			err := steps.Run(cctx, p, s, "", &out)
			results[i] = checkResult{ID: s.ID, Region: s.Region, OK: err == nil, Output: strings.TrimSpace(out.String())}
			if err != nil {
				results[i].Error = err.Error()
				results[i].Warning = s.OnError == "continue"
			}
		})
	}
	wg.Wait()
	pc := prechecks{Plan: p.Type, From: p.From, To: p.To, Checks: results}
	for _, r := range results {
		if !r.OK && !r.Warning {
			pc.failed++
		}
	}
	pc.OK = pc.failed == 0
	return pc
}

func (pc prechecks) print(w io.Writer) {
	fmt.Fprintf(w, "prechecks of %s %s -> %s\n", pc.Plan, pc.From, pc.To)
	for _, r := range pc.Checks {
		mark := "ok  "
		switch {
		case r.Warning:
			mark = "WARN"
		case !r.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s\n", mark, r.ID)
		printLines(w, "         ", r.Output+"\n"+r.Error)
	}
}

func (pc prechecks) err() error {
	if pc.failed > 0 {
		return fmt.Errorf("%d of %d prechecks of %s failed", pc.failed, len(pc.Checks), pc.Plan)
	}
	return nil
}

func newPlanRunCommand() *cobra.Command {
	var o planOptions
	c := &cobra.Command{
		Use:   "run --config FILE TYPE",
		Short: "Run a plan, recording every step as it goes",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runPlan(c.Context(), o, args[0], os.Stdout)
		},
	}
	planFlags(c, &o)
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "change nothing: print the plan and run its prechecks")
	return c
}

func runPlan(ctx context.Context, o planOptions, typ string, w io.Writer) error {
	decided := time.Now()
	env, p, err := loadPlan(ctx, o, typ, false)
	if err != nil {
		return err
	}
	if o.dryRun {
		return dryRunPlan(ctx, env, p, o.json, w)
	}
	ex, err := env.executor(ctx, p.Home)
	if err != nil {
		return err
	}
	if !o.json {
		fmt.Fprintf(w, "%s of %s: %s -> %s\n", p.Type, p.ProtectionGroup, p.From, p.To)
		showProgress(w, ex)
	}
	if p.Type == plan.Failover {
		warnLivePrimary(ctx, env, p, w)
	}
	x, err := ex.Run(ctx, p, decided)
	return reportExecution(w, x, err, o.json)
}

// dryRunPlan prints the plan a run would follow and its prechecks' outcome,
// changing nothing and recording no execution.
func dryRunPlan(ctx context.Context, env *planEnv, p *plan.Plan, asJSON bool, w io.Writer) error {
	pc := runPrechecks(ctx, env, p)
	if asJSON {
		if err := writeJSON(w, map[string]any{"dry_run": true, "plan": p, "prechecks": pc}); err != nil {
			return err
		}
		return pc.err()
	}
	if err := printPlan(w, p, false); err != nil {
		return err
	}
	fmt.Fprintln(w)
	pc.print(w)
	if err := pc.err(); err != nil {
		fmt.Fprintf(w, "dry run: nothing was changed; the run would stop at its prechecks\n")
		return err
	}
	fmt.Fprintf(w, "dry run: nothing was changed; to run it: tandem plan run %s %s\n", env.hint(), p.Type)
	return nil
}

// warnLivePrimary says at once when a failover will wait for a primary
// whose lease is still being renewed: who holds it, until when, and how to
// go on.
func warnLivePrimary(ctx context.Context, env *planEnv, p *plan.Plan, w io.Writer) {
	rec, ok, err := env.env.Lease(ctx, env.pg.Name)
	if err != nil || !ok || rec.Holder != p.From || rec.Expired(time.Now()) {
		return
	}
	ttl := rec.Expires.Sub(rec.Renewed)
	fmt.Fprintf(w, "WAITING: %s holds the lease of %s until %s (renewed %s ago by %s)",
		p.From, env.pg.Name, rec.Expires.Local().Format("15:04:05"), time.Since(rec.Renewed).Round(time.Second), rec.By)
	if time.Since(rec.Renewed) < ttl {
		fmt.Fprintf(w, ": it is being renewed, so %s's serve is alive.\n", p.From)
	} else {
		fmt.Fprintln(w, ".")
	}
	fmt.Fprintf(w, "  The failover takes the lease only once it expires, so that %s has stopped first.\n", p.From)
	fmt.Fprintf(w, "  If %s is healthy, cancel this (Ctrl-C, then tandem plan cancel %s ID) and run a switchover instead:\n", p.From, env.hint())
	fmt.Fprintf(w, "    tandem plan run %s switchover\n", env.hint())
	fmt.Fprintf(w, "  If it is not, stop %s's serve (or cut it off from the witness): the failover goes on by itself when the lease runs out.\n", p.From)
}

// showProgress prints the run's progress to w instead of logging it,
// keeping what else the executor does on each change (its alerts).
func showProgress(w io.Writer, ex *plan.Executor) {
	show, also := progressPrinter(w, ex), ex.OnChange
	ex.OnChange = func(x *plan.Execution) {
		show(x)
		if also != nil {
			also(x)
		}
	}
	ex.Log = nil
}

func reportExecution(w io.Writer, x *plan.Execution, err error, asJSON bool) error {
	if x == nil {
		return err
	}
	if asJSON {
		if jerr := writeJSON(w, x); jerr != nil {
			return jerr
		}
	} else if x.State == plan.Succeeded {
		fmt.Fprintf(w, "%s %s succeeded: RTO %.1fs (from the decision at %s)\n", x.Type, x.ID, x.RTO, x.Decided.Local().Format("15:04:05"))
	}
	return err
}

func newPlanActCommand(use, short string) *cobra.Command {
	var o planOptions
	action := strings.Fields(use)[0]
	nargs := map[string][2]int{"resume": {1, 1}, "retry": {1, 2}, "skip": {2, 2}, "cancel": {1, 1}, "approve": {1, 2}}[action]
	c := &cobra.Command{
		Use:   action + " --config FILE " + strings.TrimPrefix(use, action+" "),
		Short: short,
		Args:  cobra.RangeArgs(nargs[0], nargs[1]),
		RunE: func(c *cobra.Command, args []string) error {
			return runPlanAct(c.Context(), o, action, args, os.Stdout)
		},
	}
	planFlags(c, &o)
	return c
}

func runPlanAct(ctx context.Context, o planOptions, action string, args []string, w io.Writer) error {
	env, err := loadPlanEnv(o)
	if err != nil {
		return err
	}
	id, step := args[0], ""
	if len(args) > 1 {
		step = args[1]
	}
	ex, x, err := env.find(ctx, id)
	if err != nil {
		return err
	}
	switch action {
	case "cancel":
		x, err = ex.Cancel(ctx, id)
		if err == nil && !o.json {
			if x.State != plan.Canceled {
				fmt.Fprintf(w, "%s: cancel requested; the running tandem stops at its next poll (then: tandem plan executions %s %s)\n", id, env.hint(), id)
			} else {
				fmt.Fprintf(w, "%s: cancel done\n", id)
				printLeftBehind(w, ex, x)
			}
		}
		return reportExecution(w, x, err, o.json)
	case "approve":
		if x, err = ex.Approve(ctx, id, step, whoAmI()); err != nil {
			return err
		}
		if runner.Live(x.Runner) {
			fmt.Fprintf(w, "%s: approved; the running tandem goes on\n", id)
			return nil
		}
	}
	// The rest continue the execution here.
	p, err := member.Build(env.env, env.pg, x.Type, x.From, x.To)
	if err != nil {
		return err
	}
	if !o.json {
		fmt.Fprintf(w, "%s %s of %s: %s -> %s\n", action, x.ID, x.ProtectionGroup, x.From, x.To)
		showProgress(w, ex)
	}
	switch action {
	case "retry":
		x, err = ex.Retry(ctx, p, id, step)
	case "skip":
		x, err = ex.Skip(ctx, p, id, step)
	default: // resume, approve
		x, err = ex.Resume(ctx, p, id, nil)
	}
	return reportExecution(w, x, err, o.json)
}

// printLeftBehind says what a canceled run leaves: what it changed and
// what it did not do, and the command that goes on.
func printLeftBehind(w io.Writer, ex *plan.Executor, x *plan.Execution) {
	changed, notDone := member.Undone(x)
	if !changed {
		fmt.Fprintln(w, "  it had changed nothing (only prechecks ran)")
		return
	}
	fmt.Fprintf(w, "  it had changed things; not done: %s\n", strings.Join(notDone, ", "))
	fmt.Fprintf(w, "  to go on from where it stopped: %s\n", strings.Trim(ex.Command("resume", x.ID), "`"))
}

func newPlanExecutionsCommand() *cobra.Command {
	var o planOptions
	c := &cobra.Command{
		Use:   "executions --config FILE [EXECUTION]",
		Short: "List past plan runs with their RTO, or show one with its steps",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runExecutions(c.Context(), o, args, os.Stdout)
		},
	}
	planFlags(c, &o)
	return c
}

func runExecutions(ctx context.Context, o planOptions, args []string, w io.Writer) error {
	env, err := loadPlanEnv(o)
	if err != nil {
		return err
	}
	if len(args) == 1 {
		_, x, err := env.find(ctx, args[0])
		if err != nil {
			return err
		}
		if o.json {
			return writeJSON(w, x)
		}
		printExecution(w, x)
		return nil
	}
	all, errs := env.executions(ctx)
	for _, e := range errs {
		fmt.Fprintf(os.Stderr, "tandem: %s\n", e)
	}
	slices.SortFunc(all, func(a, b *plan.Execution) int { return b.Decided.Compare(a.Decided) })
	if o.json {
		return writeJSON(w, all)
	}
	fmt.Fprintf(w, "%-32s %-12s %-9s %-20s %-20s %s\n", "EXECUTION", "TYPE", "STATE", "FROM -> TO", "DECIDED", "RTO")
	for _, x := range all {
		rto := "-"
		if x.State == plan.Succeeded {
			rto = fmt.Sprintf("%.1fs", x.RTO)
		}
		fmt.Fprintf(w, "%-32s %-12s %-9s %-20s %-20s %s\n", x.ID, x.Type, x.State, x.From+" -> "+x.To, x.Decided.Local().Format("2006-01-02 15:04:05"), rto)
	}
	return nil
}
