// Package runner names the tandem process doing a piece of work (a plan
// run, a replication pass, a group sync) and tells whether it is still
// alive: records carry a Runner whose Beat the process refreshes while it
// works, so a reader can tell "running" from "interrupted" at once.
package runner

import (
	"context"
	"os"
	"syscall"
	"time"
)

// Every is how often a working process refreshes its beat; a runner that
// has not beaten for Stale is taken as gone.
const (
	Every = 10 * time.Second
	Stale = 3 * Every
)

// Runner is a tandem process at work.
type Runner struct {
	Host string    `json:"host"`
	PID  int       `json:"pid"`
	Beat time.Time `json:"beat"`
}

// Self is this process, beating now.
func Self() *Runner {
	host, _ := os.Hostname()
	return &Runner{Host: host, PID: os.Getpid(), Beat: time.Now().UTC()}
}

// Live reports whether r is working now: it beat within Stale and, on this
// host, its process still exists (a killed runner is seen at once).
func Live(r *Runner) bool {
	if r == nil || time.Since(r.Beat) > Stale {
		return false
	}
	host, _ := os.Hostname()
	if r.Host == host {
		return r.PID == os.Getpid() || syscall.Kill(r.PID, 0) == nil
	}
	return true
}

// Beat calls beat every Every until ctx ends or the returned stop is
// called; stop waits for a beat in progress.
func Beat(ctx context.Context, beat func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				beat(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}
