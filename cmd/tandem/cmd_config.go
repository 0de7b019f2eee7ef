package main

import (
	"encoding/json"
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
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(cfg); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s is valid\n", path)
			return nil
		},
	}
	check.Flags().StringVar(&path, "config", "", "config file")
	c.AddCommand(check)
	return c
}
