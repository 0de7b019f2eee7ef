package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"tandem/internal/health"
)

type healthOptions struct {
	config string
	region string
	json   bool
}

func newHealthCommand() *cobra.Command {
	var o healthOptions
	c := &cobra.Command{
		Use:   "health [--region R]",
		Short: "Run the regions' health checks once and print what they found",
		Long: `Run every health check of the configured regions (regions[].health) once,
each within its timeout, and print its result: what serve's monitor would see
right now.

Exit status: 0 every check passed, 4 a check failed, 2 no checks configured.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runHealth(c.Context(), o, os.Stdout)
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().StringVar(&o.region, "region", "", "check this region only")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return c
}

var errUnhealthy = errors.New("a health check failed (see above)")

func runHealth(ctx context.Context, o healthOptions, w io.Writer) error {
	env, err := loadEnv(o.config, nil)
	if err != nil {
		return err
	}
	if o.region != "" && env.Cfg.Region(o.region) == nil {
		return usageError{fmt.Errorf("--region %q: no such region in %s", o.region, env.Cfg.Path())}
	}
	var reports []health.Report
	for _, r := range env.Cfg.Regions {
		if (o.region != "" && r.Name != o.region) || len(r.Health.Checks) == 0 {
			continue
		}
		reports = append(reports, health.New(r.Name, r.Health, env).RunOnce(ctx))
	}
	if len(reports) == 0 {
		return usageError{fmt.Errorf("no health checks are configured in %s: add regions[].health.checks", env.Cfg.Path())}
	}
	failed := false
	for _, r := range reports {
		for _, c := range r.Checks {
			failed = failed || !c.Last.OK
		}
	}
	if o.json {
		if err := writeJSON(w, reports); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			fmt.Fprintf(w, "%s\n", r.Region)
			for _, c := range r.Checks {
				mark := "ok  "
				if !c.Last.OK {
					mark = "FAIL"
				}
				fmt.Fprintf(w, "  %s %-16s %-10s %6.3fs  %s\n", mark, c.Name, c.Kind, c.Last.Seconds, c.Last.Detail)
			}
		}
	}
	if failed {
		return attentionError{errUnhealthy}
	}
	return nil
}
