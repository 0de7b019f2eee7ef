package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/lease"
	"tandem/internal/members"
	"tandem/internal/notify"
	"tandem/internal/replicate"
	"tandem/internal/tablegroup"
)

type serveOptions struct {
	config string
	listen string
	region string
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Replicate every configured pair continuously",
		Long: `Replicate every configured pair until stopped, one pass per pair every
interval. Metrics are served at http://LISTEN/metrics, health at /-/healthy and
/-/ready, and the replication status as JSON at /status. SIGINT or SIGTERM
stops cleanly; a second signal aborts.

A workflow's last task can report a completed run over HTTP instead of
running 'tandem group complete':
  curl -X POST -H "Authorization: Bearer $TOKEN" http://LISTEN/groups/GROUP/complete?run_id=ID
The token is serve.token; without one the endpoint is open to whoever reaches
LISTEN, so keep it on loopback or a trusted network.

With --region (or $TANDEM_REGION), serve keeps the region lease of every
protection group that region holds: it renews it every lease_ttl/3, and the
configured primary takes a lease that was never taken. It never takes over a
lease another region holds or held: that is what 'tandem plan run failover'
decides.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runServe(c.Context(), o, nil)
		},
	}
	c.Flags().StringVar(&o.config, "config", "", "config file")
	c.Flags().StringVar(&o.listen, "listen", "", "metrics and health address (default from config, 127.0.0.1:9750)")
	c.Flags().StringVar(&o.region, "region", os.Getenv("TANDEM_REGION"), "the region this tandem runs in: it renews the leases that region holds (default $TANDEM_REGION)")
	return c
}

// runServe runs until ctx ends; started, if set, receives the daemon once
// it listens (for tests).
func runServe(ctx context.Context, o serveOptions, started chan<- *daemon.Daemon) error {
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	log := newLogger(slog.LevelInfo)
	d := &daemon.Daemon{Listen: cfg.Serve.Listen, Log: log, Token: string(cfg.Serve.Token)}
	if o.listen != "" {
		d.Listen = o.listen
	}
	for i := range cfg.Replication {
		r := &cfg.Replication[i]
		p, err := openPair(ctx, cfg, r, log)
		if err != nil {
			return err
		}
		job := daemon.Job{Pair: p, Interval: time.Duration(r.Interval)}
		if members.ProtectionGroupOf(cfg, "replications", r.Name) != nil {
			job.Reopen = func(ctx context.Context) (*replicate.Pair, error) { return openPair(ctx, cfg, r, log) }
		}
		d.Jobs = append(d.Jobs, job)
	}
	for i := range cfg.Groups {
		gc := &cfg.Groups[i]
		g, err := openGroup(ctx, cfg, gc, false, log)
		if err != nil {
			return err
		}
		job := daemon.GroupJob{Group: g, Owner: gc.Owner, Interval: time.Duration(gc.Interval),
			Retries: gc.Retries, RetryWait: time.Duration(gc.RetryWait)}
		job.Notifier, job.NotifyOn = notifier(gc)
		if members.ProtectionGroupOf(cfg, "groups", gc.Name) != nil {
			job.Reopen = func(ctx context.Context) (*tablegroup.Group, error) { return openGroup(ctx, cfg, gc, false, log) }
		}
		d.Groups = append(d.Groups, job)
	}
	if len(d.Jobs)+len(d.Groups) == 0 {
		return usageError{fmt.Errorf("%s configures no replication and no group", o.config)}
	}
	if d.Collectors, err = keepLeases(ctx, cfg, o.region, log); err != nil {
		return err
	}
	d.Status = func(ctx context.Context) (any, error) { return collectAll(ctx, cfg) }
	if err := d.Open(ctx); err != nil {
		return err
	}
	if started != nil {
		started <- d
	}
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	select {
	case <-ctx.Done():
	case <-done:
		log.Warn("every target was promoted; nothing left to replicate")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return d.Close(sctx)
}

// keepLeases renews, until ctx ends, the leases region holds, and returns
// their metrics: whether this tandem acts as primary, and under which epoch.
func keepLeases(ctx context.Context, cfg *config.Config, region string, log *slog.Logger) ([]prometheus.Collector, error) {
	if region == "" {
		return nil, nil
	}
	if cfg.Region(region) == nil {
		return nil, usageError{fmt.Errorf("--region %q is not a region of %s", region, cfg.Path())}
	}
	if len(cfg.ProtectionGroups) == 0 {
		return nil, nil
	}
	leases, err := members.Leases(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var out []prometheus.Collector
	for i := range cfg.ProtectionGroups {
		pg := &cfg.ProtectionGroups[i]
		if region != pg.Primary && region != pg.Standby {
			continue
		}
		l := &lease.Lease{Store: leases, Group: pg.Name, Region: region, TTL: time.Duration(pg.LeaseTTL), Standby: other(pg, region)}
		go l.Keep(ctx, region == pg.Primary, log)
		labels := prometheus.Labels{"group": pg.Name, "region": region}
		out = append(out,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "primary", ConstLabels: labels,
				Help: "1 while this tandem holds the protection group's lease and acts as primary."}, func() float64 {
				if _, ok := l.Primary(); ok {
					return 1
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tandem", Subsystem: "lease", Name: "epoch", ConstLabels: labels,
				Help: "The fencing epoch this tandem acts under (0 when not primary)."}, func() float64 {
				epoch, _ := l.Primary()
				return float64(epoch)
			}))
	}
	return out, nil
}

// notifier builds a group's notification channels from its config.
func notifier(g *config.Group) (notify.Notifier, map[string]bool) {
	if g.Notify == nil {
		return nil, nil
	}
	var all notify.All
	if g.Notify.Webhook != "" {
		all = append(all, &notify.Webhook{URL: string(g.Notify.Webhook)})
	}
	if e := g.Notify.Email; e != nil {
		all = append(all, &notify.Email{Addr: e.SMTP, From: e.From, To: e.To, Username: e.Username, Password: string(e.Password)})
	}
	on := map[string]bool{}
	for _, o := range g.Notify.On {
		on[o] = true
	}
	return all, on
}
