package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"tandem/internal/member/streams"
	"tandem/produce"
)

func newStreamCommand() *cobra.Command {
	c := &cobra.Command{Use: "stream", Short: "Act on event streams"}
	c.AddCommand(newStreamProduceCommand())
	return c
}

type streamProduceOptions struct {
	config string
	id     string
	lines  bool
	json   bool
}

func newStreamProduceCommand() *cobra.Command {
	var o streamProduceOptions
	c := &cobra.Command{
		Use:   "produce STREAM [DATA|-]",
		Short: "Write events to a stream in both regions",
		Long: `Write an event to the stream in both regions with the same id (dual
produce). DATA is the event's body; - or nothing reads it from standard input.
With --lines, each line of standard input is one event: its id, a space, its
body.

Give an id that a retry repeats (--id): sent twice, an event still takes effect
once in the sink. Without --id, tandem makes one up and prints it. A region
that does not answer is caught up by serve when it returns; the command fails
only when no region took the event.

Exit status: 0 every event reached a region, 1 one reached none, 2 bad
arguments.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(c *cobra.Command, args []string) error {
			return runStreamProduce(c.Context(), o, args, os.Stdin, os.Stdout, os.Stderr)
		},
	}
	f := c.Flags()
	configFlag(f, &o.config)
	f.StringVar(&o.id, "id", "", "the event's id (default: a new random id)")
	f.BoolVar(&o.lines, "lines", false, "read events from standard input, one per line: ID BODY")
	f.BoolVar(&o.json, "json", false, "print each event's outcome as a JSON line")
	return c
}

func runStreamProduce(ctx context.Context, o streamProduceOptions, args []string, in io.Reader, out, errw io.Writer) error {
	if o.lines && (o.id != "" || len(args) > 1) {
		return usageError{errors.New("--lines reads ids and bodies from standard input: leave out --id and DATA")}
	}
	env, err := loadEnv(o.config, newLogger(0))
	if err != nil {
		return err
	}
	s := streams.Find(env.Cfg, args[0])
	if s == nil {
		var known []string
		for _, st := range streams.All(env.Cfg) {
			known = append(known, st.Name)
		}
		return usageError{fmt.Errorf("no stream named %q in %s (known: %s)", args[0], env.Cfg.Path(), strings.Join(known, ", "))}
	}
	p, err := produce.Open(ctx, s.Targets())
	if err != nil {
		return err
	}
	defer p.Close()
	failed := 0
	send := func(id string, data []byte) error {
		res, err := p.Send(ctx, id, data)
		if o.json {
			if err != nil && len(res.Failed) == 0 {
				return err
			}
			writeJSON(out, res)
		} else {
			var at []string
			for r, pos := range res.Positions {
				at = append(at, fmt.Sprintf("%s@%d", r, pos))
			}
			slices.Sort(at)
			if len(at) > 0 {
				fmt.Fprintf(out, "event %s: %s\n", id, strings.Join(at, ", "))
			}
			for r, why := range res.Failed {
				fmt.Fprintf(errw, "tandem: event %s did not reach %s: %s (serve's catch-up brings it there when it answers)\n", id, r, why)
			}
		}
		if err != nil {
			failed++
		}
		return nil
	}
	if o.lines {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if strings.TrimSpace(line) == "" {
				continue
			}
			id, data, _ := strings.Cut(line, " ")
			if err := send(id, []byte(data)); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("standard input: %w", err)
		}
	} else {
		var data []byte
		if len(args) == 2 && args[1] != "-" {
			data = []byte(args[1])
		} else if data, err = io.ReadAll(in); err != nil {
			return fmt.Errorf("standard input: %w", err)
		}
		id := o.id
		if id == "" {
			id = produce.NewID()
		}
		if err := send(id, data); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d events reached no region: send them again with the same ids", failed)
	}
	return nil
}
