package replicate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"tandem/internal/objstore"
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
	Promotion    *Promotion `json:"promotion,omitempty"`
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

func (p *Pair) saveStatus(ctx context.Context, sum Summary) error {
	cur, err := LoadStatus(ctx, *p.State, p.Name)
	if err != nil {
		return err
	}
	cur.Promotion = nil
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

// promotionPoll is how often a running pass looks for a promotion.
var promotionPoll = 2 * time.Second

func (p *Pair) watchPromotion(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(promotionPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ok, _ := p.State.Exists(ctx, "promoted.json"); ok {
				p.Log.Warn("target was promoted; stopping replication into it", "pair", p.Name, "target", p.Target.URL())
				cancel(fmt.Errorf("%s: %w during a pass; tandem no longer replicates into it", p.Target.URL(), ErrPromoted))
				return
			}
		}
	}
}

// Promote makes the pair's target writable for good: it records the
// promotion in the standby region, after which no pass writes into the
// target. Promoting twice keeps the first record.
func Promote(ctx context.Context, st state.Store, pair, target string) (Promotion, error) {
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
