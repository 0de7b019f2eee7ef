package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"tandem/internal/progress"
)

// progressOptions are the output flags of a long command: --json and
// --progress.
type progressOptions struct {
	json, progress bool
}

func (o *progressOptions) register(f *pflag.FlagSet) {
	f.BoolVar(&o.json, "json", false, "print one JSON summary")
	progressFlag(f, &o.progress)
}

// progressFlag adds --progress.
func progressFlag(f *pflag.FlagSet, p *bool) {
	f.BoolVar(p, "progress", false, "show progress even without a terminal; with --json, as JSON lines on stdout (progress events every second, then the summary)")
}

// lines reports whether the output is JSON lines (--json --progress).
func (o progressOptions) lines() bool { return o.json && o.progress }

// result prints a command's summary: indented JSON, or one JSON line after
// the progress events.
func (o progressOptions) result(w io.Writer, v any) error {
	if !o.lines() {
		return writeJSON(w, v)
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// start reports c while an operation runs, and returns the func that stops
// it: on a terminal, one line on stderr redrawn five times a second; with
// --progress and no terminal, a line a second; with --json --progress, a
// JSON event a second on w. With --progress, a last report when it stops.
// Otherwise nothing.
func (o progressOptions) start(c *progress.Counters, op, noun string, w io.Writer) func() {
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	var every time.Duration
	var show func(progress.Event)
	switch {
	case o.lines():
		enc := json.NewEncoder(w)
		every, show = time.Second, func(e progress.Event) { enc.Encode(e) }
	case o.json:
		return func() {}
	case tty:
		every, show = 200*time.Millisecond, func(e progress.Event) { fmt.Fprint(os.Stderr, "\r\033[K"+progressLine(e, noun)) }
	case o.progress:
		every, show = time.Second, func(e progress.Event) { fmt.Fprintln(os.Stderr, progressLine(e, noun)) }
	default:
		return func() {}
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				if o.lines() || !tty {
					show(c.Snapshot(op, time.Since(start))) // the last word: where it ended
				} else {
					fmt.Fprint(os.Stderr, "\r\033[K")
				}
				return
			case <-t.C:
				show(c.Snapshot(op, time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// progressLine is what was copied out of what was found so far, the rate,
// and the time left once the total is known.
func progressLine(e progress.Event, noun string) string {
	eta := "finding"
	if e.ETASeconds >= 0 {
		eta = "ETA " + (time.Duration(e.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d %s  %s/%s  %s/s  %d unchanged  %d failed  %s",
		e.Done, e.Total, noun, humanBytes(e.DoneBytes), humanBytes(e.TotalBytes),
		humanBytes(int64(e.BytesPerSecond)), e.Skipped, e.Failed, eta)
}
