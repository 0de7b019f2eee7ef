package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"tandem/internal/delta"
	"tandem/internal/progress"
	"tandem/internal/tablesync"
)

func newTableCommand() *cobra.Command {
	c := &cobra.Command{Use: "table", Short: "Act on Delta Lake tables"}
	c.AddCommand(newTableSyncCommand())
	return c
}

type tableSyncOptions struct {
	version tableVersion
	progressOptions
	transfers  int
	fullResync bool
	dryRun     bool
	ends       endsFlags
}

func newTableSyncCommand() *cobra.Command {
	o := tableSyncOptions{version: latestVersion}
	c := &cobra.Command{
		Use:   "sync SRC_TABLE DST_TABLE",
		Short: "Make DST_TABLE a copy of a Delta table at a version",
		Long: `Make DST_TABLE a valid Delta table whose snapshot at --version (default:
the latest) equals SRC_TABLE's, with the same version numbers and history.

Incremental: only files live at the version and missing from DST_TABLE are
copied, never files added and removed between two syncs. Data files and
deletion vectors are written first, then the checkpoint, then the commits in
ascending order, each only if absent. A reader of DST_TABLE never sees the
new version before its files are there.

A DST_TABLE whose history differs from the source's (diverged), or a source
whose log no longer reaches back to DST_TABLE's version, stops the sync with an
error. --full-resync then moves DST_TABLE's log aside into
_tandem_moved_aside/ (nothing is deleted) and syncs from scratch, reusing the
data files already there.

Exit status: 0 done, 1 failed, 2 bad arguments.`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runTableSync(c.Context(), o, args[0], args[1], os.Stdout)
		},
	}
	f := c.Flags()
	f.Var(&o.version, "version", "version to sync to")
	o.progressOptions.register(f)
	f.IntVar(&o.transfers, "transfers", 16, "files copied at once")
	f.BoolVar(&o.fullResync, "full-resync", false, "move DST_TABLE's log aside and sync from scratch")
	f.BoolVar(&o.dryRun, "dry-run", false, "copy nothing: say what the sync would copy")
	o.ends.register(f)
	return c
}

// tableVersion is the value of --version: a table version, or
// latestVersion (shown as "latest") when the flag is left out.
type tableVersion int64

// latestVersion is no version anyone can give: -1, which the syncs read as
// the latest, is refused like every other negative number.
const latestVersion = tableVersion(math.MinInt64)

func (v *tableVersion) String() string {
	if *v == latestVersion {
		return "latest"
	}
	return strconv.FormatInt(int64(*v), 10)
}

func (v *tableVersion) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("give a table version (0 or more), or leave it out for the latest")
	}
	*v = tableVersion(n)
	return nil
}

func (v *tableVersion) Type() string { return "int" }

// get is the version to sync to, -1 for the latest.
func (v tableVersion) get() (int64, error) {
	switch {
	case v == latestVersion:
		return -1, nil
	case v < 0:
		return 0, usageError{fmt.Errorf("--version %d: give a table version (0 or more), or leave it out for the latest", int64(v))}
	}
	return int64(v), nil
}

func runTableSync(ctx context.Context, o tableSyncOptions, srcURL, dstURL string, w io.Writer) error {
	version, err := o.version.get()
	if err != nil {
		return err
	}
	e, err := openEnds(ctx, o.ends, srcURL, dstURL, o.dryRun)
	if err != nil {
		return err
	}
	if o.dryRun {
		if o.fullResync {
			return usageError{fmt.Errorf("--dry-run and --full-resync: a dry run moves nothing aside; run --dry-run alone to see what the sync would copy")}
		}
		ps, err := tablesync.Plan(ctx, e.src, e.dst, version)
		if err := tableSyncError(o, err); err != nil {
			return err
		}
		if o.json {
			return writeJSON(w, ps)
		}
		fmt.Fprintf(w, "%s -> %s\n  dry run: to version %d, would copy %d files (%s) and %d commits; %d files already there; nothing was written\n",
			e.src.URL(), e.dst.URL(), ps.Version, ps.Files, humanBytes(ps.Bytes), ps.Commits, ps.Existing)
		return nil
	}
	if o.fullResync {
		dir, n, err := tablesync.MoveLogAside(ctx, e.dst)
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Fprintf(os.Stderr, "moved %d log files of %s aside to %s\n", n, e.dst.URL(), dir)
		}
	}
	s := &tablesync.Sync{Source: e.src, Target: e.dst, Transfers: o.transfers, Log: newLogger(0), Progress: &progress.Counters{}}
	stop := o.start(s.Progress, "table sync", "files", w)
	res, err := s.Run(ctx, version)
	stop()
	if err := tableSyncError(o, err); err != nil {
		return err
	}
	if o.json {
		return o.result(w, res)
	}
	from := "an empty target"
	if res.FromVersion >= 0 {
		from = fmt.Sprintf("version %d", res.FromVersion)
	}
	fmt.Fprintf(w, "%s -> %s\n", res.Source, res.Target)
	fmt.Fprintf(w, "  version   %d (from %s)\n", res.Version, from)
	fmt.Fprintf(w, "  data      %d files copied (%s), %d already there\n", res.Files, humanBytes(res.Bytes), res.FilesThere)
	fmt.Fprintf(w, "  log       %d files copied (%s)\n", res.LogFiles, humanBytes(res.LogBytes))
	fmt.Fprintf(w, "  seconds   %.2f (plan %.2f, data %.2f, log %.2f)\n", res.Seconds, res.PlanSeconds, res.DataSeconds, res.LogSeconds)
	return nil
}

// tableSyncError says what to do about a sync's error.
func tableSyncError(o tableSyncOptions, err error) error {
	switch {
	case errors.Is(err, delta.ErrNoVersion):
		return usageError{fmt.Errorf("--version %s: %w", o.version.String(), err)}
	case errors.Is(err, tablesync.ErrDiverged) || errors.Is(err, tablesync.ErrResyncNeeded):
		return fmt.Errorf("%w\nrun again with --full-resync to move the target's log aside and copy the table afresh", err)
	}
	return err
}
