package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// buildInfo is what `tandem version` prints, from the build's own record.
type buildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"` // "" when the build recorded none
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; v != "" {
		b.Version = v
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

func (b buildInfo) String() string {
	s := "tandem " + b.Version
	if b.Commit == "" {
		// go run, go test and builds with -buildvcs=false record none.
		s += ", commit unknown (this build recorded none: go build -buildvcs=true ./cmd/tandem records it)"
	} else {
		s += ", commit " + b.Commit[:min(12, len(b.Commit))]
		if b.Time != "" {
			s += " of " + b.Time
		}
		if b.Modified {
			s += " with local changes"
		}
	}
	return s + ", " + b.Go + " " + b.Platform
}

func newVersionCommand() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print tandem's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return printVersion(os.Stdout, asJSON)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func printVersion(w io.Writer, asJSON bool) error {
	b := readBuildInfo()
	if asJSON {
		return writeJSON(w, b)
	}
	_, err := fmt.Fprintln(w, b)
	return err
}
