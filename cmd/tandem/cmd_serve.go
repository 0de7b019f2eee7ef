package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"tandem/internal/autofail"
	"tandem/internal/config"
	"tandem/internal/daemon"
	"tandem/internal/loopback"
	"tandem/internal/member"
)

type serveOptions struct {
	config  string
	listen  string
	region  string
	witness string // serve --witness NAME: an observer outside both regions
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	c := &cobra.Command{
		Use:   "serve --config FILE [--region R]",
		Short: "Replicate and sync continuously; keep the region lease; serve metrics and status",
		Long: `Run until stopped: every replication and table group is copied every
interval, in the direction the region lease says. Metrics are served at
http://LISTEN/metrics, health at /-/healthy and /-/ready, and the status as
JSON at /status. SIGINT or SIGTERM stops cleanly; a second signal aborts.

With --region R (or $TANDEM_REGION), run one serve in each region. Each does
its own region's part only:
  - it keeps the lease of every protection group R belongs to: renewed every
    lease_ttl/3 while R holds it (the configured primary takes a lease that
    was never taken); it never takes over a lease another region holds or
    held, which is what 'tandem plan run failover' decides;
  - it runs the copies out of R while R holds the lease (the primary's
    serve copies into the standby; the standby's serve copies nothing);
  - while another region holds the lease, it keeps R passive before
    anything else: R's workflows are paused and R's databases refuse writes
    (an old primary that comes back after a failover stays passive), and
    says so in its log, in tandem_region_passive and in 'tandem status';
  - it is the only serve acting for R: a second one waits until the first
    stops.
Without --region, one serve runs every copy in whatever direction the lease
says (a laptop, or one machine for both regions).

With health checks configured (regions[].health), a serve --region runs the
checks of every region and records what it sees in the witness; with a
protection group's auto_failover, the standby's serve fails it over when it
and a witness observer agree that the primary is down, and the policy allows
it. Run the witness observer on a machine outside both regions:
  tandem serve --config FILE --witness NAME
It only watches the regions' health and records it next to the leases.

A workflow's last task can report a completed run over HTTP instead of
running 'tandem group complete':
  curl -X POST -H "Authorization: Bearer $TOKEN" http://LISTEN/groups/GROUP/complete?run_id=ID
The token is serve.token.

It runs its region's part of every stream: while R holds the lease it
delivers R's events to the sink; otherwise it keeps the position R would
resume from; the lease holder's serve catches each region's stream up with
the events it lacks. An application can produce an event to both regions
through it:
  curl -X POST -H "Idempotency-Key: ID" --data-binary @event.json http://LISTEN/streams/STREAM/events`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runServe(c.Context(), o, nil)
		},
	}
	configFlag(c.Flags(), &o.config)
	c.Flags().StringVar(&o.listen, "listen", "", "metrics and health address (default from config, 127.0.0.1:9750)")
	c.Flags().StringVar(&o.region, "region", os.Getenv("TANDEM_REGION"), "the region this serve runs in: it does that region's part only (default $TANDEM_REGION)")
	c.Flags().StringVar(&o.witness, "witness", "", "run as the witness observer NAME, on a machine outside both regions: only watch the regions' health and record it next to the leases")
	return c
}

// runServe runs until ctx ends; started, if set, receives the daemon once
// it listens (for tests).
func runServe(ctx context.Context, o serveOptions, started chan<- *daemon.Daemon) error {
	log := newLogger(slog.LevelInfo)
	env, err := loadEnv(o.config, log)
	if err != nil {
		return err
	}
	cfg := env.Cfg
	if o.region != "" && cfg.Region(o.region) == nil {
		return usageError{fmt.Errorf("--region %q is not a region of %s", o.region, cfg.Path())}
	}
	reg := prometheus.NewRegistry()
	s := &member.Serving{Env: env, Region: o.region, Reg: reg, Token: string(cfg.Serve.Token)}
	switch {
	case o.witness != "":
		if o.region != "" {
			return usageError{fmt.Errorf("--witness and --region go apart: the witness observer runs outside both regions")}
		}
		if !config.ValidName(o.witness) || cfg.Region(o.witness) != nil {
			return usageError{fmt.Errorf("--witness %q: give the observer a name (lowercase letters, digits, - and _) that is no region's", o.witness)}
		}
		t, ok := autofail.Observer(env, o.witness, autofail.RoleWitness, reg)
		if !ok {
			return usageError{fmt.Errorf("%s configures no health checks for the witness to run (regions[].health.checks)", cfg.Path())}
		}
		s.Task(t)
	case o.region != "":
		if err := s.LockRegion(ctx, o.region); err != nil {
			return err
		}
		s.KeepPassive(o.region, s.KeepLeases(ctx, o.region))
		if t, ok := autofail.Observer(env, o.region, autofail.RoleRegion, reg); ok {
			s.Task(t)
		}
		for _, t := range autofail.Decider(s, o.region) {
			s.Task(t)
		}
		s.AlertMembers(o.region)
		autofail.Practice(s, o.region)
	}
	if o.witness == "" {
		for _, k := range member.Kinds() {
			if sk, ok := k.(member.Server); ok {
				if err := sk.Serve(ctx, s); err != nil {
					return err
				}
			}
		}
	}
	if len(s.Tasks) == 0 {
		return usageError{fmt.Errorf("%s configures nothing to serve: no replication, group, stream or protection group of --region", cfg.Path())}
	}
	addAPI(ctx, s, env, o.witness == "")
	d := &daemon.Daemon{Tasks: s.Tasks, Listen: cfg.Serve.Listen, Log: log, Registry: reg, Handlers: s.Handlers,
		Status: func(ctx context.Context) (any, error) { return member.CollectStatus(ctx, env), nil }}
	if o.listen != "" {
		d.Listen = o.listen
	}
	if !loopback.Only(d.Listen) && cfg.Serve.Token == "" {
		return usageError{fmt.Errorf("listen address %s is reachable from other hosts, and POST /groups/{group}/complete changes state: set serve.token in %s (e.g. token: ${TANDEM_SERVE_TOKEN}), or listen on 127.0.0.1", d.Listen, cfg.Path())}
	}
	if err := d.Open(ctx); err != nil {
		return err
	}
	if started != nil {
		started <- d
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return d.Close(sctx)
}
