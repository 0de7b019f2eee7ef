// Package pgtest runs real PostgreSQL servers for tests: a primary and a
// streaming standby made with pg_basebackup, each in its own folder on a
// loopback port chosen by the test, stopped when the test ends. The server
// binaries come from Debian's postgresql-15 (scripts/test.sh installs it);
// a machine without them fails the test rather than skipping it.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/loopback"
)

// Bin is where Debian puts the server programs.
var Bin = "/usr/lib/postgresql/15/bin"

// Cluster is one running server.
type Cluster struct {
	t    testing.TB
	Dir  string
	Port int
}

// DSN connects as the superuser over loopback.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.Port)
}

// run runs a server program (see asServerUser).
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	path := filepath.Join(Bin, name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("PostgreSQL 15 server programs are missing (%v): run `bash scripts/test.sh`, which installs postgresql-15", err)
	}
	cmd := asServerUser(t, exec.Command(path, args...))
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// asServerUser makes cmd run as the postgres user when the test runs as
// root (PostgreSQL refuses to run as root).
func asServerUser(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	if os.Geteuid() == 0 {
		uid, gid := postgresUser(t)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	return cmd
}

func postgresUser(t testing.TB) (uint32, uint32) {
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs the postgres user (from postgresql-15): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

// dir makes a folder the server user owns; t.TempDir's are private to root.
func dir(t testing.TB, name string) string {
	base, err := os.MkdirTemp("", "tandem-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		uid, gid := postgresUser(t)
		os.Chmod(base, 0o755)
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func freePort(t testing.TB) int {
	_, port, _ := net.SplitHostPort(loopback.Free(t))
	n, _ := strconv.Atoi(port)
	return n
}

// Primary starts a new primary that accepts replication connections.
func Primary(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Dir: dir(t, "primary"), Port: freePort(t)}
	run(t, "initdb", "-D", c.Dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	conf := "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nwal_level = logical\n" +
		"max_wal_senders = 10\nhot_standby = on\nwal_keep_size = 256MB\nfsync = off\n"
	if err := appendFile(filepath.Join(c.Dir, "postgresql.conf"), conf); err != nil {
		t.Fatal(err)
	}
	if err := appendFile(filepath.Join(c.Dir, "pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n"); err != nil {
		t.Fatal(err)
	}
	c.Start()
	return c
}

// Standby starts a new streaming standby of primary, from a base backup.
func Standby(t testing.TB, primary *Cluster) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Dir: dir(t, "standby"), Port: freePort(t)}
	c.BaseBackup(primary)
	c.Start()
	return c
}

// BaseBackup replaces the (stopped) cluster's data with a base backup of
// primary, set up to stream from it: how an old primary is rebuilt as a
// standby after a failover.
func (c *Cluster) BaseBackup(primary *Cluster) {
	c.t.Helper()
	entries, _ := os.ReadDir(c.Dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(c.Dir, e.Name()))
	}
	run(c.t, "pg_basebackup", "-D", c.Dir, "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port),
		"-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync")
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	run(c.t, "pg_ctl", "-D", c.Dir, "-w", "-t", "60", "-l", filepath.Join(c.Dir, "server.log"),
		"-o", fmt.Sprintf("-p %d -k ''", c.Port), "start")
	c.t.Cleanup(c.Stop)
}

// Stop stops the server at once (a crash, for PostgreSQL); stopping a
// stopped server is harmless.
func (c *Cluster) Stop() {
	if _, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid")); err != nil {
		return
	}
	cmd := asServerUser(c.t, exec.Command(filepath.Join(Bin, "pg_ctl"), "-D", c.Dir, "-m", "immediate", "-w", "stop"))
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Logf("pg_ctl stop %s: %v\n%s", c.Dir, err, out)
	}
	// The postmaster may take a moment to remove its pid file.
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid")); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
