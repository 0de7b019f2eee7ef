package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tandem/internal/config"
	"tandem/internal/lease"
	"tandem/internal/member"
	"tandem/internal/plan"
	"tandem/internal/state"
	"tandem/internal/stream"
)

// Step kinds.
const (
	Check = "check.stream"
	Drain = "stream.drain"
	Start = "stream.start"
)

// Kind is the stream kind.
type Kind struct{}

var (
	_ member.Kind   = Kind{}
	_ member.Server = Kind{}
)

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Drain, Start} }

// Steps: both ends and the sink answer (and, for a switchover, the new
// primary lacks at most max_lag events); a switchover drains the old
// primary's processing and brings the new primary's position level with
// it; a switchover and a failover fence the sink at the new epoch before
// the new primary processes.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	out := []member.Placed{{Group: "prechecks", Step: plan.NewStep(Check, name, p.To, "the stream's brokers and sink answer, and the standby is caught up", plan.WarnOnFailover(p.Type))}}
	switch p.Type {
	case plan.Switchover:
		out = append(out,
			member.Placed{Group: "drain", Step: plan.NewStep(Drain, name, p.From, "process every event in "+p.From+" and carry the position over to "+p.To, "stop")},
			member.Placed{Group: "activate", Step: plan.NewStep(Start, name, p.To, "fence the sink at the new epoch: processing moves to "+p.To, "stop")})
	case plan.Failover:
		out = append(out, member.Placed{Group: "activate", Step: plan.NewStep(Start, name, p.To, "fence the sink at the new epoch and resume in "+p.To+" from its recorded position", "stop")})
	}
	return out
}

func openLog(ctx context.Context, s *Stream, region string) (stream.Log, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := stream.Open(ctx, s.Spec(region))
	if err != nil {
		return nil, fmt.Errorf("stream %s in %s: %w", s.Name, region, err)
	}
	return l, nil
}

// OpenSink opens the stream's sink; grace bounds a stalled transaction.
func OpenSink(ctx context.Context, s *Stream, grace time.Duration) (*stream.Sink, error) {
	var sk *stream.Sink
	var err error
	if q := s.Sink.SQL; q != nil {
		sk, err = stream.OpenSQL(ctx, q.Driver, string(q.DSN), s.Name, q.Statements)
	} else {
		h, l := s.Sink.HTTP, s.Sink.Ledger
		headers := map[string]string{}
		for k, v := range h.Headers {
			headers[k] = string(v)
		}
		sk, err = stream.OpenHTTP(ctx, l.Driver, string(l.DSN), s.Name, stream.HTTPCall{URL: string(h.URL), Method: h.Method, Headers: headers, Timeout: time.Duration(h.Timeout)})
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", s.Name, err)
	}
	sk.Grace = grace
	return sk, nil
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	s := Find(x.Cfg, x.Step.Member)
	sk, err := OpenSink(ctx, s, x.Grace(refKey, s.Name))
	if err != nil {
		return err
	}
	defer sk.Close()
	switch x.Step.Kind {
	case Check:
		return check(ctx, x, s, sk)
	case Drain:
		return drain(ctx, x, s, sk)
	}
	// Start: from now on the sink refuses the old primary's deliveries.
	if err := x.Guard().Check(ctx); err != nil {
		return err
	}
	if err := sk.Fence(ctx, x.Guard().Epoch(), x.Step.Region); err != nil {
		return err
	}
	pos, err := sk.Position(ctx, s.Consumer(x.Step.Region))
	if err != nil {
		return err
	}
	x.Printf("stream %s: the sink takes deliveries from %s under epoch %d only; %s resumes after position %d", s.Name, x.Step.Region, x.Guard().Epoch(), x.Step.Region, pos)
	return nil
}

func check(ctx context.Context, x *member.Exec, s *Stream, sk *stream.Sink) error {
	var errs []error
	regions := []string{x.Plan.From, x.Plan.To}
	if x.Plan.Type == plan.Failover {
		regions = []string{x.Plan.To}
	}
	for _, r := range regions {
		l, err := openLog(ctx, s, r)
		if err == nil {
			var h int64
			h, err = l.Head(ctx)
			l.Close()
			if err == nil {
				x.Printf("stream %s in %s answers: %d events", s.Name, r, h)
			}
		}
		if err != nil {
			errs = append(errs, member.Failed("%v", err))
		}
	}
	if st, err := sk.Stats(ctx); err != nil {
		errs = append(errs, member.Failed("%v", err))
	} else {
		x.Printf("stream %s: the sink answers: %d applied, %d duplicates absorbed, epoch %d", s.Name, st.Applied, st.Duplicates, st.Epoch)
	}
	if x.Plan.Type == plan.Switchover {
		ms, _, err := loadMirror(ctx, x.Env, s)
		switch {
		case err != nil:
			errs = append(errs, member.Failed("stream %s: the catch-up record: %v", s.Name, err))
		case int64(ms.Missing(x.Plan.From)) > s.MaxLag:
			errs = append(errs, member.Failed("stream %s: %s lacks %d events of %s (max_lag %d): wait for the catch-up under serve, or raise max_lag",
				s.Name, x.Plan.To, ms.Missing(x.Plan.From), x.Plan.From, s.MaxLag))
		default:
			x.Printf("stream %s: %s lacks %d events of %s (max_lag %d)", s.Name, x.Plan.To, ms.Missing(x.Plan.From), x.Plan.From, s.MaxLag)
		}
	}
	return errors.Join(errs...)
}

// drain waits until the old primary has processed every event its log
// held when the step started, then follows the new primary's log until its
// position covers every event its log held then: the new primary resumes
// where the old one stopped, with nothing skipped.
func drain(ctx context.Context, x *member.Exec, s *Stream, sk *stream.Sink) error {
	from, to := x.Plan.From, x.Plan.To
	lf, err := openLog(ctx, s, from)
	if err != nil {
		return err
	}
	defer lf.Close()
	hf, err := lf.Head(ctx)
	if err != nil {
		return err
	}
	said := time.Now().Add(5 * time.Second)
	for {
		pos, err := sk.Position(ctx, s.Consumer(from))
		if err != nil {
			return err
		}
		if time.Now().After(said) {
			x.Printf("stream %s: waiting for %s to process up to position %d (it is at %d): is 'tandem serve --region %s' running?", s.Name, from, hf, pos, from)
			said = time.Now().Add(time.Minute)
		}
		if pos >= hf {
			x.Printf("stream %s: %s processed every event up to position %d", s.Name, from, hf)
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s: %s processed up to %d of %d: is its serve running? %w", s.Name, from, pos, hf, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	lt, err := openLog(ctx, s, to)
	if err != nil {
		return err
	}
	defer lt.Close()
	ht, err := lt.Head(ctx)
	if err != nil {
		return err
	}
	pos, err := stream.FollowTo(ctx, to, lt, sk, s.Consumer(to), s.Batch, ht)
	if err != nil {
		return fmt.Errorf("stream %s: %s's position reached %d of %d (its next event is not applied yet: is the catch-up running?): %w", s.Name, to, pos, ht, err)
	}
	x.Printf("stream %s: %s resumes after position %d, every event before it applied", s.Name, to, pos)
	return nil
}

// mirrorStore is the witness folder of the stream's catch-up record: it
// follows the lease, whichever region's serve runs the catch-up.
func mirrorStore(ctx context.Context, env *member.Env) (state.Store, error) {
	w, err := env.Witness(ctx)
	return w.Sub("streams"), err
}

func loadMirror(ctx context.Context, env *member.Env, s *Stream) (*stream.MirrorState, string, error) {
	st, err := mirrorStore(ctx, env)
	if err != nil {
		return nil, "", err
	}
	ms := &stream.MirrorState{}
	etag, err := st.Load(ctx, s.Name+".json", ms)
	if err != nil && !isNotExist(err) {
		return nil, "", err
	}
	return ms, etag, nil
}

// holder is the region that processes s now: the lease's holder, or the
// configured primary before any lease.
func holder(ctx context.Context, env *member.Env, pg *config.ProtectionGroup) (string, lease.Record, error) {
	rec, ok, err := env.Lease(ctx, pg.Name)
	if err != nil {
		return "", rec, err
	}
	if !ok {
		return pg.Primary, rec, nil
	}
	return rec.Holder, rec, nil
}
