package main

import (
	"testing"
	"time"

	"tandem/internal/progress"
)

func TestProgressLine(t *testing.T) {
	c := &progress.Counters{}
	c.Add(10, 10<<20)
	for range 4 {
		c.Copied(1 << 20)
	}
	c.Skipped.Store(7)
	if got, want := progressLine(c.Snapshot("replicate", 2*time.Second), "objects"), "4/10 objects  4.0 MiB/10.0 MiB  2.0 MiB/s  7 unchanged  0 failed  finding"; got != want {
		t.Errorf("while listing:\n got %q\nwant %q", got, want)
	}
	c.TotalKnown.Store(true)
	if got, want := progressLine(c.Snapshot("replicate", 2*time.Second), "objects"), "4/10 objects  4.0 MiB/10.0 MiB  2.0 MiB/s  7 unchanged  0 failed  ETA 3s"; got != want {
		t.Errorf("after listing:\n got %q\nwant %q", got, want)
	}
}
