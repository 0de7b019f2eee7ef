package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"

	"tandem/internal/member"
)

type statusOptions struct {
	config string
	json   bool
}

func newStatusCommand() *cobra.Command {
	var o statusOptions
	c := &cobra.Command{
		Use:   "status --config FILE",
		Short: "Show each protection group's lease and each member's state: RPO watermark, lag, failures",
		Long: `Show, per protection group, the region lease (primary, standby, epoch,
expiry), an unfinished plan run and what a region that lost the lease did to
stay passive; and per member, its state as recorded in the region it copies
into: for replications the RPO watermark (every object created or changed in
the source before it is in the target), the lag behind now, the pass running
or interrupted, the last pass, the retry queue, foreign writes, deletes not
applied, promotion; for groups the manifest the standby holds, the last
completed run and the last attempt; for databases each server's role and lag.
It reads the standby regions' records, so it works when the primary is gone,
and reports what it cannot read instead of failing.

Exit status: 0 when everything is healthy; 4 when something needs a person
(a late, failing or interrupted member, foreign writes, a lease nobody holds,
an unfinished plan, a region not passive, a record it cannot read); 1 when
status itself fails; 2 for bad arguments or configuration.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runStatus(c.Context(), o, os.Stdout)
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return c
}

// errAttention: status ran, and something needs a person.
var errAttention = errors.New("something needs attention (see above)")

func runStatus(ctx context.Context, o statusOptions, w io.Writer) error {
	env, err := loadEnv(o.config, nil)
	if err != nil {
		return err
	}
	env.ReadOnly = true // status looks, it changes nothing
	s := member.CollectStatus(ctx, env)
	if o.json {
		if err := writeJSON(w, s); err != nil {
			return err
		}
	} else {
		s.Print(w)
	}
	if s.Attention {
		return attentionError{errAttention}
	}
	return nil
}
