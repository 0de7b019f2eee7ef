package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newConfigCommand() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check configuration files"}
	var path string
	check := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config file and print it with defaults, secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			if err := writeJSON(os.Stdout, cfg); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s is valid\n", path)
			return nil
		},
	}
	configFlag(check.Flags(), &path)
	c.AddCommand(check)
	return c
}
