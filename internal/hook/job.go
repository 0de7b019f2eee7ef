package hook

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"tandem/internal/config"
	"tandem/internal/notify"
)

// Job defaults.
var (
	DefaultSuccess = []string{"COMPLETED", "SUCCEEDED"}
	DefaultFailure = []string{"FAILED", "ERROR", "CANCELLED", "ABORTED"}
)

const (
	defaultJobInterval = 2 * time.Second
	defaultJobTimeout  = 30 * time.Minute
	// badAnswers is how many status answers in a row may fail (no state
	// in them, a server error, no connection) before the job is given up.
	badAnswers = 3
)

// runJob starts an asynchronous job with h and polls its status until a
// final state. A start answered 409 or 429 (a job already runs, too many
// requests) started nothing: it is tried again after the interval. Status
// reads are safe to repeat: a failed one is tried again, up to badAnswers
// in a row. The output is the last status answer, with the start's under
// "start".
func runJob(ctx context.Context, h *config.HTTPAction, d Data, log io.Writer) (Output, error) {
	j := h.Job
	interval, timeout := time.Duration(j.Interval), time.Duration(j.Timeout)
	if interval == 0 {
		interval = defaultJobInterval
	}
	if timeout == 0 {
		timeout = defaultJobTimeout
	}
	started := time.Now()
	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	overdue := func(what string) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s within the job's timeout of %s", what, timeout)
	}

	var start answer
	// What a start that runs out of time says: the answer of the last
	// start that started nothing, if any.
	busy := "the job could not be started"
	for {
		var err error
		start, err = runHTTP(jctx, h, d, log)
		if err != nil {
			if jctx.Err() != nil {
				return nil, overdue(busy)
			}
			return nil, err
		}
		if start.code != http.StatusConflict && start.code != http.StatusTooManyRequests {
			break
		}
		busy = fmt.Sprintf("http %s %s still answered %s", start.method, start.host, start.status)
		fmt.Fprintf(log, "%s: a job already runs or the server is busy (%s): starting again in %s\n", start.host, start.status, interval)
		if !sleep(jctx, interval) {
			return nil, overdue(busy)
		}
	}
	if err := start.expect(h); err != nil {
		return nil, err
	}

	d.Response = start.Output
	var statusURL string
	if j.StatusURL == "" {
		loc, _ := start.Output["headers"].(map[string]any)["Location"].(string)
		if loc == "" {
			return nil, fmt.Errorf("http %s %s: the answer has no Location header to follow the job by: set http.job.status_url", start.method, start.host)
		}
		statusURL = loc
	} else {
		var err error
		if statusURL, err = render("job.status_url", string(j.StatusURL), d); err != nil {
			return nil, err
		}
	}
	headers := j.Headers
	if headers == nil {
		headers = h.Headers
	}
	field := j.State
	if field == "" {
		field = "status"
	}
	success, failure := j.Success, j.Failure
	if len(success) == 0 {
		success = DefaultSuccess
	}
	if len(failure) == 0 {
		failure = DefaultFailure
	}
	host := notify.Host(statusURL)
	fmt.Fprintf(log, "job started: following it at %s every %s\n", host, interval)

	last, bad := "", 0
	var why error
	for {
		a, err := request(jctx, http.MethodGet, statusURL, "", headers, d, io.Discard)
		state, known := "", false
		switch {
		case err != nil:
			why = err
		case a.code/100 == 5:
			why = fmt.Errorf("the job's status at %s answered %s%s", host, a.status, excerpt(a.Output))
		case a.code/100 != 2:
			return nil, fmt.Errorf("the job's status at %s answered %s%s", host, a.status, excerpt(a.Output))
		default:
			v, ok := Field(a.Output["json"], field)
			state, known = fmt.Sprint(v), ok && v != nil
			if !known {
				why = fmt.Errorf("the job's status at %s answered without a state at %q%s", host, field, excerpt(a.Output))
			}
		}
		if jctx.Err() != nil {
			return nil, overdue(fmt.Sprintf("the job did not finish (last state %s; it may still run on the server)", cmp.Or(last, "unknown")))
		}
		if known {
			bad = 0
			if state != last {
				fmt.Fprintf(log, "job state %s after %s\n", state, time.Since(started).Round(time.Millisecond))
				last = state
			}
			switch {
			case slices.Contains(success, state):
				a.Output["start"] = start.Output
				return a.Output, nil
			case slices.Contains(failure, state):
				return nil, fmt.Errorf("the job ended %s (status at %s)%s", state, host, excerpt(a.Output))
			}
		} else if bad++; bad >= badAnswers {
			return nil, fmt.Errorf("%d status reads in a row failed; the last: %w", bad, why)
		} else {
			fmt.Fprintf(log, "status read failed (%v): trying again\n", why)
		}
		if !sleep(jctx, interval) {
			return nil, overdue(fmt.Sprintf("the job did not finish (last state %s; it may still run on the server)", cmp.Or(last, "unknown")))
		}
	}
}

// sleep waits d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
