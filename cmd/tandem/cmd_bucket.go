package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"tandem/internal/member/bucket"
	"tandem/internal/replicate"
)

func newBucketCommand() *cobra.Command {
	c := &cobra.Command{Use: "bucket", Short: "Act on replicated buckets"}
	c.AddCommand(newBucketPromoteCommand())
	return c
}

type promoteOptions struct {
	config string
	json   bool
	yes    bool
}

func newBucketPromoteCommand() *cobra.Command {
	var o promoteOptions
	c := &cobra.Command{
		Use:   "promote --config FILE TARGET",
		Short: "Make a replica writable: stop replicating into it for good",
		Long: `Make a replica writable. TARGET is a replication's name or its target URL.
The promotion is recorded in the standby region's state; a running
'tandem serve' stops replicating into the target within seconds, without a
restart, and tandem never writes into it as a replica again. Only the standby
region is contacted. Promoting twice is harmless. It asks for confirmation
(a typed yes) unless --yes is given; without a terminal, --yes is required.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runPromote(c.Context(), o, args[0], os.Stdout)
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	yesFlag(c.Flags(), &o.yes)
	return c
}

func runPromote(ctx context.Context, o promoteOptions, target string, w io.Writer) error {
	env, err := loadEnv(o.config, nil)
	if err != nil {
		return err
	}
	r, st, err := bucket.Resolve(ctx, env, target)
	if errors.As(err, new(bucket.ErrUnknown)) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if done, err := replicate.LoadStatus(ctx, st, r.Name); err == nil && done.Promotion == nil {
		what := fmt.Sprintf("This makes %s (replication %s, in %s) writable: nothing is replicated into it again, for good.", r.To.URL, r.Name, r.To.Region)
		if err := confirm(w, o.yes, what); err != nil {
			return err
		}
	}
	prom, err := bucket.PromoteTarget(ctx, env, r, st, false)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(w, prom)
	}
	fmt.Fprintf(w, "promoted %s (replication %s) at %s\n", r.To.URL, r.Name, prom.At.Local().Format("2006-01-02 15:04:05 MST"))
	if prom.Watermark != nil {
		fmt.Fprintf(w, "  it holds every change made in the source before %s\n", prom.Watermark.Local().Format("2006-01-02 15:04:05.000 MST"))
	} else {
		fmt.Fprintf(w, "  no complete pass was recorded: the replica may lack objects\n")
	}
	return nil
}
