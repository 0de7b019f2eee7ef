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
	"tandem/internal/lease"
	"tandem/internal/members"
	"tandem/internal/replicate"
	"tandem/internal/tablegroup"
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
		r, err := members.Current(ctx, cfg, &cfg.Replication[i])
		if err != nil {
			return nil, fmt.Errorf("replication %s: %w", cfg.Replication[i].Name, err)
		}
		st, err := members.PairState(ctx, cfg, r)
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

// groupStatus is one group in `tandem status`.
type groupStatus struct {
	Group string `json:"group"`
	// Manifest is what the standby holds; LastCompleted the newest run the
	// workflow reported.
	Manifest      *tablegroup.Manifest `json:"manifest,omitempty"`
	LastCompleted *tablegroup.Cut      `json:"last_completed,omitempty"`
	LastAttempt   *tablegroup.Attempt  `json:"last_attempt,omitempty"`
	Health        string               `json:"health"` // ok, behind, failing, never-synced
}

func collectGroups(ctx context.Context, cfg *config.Config) ([]groupStatus, error) {
	var out []groupStatus
	for i := range cfg.Groups {
		gc := &cfg.Groups[i]
		st, err := groupState(ctx, cfg, gc)
		if err != nil {
			return nil, err
		}
		// Status reads the group's records only, not its tables.
		g := &tablegroup.Group{Name: gc.Name, State: st}
		gs := groupStatus{Group: gc.Name, Health: "never-synced"}
		if m, _, ok, err := tablegroup.LoadManifest(ctx, g.State); err != nil {
			return nil, err
		} else if ok {
			gs.Manifest, gs.Health = &m, "ok"
		}
		var cut tablegroup.Cut
		if _, err := g.State.Load(ctx, "completed.json", &cut); err == nil {
			gs.LastCompleted = &cut
			if gs.Manifest != nil && gs.Manifest.RunID != cut.RunID {
				gs.Health = "behind"
			}
		}
		if attempts, err := g.Attempts(ctx); err == nil && len(attempts) > 0 {
			gs.LastAttempt = &attempts[0]
			if attempts[0].Status == "failed" {
				gs.Health = "failing"
			}
		}
		out = append(out, gs)
	}
	return out, nil
}

// roleStatus is a protection group in `tandem status`: who is primary, and
// the plan run that is not finished, if any.
type roleStatus struct {
	ProtectionGroup string        `json:"protection_group"`
	Lease           *lease.Record `json:"lease,omitempty"`
	Error           string        `json:"error,omitempty"`
	Unfinished      string        `json:"unfinished_execution,omitempty"`
}

func collectRoles(ctx context.Context, cfg *config.Config) []roleStatus {
	if len(cfg.ProtectionGroups) == 0 {
		return nil
	}
	w, werr := members.Witness(ctx, cfg)
	var out []roleStatus
	for _, pg := range cfg.ProtectionGroups {
		rs := roleStatus{ProtectionGroup: pg.Name}
		err := werr
		if err == nil {
			var rec lease.Record
			var ok bool
			if rec, ok, err = lease.Show(ctx, w.Sub("leases"), pg.Name); ok {
				rs.Lease = &rec
			}
			var a struct{ Execution string }
			if _, aerr := w.Sub("plans").Sub(pg.Name).Load(ctx, "active.json", &a); aerr == nil {
				rs.Unfinished = a.Execution
			}
		}
		if err != nil {
			rs.Error = err.Error()
		}
		out = append(out, rs)
	}
	return out
}

// statusDoc is the whole status: `tandem status --json` and serve's /status.
type statusDoc struct {
	Replication      []pairStatus  `json:"replication"`
	Groups           []groupStatus `json:"groups"`
	ProtectionGroups []roleStatus  `json:"protection_groups"`
}

func collectAll(ctx context.Context, cfg *config.Config) (statusDoc, error) {
	all, err := collectStatus(ctx, cfg)
	if err != nil {
		return statusDoc{}, err
	}
	groups, err := collectGroups(ctx, cfg)
	if err != nil {
		return statusDoc{}, err
	}
	return statusDoc{all, groups, collectRoles(ctx, cfg)}, nil
}

func runStatus(ctx context.Context, o statusOptions, w io.Writer) error {
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	doc, err := collectAll(ctx, cfg)
	if err != nil {
		return err
	}
	all, groups, roles := doc.Replication, doc.Groups, doc.ProtectionGroups
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	for _, r := range roles {
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "protection group %s: the witness does not answer: %s\n", r.ProtectionGroup, r.Error)
		case r.Lease == nil:
			fmt.Fprintf(w, "protection group %s: the lease was never taken\n", r.ProtectionGroup)
		default:
			l := r.Lease
			state := "renewed " + l.Renewed.Local().Format("15:04:05")
			if time.Now().After(l.Expires) {
				state = "EXPIRED " + l.Expires.Local().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(w, "protection group %s: primary %s, standby %s, epoch %d, %s\n", r.ProtectionGroup, holderOrNone(l.Holder), holderOrNone(l.Standby), l.Epoch, state)
		}
		if r.Unfinished != "" {
			fmt.Fprintf(w, "  plan execution %s is not finished: tandem plan executions --config %s %s\n", r.Unfinished, o.config, r.Unfinished)
		}
	}
	for _, s := range all {
		printStatus(w, s)
	}
	for _, g := range groups {
		fmt.Fprintf(w, "group %s: %s\n", g.Group, g.Health)
		if m := g.Manifest; m != nil {
			run := fmt.Sprintf("run %q", m.RunID)
			if m.RunID == "" {
				run = "the latest versions (" + m.Rule + ")"
			}
			fmt.Fprintf(w, "  standby holds %s (%s), cut %s, synced %s\n", run, versions(m.Versions),
				m.CutTime.Local().Format("2006-01-02 15:04:05"), m.Synced.Local().Format("2006-01-02 15:04:05"))
		}
		if c := g.LastCompleted; c != nil && (g.Manifest == nil || g.Manifest.RunID != c.RunID) {
			fmt.Fprintf(w, "  last completed run %q (%s) is not in the standby yet\n", c.RunID, versions(c.Versions))
		}
		if a := g.LastAttempt; a != nil {
			fmt.Fprintf(w, "  last attempt %s: %s (%s)", a.Started.Local().Format("2006-01-02 15:04:05"), a.Status, a.Reason)
			if a.Error != "" {
				fmt.Fprintf(w, ": %s", a.Error)
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}

func holderOrNone(r string) string {
	if r == "" {
		return "none"
	}
	return r
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
		fmt.Fprintf(w, "  last pass  %s, %.1fs: copied %d (%s), unchanged %d, already there %d, deleted %d, failed %d, pending %d\n",
			p.Started.Local().Format("2006-01-02 15:04:05"), p.Seconds, p.Objects, humanBytes(p.Bytes), p.Unchanged, p.Adopted, p.Deleted, p.Failed, p.Pending)
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
