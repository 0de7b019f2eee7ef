package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tandem/internal/cdc"
	"tandem/internal/loopback"
	"tandem/internal/member/cdcpair"
	"tandem/internal/postgres"
	"tandem/internal/postgres/pgserver"
)

func newDemoCDCCommand() *cobra.Command {
	var o demoOptions
	c := &cobra.Command{
		Use:   "cdc",
		Short: "Show change data capture following a PostgreSQL source failover",
		Long: `Start three PostgreSQL 15 servers on loopback (a source primary, its
streaming standby, and a target in the other region), replicate a table from
the source into the target by change data capture, then fail the source over
to its standby in the middle of the stream, with two transactions the standby
never received. tandem follows the new timeline on its own, reports the two
transactions lost at the source, brings the target level with the new primary,
and a validation shows no difference. Needs Debian's postgresql-15 (the main
demo does not). The servers stop at the end; their folders stay behind.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			return runDemoCDC(c.Context(), o, os.Stdout)
		},
	}
	c.Flags().StringVar(&o.dir, "dir", "", "folder for the servers and the config (default: a new temporary folder)")
	return c
}

const demoCDCConfig = `# tandem demo cdc: a PostgreSQL source (primary and standby) and a target.
regions:
  - {name: primary, state: %[1]s/primary/.tandem}
  - {name: standby, state: %[1]s/standby/.tandem}
witness: {url: %[1]s/witness}
cdc:
  - name: orders
    source: ["%[2]s", "%[3]s"]
    target: {region: standby, dsn: "%[4]s"}
    tables: [public.orders]
    audit_columns: {public.orders: updated}
protection_groups:
  - {name: shop, primary: primary, standby: standby, lease_ttl: 5s, cdc: [orders]}
`

// demoServers starts the demo's three servers.
func demoServers(dir string) (servers []*pgserver.Cluster, err error) {
	for _, name := range []string{"source-primary", "source-standby", "target"} {
		d, err := pgserver.Dir(dir, name)
		if err != nil {
			return servers, err
		}
		addr, err := loopback.Addr()
		if err != nil {
			return servers, err
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		c := &pgserver.Cluster{Dir: d, Port: port}
		if name == "source-standby" {
			err = c.BaseBackup(servers[0])
		} else {
			_, err = pgserver.Init(d, port)
		}
		if err == nil {
			err = c.Start()
		}
		if err != nil {
			return servers, err
		}
		servers = append(servers, c)
	}
	return servers, nil
}

func runDemoCDC(ctx context.Context, o demoOptions, w io.Writer) error {
	if err := pgserver.Available(); err != nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "tandem-demo-cdc-"); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "target")); len(entries) > 0 {
		return usageError{fmt.Errorf("%s already holds a demo: give another --dir or remove it", dir)}
	}
	for _, d := range []string{"primary/.tandem", "standby/.tandem", "witness"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	step := func(n int, title, explain string) {
		fmt.Fprintf(w, "\n== %d. %s\n%s\n\n", n, title, strings.TrimSpace(explain))
	}
	fmt.Fprintf(w, "tandem demo cdc in %s\n", dir)
	step(1, "Start three PostgreSQL servers",
		`A source primary with a streaming standby (the source's own high
availability, in region primary) and a target in region standby, each on a
loopback port.`)
	servers, err := demoServers(dir)
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	if err != nil {
		return err
	}
	src, stb, tgt := servers[0], servers[1], servers[2]
	cfgPath := filepath.Join(dir, "tandem.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(demoCDCConfig, dir, src.DSN(), stb.DSN(), tgt.DSN())), 0o644); err != nil {
		return err
	}
	sql := func(dsn string, qs ...string) error {
		c, err := postgres.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(ctx))
		for _, q := range qs {
			if _, err := c.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}
	one := func(dsn, q string) string {
		c, err := postgres.Connect(ctx, dsn)
		if err != nil {
			return err.Error()
		}
		defer c.Close(context.WithoutCancel(ctx))
		var s string
		if err := c.QueryRow(ctx, q).Scan(&s); err != nil {
			return err.Error()
		}
		return s
	}
	if err := sql(src.DSN(), `CREATE TABLE orders (id int PRIMARY KEY, item text, qty int, updated timestamptz NOT NULL DEFAULT clock_timestamp())`,
		`INSERT INTO orders (id, item, qty) SELECT i, 'item ' || i, 1 FROM generate_series(1, 10000) i`); err != nil {
		return err
	}
	env, p, err := findPair(cfgPath, "orders")
	if err != nil {
		return err
	}
	env.Log = newLogger(slog.LevelError)
	step(2, "Replicate the source into the target",
		`tandem creates a publication and a logical replication slot in the source,
copies the table in the slot's exported snapshot, then applies every committed
change in commit order, keeping its position (system id, timeline, LSN) in the
target in the same transaction as the rows. serve --region standby does this;
the demo runs it in-process.`)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- cdc.New(pairOptions(env, p, "tandem demo cdc")).Run(rctx) }()
	wait := func(what string, ok func() bool) error {
		for deadline := time.Now().Add(60 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				return errors.New("the demo timed out: " + what)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	if err := wait("the snapshot never reached the target", func() bool { return one(tgt.DSN(), `SELECT count(*)::text FROM orders`) == "10000" }); err != nil {
		return err
	}
	if err := sql(src.DSN(), `UPDATE orders SET qty = qty + 1, updated = clock_timestamp() WHERE id <= 500`, `DELETE FROM orders WHERE id > 9900`); err != nil {
		return err
	}
	if err := wait("the changes never reached the target", func() bool { return one(tgt.DSN(), `SELECT count(*)::text FROM orders`) == "9900" }); err != nil {
		return err
	}
	printCDCStatus(w, cdcpair.Kind{}.Status(ctx, env, "orders"))

	step(3, "The source fails over, with two transactions its standby never got",
		`The standby stops receiving WAL; the primary commits two more transactions,
which reach the target; then the primary dies and the standby is promoted. On
PostgreSQL 15 the logical slot does not survive a promotion, and the new
primary never had those two transactions. tandem sees the new timeline,
reads where the old one ended (TIMELINE_HISTORY), reports what the target
applied past that point, makes a new slot, and compares and repairs the rows
that may have changed in the gap (by the audit column "updated", plus the lost
transactions' keys) before it applies the new stream.`)
	if err := sql(stb.DSN(), `ALTER SYSTEM SET primary_conninfo = ''`, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	if err := wait("the standby kept streaming", func() bool { return one(stb.DSN(), `SELECT count(*)::text FROM pg_stat_wal_receiver`) == "0" }); err != nil {
		return err
	}
	if err := sql(src.DSN(), `UPDATE orders SET qty = 99, updated = clock_timestamp() WHERE id = 42`, `INSERT INTO orders (id, item, qty) VALUES (20001, 'never on the standby', 1)`); err != nil {
		return err
	}
	if err := wait("the doomed changes never reached the target", func() bool { return one(tgt.DSN(), `SELECT count(*)::text FROM orders WHERE id = 20001`) == "1" }); err != nil {
		return err
	}
	src.Stop()
	fmt.Fprintln(w, "the source primary is down; promoting its standby")
	if err := postgres.Promote(ctx, stb.DSN()); err != nil {
		return err
	}
	if err := sql(stb.DSN(), `INSERT INTO orders (id, item, qty) VALUES (30001, 'written on the new primary', 1)`); err != nil {
		return err
	}
	if err := wait("the new primary's change never reached the target", func() bool { return one(tgt.DSN(), `SELECT count(*)::text FROM orders WHERE id = 30001`) == "1" }); err != nil {
		return err
	}
	printCDCStatus(w, cdcpair.Kind{}.Status(ctx, env, "orders"))

	step(4, "Validate the target against the new primary",
		`tandem validate compares both sides in consistent snapshots by checksums
(count and hash) over primary-key ranges and hash buckets of the keys, and
reads row by row only what differs. The lost transactions were taken back in
the target: it holds what the new primary holds.`)
	if err := runValidate(ctx, validateOptions{config: cfgPath, window: time.Hour}, "orders", w); err != nil {
		return err
	}
	stop()
	<-done
	fmt.Fprintf(w, `
== Done
The servers stop now; their folders and the config are in %[1]s. Start the
new source primary and the target again (pg_ctl -D %[1]s/source-standby start
and pg_ctl -D %[1]s/target start, as the postgres user), then try:
  %[2]s cdc status --config %[3]s orders
  %[2]s validate --config %[3]s orders --around %[4]s --window 1h
`, dir, invocation(), cfgPath, time.Now().UTC().Format(time.RFC3339))
	return nil
}
