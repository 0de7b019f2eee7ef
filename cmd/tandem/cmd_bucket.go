package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"tandem/internal/member/bucket"
)

func newBucketCommand() *cobra.Command {
	c := &cobra.Command{Use: "bucket", Short: "Act on replicated buckets"}
	c.AddCommand(newBucketPromoteCommand())
	return c
}

type promoteOptions struct {
	config string
	json   bool
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
region is contacted. Promoting twice is harmless.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runPromote(c.Context(), o, args[0], os.Stdout)
		},
	}
	c.Flags().StringVar(&o.config, "config", "", "config file")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return c
}

func runPromote(ctx context.Context, o promoteOptions, target string, w io.Writer) error {
	env, err := loadEnv(o.config, nil)
	if err != nil {
		return err
	}
	r, err := bucket.Find(env.Cfg, target)
	if err != nil {
		return usageError{err}
	}
	if r, err = bucket.Current(ctx, env, r); err != nil {
		return err
	}
	st, err := bucket.State(ctx, env, r)
	if err != nil {
		return err
	}
	prom, err := bucket.PromoteTarget(ctx, env, r, st, false)
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(w).Encode(prom)
	}
	fmt.Fprintf(w, "promoted %s (replication %s) at %s\n", r.To.URL, r.Name, prom.At.Local().Format("2006-01-02 15:04:05 MST"))
	if prom.Watermark != nil {
		fmt.Fprintf(w, "  it holds every change made in the source before %s\n", prom.Watermark.Local().Format("2006-01-02 15:04:05.000 MST"))
	} else {
		fmt.Fprintf(w, "  no complete pass was recorded: the replica may lack objects\n")
	}
	return nil
}
