package replicate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/runner"
	"tandem/internal/state"
)

// Records in the pair's state folder, in the standby region:
//
//	status.json     the last pass, the RPO watermark, the last error
//	retry.json      objects that keep failing, with their next attempt
//	promoted.json   present once the target was promoted

// Status is what `tandem status` shows for a pair.
type Status struct {
	Pair string `json:"pair"`
	// Watermark: every change made in the source before this time is in
	// the target. It only moves forward.
	Watermark *time.Time `json:"watermark,omitempty"`
	LastPass  *Summary   `json:"last_pass,omitempty"`
	// LastGoodPass is the newest pass that ended without error.
	LastGoodPass *time.Time `json:"last_good_pass,omitempty"`
	// Running is the pass in progress, with its process's heartbeat; a
	// Running whose runner is not live was interrupted (runner.Live).
	Running   *Running   `json:"running,omitempty"`
	Promotion *Promotion `json:"promotion,omitempty"`
}

// Running is a pass in progress.
type Running struct {
	Started time.Time      `json:"started"`
	Runner  *runner.Runner `json:"runner"`
}

// Promotion records that a target was made writable.
type Promotion struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Target string    `json:"target"`
	// Watermark at the time of promotion: the RPO the promotion accepted.
	Watermark *time.Time `json:"watermark,omitempty"`
}

// LoadStatus reads a pair's status; a pair that never ran has an empty one.
func LoadStatus(ctx context.Context, st state.Store, pair string) (Status, error) {
	s := Status{Pair: pair}
	if _, err := st.Load(ctx, "status.json", &s); err != nil && !errors.Is(err, objstore.ErrNotExist) {
		return s, err
	}
	var prom Promotion
	if _, err := st.Load(ctx, "promoted.json", &prom); err == nil {
		s.Promotion = &prom
	} else if !errors.Is(err, objstore.ErrNotExist) {
		return s, err
	}
	return s, nil
}

// LoadRetryQueue reads the objects waiting for another attempt.
func LoadRetryQueue(ctx context.Context, st state.Store) ([]Failure, error) {
	var q []Failure
	if _, err := st.Load(ctx, "retry.json", &q); err != nil && !errors.Is(err, objstore.ErrNotExist) {
		return nil, err
	}
	return q, nil
}

// startStatus records the pass as running and keeps its heartbeat until
// stop is called.
func (p *Pair) startStatus(ctx context.Context, sum Summary) (stop func(), err error) {
	run := &Running{Started: sum.Started, Runner: runner.Self()}
	update := func(ctx context.Context) error {
		cur, err := LoadStatus(ctx, *p.State, p.Name)
		if err != nil {
			return err
		}
		cur.Promotion, cur.Running = nil, run
		run.Runner.Beat = time.Now().UTC()
		_, err = p.State.Save(ctx, "status.json", cur, objstore.PutOptions{})
		return err
	}
	if err := update(ctx); err != nil {
		return nil, err
	}
	return runner.Beat(ctx, func(ctx context.Context) {
		if err := update(ctx); err != nil && ctx.Err() == nil {
			p.Log.Warn("heartbeat of the pass", "pair", p.Name, "err", err)
		}
	}), nil
}

func (p *Pair) saveStatus(ctx context.Context, sum Summary) error {
	cur, err := LoadStatus(ctx, *p.State, p.Name)
	if err != nil {
		return err
	}
	cur.Promotion, cur.Running = nil, nil
	cur.LastPass = &sum
	if sum.Error == "" {
		t := sum.Finished
		cur.LastGoodPass = &t
	}
	if sum.Watermark != nil && (cur.Watermark == nil || sum.Watermark.After(*cur.Watermark)) {
		cur.Watermark = sum.Watermark
	}
	_, err = p.State.Save(ctx, "status.json", cur, objstore.PutOptions{})
	return err
}

func (p *Pair) loadRetryQueue(ctx context.Context) (map[string]Failure, error) {
	q, err := LoadRetryQueue(ctx, *p.State)
	if err != nil {
		return nil, err
	}
	m := make(map[string]Failure, len(q))
	for _, f := range q {
		m[f.Key] = f
	}
	return m, nil
}

func (p *Pair) saveRetryQueue(ctx context.Context, failures map[string]Failure) error {
	q := make([]Failure, 0, len(failures))
	for _, f := range failures {
		q = append(q, f)
	}
	slices.SortFunc(q, func(a, b Failure) int { return strings.Compare(a.Key, b.Key) })
	_, err := p.State.Save(ctx, "retry.json", q, objstore.PutOptions{})
	return err
}

// nextFailure records one more failed attempt, doubling the wait.
func (p *Pair) nextFailure(f Failure, key string, err error) Failure {
	now := time.Now().UTC()
	if f.Key == "" {
		f = Failure{Key: key, FirstFailed: now}
	}
	f.Attempts++
	f.Error = err.Error()
	wait := p.RetryBackoff << min(f.Attempts-1, 16)
	f.NextAttempt = now.Add(min(wait, time.Hour))
	return f
}

// Promotion returns the target's promotion record, or nil.
func (p *Pair) Promotion(ctx context.Context) (*Promotion, error) {
	var prom Promotion
	_, err := p.State.Load(ctx, "promoted.json", &prom)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &prom, nil
}

// NotPromoted is the fencing condition of a pass into target: its records
// in st hold no promotion.
func NotPromoted(st state.Store, target string) fence.Condition {
	return func(ctx context.Context) (fence.Grant, error) {
		var prom Promotion
		_, err := st.Load(ctx, "promoted.json", &prom)
		switch {
		case errors.Is(err, objstore.ErrNotExist):
			return fence.Grant{For: fence.DefaultGrace, What: "the promotion of " + target}, nil
		case err != nil:
			return fence.Grant{}, err
		}
		return fence.Grant{}, fmt.Errorf("%w: %s %w at %s by %s; tandem no longer replicates into it", fence.ErrFenced, target, ErrPromoted, prom.At.Format(time.RFC3339), prom.By)
	}
}

// Promote makes the pair's target writable for good: it records the
// promotion in the standby region, after which no pass writes into the
// target. It returns once every pass that was writing has stopped: after
// fence.Takeover (grace is the longest grant a pass into the target holds,
// slack how late a write may land in it)
// and a revoke of the target's writes under way, so writes made after it
// returns are never overwritten by replication. Promoting again keeps the
// first record (and waits and revokes again: a promotion killed half way
// completes).
func Promote(ctx context.Context, st state.Store, pair string, target objstore.Bucket, grace, slack time.Duration) (Promotion, error) {
	prom, err := promote(ctx, st, pair, target.URL())
	if err != nil {
		return prom, err
	}
	if err := fence.Settle(ctx, grace, slack); err != nil {
		return prom, err
	}
	if _, err := objstore.Revoke(ctx, target); err != nil {
		return prom, err
	}
	return prom, nil
}

func promote(ctx context.Context, st state.Store, pair, target string) (Promotion, error) {
	status, err := LoadStatus(ctx, st, pair)
	if err != nil {
		return Promotion{}, err
	}
	if status.Promotion != nil {
		return *status.Promotion, nil
	}
	host, _ := os.Hostname()
	prom := Promotion{At: time.Now().UTC(), By: fmt.Sprintf("%s (pid %d)", host, os.Getpid()), Target: target, Watermark: status.Watermark}
	if _, err := st.Save(ctx, "promoted.json", prom, objstore.PutOptions{IfAbsent: true}); err != nil {
		if errors.Is(err, objstore.ErrPrecondition) {
			status, err = LoadStatus(ctx, st, pair)
			if err == nil && status.Promotion != nil {
				return *status.Promotion, nil
			}
		}
		return Promotion{}, err
	}
	return prom, nil
}
