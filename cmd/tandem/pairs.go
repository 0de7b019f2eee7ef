package main

import (
	"context"
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

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageError{fmt.Errorf("--config is required")}
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// regionState opens a region's state location, creating a missing folder.
func regionState(ctx context.Context, reg *config.Region) (state.Store, error) {
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

// pairState is a replication's folder in its target region's state: it
// lives in the standby region, so it is there when the primary is gone.
func pairState(ctx context.Context, cfg *config.Config, r *config.Replication) (state.Store, error) {
	st, err := regionState(ctx, cfg.Region(r.To.Region))
	if err != nil {
		return state.Store{}, err
	}
	return st.Sub("replication").Sub(r.Name), nil
}

// openPair opens both ends of a configured replication and its state.
func openPair(ctx context.Context, cfg *config.Config, r *config.Replication, log *slog.Logger) (*replicate.Pair, error) {
	st, err := pairState(ctx, cfg, r)
	if err != nil {
		return nil, fmt.Errorf("replication %s: %w", r.Name, err)
	}
	src, err := openSide(ctx, cfg, r.From)
	if err != nil {
		return nil, fmt.Errorf("replication %s: source: %w", r.Name, err)
	}
	dst, err := openSide(ctx, cfg, r.To)
	if err != nil {
		return nil, fmt.Errorf("replication %s: target: %w", r.Name, err)
	}
	return &replicate.Pair{
		Name: r.Name, Source: src, Target: dst,
		Delete: r.Delete, Exclude: cfg.Exclusions(r),
		Transfers: r.Transfers, Retries: r.Retries, RetryBackoff: time.Duration(r.RetryBackoff),
		MultipartThreshold: int64(r.MultipartThreshold), PartSize: int64(r.PartSize),
		State: &st, Log: log,
		Fence: fenceErr(fenceFor(cfg, "replications", r.Name, r.From.Region)),
	}, nil
}

func fenceErr(f func(context.Context) (int64, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := f(ctx)
		return err
	}
}

// fenceFor returns the fence of a replication or group: it may publish only
// while the lease of its protection group is held by its source region (or
// was never taken: no failover happened yet), under the epoch returned. A
// member of no protection group is never fenced.
func fenceFor(cfg *config.Config, kind, name, source string) func(context.Context) (int64, error) {
	var pg *config.ProtectionGroup
	for i := range cfg.ProtectionGroups {
		members := cfg.ProtectionGroups[i].Replications
		if kind == "groups" {
			members = cfg.ProtectionGroups[i].Groups
		}
		if slices.Contains(members, name) {
			pg = &cfg.ProtectionGroups[i]
		}
	}
	var (
		mu      sync.Mutex
		witness *state.Store // opened on first use, then reused
	)
	return func(ctx context.Context) (int64, error) {
		if pg == nil {
			return 0, nil
		}
		mu.Lock()
		if witness == nil {
			st, err := witnessState(ctx, cfg)
			if err != nil {
				mu.Unlock()
				return 0, err
			}
			witness = &st
		}
		st := *witness
		mu.Unlock()
		rec, ok, err := lease.Show(ctx, st, pg.Name)
		if err != nil || !ok {
			return 0, err
		}
		if rec.Holder != source {
			return 0, fmt.Errorf("%w: %s holds the lease of %s (epoch %d), not %s, the source of %s", lease.ErrFenced, holderName(rec.Holder), pg.Name, rec.Epoch, source, name)
		}
		return rec.Epoch, nil
	}
}

func holderName(h string) string {
	if h == "" {
		return "nobody"
	}
	return h
}

// witnessState opens the witness location's lease folder.
func witnessState(ctx context.Context, cfg *config.Config) (state.Store, error) {
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
	return state.Store{Bucket: b}.Sub("leases"), nil
}

func openSide(ctx context.Context, cfg *config.Config, s config.Side) (objstore.Bucket, error) {
	l, err := location.Parse(s.URL)
	if err != nil {
		return nil, err
	}
	return location.Open(ctx, l, cfg.Region(s.Region).S3.Options(), false)
}

// groupState is a group's folder in its standby region's state.
func groupState(ctx context.Context, cfg *config.Config, g *config.Group) (state.Store, error) {
	st, err := regionState(ctx, cfg.Region(g.To))
	if err != nil {
		return state.Store{}, fmt.Errorf("group %s: %w", g.Name, err)
	}
	return st.Sub("groups").Sub(g.Name), nil
}

// openGroup opens a group's tables in both regions and its state in the
// standby region. With standbyOnly, sources are not opened and missing
// standby tables are not created (finalize runs without the primary).
func openGroup(ctx context.Context, cfg *config.Config, g *config.Group, standbyOnly bool, log *slog.Logger) (*tablegroup.Group, error) {
	st, err := groupState(ctx, cfg, g)
	if err != nil {
		return nil, err
	}
	out := &tablegroup.Group{Name: g.Name, Workflow: g.Workflow != nil, State: st, Log: log,
		Fence: fenceFor(cfg, "groups", g.Name, g.From)}
	if g.Workflow != nil && g.Workflow.Databricks != nil {
		d := g.Workflow.Databricks
		out.Runs = &databricks.Client{Host: d.Host, Token: string(d.Token), JobID: d.JobID}
	}
	for _, t := range g.Tables {
		tt := tablegroup.Table{Name: t.Name}
		if !standbyOnly {
			if tt.Source, err = openSide(ctx, cfg, config.Side{Region: g.From, URL: t.From}); err != nil {
				return nil, fmt.Errorf("group %s, table %s: source: %w", g.Name, t.Name, err)
			}
		}
		// A table's standby folder is created on its first sync; finalize
		// only works on what is there.
		l, err := location.Parse(t.To)
		if err != nil {
			return nil, err
		}
		if tt.Target, err = location.Open(ctx, l, cfg.Region(g.To).S3.Options(), !standbyOnly); err != nil {
			return nil, fmt.Errorf("group %s, table %s: target: %w", g.Name, t.Name, err)
		}
		out.Tables = append(out.Tables, tt)
	}
	return out, nil
}
