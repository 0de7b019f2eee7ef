// Package member is the one shape every kind of protection-group member
// has (buckets, table groups, databases, aliases, workflows, and the kinds
// to come): a Kind implements one small interface and registers itself;
// plans, prechecks, status, serve and the passive old primary ask the
// registry instead of listing the kinds.
//
// A kind brings its steps per plan type and built-in group (Steps), what
// they do (Do), its prechecks (steps in the prechecks group), its status
// (Status) and the fence its writers honour (Env.Conditions for copies,
// Exec.Conditions for plan steps: both are the one rule of package fence).
// Optional interfaces add work under serve (Server) and what a region does
// when it has lost the lease (Passive). Kinds live in subpackages; package
// member/all imports them all.
package member

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"tandem/internal/config"
	"tandem/internal/fence"
	"tandem/internal/objstore"
	"tandem/internal/plan"
	"tandem/internal/state"
)

// Kind is one kind of member.
type Kind interface {
	// Name is the key protection groups list these members under
	// (protection_groups[].replications) and the kind's name in status.
	Name() string
	// Section is the kind's part of the configuration file: its key
	// (replication, groups; also the key of its list in `tandem status
	// --json`), decoding, defaults and validation. Register registers it.
	Section() config.Section
	// Steps returns the built-in steps a member contributes to plan p,
	// each in the built-in group it belongs to. Prechecks go in the
	// "prechecks" group.
	Steps(env *Env, p *plan.Plan, member string) []Placed
	// StepKinds lists the step kinds Do performs.
	StepKinds() []string
	// Do performs one step. It is idempotent: a resumed plan runs a step
	// again. Every write it makes goes through x.Conditions().
	Do(ctx context.Context, x *Exec) error
	// Status reports a member from the records in the region that holds
	// them (the standby's state for copies): it works with the primary
	// gone.
	Status(ctx context.Context, env *Env, member string) Report
}

// Passive is a kind with something to do in a region that lost the lease:
// its old primary's serve makes it passive (workflows paused, databases
// refusing writes) before anything else.
type Passive interface {
	// Passivate makes member passive in region; w gets what it did. It is
	// idempotent and safe in a region that is passive already.
	Passivate(ctx context.Context, env *Env, pg *config.ProtectionGroup, member, region string, w io.Writer) error
}

// Placed is a step and the built-in group it runs in.
type Placed struct {
	Group string
	Step  *plan.Step
}

// Bytes prints a byte count for people: 1.5 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Report is a member's state in `tandem status`.
type Report struct {
	Kind   string `json:"-"`
	Member string `json:"-"`
	// Noun names the member's kind in a sentence: "replication lake".
	Noun string `json:"-"`
	// Health is one word: ok, or what needs a person (late, failing,
	// interrupted, foreign-writes, never-ran, ...).
	Health string `json:"-"`
	// Attention: a person should look (status exits non-zero).
	Attention bool `json:"-"`
	// Lines are the human form, the first one without the member's name.
	Lines []string `json:"-"`
	// Detail is the JSON form.
	Detail any `json:"-"`
}

var (
	mu     sync.Mutex
	kinds  []Kind
	byStep = map[string]Kind{}
)

// Register adds a kind and its configuration section. It is called from
// the kind package's init and panics on a duplicate name or step kind,
// or a step kind of the protection group's own (plan.OwnKinds), which the
// kind would silently take over.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	for _, o := range kinds {
		if o.Name() == k.Name() {
			panic(fmt.Sprintf("member: kind %s registered twice", k.Name()))
		}
	}
	for _, s := range k.StepKinds() {
		if slices.Contains(plan.OwnKinds, s) {
			panic(fmt.Sprintf("member: kind %s claims step kind %s, the protection group's own", k.Name(), s))
		}
		if _, dup := byStep[s]; dup {
			panic(fmt.Sprintf("member: step kind %s registered twice", s))
		}
	}
	config.RegisterSection(k.Section())
	for _, s := range k.StepKinds() {
		byStep[s] = k
	}
	kinds = append(kinds, k)
	sort.SliceStable(kinds, func(i, j int) bool { return order(kinds[i]) < order(kinds[j]) })
}

// builtinOrder keeps plans, status and messages in a stable order: the
// copies first, then what depends on them.
var builtinOrder = []string{"replications", "groups", "streams", "sync_jobs", "databases", "cdc", "aliases", "endpoints", "workflows"}

func order(k Kind) int {
	if i := slices.Index(builtinOrder, k.Name()); i >= 0 {
		return i
	}
	return len(builtinOrder)
}

// Kinds returns the registered kinds in a stable order.
func Kinds() []Kind {
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(kinds)
}

// Find returns the kind named name (a protection group's member key).
func Find(name string) Kind {
	for _, k := range Kinds() {
		if k.Name() == name {
			return k
		}
	}
	return nil
}

// ofStep returns the kind that performs a step kind.
func ofStep(kind string) Kind {
	mu.Lock()
	defer mu.Unlock()
	return byStep[kind]
}

// Exec is one step being performed.
type Exec struct {
	*Env
	Plan      *plan.Plan
	PG        *config.ProtectionGroup
	Step      *plan.Step
	Execution string
	Out       io.Writer
	// For is the region the step acts for: it may act only while that
	// region holds the lease.
	For string

	once  sync.Once
	guard *fence.Guard
}

// Conditions are the fencing conditions of the step's writes: the region
// it acts for holds the lease.
func (x *Exec) Conditions() []fence.Condition {
	return x.ActingFor(x.PG, x.For)
}

// Guard is the fence of the step's writes (one per step, under one epoch).
func (x *Exec) Guard() *fence.Guard {
	x.once.Do(func() {
		x.guard = fence.New(fmt.Sprintf("step %s of the %s (acting for %s)", x.Step.ID, x.Plan.Type, x.For), x.Conditions()...)
	})
	return x.guard
}

// ActingStore is st with its writes fenced by the step's guard.
func (x *Exec) ActingStore(st state.Store) state.Store { return x.Guard().Store(st) }

// ActingBucket is b with its writes fenced by the step's guard.
func (x *Exec) ActingBucket(b objstore.Bucket) objstore.Bucket { return x.Guard().Bucket(b) }

// Printf writes a line of the step's output.
func (x *Exec) Printf(format string, args ...any) {
	fmt.Fprintf(x.Out, format+"\n", args...)
}

// Lagger is a kind whose members can say how much a failover now would
// lose of them: how long the oldest change not yet in the standby has
// waited (0: none waits). ok is false when it cannot tell (no watermark
// yet, records unreadable). Automatic failover's max_lag asks it.
type Lagger interface {
	Lag(ctx context.Context, env *Env, member string) (lag time.Duration, ok bool)
	// RPO is the most the member may lag before it needs a person (its
	// rpo or max_age; 0: no bound).
	RPO(env *Env, member string) time.Duration
}

// Backlogger is a kind whose members' lag is counted rather than timed:
// the WAL bytes a database standby has not replayed, the events a stream's
// standby region lacks. Lags reports it in its unit, against its bound.
type Backlogger interface {
	Backlog(ctx context.Context, env *Env, member string) (n, bound float64, unit string, ok bool)
}

// lagWait bounds how long Lags waits for a member: one whose ends do not
// answer (the primary gone) is unknown, and does not hold a run up.
const lagWait = 10 * time.Second

// Lags asks every member of pg whose kind can tell what a failover now
// would lose of it, all at once.
func Lags(ctx context.Context, env *Env, pg *config.ProtectionGroup) []plan.MemberRPO {
	ctx, cancel := context.WithTimeout(Reading(ctx), lagWait)
	defer cancel()
	var asks []func(*plan.MemberRPO)
	var out []plan.MemberRPO
	for _, k := range Kinds() {
		for _, m := range pg.Members(k.Section().Ref) {
			r := plan.MemberRPO{Member: k.Section().Noun + " " + m}
			switch l := k.(type) {
			case Lagger:
				r.Target = l.RPO(env, m).Seconds()
				asks = append(asks, func(r *plan.MemberRPO) {
					lag, known := l.Lag(ctx, env, m)
					r.Lag, r.Known = lag.Seconds(), known
				})
			case Backlogger:
				asks = append(asks, func(r *plan.MemberRPO) {
					r.Lag, r.Target, r.Unit, r.Known = l.Backlog(ctx, env, m)
				})
			default:
				continue
			}
			out = append(out, r)
		}
	}
	var wg sync.WaitGroup
	for i, ask := range asks {
		wg.Go(func() {
			ask(&out[i])
			out[i].Known = out[i].Known && ctx.Err() == nil
		})
	}
	wg.Wait()
	return out
}
