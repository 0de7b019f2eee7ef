// Package members opens what a configuration names (replications, table
// groups and the stores they keep their records in) in the direction the
// region lease says, and does what each member does in a DR plan: the
// built-in steps and prechecks (steps.go, checks.go).
//
// Direction: a protection group's lease record names the holder (the
// primary) and its standby. A replication or group configured from A to B
// runs from A to B until a plan makes B the holder with A as its standby;
// then it runs from B to A. Its records live in the state of the region it
// copies into. Its fence lets it publish only while its source holds the
// lease and its target is the recorded standby (or no lease was ever
// taken).
package members

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"tandem/internal/config"
	"tandem/internal/databricks"
	"tandem/internal/lease"
	"tandem/internal/location"
	"tandem/internal/objstore"
	"tandem/internal/replicate"
	"tandem/internal/state"
	"tandem/internal/tablegroup"
)

// RegionState opens a region's state location, creating a missing folder.
func RegionState(ctx context.Context, cfg *config.Config, region string) (state.Store, error) {
	reg := cfg.Region(region)
	if reg == nil {
		return state.Store{}, fmt.Errorf("unknown region %q", region)
	}
	l, err := location.Parse(reg.State)
	if err != nil {
		return state.Store{}, err
	}
	b, err := location.Open(ctx, l, reg.S3.Options(), true)
	if err != nil {
		return state.Store{}, fmt.Errorf("region %s state: %w", reg.Name, err)
	}
	return state.Store{Bucket: b}, nil
}

// Witness opens the witness location.
func Witness(ctx context.Context, cfg *config.Config) (state.Store, error) {
	if cfg.Witness == nil {
		return state.Store{}, fmt.Errorf("no witness is configured")
	}
	l, err := location.Parse(cfg.Witness.URL)
	if err != nil {
		return state.Store{}, err
	}
	b, err := location.Open(ctx, l, cfg.Witness.S3.Options(), true)
	if err != nil {
		return state.Store{}, fmt.Errorf("witness: %w", err)
	}
	return state.Store{Bucket: b}, nil
}

// Leases is the witness folder of the region leases.
func Leases(ctx context.Context, cfg *config.Config) (state.Store, error) {
	w, err := Witness(ctx, cfg)
	return w.Sub("leases"), err
}

// OpenSide opens one end of a replication.
func OpenSide(ctx context.Context, cfg *config.Config, s config.Side) (objstore.Bucket, error) {
	l, err := location.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	return location.Open(ctx, l, cfg.Region(s.Region).S3.Options(), false)
}

// ProtectionGroupOf returns the protection group a replication or group
// (kind "replications" or "groups") belongs to, or nil.
func ProtectionGroupOf(cfg *config.Config, kind, name string) *config.ProtectionGroup {
	for i := range cfg.ProtectionGroups {
		members := cfg.ProtectionGroups[i].Replications
		if kind == "groups" {
			members = cfg.ProtectionGroups[i].Groups
		}
		if slices.Contains(members, name) {
			return &cfg.ProtectionGroups[i]
		}
	}
	return nil
}

// reversed reports whether a member configured from→to runs to→from now.
func reversed(ctx context.Context, cfg *config.Config, kind, name, from, to string) (bool, error) {
	pg := ProtectionGroupOf(cfg, kind, name)
	if pg == nil || cfg.Witness == nil {
		return false, nil
	}
	st, err := Leases(ctx, cfg)
	if err != nil {
		return false, err
	}
	rec, ok, err := lease.Show(ctx, st, pg.Name)
	if err != nil {
		return false, err
	}
	return ok && rec.Holder == to && rec.Standby == from, nil
}

// Reverse returns the replication running the other way.
func Reverse(r *config.Replication) *config.Replication {
	rr := *r
	rr.From, rr.To = r.To, r.From
	return &rr
}

// Current returns the replication in the direction the lease says.
func Current(ctx context.Context, cfg *config.Config, r *config.Replication) (*config.Replication, error) {
	rev, err := reversed(ctx, cfg, "replications", r.Name, r.From.Region, r.To.Region)
	if err != nil || !rev {
		return r, err
	}
	return Reverse(r), nil
}

// PairState is a replication's folder in its target region's state: it
// lives in the standby region, so it is there when the primary is gone.
func PairState(ctx context.Context, cfg *config.Config, r *config.Replication) (state.Store, error) {
	st, err := RegionState(ctx, cfg, r.To.Region)
	if err != nil {
		return state.Store{}, err
	}
	return st.Sub("replication").Sub(r.Name), nil
}

// OpenPair opens both ends of a replication, as given (see Current), and
// its state.
func OpenPair(ctx context.Context, cfg *config.Config, r *config.Replication, log *slog.Logger) (*replicate.Pair, error) {
	st, err := PairState(ctx, cfg, r)
	if err != nil {
		return nil, fmt.Errorf("replication %s: %w", r.Name, err)
	}
	src, err := OpenSide(ctx, cfg, r.From)
	if err != nil {
		return nil, fmt.Errorf("replication %s: source: %w", r.Name, err)
	}
	dst, err := OpenSide(ctx, cfg, r.To)
	if err != nil {
		return nil, fmt.Errorf("replication %s: target: %w", r.Name, err)
	}
	fence := Fence(cfg, "replications", r.Name, r.From.Region, r.To.Region)
	return &replicate.Pair{
		Name: r.Name, Source: src, Target: dst,
		Delete: r.Delete, Exclude: cfg.Exclusions(r),
		Transfers: r.Transfers, Retries: r.Retries, RetryBackoff: time.Duration(r.RetryBackoff),
		MultipartThreshold: int64(r.MultipartThreshold), PartSize: int64(r.PartSize),
		State: &st, Log: log,
		Fence: func(ctx context.Context) error { _, err := fence(ctx); return err },
	}, nil
}

// Fence returns the fence of a replication or group copying from source
// to target: it may publish only while the lease of its protection group
// is held by source with target as the standby (or was never taken: no
// role change happened yet, and source is the configured primary), under
// the epoch returned. A member of no protection group is never fenced. A
// drill in progress in target also stops it.
func Fence(cfg *config.Config, kind, name, source, target string) func(context.Context) (int64, error) {
	pg := ProtectionGroupOf(cfg, kind, name)
	var (
		mu             sync.Mutex
		leases, drills *state.Store // opened on first use, then reused
	)
	stores := func(ctx context.Context) (state.Store, state.Store, error) {
		mu.Lock()
		defer mu.Unlock()
		if leases == nil {
			l, err := Leases(ctx, cfg)
			if err != nil {
				return state.Store{}, state.Store{}, err
			}
			rs, err := RegionState(ctx, cfg, target)
			if err != nil {
				return state.Store{}, state.Store{}, err
			}
			d := rs.Sub("drills")
			leases, drills = &l, &d
		}
		return *leases, *drills, nil
	}
	return func(ctx context.Context) (int64, error) {
		if pg == nil {
			return 0, nil
		}
		st, dr, err := stores(ctx)
		if err != nil {
			return 0, err
		}
		if err := drilling(ctx, dr, pg, target); err != nil {
			return 0, err
		}
		rec, ok, err := lease.Show(ctx, st, pg.Name)
		switch {
		case err != nil:
			return 0, err
		case !ok && source == pg.Primary:
			return 0, nil
		case !ok:
			return 0, fmt.Errorf("%w: no lease of %s was taken yet, and %s copies from its standby %s", lease.ErrFenced, pg.Name, name, source)
		case rec.Holder != source:
			return 0, fmt.Errorf("%w: %s holds the lease of %s (epoch %d), not %s, the source of %s", lease.ErrFenced, lease.Who(rec.Holder), pg.Name, rec.Epoch, source, name)
		case rec.Standby != target:
			return 0, fmt.Errorf("%w: the standby of %s is %s, not %s, the target of %s (a failback makes it the standby again)", lease.ErrFenced, pg.Name, lease.Who(rec.Standby), target, name)
		}
		return rec.Epoch, nil
	}
}

// GroupSides returns a group's regions and its tables' locations in the
// direction the lease says.
func GroupSides(ctx context.Context, cfg *config.Config, g *config.Group) (*config.Group, error) {
	rev, err := reversed(ctx, cfg, "groups", g.Name, g.From, g.To)
	if err != nil || !rev {
		return g, err
	}
	return ReverseGroup(g), nil
}

// ReverseGroup returns the group copying the other way.
func ReverseGroup(g *config.Group) *config.Group {
	rg := *g
	rg.From, rg.To = g.To, g.From
	rg.Tables = nil
	for _, t := range g.Tables {
		rg.Tables = append(rg.Tables, config.GroupTable{Name: t.Name, From: t.To, To: t.From})
	}
	return &rg
}

// GroupState is a group's folder in its target region's state.
func GroupState(ctx context.Context, cfg *config.Config, g *config.Group) (state.Store, error) {
	st, err := RegionState(ctx, cfg, g.To)
	if err != nil {
		return state.Store{}, fmt.Errorf("group %s: %w", g.Name, err)
	}
	return st.Sub("groups").Sub(g.Name), nil
}

// OpenGroup opens a group's tables in both regions, as given (see
// GroupSides), and its state in the target region. With targetOnly,
// sources are not opened and missing target tables are not created
// (finalize runs without the primary).
func OpenGroup(ctx context.Context, cfg *config.Config, g *config.Group, targetOnly bool, log *slog.Logger) (*tablegroup.Group, error) {
	st, err := GroupState(ctx, cfg, g)
	if err != nil {
		return nil, err
	}
	out := &tablegroup.Group{Name: g.Name, Workflow: g.Workflow != nil, State: st, Log: log,
		Fence: Fence(cfg, "groups", g.Name, g.From, g.To)}
	if g.Workflow != nil && g.Workflow.Databricks != nil {
		d := g.Workflow.Databricks
		out.Runs = &databricks.Client{Host: d.Host, Token: string(d.Token), JobID: d.JobID}
	}
	for _, t := range g.Tables {
		tt := tablegroup.Table{Name: t.Name}
		if !targetOnly {
			if tt.Source, err = OpenSide(ctx, cfg, config.Side{Region: g.From, URL: t.From}); err != nil {
				return nil, fmt.Errorf("group %s, table %s: source: %w", g.Name, t.Name, err)
			}
		}
		// A table's target folder is created on its first sync; finalize
		// only works on what is there.
		l, err := location.Parse(t.To)
		if err != nil {
			return nil, err
		}
		if tt.Target, err = location.Open(ctx, l, cfg.Region(g.To).S3.Options(), !targetOnly); err != nil {
			return nil, fmt.Errorf("group %s, table %s: target: %w", g.Name, t.Name, err)
		}
		out.Tables = append(out.Tables, tt)
	}
	return out, nil
}

// drilling fails while a drill is in progress in region (whose drills
// folder is drills): nothing is copied into a standby under test.
func drilling(ctx context.Context, drills state.Store, pg *config.ProtectionGroup, region string) error {
	var d Drill
	_, err := drills.Load(ctx, pg.Name+".json", &d)
	if errors.Is(err, objstore.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: a drill of %s is in progress in %s since %s (execution %s); `tandem plan run drill-stop` ends it",
		lease.ErrFenced, pg.Name, region, d.Started.Format(time.RFC3339), d.Execution)
}

// Drill is the record of a drill in progress in the standby.
type Drill struct {
	Execution string    `json:"execution"`
	Started   time.Time `json:"started"`
}
