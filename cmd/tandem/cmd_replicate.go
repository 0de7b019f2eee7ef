package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"tandem/internal/config"
	"tandem/internal/location"
	"tandem/internal/member"
	"tandem/internal/member/bucket"
	"tandem/internal/replicate"
	"tandem/internal/state"
)

type replicateOptions struct {
	config  string
	delete  bool
	exclude []string
	progressOptions
	transfers         int
	state             string
	dryRun            bool
	fileMode          string
	ignoreUnsupported bool
	ends              endsFlags
}

func newReplicateCommand() *cobra.Command {
	var o replicateOptions
	c := &cobra.Command{
		Use:   "replicate SRC DST | replicate --config FILE NAME",
		Short: "Copy every new or changed object from SRC to DST once",
		Long: `Copy every new or changed object from SRC to DST, then exit.

SRC and DST are folders (a path or file:///path) or s3://bucket/prefix.
After an exit status of 0, every object in SRC is in DST with the same key and
bytes. With --config, run one pass of a configured replication by name,
with its state kept in the standby region.

Exit status: 0 done, 1 failed, 2 bad arguments or config, 3 finished with
objects that failed (listed in the summary and kept for retry).`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 1 || o.config == "" && len(args) == 2 {
				return nil
			}
			return usageError{fmt.Errorf("give SRC and DST, or a replication name (with --config FILE)")}
		},
		RunE: func(c *cobra.Command, args []string) error {
			return runReplicate(c.Context(), o, args, os.Stdout)
		},
	}
	f := c.Flags()
	configFlag(f, &o.config)
	f.BoolVar(&o.delete, "delete", false, "delete objects that are only in DST")
	f.StringArrayVar(&o.exclude, "exclude", nil, "leave keys with this prefix alone (repeatable)")
	o.progressOptions.register(f)
	f.BoolVar(&o.dryRun, "dry-run", false, "copy, delete and record nothing: list what a pass would copy and delete")
	f.IntVar(&o.transfers, "transfers", 16, "objects copied at once (at least 64 into S3)")
	f.StringVar(&o.state, "state", "", "keep the replication index and status here (a folder or s3:// URL)")
	f.StringVar(&o.fileMode, "file-mode", "", "permission bits (octal) of every file written into a folder DST; default: the source file's, less group and other write")
	f.BoolVar(&o.ignoreUnsupported, "ignore-unsupported", false, "claim the watermark even when symbolic links or special files in SRC were passed over")
	o.ends.register(f)
	return c
}

func runReplicate(ctx context.Context, o replicateOptions, args []string, out io.Writer) error {
	log := newLogger(slog.LevelWarn)
	var p *replicate.Pair
	if len(args) == 1 {
		env, err := loadEnv(o.config, log)
		if err != nil {
			return err
		}
		env.ReadOnly = o.dryRun
		r, err := bucket.Find(env.Cfg, args[0])
		if err != nil {
			return usageError{err}
		}
		if r, err = bucket.Current(ctx, env, r); err != nil {
			return err
		}
		if p, err = bucket.Open(ctx, env, r, log); err != nil {
			return err
		}
	} else {
		var err error
		if p, err = adHocPair(ctx, o, args[0], args[1], log); err != nil {
			return err
		}
	}
	p.Stats, p.DryRun = &replicate.Stats{}, o.dryRun
	stop := o.start(p.Stats, "replicate", "objects", out)
	sum, err := p.RunOnce(ctx)
	stop()
	switch {
	case o.json:
		o.result(out, sum)
	case !errors.Is(err, replicate.ErrPromoted):
		printSummary(out, sum)
	}
	if err != nil {
		return err
	}
	if sum.Failed > 0 || sum.Pending > 0 {
		return partialError{fmt.Errorf("%d objects failed and %d wait for retry; run again or see tandem status", sum.Failed, sum.Pending)}
	}
	return nil
}

func adHocPair(ctx context.Context, o replicateOptions, srcURL, dstURL string, log *slog.Logger) (*replicate.Pair, error) {
	if o.transfers < 1 {
		return nil, usageError{fmt.Errorf("--transfers must be at least 1")}
	}
	for _, x := range o.exclude {
		if x == "" || strings.HasPrefix(x, "/") {
			return nil, usageError{fmt.Errorf("--exclude %q: give a non-empty key prefix relative to SRC (an empty one would exclude everything)", x)}
		}
	}
	e, err := openEnds(ctx, o.ends, srcURL, dstURL, o.dryRun)
	if err != nil {
		return nil, err
	}
	p := &replicate.Pair{Source: e.src, Target: e.dst, Delete: o.delete, Exclude: o.exclude, Transfers: o.transfers, Log: log, IgnoreUnsupported: o.ignoreUnsupported}
	if o.fileMode != "" {
		m, ok := config.ParseFileMode(o.fileMode)
		err := fmt.Errorf("not octal permission bits, such as 0640")
		if ok {
			err = replicate.CheckMode(fs.FileMode(m))
		}
		if err != nil {
			return nil, usageError{fmt.Errorf("--file-mode %q: %w", o.fileMode, err)}
		}
		p.Mode = fs.FileMode(m)
	}
	if o.state != "" {
		l, err := location.Parse(o.state)
		if err != nil {
			return nil, usageError{fmt.Errorf("--state: %w", err)}
		}
		ep := e.dstOpts.Endpoint
		if location.Overlaps(l, ep, e.srcLoc, e.srcOpts.Endpoint) || location.Overlaps(l, ep, e.dstLoc, ep) {
			return nil, usageError{fmt.Errorf("--state %s must be outside SRC and DST", l)}
		}
		b, err := location.Open(ctx, l, e.dstOpts, true)
		if err != nil {
			return nil, fmt.Errorf("--state: %w", err)
		}
		st := state.Store{Bucket: b}.Sub("replication").Sub("adhoc")
		p.Name, p.State = "adhoc", &st
	}
	return p, nil
}

func printSummary(w io.Writer, s replicate.Summary) {
	fmt.Fprintf(w, "%s -> %s\n", s.Source, s.Target)
	if s.DryRun {
		for _, k := range s.WouldCopy {
			fmt.Fprintf(w, "  would copy   %s\n", k)
		}
		for _, k := range s.WouldDelete {
			fmt.Fprintf(w, "  would delete %s\n", k)
		}
		fmt.Fprintf(w, "  dry run: would copy %d objects (%s) and delete %d; unchanged %d; nothing was written\n",
			len(s.WouldCopy), humanBytes(s.WouldCopyBytes), len(s.WouldDelete), s.Unchanged+s.Adopted)
		if s.DeletesPending > 0 {
			fmt.Fprintf(w, "  %d objects tandem copied are gone from the source and stay (add --delete to remove them)\n", s.DeletesPending)
		}
		return
	}
	fmt.Fprintf(w, "  copied    %d objects, %s in %.1fs (%s/s)\n", s.Objects, humanBytes(s.Bytes), s.Seconds, humanBytes(int64(float64(s.Bytes)/max(s.Seconds, 0.001))))
	fmt.Fprintf(w, "  unchanged %d   already there %d   deleted %d\n", s.Unchanged, s.Adopted, s.Deleted)
	if s.LeftoversRemoved > 0 {
		fmt.Fprintf(w, "  removed   %d files an interrupted pass had left\n", s.LeftoversRemoved)
	}
	if s.Failed+s.Pending > 0 {
		fmt.Fprintf(w, "  FAILED    %d objects, %d waiting for retry\n", s.Failed, s.Pending)
		for _, f := range s.FailedObjects {
			fmt.Fprintf(w, "    %s: %s\n", f.Key, f.Error)
		}
	}
	if s.Unsupported > 0 {
		fmt.Fprintf(w, "  SKIPPED   %d entries of SRC are no regular files and were not copied:", s.Unsupported)
		for _, u := range s.UnsupportedSample {
			fmt.Fprintf(w, " %s (%s)", u.Key, u.Kind)
		}
		if s.Watermark == nil {
			fmt.Fprintf(w, "; no watermark (add --ignore-unsupported to accept them)")
		}
		fmt.Fprintln(w)
	}
	if s.Foreign > 0 {
		fmt.Fprintf(w, "  FOREIGN   %d objects in the target did not come from the source: %v\n", s.Foreign, s.ForeignKeys)
	}
	if s.Watermark != nil {
		fmt.Fprintf(w, "  watermark %s (every change in the source before it is in the target)\n", s.Watermark.Format("2006-01-02 15:04:05.000 MST"))
	}
}

func humanBytes(n int64) string { return member.Bytes(n) }
