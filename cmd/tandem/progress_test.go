package main

import (
	"testing"
	"time"

	"tandem/internal/replicate"
)

func TestProgressLine(t *testing.T) {
	st := &replicate.Stats{}
	st.ObjectsTotal.Store(10)
	st.Copied.Store(4)
	st.QueuedBytes.Store(10 << 20)
	st.CopiedBytes.Store(4 << 20)
	st.Unchanged.Store(7)
	if got, want := progressLine(st, 2*time.Second), "4/10 objects  4.0 MiB/10.0 MiB  2.0 MiB/s  7 unchanged  0 failed  listing"; got != want {
		t.Errorf("while listing:\n got %q\nwant %q", got, want)
	}
	st.ListingDone.Store(true)
	if got, want := progressLine(st, 2*time.Second), "4/10 objects  4.0 MiB/10.0 MiB  2.0 MiB/s  7 unchanged  0 failed  ETA 3s"; got != want {
		t.Errorf("after listing:\n got %q\nwant %q", got, want)
	}
}
