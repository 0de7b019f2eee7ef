// Command tandem keeps a standby region consistent with the active one and
// runs the plans that move work there. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"tandem/internal/objstore/local"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1 // the command failed
	exitUsage   = 2 // bad flags, arguments or configuration
	exitPartial = 3 // the command ran, but some objects failed and wait in the retry queue
	exitAttend  = 4 // status: something needs a person
)

type globalOptions struct {
	logLevel  string
	logFormat string
}

var global globalOptions

// usageError marks errors the user fixes by changing the command or config.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// partialError marks a run that finished with failed objects.
type partialError struct{ error }

// attentionError marks a status that found something for a person.
type attentionError struct{ error }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tandem",
		Short:         "Cross-region disaster recovery for data platforms",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&global.logLevel, "log-level", "", "log level: debug, info, warn, error (default info; warn for replicate)")
	root.PersistentFlags().StringVar(&global.logFormat, "log-format", "text", "log format: text or json")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(global.logLevel)); global.logLevel != "" && err != nil {
			return usageError{fmt.Errorf("--log-level %q: use debug, info, warn or error", global.logLevel)}
		}
		if global.logFormat != "text" && global.logFormat != "json" {
			return usageError{fmt.Errorf("--log-format %q: use text or json", global.logFormat)}
		}
		return nil
	}
	root.AddCommand(
		newReplicateCommand(),
		newServeCommand(),
		newStatusCommand(),
		newHealthCommand(),
		newAutoCommand(),
		newBucketCommand(),
		newConfigCommand(),
		newTableCommand(),
		newGroupCommand(),
		newStreamCommand(),
		newCDCCommand(),
		newValidateCommand(),
		newReportCommand(),
		newLeaseCommand(),
		newPlanCommand(),
		newDemoCommand(),
		newVersionCommand(),
	)
	root.Version = readBuildInfo().String()
	root.SetVersionTemplate("{{.Version}}\n")
	usageArgs(root)
	return root
}

// usageArgs makes wrong positional arguments a usage error (exit 2), like
// wrong flags, and an unknown subcommand an error rather than help.
func usageArgs(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{fmt.Errorf("%s%w (usage: %s)", subPath(cmd), err, cmd.UseLine())}
			}
			return nil
		}
	} else if c.HasSubCommands() && c.RunE == nil && c.Run == nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usageError{fmt.Errorf("%sunknown command %q (see %s --help)", subPath(cmd), a[0], cmd.CommandPath())}
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, a []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// subPath is the command's path after "tandem" with ": " (errors are
// printed after "tandem: " already), or "" for the root.
func subPath(c *cobra.Command) string {
	if !c.HasParent() {
		return ""
	}
	return strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ") + ": "
}

func newLogger(defaultLevel slog.Level) *slog.Logger {
	level := defaultLevel
	if global.logLevel != "" {
		level.UnmarshalText([]byte(global.logLevel))
	}
	opts := &slog.HandlerOptions{Level: level}
	if global.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// writeJSON prints v as indented JSON, as written (no HTML escaping of
// URLs and templates): every --json output goes through it.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// spareProc runs Go code on one processor more than the CPUs it may use,
// unless GOMAXPROCS is set. tandem's copies spend much of their time in
// system calls that block (a folder's group syncfs, renames waiting for
// the filesystem's rename lock, file creation), and a processor held by a
// blocked call leaves its CPU idle until the runtime takes it back: with
// the spare one, passes over 10,000 small files took 6 to 8% less time
// (docs/BENCHMARKS.md).
func spareProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
}

func main() {
	spareProc()
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "tandem: stopping (a second signal aborts)")
		cancel()
		<-sigs
		os.Exit(exitError)
	}()
	err := newRootCommand().ExecuteContext(ctx)
	local.Tidy()
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintln(os.Stderr, "tandem:", err)
	var u usageError
	var p partialError
	var a attentionError
	switch {
	case errors.As(err, &u):
		os.Exit(exitUsage)
	case errors.As(err, &p):
		os.Exit(exitPartial)
	case errors.As(err, &a):
		os.Exit(exitAttend)
	}
	os.Exit(exitError)
}
