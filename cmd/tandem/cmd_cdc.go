package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/cdc"
	"tandem/internal/fence"
	"tandem/internal/member"
	"tandem/internal/member/cdcpair"
)

func newCDCCommand() *cobra.Command {
	c := &cobra.Command{Use: "cdc", Short: "Replicate PostgreSQL tables by change data capture"}
	c.AddCommand(newCDCRunCommand(), newCDCStatusCommand())
	return c
}

// findPair loads the configuration and the named pair.
func findPair(path, name string) (*member.Env, *cdcpair.Pair, error) {
	env, err := loadEnv(path, newLogger(slog.LevelInfo))
	if err != nil {
		return nil, nil, err
	}
	p := cdcpair.Find(env.Cfg, name)
	if p == nil {
		var known []string
		for _, x := range cdcpair.All(env.Cfg) {
			known = append(known, x.Name)
		}
		return nil, nil, usageError{fmt.Errorf("no cdc pair named %q in %s (known: %s)", name, env.Cfg.Path(), strings.Join(known, ", "))}
	}
	return env, p, nil
}

// pairOptions are the replicator's options, fenced by the lease when the
// pair is in a protection group: the source's region must hold it.
func pairOptions(env *member.Env, p *cdcpair.Pair, what string) cdc.Options {
	o := p.Options(env.Cfg)
	o.Log = env.Log
	if pg := env.ProtectionGroupOf("cdc", p.Name); pg != nil {
		src := cdcpair.SourceRegion(pg, p)
		o.Region = src
		o.Guard = fence.New(fmt.Sprintf("%s of cdc %s, acting for %s", what, p.Name, src), env.Conditions("cdc", p.Name, src, p.Target.Region)...)
	}
	return o
}

func newCDCRunCommand() *cobra.Command {
	var cfg string
	c := &cobra.Command{
		Use:   "run NAME",
		Short: "Replicate a cdc pair in the foreground until interrupted",
		Long: `Replicate the pair's tables from the source primary into the target: a first
snapshot, then every committed change in commit order. A failover of the source
to its standby is followed on its own (see the README). serve runs the same in
the target's region; run one of them, not both (the source's slot takes one
reader).

The pair's writes are fenced by its protection group's lease: they stop when
the source's region no longer holds it.

Exit status: 0 interrupted, 1 fenced or failed, 2 bad arguments.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			env, p, err := findPair(cfg, args[0])
			if err != nil {
				return err
			}
			err = cdc.New(pairOptions(env, p, "tandem cdc run")).Run(c.Context())
			if c.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	configFlag(c.Flags(), &cfg)
	return c
}

func newCDCStatusCommand() *cobra.Command {
	var (
		cfg    string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a cdc pair's position, lag and the source failovers it followed",
		Long: `Show where the target stands (source system id, timeline, LSN), the lag in
bytes and seconds against the source primary, and the last events: snapshots
and source failovers followed, with the applied transactions a failover lost
at the source (committed on the old primary, never on the new one).

Exit status: 0 streaming within max_lag and rpo, 4 something needs a person,
1 failed, 2 bad arguments.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			env, p, err := findPair(cfg, args[0])
			if err != nil {
				return err
			}
			rep := cdcpair.Kind{}.Status(c.Context(), env, p.Name)
			if asJSON {
				writeJSON(c.OutOrStdout(), rep.Detail)
			} else {
				printCDCStatus(c.OutOrStdout(), rep)
			}
			if rep.Attention {
				return attentionError{fmt.Errorf("cdc %s: %s", p.Name, rep.Health)}
			}
			return nil
		},
	}
	configFlag(c.Flags(), &cfg)
	c.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return c
}

func printCDCStatus(w io.Writer, rep member.Report) {
	fmt.Fprintf(w, "%s: %s\n", rep.Noun, rep.Health)
	for _, l := range rep.Lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
	d, _ := rep.Detail.(map[string]any)
	evs, _ := d["events"].([]cdc.Event)
	for _, e := range evs {
		fmt.Fprintf(w, "  %s %s", e.At.Local().Format("2006-01-02 15:04:05"), e.Kind)
		if c, ok := e.Detail["cause"]; ok {
			fmt.Fprintf(w, ": %v", c)
		}
		fmt.Fprintln(w)
		lost, _ := e.Detail["lost"].([]any)
		for _, l := range lost {
			m, _ := l.(map[string]any)
			var changes []string
			cs, _ := m["changes"].([]any)
			for _, c := range cs {
				if f := strings.SplitN(fmt.Sprint(c), "\t", 3); len(f) == 3 {
					changes = append(changes, fmt.Sprintf("%s %s (%s)", f[1], f[0], strings.ReplaceAll(f[2], "\t", ", ")))
				}
			}
			fmt.Fprintf(w, "    lost at the source: transaction %v committed %v (end %v): %s\n", m["xid"], m["commit_time"], m["end_lsn"], strings.Join(changes, "; "))
		}
	}
}

type validateOptions struct {
	config       string
	tables       []string
	since, until string
	around       string
	window       time.Duration
	json         bool
	repair       bool
	dryRun       bool
}

func newValidateCommand() *cobra.Command {
	var o validateOptions
	c := &cobra.Command{
		Use:   "validate NAME",
		Short: "Compare a cdc pair's source and target row by row, and repair the target",
		Long: `Compare the pair's tables in the source primary and the target, each in a
consistent snapshot (the target's taken once it applied what the source's
has), by checksums over primary-key ranges: segments whose row count and hash
agree are equal; one that differs is split until it is read row by row. Rows
that differ are read again (changes in flight are not differences).

--since and --until (RFC 3339 times), or --around TIME with --window, limit the
comparison to rows whose audit column (audit_columns) is in that window: seed
004's "failover time plus or minus one hour". Tables without an audit column
are compared whole.

--repair then makes each differing row of the target what the source has
(upsert or delete, at most 500 rows per transaction, fenced by the lease) and
validates again; --dry-run lists what it would do and changes nothing.

Exit status: 0 no differences (after a repair: none left), 4 rows differ,
1 failed, 2 bad arguments.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runValidate(c.Context(), o, args[0], c.OutOrStdout())
		},
	}
	f := c.Flags()
	configFlag(f, &o.config)
	f.StringSliceVar(&o.tables, "table", nil, "validate only this table (schema.table; repeat for more)")
	f.StringVar(&o.since, "since", "", "compare only rows whose audit column is at or after this time (RFC 3339)")
	f.StringVar(&o.until, "until", "", "compare only rows whose audit column is at or before this time (RFC 3339)")
	f.StringVar(&o.around, "around", "", "compare only rows whose audit column is within --window of this time (RFC 3339)")
	f.DurationVar(&o.window, "window", time.Hour, "the half-width of --around's window")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.BoolVar(&o.repair, "repair", false, "make the target's differing rows what the source has, then validate again")
	f.BoolVar(&o.dryRun, "dry-run", false, "with --repair: list what it would change, change nothing")
	return c
}

func parseTime(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, usageError{fmt.Errorf("--%s %q: give an RFC 3339 time (2026-12-01T10:00:00Z)", flag, s)}
	}
	return t, nil
}

func runValidate(ctx context.Context, o validateOptions, name string, out io.Writer) error {
	if o.dryRun && !o.repair {
		return usageError{fmt.Errorf("--dry-run goes with --repair")}
	}
	if o.around != "" && (o.since != "" || o.until != "") {
		return usageError{fmt.Errorf("give --around with --window, or --since and --until, not both")}
	}
	if o.window <= 0 {
		return usageError{fmt.Errorf("--window %s: give a positive duration", o.window)}
	}
	var vo cdc.ValidateOptions
	var err error
	if vo.Scope.Since, err = parseTime("since", o.since); err != nil {
		return err
	}
	if vo.Scope.Until, err = parseTime("until", o.until); err != nil {
		return err
	}
	if o.around != "" {
		at, err := parseTime("around", o.around)
		if err != nil {
			return err
		}
		vo.Scope.Since, vo.Scope.Until = at.Add(-o.window), at.Add(o.window)
	}
	if !vo.Scope.Since.IsZero() && !vo.Scope.Until.IsZero() && vo.Scope.Until.Before(vo.Scope.Since) {
		return usageError{fmt.Errorf("--until %s is before --since %s", o.until, o.since)}
	}
	env, p, err := findPair(o.config, name)
	if err != nil {
		return err
	}
	for _, t := range o.tables {
		if !strings.Contains(t, ".") {
			t = "public." + t
		}
		vo.Tables = append(vo.Tables, t)
	}
	opts := pairOptions(env, p, "tandem validate --repair")
	rep, err := cdc.Validate(ctx, opts, vo)
	if err != nil {
		return err
	}
	result := map[string]any{"validation": rep}
	if o.repair && rep.Differences > 0 {
		fixed, err := cdc.Repair(ctx, opts, rep, o.dryRun)
		result["repair"] = fixed
		if err != nil {
			return fmt.Errorf("repair of cdc %s: %w (what was repaired before stays; run it again)", p.Name, err)
		}
		if !o.dryRun {
			after, err := cdc.Validate(ctx, opts, vo)
			if err != nil {
				return err
			}
			result["after"] = after
			if !o.json {
				cdc.Print(out, rep, 20)
				fmt.Fprintf(out, "repaired: %d rows upserted, %d deleted, in %d transactions\n", fixed.Upserted, fixed.Deleted, fixed.Transactions)
			}
			rep = after
		} else if !o.json {
			cdc.Print(out, rep, 20)
			fmt.Fprintf(out, "dry run: the repair would change %d rows (nothing changed):\n", len(fixed.Actions))
			for _, a := range fixed.Actions {
				fmt.Fprintf(out, "  %s %s %s\n", a.Do, a.Table, "("+strings.Join(a.Key, ", ")+")")
			}
		}
	}
	if o.json {
		writeJSON(out, result)
	} else {
		cdc.Print(out, rep, 20)
	}
	if rep.Differences > 0 {
		return attentionError{fmt.Errorf("cdc %s: %d rows differ between the source and the target (tandem validate %s --repair --config %s fixes the target)", p.Name, rep.Differences, p.Name, env.Cfg.Path())}
	}
	return nil
}
