package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"tandem/internal/autofail"
	"tandem/internal/runner"
)

func newAutoCommand() *cobra.Command {
	var o planOptions
	c := &cobra.Command{
		Use:   "auto-failover show|approve --config FILE [--protection-group PG]",
		Short: "Show the automatic-failover decision, or approve the failover it awaits",
		Long: `show prints the standby's last automatic-failover decision and the last
automatic run. approve lets a failover the policy keeps for a person
(auto_failover.approval) go on: the standby's serve runs it at its next round.
An approval holds for the primary it was given against (its lease epoch) only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runAuto(c.Context(), o, args[0], os.Stdout)
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().StringVar(&o.pg, "protection-group", "", "the protection group (required when the config has more than one)")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return c
}

func runAuto(ctx context.Context, o planOptions, verb string, w io.Writer) error {
	if verb != "show" && verb != "approve" {
		return usageError{fmt.Errorf("auto-failover %q: use show or approve", verb)}
	}
	env, err := loadPlanEnv(o)
	if err != nil {
		return err
	}
	wit, err := env.env.Witness(ctx)
	if err != nil {
		return err
	}
	var rec autofail.Record
	if verb == "approve" {
		rec, err = autofail.Approve(ctx, wit, env.pg.Name, whoAmI())
	} else {
		rec, _, err = autofail.LoadRecord(ctx, wit, env.pg.Name)
	}
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(w, rec)
	}
	d := rec.Decision
	if d.State == "" {
		fmt.Fprintf(w, "%s: no automatic-failover decision yet (mode %s)\n", env.pg.Name, env.pg.AutoFailover.Mode)
		return nil
	}
	fmt.Fprintf(w, "%s: %s at %s: %s\n", env.pg.Name, d.State, d.At.Local().Format("2006-01-02 15:04:05"), d.Reason)
	if a := rec.Approval; a != nil {
		fmt.Fprintf(w, "  approved by %s at %s for epoch %d: the standby's serve fails over at its next round\n", a.By, a.At.Local().Format("15:04:05"), a.Epoch)
	}
	if !rec.LastRun.IsZero() {
		fmt.Fprintf(w, "  last automatic run %s (%s): %s\n", rec.LastRun.Local().Format("2006-01-02 15:04:05"), rec.Execution, rec.Outcome)
	}
	return nil
}

// whoAmI names the person running this command for the records: the user,
// the host and the process.
func whoAmI() string {
	me := runner.Self()
	name := os.Getenv("USER")
	if u, err := user.Current(); name == "" && err == nil {
		name = u.Username
	}
	return fmt.Sprintf("%s on %s (pid %d)", name, me.Host, me.PID)
}
