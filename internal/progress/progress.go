// Package progress counts the work of a long operation (a replication
// pass, a table or group sync) while it runs, for the progress line on a
// terminal and the progress events a scheduler reads.
package progress

import (
	"sync/atomic"
	"time"
)

// Counters are live counts, safe for concurrent use. Total grows as the
// work is found (a listing, a table's plan) and is final once TotalKnown.
type Counters struct {
	Done       atomic.Int64 // objects or files copied
	DoneBytes  atomic.Int64
	Total      atomic.Int64 // objects or files to copy, found so far
	TotalBytes atomic.Int64
	Skipped    atomic.Int64 // unchanged: nothing to copy
	Deleted    atomic.Int64
	Failed     atomic.Int64
	TotalKnown atomic.Bool
}

// Reset zeroes every count.
func (c *Counters) Reset() {
	for _, n := range []*atomic.Int64{&c.Done, &c.DoneBytes, &c.Total, &c.TotalBytes, &c.Skipped, &c.Deleted, &c.Failed} {
		n.Store(0)
	}
	c.TotalKnown.Store(false)
}

// Add counts n more to copy, of size bytes.
func (c *Counters) Add(n, bytes int64) {
	c.Total.Add(n)
	c.TotalBytes.Add(bytes)
}

// Copied counts one copied, of size bytes.
func (c *Counters) Copied(bytes int64) {
	c.Done.Add(1)
	c.DoneBytes.Add(bytes)
}

// Event is the counters at one moment, with the rate and the time left: a
// progress event (`--json --progress`).
type Event struct {
	Event          string  `json:"event"` // "progress"
	Operation      string  `json:"operation"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Done           int64   `json:"done"`
	Total          int64   `json:"total"`
	TotalKnown     bool    `json:"total_known"`
	DoneBytes      int64   `json:"done_bytes"`
	TotalBytes     int64   `json:"total_bytes"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	// ETASeconds is the time left at the current rate, once the total is
	// known and something was copied (-1 before).
	ETASeconds float64 `json:"eta_seconds"`
	Skipped    int64   `json:"skipped"`
	Deleted    int64   `json:"deleted"`
	Failed     int64   `json:"failed"`
}

// Snapshot reads the counters of an operation that has run for elapsed.
func (c *Counters) Snapshot(operation string, elapsed time.Duration) Event {
	e := Event{Event: "progress", Operation: operation, ElapsedSeconds: elapsed.Seconds(),
		Done: c.Done.Load(), Total: c.Total.Load(), TotalKnown: c.TotalKnown.Load(),
		DoneBytes: c.DoneBytes.Load(), TotalBytes: c.TotalBytes.Load(),
		Skipped: c.Skipped.Load(), Deleted: c.Deleted.Load(), Failed: c.Failed.Load(), ETASeconds: -1}
	e.BytesPerSecond = float64(e.DoneBytes) / max(elapsed.Seconds(), 0.001)
	if e.TotalKnown {
		switch {
		case e.Done >= e.Total:
			e.ETASeconds = 0
		case e.BytesPerSecond > 0 && e.TotalBytes > e.DoneBytes:
			e.ETASeconds = float64(e.TotalBytes-e.DoneBytes) / e.BytesPerSecond
		case e.Done > 0:
			e.ETASeconds = float64(e.Total-e.Done) * elapsed.Seconds() / float64(e.Done)
		}
	}
	return e
}
