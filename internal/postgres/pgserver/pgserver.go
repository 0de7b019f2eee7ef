// Package pgserver runs PostgreSQL 15 servers from Debian's postgresql-15
// on loopback, each in its own folder: a primary that takes replication
// and logical decoding, and streaming standbys made with pg_basebackup.
// Tests use it through pgtest; tandem demo cdc uses it directly.
package pgserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bin is where Debian puts the server programs.
var Bin = "/usr/lib/postgresql/15/bin"

// Cluster is one server's folder and port.
type Cluster struct {
	Dir  string
	Port int
}

// DSN connects as the superuser over loopback.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.Port)
}

// Available reports whether the server programs are installed.
func Available() error {
	if _, err := os.Stat(filepath.Join(Bin, "initdb")); err != nil {
		return fmt.Errorf("PostgreSQL 15 server programs are missing (%v): install Debian's postgresql-15 (apt-get install postgresql-15; bash scripts/test.sh does)", err)
	}
	return nil
}

// run runs a server program, as the postgres user when this process is
// root (PostgreSQL refuses to run as root).
func run(name string, args ...string) error {
	if err := Available(); err != nil {
		return err
	}
	cmd, err := asServerUser(exec.Command(filepath.Join(Bin, name), args...))
	if err != nil {
		return err
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func asServerUser(cmd *exec.Cmd) (*exec.Cmd, error) {
	if os.Geteuid() != 0 {
		return cmd, nil
	}
	uid, gid, err := serverUser()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd, nil
}

func serverUser() (uint32, uint32, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("running as root needs the postgres user (from postgresql-15): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid), nil
}

// Dir makes folder name under base for a server, owned by the server user
// when this process is root.
func Dir(base, name string) (string, error) {
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	if os.Geteuid() == 0 {
		uid, gid, err := serverUser()
		if err != nil {
			return "", err
		}
		os.Chmod(base, 0o755)
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			return "", err
		}
		for p := filepath.Dir(base); ; p = filepath.Dir(p) {
			if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
				return "", fmt.Errorf("the postgres user cannot reach %s: %s is closed to other users; use a folder under one it can open (such as /tmp)", d, p)
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	return d, nil
}

// Init makes a new primary in dir, listening on port, that accepts
// replication connections and logical decoding; Start starts it.
func Init(dir string, port int) (*Cluster, error) {
	c := &Cluster{Dir: dir, Port: port}
	if err := run("initdb", "-D", dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("port = %d\n", port) + "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nwal_level = logical\n" +
		"max_wal_senders = 10\nhot_standby = on\nwal_keep_size = 256MB\nfsync = off\n"
	if err := appendFile(filepath.Join(dir, "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	if err := appendFile(filepath.Join(dir, "pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n"); err != nil {
		return nil, err
	}
	return c, nil
}

// BaseBackup replaces the (stopped) cluster's data with a base backup of
// primary, set up to stream from it: a new standby, or an old primary
// rebuilt as the new primary's standby.
func (c *Cluster) BaseBackup(primary *Cluster) error {
	entries, _ := os.ReadDir(c.Dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(c.Dir, e.Name()))
	}
	if err := run("pg_basebackup", "-D", c.Dir, "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port),
		"-U", "postgres", "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return err
	}
	return appendFile(filepath.Join(c.Dir, "postgresql.conf"), fmt.Sprintf("port = %d\n", c.Port))
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	return run("pg_ctl", "-D", c.Dir, "-w", "-t", "60", "-l", filepath.Join(c.Dir, "server.log"),
		"-o", fmt.Sprintf("-p %d -k ''", c.Port), "start")
}

// StopAfter starts a watcher, in a session of its own, that stops the
// server at once and removes its folder when process pid has ended: a test
// killed before its cleanup ran leaves no server behind.
func (c *Cluster) StopAfter(pid int) error {
	cmd, err := asServerUser(exec.Command("/bin/sh", "-c",
		`while [ -d "/proc/$0" ]; do sleep 1; done; "$1" -D "$2" -m immediate -w stop >/dev/null 2>&1; rm -rf "$2"`,
		strconv.Itoa(pid), filepath.Join(Bin, "pg_ctl"), c.Dir))
	if err != nil {
		return err
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

// Running reports whether the server's postmaster is up.
func (c *Cluster) Running() bool {
	_, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid"))
	return err == nil
}

// Stop stops the server at once (a crash, for PostgreSQL); stopping a
// stopped server is harmless.
func (c *Cluster) Stop() error {
	if !c.Running() {
		return nil
	}
	cmd, err := asServerUser(exec.Command(filepath.Join(Bin, "pg_ctl"), "-D", c.Dir, "-m", "immediate", "-w", "stop"))
	if err != nil {
		return err
	}
	out, err := cmd.CombinedOutput()
	// The postmaster may take a moment to remove its pid file.
	for i := 0; i < 50 && c.Running(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil && c.Running() {
		return fmt.Errorf("pg_ctl stop %s: %v\n%s", c.Dir, err, out)
	}
	return nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}
