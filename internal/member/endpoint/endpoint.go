package endpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"tandem/internal/config"
	"tandem/internal/dnsupdate"
	"tandem/internal/hook"
	"tandem/internal/member"
	"tandem/internal/notify"
	"tandem/internal/plan"
	"tandem/internal/redact"
)

// Step kinds.
const (
	Check  = "check.name" // not check.endpoint: a user step's precheck is that
	Switch = "endpoint.switch"
)

func init() { member.Register(Kind{}) }

// Kind is the endpoint kind.
type Kind struct{}

var _ member.Kind = Kind{}

func (Kind) Name() string            { return refKey }
func (Kind) Section() config.Section { return section() }
func (Kind) StepKinds() []string     { return []string{Check, Switch} }

// toward is the region the name must point at once plan p is done: the new
// primary, or the primary a failback keeps.
func toward(p *plan.Plan) (want, expect string) {
	if p.Type == plan.Failback {
		return p.From, p.To
	}
	return p.To, p.From
}

// Steps: a precheck (the name points at the primary, its TTL is short, the
// region taking over answers); a switchover and a failover switch the name
// after the lease moved; a failback makes sure it points at the primary
// (a failover whose switch was skipped). A forward endpoint follows the
// lease by itself: it has the precheck only.
func (Kind) Steps(env *member.Env, p *plan.Plan, name string) []member.Placed {
	e := Find(env.Cfg, name)
	if p.Type == plan.DrillStart || p.Type == plan.DrillStop {
		return nil
	}
	want, _ := toward(p)
	out := []member.Placed{{Group: "prechecks", Step: plan.NewStep(Check, name, p.To,
		fmt.Sprintf("the endpoint points at the primary and %s's target answers", want), plan.WarnOnFailover(p.Type))}}
	if e.Forward == nil {
		title := "point the name at " + want
		if p.Type == plan.Failback {
			title = "make sure the name points at the primary " + want
		}
		out = append(out, member.Placed{Group: "aliases", Step: plan.NewStep(Switch, name, want, title, "stop")})
	}
	return out
}

// Do performs a step.
func (Kind) Do(ctx context.Context, x *member.Exec) error {
	e := Find(x.Cfg, x.Step.Member)
	want, expect := toward(x.Plan)
	if x.Step.Kind == Check {
		return check(ctx, x, e, want, expect)
	}
	if err := x.Guard().Check(ctx); err != nil {
		return err
	}
	epoch := x.Guard().Epoch()
	if err := e.swap(ctx, expect, want, epoch, x.Out); err != nil {
		return fmt.Errorf("endpoint %s: %w", e.Name, err)
	}
	x.Printf("endpoint %s points at %s (%s)", e.Name, want, strings.Join(e.Targets[want], ", "))
	return nil
}

// record is where the name points now.
type record struct {
	Values []string
	TTL    time.Duration // 0: unknown
}

// errNoRead: an api endpoint without read cannot say where it points.
var errNoRead = errors.New("the endpoint has no api.read: tandem cannot tell where it points")

// current reads the record the name holds.
func (e *Endpoint) current(ctx context.Context) (record, error) {
	switch {
	case e.DNS != nil:
		s, err := e.DNS.server()
		if err != nil {
			return record{}, err
		}
		r, err := s.Lookup(ctx, e.DNS.Name, e.DNS.Type)
		return record{Values: r.Values, TTL: time.Duration(r.TTL) * time.Second}, err
	case e.API != nil && e.API.Read != nil:
		v, err := hook.Answer(ctx, *e.API.Read, hook.Data{Plan: "read"}, e.API.Field)
		if err != nil {
			return record{}, fmt.Errorf("api.read: %w", err)
		}
		var vals []string
		if l, ok := v.([]any); ok {
			for _, x := range l {
				vals = append(vals, fmt.Sprint(x))
			}
		} else {
			vals = strings.Split(fmt.Sprint(v), ",")
		}
		slices.Sort(vals)
		return record{Values: vals}, nil
	}
	return record{}, errNoRead
}

// normalized are region's target values as the record holds them.
func (e *Endpoint) normalized(region string) []string {
	if e.DNS != nil {
		return dnsupdate.Normalize(e.DNS.Type, e.Targets[region])
	}
	v := slices.Clone(e.Targets[region])
	slices.Sort(v)
	return v
}

// pointsAt is the region whose target the record holds ("" none).
func (e *Endpoint) pointsAt(r record) string {
	for region := range e.Targets {
		if slices.Equal(e.normalized(region), r.Values) {
			return region
		}
	}
	return ""
}

// swap points the name at want's target if it holds expect's (or holds
// want's already).
func (e *Endpoint) swap(ctx context.Context, expect, want string, epoch int64, w io.Writer) error {
	if d := e.DNS; d != nil {
		s, err := d.server()
		if err != nil {
			return err
		}
		return s.Swap(ctx, d.Name, d.Type, uint32(time.Duration(d.TTL)/time.Second), e.Targets[expect], e.Targets[want])
	}
	a := e.API
	if a.Read != nil {
		cur, err := e.current(ctx)
		if err != nil {
			return err
		}
		switch e.pointsAt(cur) {
		case want:
			fmt.Fprintf(w, "the name points at %s already\n", want)
			return nil
		case expect:
		default:
			return fmt.Errorf("the name holds %s, not %s's target as expected: %w", show(cur.Values), expect, dnsupdate.ErrMismatch)
		}
	}
	d := hook.Data{Plan: "switch", From: expect, To: want, Region: want, Vars: a.Vars[want], Epoch: epoch,
		Value: strings.Join(e.Targets[want], ","), Expected: strings.Join(e.Targets[expect], ",")}
	if err := hook.Run(ctx, a.Update, d, w); err != nil {
		return fmt.Errorf("api.update: %w", err)
	}
	if a.Read == nil {
		return nil
	}
	cur, err := e.current(ctx)
	if err != nil {
		return fmt.Errorf("after the update: %w", err)
	}
	if e.pointsAt(cur) != want {
		return fmt.Errorf("api.update succeeded, but api.read answers %s, not %s's target", show(cur.Values), want)
	}
	return nil
}

func show(v []string) string {
	if len(v) == 0 {
		return "nothing"
	}
	return strings.Join(v, ", ")
}

// check is the precheck: where the name points, its TTL, and whether the
// region it is to point at answers.
func check(ctx context.Context, x *member.Exec, e *Endpoint, want, expect string) error {
	var errs []error
	if e.Forward == nil {
		cur, err := e.current(ctx)
		switch at := e.pointsAt(cur); {
		case errors.Is(err, errNoRead):
			x.Printf("endpoint %s: %v", e.Name, err)
		case err != nil:
			errs = append(errs, member.Failed("endpoint %s: %v", e.Name, err))
		case at == expect:
			x.Printf("endpoint %s points at %s (%s)", e.Name, expect, show(cur.Values))
		case at == want:
			x.Printf("endpoint %s points at %s already", e.Name, want)
		default:
			errs = append(errs, member.Failed("endpoint %s holds %s: neither %s's nor %s's target; point it at %s's by hand, or fix targets", e.Name, show(cur.Values), expect, want, expect))
		}
		if e.DNS != nil && err == nil && cur.TTL > time.Duration(e.DNS.MaxTTL) {
			errs = append(errs, member.Failed("endpoint %s: the record's TTL is %s, above max_ttl %s: clients would keep the old answer that long after the switch; lower it a TTL ahead of the plan",
				e.Name, cur.TTL, time.Duration(e.DNS.MaxTTL)))
		}
	}
	if err := e.probe(ctx, want); err != nil {
		errs = append(errs, member.Failed("endpoint %s: %s's target does not answer: %v", e.Name, want, err))
	} else {
		x.Printf("endpoint %s: %s's target answers", e.Name, want)
	}
	return errors.Join(errs...)
}

// probe checks that region's target answers: its probe, or a forward
// target itself. Without either, nothing is checked.
func (e *Endpoint) probe(ctx context.Context, region string) error {
	p := string(e.Probe[region])
	if p == "" && e.Forward != nil {
		p = e.Targets[region][0]
	}
	if p == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p, nil)
		if err != nil {
			return fmt.Errorf("probe %s: %w", notify.Host(p), err)
		}
		c := http.DefaultClient
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("probe %s: %w", notify.Host(p), redact.Err(err))
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("probe %s answered %s", notify.Host(p), resp.Status)
		}
		return nil
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p)
	if err != nil {
		return fmt.Errorf("probe %s: %w", p, err)
	}
	return c.Close()
}

// Status says where the name points and whether that is the lease
// holder's target.
func (Kind) Status(ctx context.Context, env *member.Env, name string) member.Report {
	e := Find(env.Cfg, name)
	rep := member.Report{Kind: refKey, Member: name, Health: "ok"}
	detail := map[string]any{"endpoint": name, "way": e.Way()}
	holder := ""
	if pg := env.ProtectionGroupOf(refKey, name); pg != nil {
		if rec, ok, err := env.Lease(ctx, pg.Name); err == nil && ok {
			holder = rec.Holder
		}
	}
	detail["primary"] = holder
	if e.Forward != nil {
		line := "forwards to the lease holder's target"
		if holder != "" {
			line += fmt.Sprintf(" (%s: %s)", holder, strings.Join(e.Targets[holder], ", "))
		}
		rep.Lines = []string{line}
	} else {
		cur, err := e.current(ctx)
		at := e.pointsAt(cur)
		detail["values"], detail["points_at"] = cur.Values, at
		switch {
		case errors.Is(err, errNoRead):
			rep.Lines = []string{"switched by plans (no api.read: where it points is unknown)"}
		case err != nil:
			rep.Health, rep.Attention = "unreachable", true
			rep.Lines = []string{err.Error()}
		case holder != "" && at != holder:
			rep.Health, rep.Attention = "points-elsewhere", true
			rep.Lines = []string{fmt.Sprintf("holds %s, not the primary %s's target (%s)", show(cur.Values), holder, strings.Join(e.Targets[holder], ", "))}
		default:
			line := fmt.Sprintf("points at %s (%s)", cmp.Or(at, "no region"), show(cur.Values))
			if cur.TTL > 0 {
				line += fmt.Sprintf(", TTL %s", cur.TTL)
			}
			rep.Lines = []string{line}
		}
	}
	detail["health"] = rep.Health
	rep.Detail = detail
	return rep
}
