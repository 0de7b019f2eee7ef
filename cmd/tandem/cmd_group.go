package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"tandem/internal/member/group"
	"tandem/internal/progress"
	"tandem/internal/tablegroup"
)

func newGroupCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "Copy groups of Delta tables at workflow-run boundaries",
		Long: `A group is the Delta tables one workflow writes (bronze, silver, gold).
The standby holds all of them at the end of one completed run, never half a
run: 'group complete' records a finished run, 'group sync' copies every table
to that run's versions and then writes the group manifest in the standby
region, and 'group finalize' (at failover, from the standby alone) moves aside
whatever an interrupted sync published beyond the manifest.`,
	}
	c.AddCommand(newGroupCompleteCommand(), newGroupSyncCommand(), newGroupFinalizeCommand())
	return c
}

type groupOptions struct {
	config string
	progressOptions
	runID  string
	dryRun bool
}

func groupFlags(c *cobra.Command, o *groupOptions) {
	configFlag(c.Flags(), &o.config)
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
}

func newGroupCompleteCommand() *cobra.Command {
	var o groupOptions
	c := &cobra.Command{
		Use:   "complete --config FILE GROUP --run-id ID",
		Short: "Record that a workflow run finished (run it as the workflow's last task)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runGroup(c.Context(), o, args[0], "complete", os.Stdout)
		},
	}
	groupFlags(c, &o)
	c.Flags().StringVar(&o.runID, "run-id", "", "the workflow run's id (required)")
	return c
}

func newGroupSyncCommand() *cobra.Command {
	var o groupOptions
	c := &cobra.Command{
		Use:   "sync --config FILE GROUP",
		Short: "Copy every table of the group to its last completed run, then write the manifest",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runGroup(c.Context(), o, args[0], "sync", os.Stdout)
		},
	}
	groupFlags(c, &o)
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "copy and record nothing: say what the sync would copy")
	progressFlag(c.Flags(), &o.progress)
	return c
}

func newGroupFinalizeCommand() *cobra.Command {
	var o groupOptions
	c := &cobra.Command{
		Use:   "finalize --config FILE GROUP",
		Short: "At failover: make every standby table exactly its manifest version",
		Long: `Make every table of the group in the standby region exactly the version its
manifest names: commits and checkpoints an interrupted sync published beyond
it are moved to _tandem_moved_aside/ inside the table, never deleted. It reads
and writes only the standby region. Running it twice is harmless.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runGroup(c.Context(), o, args[0], "finalize", os.Stdout)
		},
	}
	groupFlags(c, &o)
	return c
}

func runGroup(ctx context.Context, o groupOptions, name, action string, w io.Writer) error {
	env, err := loadEnv(o.config, newLogger(0))
	if err != nil {
		return err
	}
	env.ReadOnly = o.dryRun
	gc, err := group.Find(env.Cfg, name)
	if err != nil {
		return usageError{err}
	}
	if gc, err = group.Current(ctx, env, gc); err != nil {
		return err
	}
	g, err := group.Open(ctx, env, gc, action == "finalize", newLogger(0))
	if err != nil {
		return err
	}
	var out any
	switch action {
	case "complete":
		if o.runID == "" {
			return usageError{fmt.Errorf("--run-id is required")}
		}
		if gc.Workflow == nil {
			return usageError{fmt.Errorf("group %s has no workflow: its syncs copy the latest versions, there is no run to complete", name)}
		}
		if d := gc.Workflow.Job(gc.From); d != nil {
			return usageError{fmt.Errorf("group %s follows Databricks job %d in %s: its runs are read from the Jobs API, not reported", name, d.JobID, gc.From)}
		}
		cut, err := g.Complete(ctx, o.runID)
		if err != nil {
			return err
		}
		out = cut
		if !o.json {
			fmt.Fprintf(w, "group %s: run %s completed at versions %s\n", name, cut.RunID, versions(cut.Versions))
		}
	case "sync":
		if o.dryRun {
			pl, err := g.Plan(ctx)
			if err != nil {
				return err
			}
			out = pl
			if !o.json {
				printGroupPlan(w, gc, pl)
			}
			break
		}
		g.Progress = &progress.Counters{}
		stop := o.start(g.Progress, "group sync", "files", w)
		_, res, err := g.SyncRecorded(ctx, "manual")
		stop()
		if err != nil {
			return err
		}
		out = res
		if !o.json {
			m := res.Manifest
			if res.Unchanged {
				fmt.Fprintf(w, "group %s: the standby already holds run %s (%s)\n", name, m.RunID, versions(m.Versions))
				break
			}
			fmt.Fprintf(w, "group %s: the standby now holds run %q (%s): manifest written\n", name, m.RunID, versions(m.Versions))
			for _, t := range gc.Tables {
				r := res.Tables[t.Name]
				fmt.Fprintf(w, "  %-10s version %d: %d files copied (%s), %d already there, %d log files\n", t.Name, r.Version, r.Files, humanBytes(r.Bytes), r.FilesThere, r.LogFiles)
			}
		}
	case "finalize":
		fin, err := g.Finalize(ctx)
		if err != nil {
			return err
		}
		out = fin
		if !o.json {
			for _, f := range fin {
				if len(f.MovedAside) == 0 {
					fmt.Fprintf(w, "  %-10s at version %d\n", f.Table, f.Version)
				} else {
					fmt.Fprintf(w, "  %-10s at version %d: %d log files beyond it moved to %s\n", f.Table, f.Version, len(f.MovedAside), f.MovedTo)
				}
			}
		}
	}
	if o.json {
		return o.result(w, out)
	}
	return nil
}

func printGroupPlan(w io.Writer, gc *group.Group, pl tablegroup.Planned) {
	if pl.Unchanged {
		fmt.Fprintf(w, "group %s: dry run: the standby already holds run %s (%s); a sync would copy nothing\n", pl.Group, pl.Cut.RunID, versions(pl.Cut.Versions))
		return
	}
	fmt.Fprintf(w, "group %s: dry run: a sync would copy run %q (%s)", pl.Group, pl.Cut.RunID, versions(pl.Cut.Versions))
	if pl.Manifest != nil {
		fmt.Fprintf(w, "; the standby holds run %q (%s)", pl.Manifest.RunID, versions(pl.Manifest.Versions))
	}
	fmt.Fprintln(w)
	for _, t := range gc.Tables {
		p := pl.Tables[t.Name]
		fmt.Fprintf(w, "  %-10s version %d: would copy %d files (%s) and %d commits, %d files already there\n", t.Name, p.Version, p.Files, humanBytes(p.Bytes), p.Commits, p.Existing)
	}
	fmt.Fprintln(w, "  nothing was written")
}

// versions prints table versions: bronze@4, gold@3.
func versions(v map[string]int64) string { return group.Versions(v) }
