package main

import (
	"context"
	"fmt"
	"log/slog"

	"tandem/internal/config"
	"tandem/internal/members"
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

// pairState is the state of a replication in the direction it runs now.
func pairState(ctx context.Context, cfg *config.Config, r *config.Replication) (state.Store, error) {
	cur, err := members.Current(ctx, cfg, r)
	if err != nil {
		return state.Store{}, err
	}
	return members.PairState(ctx, cfg, cur)
}

// openPair opens a replication in the direction it runs now.
func openPair(ctx context.Context, cfg *config.Config, r *config.Replication, log *slog.Logger) (*replicate.Pair, error) {
	cur, err := members.Current(ctx, cfg, r)
	if err != nil {
		return nil, err
	}
	return members.OpenPair(ctx, cfg, cur, log)
}

// groupState is the state of a group in the direction it runs now.
func groupState(ctx context.Context, cfg *config.Config, g *config.Group) (state.Store, error) {
	cur, err := members.GroupSides(ctx, cfg, g)
	if err != nil {
		return state.Store{}, err
	}
	return members.GroupState(ctx, cfg, cur)
}

// openGroup opens a group in the direction it runs now.
func openGroup(ctx context.Context, cfg *config.Config, g *config.Group, targetOnly bool, log *slog.Logger) (*tablegroup.Group, error) {
	cur, err := members.GroupSides(ctx, cfg, g)
	if err != nil {
		return nil, err
	}
	return members.OpenGroup(ctx, cfg, cur, targetOnly, log)
}
