// Package pgtest runs real PostgreSQL servers for tests (package pgserver):
// a primary and a streaming standby made with pg_basebackup, each in its
// own folder on a loopback port chosen by the test, stopped when the test
// ends. The server binaries come from Debian's postgresql-15
// (scripts/test.sh installs it); a machine without them fails the test
// rather than skipping it.
package pgtest

import (
	"net"
	"os"
	"strconv"
	"testing"

	"tandem/internal/loopback"
	"tandem/internal/postgres/pgserver"
)

// Cluster is one running server.
type Cluster struct {
	*pgserver.Cluster
	t testing.TB
}

func newCluster(t testing.TB, name string) *Cluster {
	t.Helper()
	base, err := os.MkdirTemp("", "tandem-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d, err := pgserver.Dir(base, name)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(loopback.Free(t))
	n, _ := strconv.Atoi(port)
	c := &Cluster{Cluster: &pgserver.Cluster{Dir: d, Port: n}, t: t}
	// However often the server restarts, one watcher stops it if the test
	// is killed.
	if err := c.Cluster.StopAfter(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	return c
}

// Primary starts a new primary that accepts replication connections and
// logical decoding.
func Primary(t testing.TB) *Cluster {
	t.Helper()
	c := newCluster(t, "primary")
	if _, err := pgserver.Init(c.Dir, c.Port); err != nil {
		t.Fatal(err)
	}
	c.Start()
	return c
}

// Standby starts a new streaming standby of primary, from a base backup.
func Standby(t testing.TB, primary *Cluster) *Cluster {
	t.Helper()
	c := newCluster(t, "standby")
	c.BaseBackup(primary)
	c.Start()
	return c
}

// BaseBackup replaces the (stopped) cluster's data with a base backup of
// primary, set up to stream from it: how an old primary is rebuilt as a
// standby after a failover.
func (c *Cluster) BaseBackup(primary *Cluster) {
	c.t.Helper()
	if err := c.Cluster.BaseBackup(primary.Cluster); err != nil {
		c.t.Fatal(err)
	}
}

// Start starts the server and waits until it accepts connections; it
// stops when the test ends.
func (c *Cluster) Start() {
	c.t.Helper()
	if err := c.Cluster.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(c.Stop)
}

// Stop stops the server at once (a crash, for PostgreSQL).
func (c *Cluster) Stop() {
	if err := c.Cluster.Stop(); err != nil {
		c.t.Log(err)
	}
}
