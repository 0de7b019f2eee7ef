package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/term"

	"tandem/internal/replicate"
)

// startProgress draws one status line on stderr while a pass runs, when
// stderr is a terminal and output is not JSON. The returned func stops it.
func startProgress(st *replicate.Stats, quiet bool) func() {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(os.Stderr, "\r\033[K"+progressLine(st, time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// progressLine is objects and bytes copied out of those found so far, the
// rate, and the time left once the listing is complete.
func progressLine(st *replicate.Stats, elapsed time.Duration) string {
	copied, queued := st.CopiedBytes.Load(), st.QueuedBytes.Load()
	rate := float64(copied) / max(elapsed.Seconds(), 0.001)
	eta := "listing"
	if st.ListingDone.Load() && rate > 0 {
		eta = "ETA " + time.Duration(float64(queued-copied)/rate*float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d objects  %s/%s  %s/s  %d unchanged  %d failed  %s",
		st.Copied.Load(), st.ObjectsTotal.Load(), humanBytes(copied), humanBytes(queued),
		humanBytes(int64(rate)), st.Unchanged.Load(), st.Failed.Load(), eta)
}
