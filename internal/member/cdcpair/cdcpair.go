package cdcpair

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tandem/internal/cdc"
	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/fence"
	"tandem/internal/lease"
	"tandem/internal/member"
	"tandem/internal/plan"
	"tandem/internal/postgres"
)

// Step kinds.
const (
	Check    = "check.cdc"
	Drain    = "cdc.drain"
	Stop     = "cdc.stop"
	Validate = "cdc.validate"
)

func init() { member.Register(Kind{}) }

// Kind is the cdc pair kind.
type Kind struct{}

var (
	_ member.Kind   = Kind{}
	_ member.Server = Kind{}
	_ member.Lagger = Kind{}
)

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Drain, Stop, Validate} }

// SourceRegion is the region of p's source in pg: the one that is not the
// target's.
func SourceRegion(pg *config.ProtectionGroup, p *Pair) string {
	if p.Target.Region == pg.Primary {
		return pg.Standby
	}
	return pg.Primary
}

// Steps: a switchover checks the lag, drains what the fenced source
// committed into the target before the lease moves, and raises the
// target's fence after it; a failover raises the fence and validates the
// target against the source when it answers.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	pair := Find(env.Cfg, name)
	pg := env.ProtectionGroupOf(refKey, name)
	if pair == nil || pg == nil || SourceRegion(pg, pair) != p.From || pair.Target.Region != p.To {
		return nil // the plan does not move work from the source to the target
	}
	add := func(group, kind, region, title, onError string) member.Placed {
		return member.Placed{Group: group, Step: plan.NewStep(kind, name, region, title, onError)}
	}
	switch p.Type {
	case plan.Switchover:
		return []member.Placed{
			add("prechecks", Check, p.To, "CDC into "+p.To+" is streaming and within max_lag and rpo", "stop"),
			add("drain", Drain, p.From, "wait until the target applied everything the source committed", "stop"),
			add("reverse", Stop, p.To, "raise the target's fence to the new lease epoch: the old applier writes nothing more", "stop"),
			add("activate", Validate, p.To, fmt.Sprintf("compare the target with the source around the switchover (±%s)", time.Duration(pair.Window)), "continue"),
		}
	case plan.Failover:
		return []member.Placed{
			add("prechecks", Check, p.To, "CDC into "+p.To+" is within max_lag and rpo (what the failover loses)", "continue"),
			add("reverse", Stop, p.To, "raise the target's fence to the new lease epoch: the old applier writes nothing more", "stop"),
			add("activate", Validate, p.To, fmt.Sprintf("compare the target with the source around the failover (±%s), if the source answers", time.Duration(pair.Window)), "continue"),
		}
	}
	return nil
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	p := Find(x.Cfg, x.Step.Member)
	o := p.Options(x.Cfg)
	switch x.Step.Kind {
	case Check:
		l, err := lag(ctx, p, o)
		if err != nil {
			return member.Failed("cdc %s: %v", p.Name, err)
		}
		x.Printf("cdc %s: %s", p.Name, l.describe())
		return l.within(p)
	case Drain:
		return drain(ctx, x, p, o)
	case Stop:
		g := x.Guard()
		if err := g.Check(ctx); err != nil {
			return err
		}
		if err := cdc.Fence(ctx, o.Target, p.Name, g.Epoch(), x.Step.Region); err != nil {
			return fmt.Errorf("cdc %s: fence the target: %w", p.Name, err)
		}
		x.Printf("cdc %s: the target's fence is at epoch %d (%s): an applier of an older epoch writes nothing more", p.Name, g.Epoch(), x.Step.Region)
		return nil
	case Validate:
		// The window around the switch bounds what the step reads (and the
		// plan's RTO); tables without an audit column are compared whole.
		now := time.Now()
		vo := cdc.ValidateOptions{Wait: 10 * time.Second,
			Scope: cdc.Scope{Since: now.Add(-time.Duration(p.Window)), Until: now.Add(time.Duration(p.Window))}}
		rep, err := cdc.Validate(ctx, o, vo)
		if err != nil {
			return member.Failed("cdc %s: not validated: %v (run tandem validate %s when the source answers)", p.Name, err, p.Name)
		}
		cdc.Print(x.Out, rep, 10)
		if rep.Differences > 0 {
			return member.Failed("cdc %s: %d rows differ between the source and the target: what the failover lost of them; tandem validate %s --repair brings the target level with the source, if that is what you want", p.Name, rep.Differences, p.Name)
		}
		return nil
	}
	return fmt.Errorf("unknown step kind %s", x.Step.Kind)
}

// drain waits until the target's position reaches the source's WAL
// position at the start of the step (the source is fenced by then, when
// it is a databases[] pair of the plan).
func drain(ctx context.Context, x *member.Exec, p *Pair, o cdc.Options) error {
	_, s, err := cdc.PrimaryStatus(ctx, o.Sources)
	if err != nil {
		return err
	}
	at, err := cdc.ParseLSN(s.LSN)
	if err != nil {
		return err
	}
	x.Printf("cdc %s: waiting until the target applied up to %s", p.Name, at)
	said := time.Now()
	for {
		pos, err := readPosition(ctx, o)
		if err == nil && pos.LSN >= at {
			x.Printf("cdc %s: the target is at %s, level with the source", p.Name, pos.LSN)
			return nil
		}
		if time.Since(said) > 10*time.Second {
			said = time.Now()
			x.Printf("cdc %s: the target is at %s, still short of %s (is serve running in %s?)", p.Name, pos.LSN, at, p.Target.Region)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cdc %s: the target did not reach %s: %w", p.Name, at, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readPosition(ctx context.Context, o cdc.Options) (cdc.Position, error) {
	c, err := postgres.Connect(ctx, o.Target)
	if err != nil {
		return cdc.Position{Pair: o.Pair}, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return cdc.ReadPosition(ctx, c, o.Pair)
}

// Lag is how far the target is behind the source.
type Lag struct {
	Position cdc.Position `json:"position"`
	// SourceLSN is the source primary's WAL position; Bytes the WAL between
	// it and the target's position; Seconds how long ago the source had
	// what the target has (0 when level). Source is "" when the source
	// does not answer.
	Source    string  `json:"source,omitempty"`
	SourceLSN string  `json:"source_lsn,omitempty"`
	Bytes     int64   `json:"lag_bytes"`
	Seconds   float64 `json:"lag_seconds"`
	SourceErr string  `json:"source_error,omitempty"`
}

func lag(ctx context.Context, p *Pair, o cdc.Options) (Lag, error) {
	pos, err := readPosition(ctx, o)
	l := Lag{Position: pos}
	if err != nil {
		return l, fmt.Errorf("the target does not answer: %w", err)
	}
	if pos.State != "streaming" {
		return l, errors.New("nothing replicated yet: the first snapshot has not reached the target (is serve running in " + p.Target.Region + "?)")
	}
	if primary, s, err := cdc.PrimaryStatus(ctx, o.Sources); err == nil {
		l.Source, l.SourceLSN = postgres.Redact(primary), s.LSN
		at, _ := cdc.ParseLSN(s.LSN)
		l.Bytes = max(int64(at)-int64(pos.LSN), 0)
	} else {
		l.SourceErr = err.Error()
		l.Bytes = -1
	}
	if l.Bytes != 0 && !pos.SourceTime.IsZero() {
		l.Seconds = time.Since(pos.SourceTime).Seconds()
	}
	return l, nil
}

func (l Lag) describe() string {
	s := fmt.Sprintf("the target is at %s (timeline %d)", l.Position.LSN, l.Position.Timeline)
	switch {
	case l.SourceErr != "":
		s += fmt.Sprintf("; the source does not answer (%s); it had what the target has %s ago", l.SourceErr, time.Duration(l.Seconds*float64(time.Second)).Round(time.Second))
	case l.Bytes == 0:
		s += ", level with the source"
	default:
		s += fmt.Sprintf(", %s behind the source (%s), %s", member.Bytes(l.Bytes), l.SourceLSN, time.Duration(l.Seconds*float64(time.Second)).Round(time.Millisecond))
	}
	return s
}

func (l Lag) within(p *Pair) error {
	switch {
	case l.SourceErr != "":
		return member.Failed("cdc %s: the source does not answer: the lag cannot be measured", p.Name)
	case l.Bytes > int64(p.MaxLag):
		return member.Failed("cdc %s: %s behind, above max_lag %s", p.Name, member.Bytes(l.Bytes), member.Bytes(int64(p.MaxLag)))
	case l.Seconds > time.Duration(p.RPO).Seconds():
		return member.Failed("cdc %s: %.1fs behind, above rpo %s", p.Name, l.Seconds, time.Duration(p.RPO))
	}
	return nil
}

// Status reports the pair from the target's records: the position, the
// lag against the source when it answers, and the last source failover
// followed.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	p := Find(env.Cfg, name)
	rep := member.Report{Kind: refKey, Member: name, Noun: "cdc " + name, Health: "ok"}
	o := p.Options(env.Cfg)
	l, err := lag(ctx, p, o)
	detail := map[string]any{"cdc": name, "target_region": p.Target.Region, "tables": p.Tables}
	detail["lag"] = l
	switch {
	case err != nil && l.Position.State == "new":
		rep.Health, rep.Attention = "never-ran", true
		rep.Lines = []string{err.Error()}
	case err != nil:
		rep.Health, rep.Attention = "unreachable", true
		rep.Lines = []string{err.Error()}
	default:
		rep.Lines = []string{l.describe() + fmt.Sprintf("; %d rows applied", l.Position.Rows)}
		if werr := l.within(p); werr != nil {
			rep.Health, rep.Attention = "late", true
			rep.Lines = append(rep.Lines, strings.TrimPrefix(werr.Error(), member.ErrPrecheck.Error()+": "))
		}
		if pg := env.ProtectionGroupOf(refKey, name); pg != nil {
			if rec, ok, lerr := env.Lease(ctx, pg.Name); lerr == nil && ok && rec.Holder == p.Target.Region {
				rep.Health, rep.Attention = "stopped", false
				rep.Lines = append(rep.Lines, p.Target.Region+" holds the lease: the target is the primary, nothing replicates into it")
			}
		}
	}
	if c, cerr := postgres.Connect(ctx, o.Target); cerr == nil {
		if evs, err := cdc.Events(ctx, c, name, 5); err == nil {
			detail["events"] = evs
			for _, e := range evs {
				if e.Kind == "source-failover" {
					lost, _ := e.Detail["lost"].([]any)
					rep.Lines = append(rep.Lines, fmt.Sprintf("followed a source failover at %s: %v; %d applied transactions lost at the source (tandem cdc status lists them)",
						e.At.Local().Format("2006-01-02 15:04:05"), e.Detail["cause"], len(lost)))
					break
				}
			}
		}
		c.Close(context.WithoutCancel(ctx))
	}
	detail["health"] = rep.Health
	rep.Detail = detail
	return rep
}

// RPO is the pair's rpo.
func (Kind) RPO(env *member.Env, name string) time.Duration {
	if p := Find(env.Cfg, name); p != nil {
		return time.Duration(p.RPO)
	}
	return 0
}

// Lag is how long ago the source had what the target has.
func (Kind) Lag(ctx context.Context, env *member.Env, name string) (time.Duration, bool) {
	p := Find(env.Cfg, name)
	l, err := lag(ctx, p, p.Options(env.Cfg))
	if err != nil || l.SourceErr != "" {
		return 0, false
	}
	return time.Duration(l.Seconds * float64(time.Second)), true
}

// Serve runs each pair in the serve of its target's region (every serve
// without a region), while the source's region holds the lease.
func (Kind) Serve(ctx context.Context, s *member.Serving) error {
	m := metrics{
		lagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "cdc", Name: "lag_bytes",
			Help: "WAL between the source's last reported position and the target's applied position."}, []string{"cdc"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "cdc", Name: "lag_seconds",
			Help: "How long ago the source had what the target has (0 when level)."}, []string{"cdc"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tandem", Subsystem: "cdc", Name: "applied_rows_total",
			Help: "Row changes applied to the target by this serve."}, []string{"cdc"}),
		streaming: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "cdc", Name: "streaming",
			Help: "1 while this serve applies the pair's changes."}, []string{"cdc"}),
	}
	s.Reg.MustRegister(m.lagBytes, m.lagSeconds, m.rows, m.streaming)
	all := All(s.Env.Cfg)
	for i := range all {
		p := &all[i]
		pg := s.Env.ProtectionGroupOf(refKey, p.Name)
		if pg == nil {
			s.Env.Log.Warn("cdc pair is in no protection group: serve does not run it (tandem cdc run does)", "cdc", p.Name)
			continue
		}
		if s.Region != "" && s.Region != p.Target.Region {
			continue
		}
		l := &loop{s: s, p: p, pg: pg, m: m, log: s.Env.Log.With("cdc", p.Name)}
		s.Task(daemon.Task{Name: "cdc/" + p.Name, Interval: time.Second, Run: l.round})
	}
	return nil
}

type metrics struct {
	lagBytes, lagSeconds, streaming *prometheus.GaugeVec
	rows                            *prometheus.CounterVec
}

type loop struct {
	s    *member.Serving
	p    *Pair
	pg   *config.ProtectionGroup
	m    metrics
	log  *slog.Logger
	said string
}

func (l *loop) say(why string) {
	if why != l.said {
		l.said = why
		l.log.Info(why)
	}
}

// round runs the replicator while the source's region holds the lease.
func (l *loop) round(ctx context.Context) time.Duration {
	src := SourceRegion(l.pg, l.p)
	rec, ok, err := l.s.Env.Lease(ctx, l.pg.Name)
	switch {
	case err != nil:
		l.say(fmt.Sprintf("the witness does not answer (%v): waiting", err))
		return 0
	case ok && rec.Holder != src:
		l.say(fmt.Sprintf("%s holds the lease, not the source's region %s: nothing replicates", lease.Who(rec.Holder), src))
		return 0
	case !ok && l.pg.Primary != src:
		l.say("the lease was never taken and the source's region is not the configured primary: nothing replicates")
		return 0
	}
	l.said = ""
	o := l.p.Options(l.s.Env.Cfg)
	o.Region, o.Log = src, l.log
	o.Guard = fence.New(fmt.Sprintf("cdc %s into %s, acting for %s", l.p.Name, l.p.Target.Region, src),
		append(l.s.Env.Conditions(refKey, l.p.Name, src, l.p.Target.Region), l.s.Conditions...)...)
	if err := o.Guard.Check(ctx); err != nil {
		l.say("not replicating: " + err.Error())
		return 0
	}
	r := cdc.New(o)
	stop := l.watch(ctx, r)
	l.m.streaming.WithLabelValues(l.p.Name).Set(1)
	err = r.Run(ctx)
	l.m.streaming.WithLabelValues(l.p.Name).Set(0)
	stop()
	if err != nil && ctx.Err() == nil {
		l.say("cdc stopped: " + err.Error())
		if errors.Is(err, cdc.ErrConfig) {
			return 30 * time.Second // until the configuration or the source changes
		}
	}
	return 0
}

// watch sets the pair's gauges every second from the replicator.
func (l *loop) watch(ctx context.Context, r *cdc.Replicator) func() {
	var rows int64
	return daemon.Every(ctx, time.Second, func(context.Context) {
		st := r.Stats()
		bytes := max(int64(st.ServerEnd)-int64(st.Position.LSN), 0)
		l.m.lagBytes.WithLabelValues(l.p.Name).Set(float64(bytes))
		secs := 0.0
		if bytes > 0 && !st.Position.SourceTime.IsZero() {
			secs = time.Since(st.Position.SourceTime).Seconds()
		}
		l.m.lagSeconds.WithLabelValues(l.p.Name).Set(secs)
		l.m.rows.WithLabelValues(l.p.Name).Add(float64(st.Rows - rows))
		rows = st.Rows
	})
}
