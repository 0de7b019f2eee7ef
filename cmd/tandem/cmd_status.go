package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/config"
	"tandem/internal/replicate"
)

type statusOptions struct {
	config string
	json   bool
}

// pairStatus is one replication in `tandem status`.
type pairStatus struct {
	replicate.Status
	Source     string              `json:"source"`
	Target     string              `json:"target"`
	LagSeconds *float64            `json:"lag_seconds,omitempty"`
	RPOSeconds float64             `json:"rpo_seconds"`
	Health     string              `json:"health"` // ok, late, failing, foreign-writes, never-ran, promoted
	RetryQueue []replicate.Failure `json:"retry_queue,omitempty"`
}

func newStatusCommand() *cobra.Command {
	var o statusOptions
	c := &cobra.Command{
		Use:   "status --config FILE",
		Short: "Show each replication's RPO watermark, lag, failures and foreign writes",
		Long: `Show each replication's state as recorded in its standby region: the RPO
watermark (every change in the source before it is in the target), the lag
behind now, the last pass, objects waiting in the retry queue, objects found in
the target that did not come from the source, and whether the target was
promoted. It reads only the standby regions, so it works when the primary is
gone.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runStatus(c.Context(), o, os.Stdout)
		},
	}
	c.Flags().StringVar(&o.config, "config", "", "config file")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return c
}

func collectStatus(ctx context.Context, cfg *config.Config) ([]pairStatus, error) {
	var out []pairStatus
	now := time.Now()
	for i := range cfg.Replication {
		r := &cfg.Replication[i]
		st, err := pairState(ctx, cfg, r)
		if err != nil {
			return nil, fmt.Errorf("replication %s: %w", r.Name, err)
		}
		s, err := replicate.LoadStatus(ctx, st, r.Name)
		if err != nil {
			return nil, fmt.Errorf("replication %s: %w", r.Name, err)
		}
		q, err := replicate.LoadRetryQueue(ctx, st)
		if err != nil {
			return nil, fmt.Errorf("replication %s: %w", r.Name, err)
		}
		ps := pairStatus{Status: s, Source: r.From.URL, Target: r.To.URL, RPOSeconds: time.Duration(r.RPO).Seconds(), RetryQueue: q}
		if s.Watermark != nil {
			lag := now.Sub(*s.Watermark).Seconds()
			ps.LagSeconds = &lag
		}
		switch {
		case s.Promotion != nil:
			ps.Health = "promoted"
		case s.LastPass == nil:
			ps.Health = "never-ran"
		case s.LastPass.Error != "" || len(q) > 0:
			ps.Health = "failing"
		case ps.LagSeconds == nil || *ps.LagSeconds > ps.RPOSeconds:
			ps.Health = "late"
		case s.LastPass.Foreign > 0:
			ps.Health = "foreign-writes"
		default:
			ps.Health = "ok"
		}
		out = append(out, ps)
	}
	return out, nil
}

func runStatus(ctx context.Context, o statusOptions, w io.Writer) error {
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	all, err := collectStatus(ctx, cfg)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"replication": all})
	}
	for _, s := range all {
		printStatus(w, s)
	}
	return nil
}

func printStatus(w io.Writer, s pairStatus) {
	fmt.Fprintf(w, "replication %s: %s\n", s.Pair, s.Health)
	fmt.Fprintf(w, "  %s -> %s\n", s.Source, s.Target)
	if s.Watermark != nil {
		fmt.Fprintf(w, "  watermark  %s (lag %s, RPO target %s)\n", s.Watermark.Local().Format("2006-01-02 15:04:05 MST"),
			(time.Duration(*s.LagSeconds) * time.Second).Round(time.Second), time.Duration(s.RPOSeconds)*time.Second)
	} else {
		fmt.Fprintf(w, "  watermark  none yet: no pass has copied everything it found\n")
	}
	if p := s.LastPass; p != nil {
		fmt.Fprintf(w, "  last pass  %s, %.1fs: copied %d (%s), unchanged %d, deleted %d, failed %d, pending %d\n",
			p.Started.Local().Format("2006-01-02 15:04:05"), p.Seconds, p.Objects, humanBytes(p.Bytes), p.Unchanged, p.Deleted, p.Failed, p.Pending)
		if p.Error != "" {
			fmt.Fprintf(w, "  error      %s\n", p.Error)
		}
		if p.Foreign > 0 {
			fmt.Fprintf(w, "  foreign    %d objects in the target did not come from the source (writes to a read-only replica): %v\n", p.Foreign, p.ForeignKeys)
		}
	}
	for _, f := range s.RetryQueue {
		fmt.Fprintf(w, "  retrying   %s (attempt %d, next %s): %s\n", f.Key, f.Attempts, f.NextAttempt.Local().Format("15:04:05"), f.Error)
	}
	if p := s.Promotion; p != nil {
		fmt.Fprintf(w, "  promoted   %s by %s: the target is writable and tandem no longer replicates into it\n", p.At.Local().Format("2006-01-02 15:04:05 MST"), p.By)
	}
}
