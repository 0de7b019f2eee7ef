package plan

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/runner"
)

// run is one process running an execution.
type run struct {
	e    *Executor
	p    *Plan
	x    *Execution
	mu   sync.Mutex
	etag string
	// measured closes once Executor.Measure has set the record's RPO.
	measured chan struct{}
}

// save writes the record; it fails if anyone else wrote it meanwhile.
func (r *run) save(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.x.Runner != nil {
		r.x.Runner.Beat = time.Now().UTC()
	}
	etag, err := r.e.execs().Save(context.WithoutCancel(ctx), r.x.ID+".json", r.x, objstore.PutOptions{IfMatch: r.etag})
	if errors.Is(err, objstore.ErrPrecondition) {
		return fmt.Errorf("execution %s was changed by another tandem: this one stops", r.x.ID)
	}
	if err != nil {
		return err
	}
	r.etag = etag
	if r.e.OnChange != nil {
		r.e.OnChange(r.x)
	}
	return nil
}

func (r *run) set(f func()) {
	r.mu.Lock()
	f()
	r.mu.Unlock()
}

func (r *run) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if h, ok := r.e.Actions.(Holder); ok {
		defer h.Begin(ctx, r.p)()
	}
	// Heartbeat and cancel requests.
	canceled := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(r.e.poll())
		defer t.Stop()
		beat := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if r.e.control(ctx, r.x.ID).Cancel {
				close(canceled)
				cancel()
				return
			}
			if time.Since(beat) > runner.Every {
				beat = time.Now()
				if err := r.save(ctx); err != nil {
					r.e.log().Warn("heartbeat", "execution", r.x.ID, "err", err)
				}
			}
		}
	}()

	for gi := range r.x.Groups {
		gr := &r.x.Groups[gi]
		if gr.State == Succeeded {
			continue
		}
		r.set(func() { gr.State = Running })
		if err := r.save(ctx); err != nil {
			return err
		}
		var wg sync.WaitGroup
		for si, s := range gr.Steps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.step(ctx, r.p.Groups[gi].Steps[si], s)
			}()
		}
		wg.Wait()
		select {
		case <-canceled:
			return r.finish(ctx, Canceled, "canceled by `tandem plan cancel`", true)
		default:
		}
		if ctx.Err() != nil {
			// Interrupted: the record stays running; resume continues.
			r.set(func() { r.x.Runner = nil })
			r.save(context.WithoutCancel(ctx))
			return fmt.Errorf("execution %s interrupted: %s continues it", r.x.ID, r.e.Command("resume", r.x.ID))
		}
		var failed []string
		r.set(func() {
			gr.State = Succeeded
			for _, s := range gr.Steps {
				if s.State == Failed || s.State == TimedOut {
					failed = append(failed, fmt.Sprintf("%s %s: %s", s.ID, s.State, s.Error))
					gr.State = Failed
				}
			}
		})
		if len(failed) > 0 && gr.Name == "prechecks" {
			// Nothing was changed: the run ends, and stands in the way of
			// no other plan (a failover among them).
			msg := "prechecks failed, nothing was changed: " + strings.Join(failed, "; ")
			r.finish(ctx, Failed, msg, true)
			return fmt.Errorf("%w: execution %s stopped in its prechecks and ended; nothing was changed: %s. Fix the cause and run the plan again, or %s",
				ErrStepFailed, r.x.ID, strings.Join(failed, "; "), r.e.Command("retry", r.x.ID))
		}
		if len(failed) > 0 {
			msg := strings.Join(failed, "; ")
			r.finish(ctx, Failed, msg, false)
			return fmt.Errorf("%w: execution %s stopped in group %s: %s. Fix the cause, then %s, or %s, or %s",
				ErrStepFailed, r.x.ID, gr.Name, msg, r.e.Command("retry", r.x.ID), r.e.Command("skip", r.x.ID, "STEP"), r.e.Command("cancel", r.x.ID))
		}
		if err := r.save(ctx); err != nil {
			return err
		}
	}
	return r.finish(ctx, Succeeded, "", true)
}

// finish records the end state; with end, the run ends (the lock goes).
func (r *run) finish(ctx context.Context, st, msg string, end bool) error {
	ctx = context.WithoutCancel(ctx)
	now := time.Now().UTC()
	if r.measured != nil {
		<-r.measured
	}
	r.set(func() {
		r.x.State, r.x.Error, r.x.Runner = st, msg, nil
		if end {
			r.x.Ended = &now
		}
		if st == Succeeded {
			r.x.RTO = now.Sub(r.x.Decided).Seconds()
		}
		if st == Canceled {
			for _, g := range r.x.Groups {
				for _, s := range g.Steps {
					if s.State == Queued || s.State == Running || s.State == Waiting {
						s.State = Canceled
					}
				}
			}
		}
	})
	if err := r.save(ctx); err != nil {
		return err
	}
	if end {
		r.e.unlock(ctx, r.x.ID)
	}
	if st == Canceled {
		return fmt.Errorf("execution %s canceled", r.x.ID)
	}
	return nil
}

// step runs one step to an end state.
func (r *run) step(ctx context.Context, s *Step, rec *StepRecord) {
	switch rec.State {
	case Succeeded, FailedIgnored, Skipped:
		return
	}
	now := func() *time.Time { t := time.Now().UTC(); return &t }
	if s.Disabled {
		r.set(func() { rec.State, rec.Error, rec.Ended = Skipped, "disabled in the configuration", now() })
		r.save(ctx)
		return
	}
	log := r.e.log().With("execution", r.x.ID, "step", s.ID)
	if s.Pause() {
		r.set(func() { rec.State, rec.Started = Waiting, now() })
		r.save(ctx)
		log.Info("waiting for approval", "approve", strings.Trim(r.e.Command("approve", r.x.ID, s.ID), "`"))
		deadline := time.Now().Add(s.Timeout)
		for !slices.Contains(r.e.control(ctx, r.x.ID).Approved, s.ID) {
			if time.Now().After(deadline) {
				r.set(func() { rec.State, rec.Error, rec.Ended = TimedOut, "not approved within "+s.Timeout.String(), now() })
				r.save(ctx)
				return
			}
			select {
			case <-ctx.Done():
				return // canceled or interrupted: run decides
			case <-time.After(r.e.poll()):
			}
		}
		by := r.e.control(ctx, r.x.ID).By[s.ID]
		if by == "" {
			by = "someone tandem did not record"
		}
		r.set(func() { rec.State, rec.Ended, rec.Log = Succeeded, now(), "approved by "+by+"\n" })
		r.save(ctx)
		return
	}
	for try := 0; ; try++ {
		r.set(func() { rec.State, rec.Started, rec.Ended, rec.Attempts = Running, now(), nil, rec.Attempts+1 })
		r.save(ctx)
		log.Info("step started", "attempt", rec.Attempts)
		sctx, cancel := context.WithTimeout(ctx, s.Timeout)
		var out limited
		if rec.Attempts > 1 {
			fmt.Fprintf(&out, "-- attempt %d\n", rec.Attempts)
		}
		err := r.e.Actions.Run(sctx, r.p, s, r.x.ID, &out)
		timedOut := sctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		cancel()
		if ctx.Err() != nil && err != nil {
			r.set(func() { rec.Log = tail(rec.Log + out.String()) })
			return // canceled or interrupted: run decides
		}
		r.set(func() {
			rec.Log, rec.Ended = tail(rec.Log+out.String()), now()
			switch {
			case err == nil:
				rec.State, rec.Error = Succeeded, ""
			case timedOut:
				rec.State, rec.Error = TimedOut, fmt.Sprintf("no answer within %s: %v", s.Timeout, err)
			default:
				rec.State, rec.Error = Failed, err.Error()
			}
		})
		if err == nil {
			log.Info("step succeeded", "seconds", rec.Seconds())
			r.save(ctx)
			return
		}
		log.Warn("step failed", "attempt", rec.Attempts, "err", err)
		if try < s.Retries {
			r.save(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(1<<try)*time.Second, 30*time.Second)):
			}
			continue
		}
		if s.OnError == "continue" {
			r.set(func() { rec.State = FailedIgnored })
		}
		r.save(ctx)
		return
	}
}

// limited keeps the first maxLog bytes written.
type limited struct{ strings.Builder }

func (l *limited) Write(p []byte) (int, error) {
	if room := maxLog - l.Len(); room > 0 {
		l.Builder.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func tail(s string) string {
	if len(s) > maxLog {
		return "…" + s[len(s)-maxLog:]
	}
	return s
}
