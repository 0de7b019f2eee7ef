package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/config"
	"tandem/internal/lease"
	"tandem/internal/state"
)

type leaseOptions struct {
	config  string
	region  string
	standby string
	json    bool
	yes     bool
}

func newLeaseCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "lease",
		Short: "Show, take or give up a protection group's region lease",
		Long: `Each protection group has one region lease in the witness location: the
region that holds it is the only one that acts as primary, and every change
of holder increments the fencing epoch. A region takes the lease when it is
free, released, or expired; the holder renews it by acquiring again. Taking
a lease another region had asks for confirmation (a typed yes) unless --yes
is given; without a terminal, --yes is required.`,
	}
	var o leaseOptions
	for _, action := range []string{"show", "acquire", "release"} {
		sub := &cobra.Command{
			Use:   action + " --config FILE PROTECTION_GROUP",
			Short: map[string]string{"show": "Show the lease", "acquire": "Take or renew the lease for --region", "release": "Give the lease up (planned switchover)"}[action],
			Args:  cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				return runLease(c.Context(), o, action, args[0], os.Stdout)
			},
		}
		configFlag(sub.Flags(), &o.config)
		sub.Flags().BoolVar(&o.json, "json", false, "print JSON")
		if action != "show" {
			sub.Flags().StringVar(&o.region, "region", os.Getenv("TANDEM_REGION"), "the region this tandem acts for (default $TANDEM_REGION)")
		}
		if action == "acquire" {
			sub.Flags().StringVar(&o.standby, "standby", "", "when taking the lease: the region to replicate into, or none (default: the other region)")
			yesFlag(sub.Flags(), &o.yes)
		}
		c.AddCommand(sub)
	}
	return c
}

func runLease(ctx context.Context, o leaseOptions, action, name string, w io.Writer) error {
	env, err := loadEnv(o.config, nil)
	if err != nil {
		return err
	}
	pg, err := env.Cfg.FindProtectionGroup(name)
	if err != nil {
		return usageError{err}
	}
	if action != "show" && o.region != pg.Primary && o.region != pg.Standby {
		return usageError{fmt.Errorf("--region %q is neither %s's primary (%s) nor its standby (%s)", o.region, pg.Name, pg.Primary, pg.Standby)}
	}
	standby := other(pg, o.region)
	switch o.standby {
	case "":
	case "none":
		standby = ""
	case standby:
	default:
		return usageError{fmt.Errorf("--standby %q is neither %s nor none", o.standby, standby)}
	}
	var rec lease.Record
	if action == "show" {
		st, err := env.Leases(ctx)
		if err != nil {
			return err
		}
		var ok bool
		if rec, ok, err = lease.Show(ctx, st, pg.Name); err == nil && !ok {
			err = fmt.Errorf("the lease of %s was never taken", pg.Name)
		}
		if err != nil {
			return err
		}
	} else {
		// A first lease acquire makes a missing witness folder.
		if _, err := env.WitnessFor(ctx, pg, o.region, action == "acquire"); err != nil {
			return err
		}
		ls, err := env.NewLease(ctx, pg, o.region, standby)
		if err != nil {
			return err
		}
		if action == "acquire" {
			if err := confirmTakeover(ctx, w, o, pg, ls.Store); err != nil {
				return err
			}
			rec, err = ls.Acquire(ctx)
		} else {
			rec, err = ls.Release(ctx)
		}
		if err != nil {
			if errors.Is(err, lease.ErrHeld) {
				return fmt.Errorf("%w\nwait for it to expire, or have %s release it", err, rec.Holder)
			}
			return err
		}
	}
	now := time.Now()
	if o.json {
		return writeJSON(w, struct {
			lease.Record
			State string `json:"state"`
		}{rec, rec.State(now)})
	}
	fmt.Fprintf(w, "%s: %s\n", pg.Name, rec.Describe(now))
	return nil
}

// confirmTakeover asks before o.region takes a lease another region held
// and no longer holds (it expired, or it was released): that region stops
// acting as primary. Renewing, a first acquisition and a lease still held
// (which acquire refuses) ask nothing.
func confirmTakeover(ctx context.Context, w io.Writer, o leaseOptions, pg *config.ProtectionGroup, st state.Store) error {
	rec, ok, err := lease.Show(ctx, st, pg.Name)
	if err != nil || !ok {
		return nil
	}
	last := rec.Holder
	if last == "" {
		last = other(pg, rec.Standby) // released: the last holder
	}
	if last == o.region || !rec.Expired(time.Now()) {
		return nil
	}
	return confirm(w, o.yes, fmt.Sprintf("This makes %s the primary of %s, taking the lease %s had (%s).",
		o.region, pg.Name, last, rec.Describe(time.Now())))
}

// other is the region of pg that is not region.
func other(pg *config.ProtectionGroup, region string) string {
	if region == pg.Primary {
		return pg.Standby
	}
	return pg.Primary
}
