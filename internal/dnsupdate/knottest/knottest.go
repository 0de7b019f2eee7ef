// Package knottest runs a real authoritative DNS server (Knot DNS, from
// Debian's knot package) on a loopback port for tests: one zone that takes
// dynamic updates signed with one TSIG key.
package knottest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tandem/internal/dnsupdate"
	"tandem/internal/loopback"
)

// Knotd is where Debian installs the server.
const Knotd = "/usr/sbin/knotd"

// Server is a running knotd.
type Server struct {
	Addr string // 127.0.0.1:port, UDP and TCP
	Zone string // example.test.
	Key  dnsupdate.Key
	cmd  *exec.Cmd
	done chan struct{} // closed when knotd exited
}

// Update is the dnsupdate.Server of the zone with the right key.
func (s *Server) Update() dnsupdate.Server {
	k := s.Key
	return dnsupdate.Server{Addr: s.Addr, Zone: s.Zone, Key: &k}
}

// Start runs knotd serving zone with the records in records (zone file
// lines relative to the zone, as "app 60 A 10.0.0.1"). It stops at the end
// of the test. A missing knotd fails the test: scripts/test.sh installs it.
func Start(t testing.TB, zone string, records ...string) *Server {
	t.Helper()
	if _, err := os.Stat(Knotd); err != nil {
		t.Fatalf("Knot DNS is not installed (%v): run bash scripts/test.sh, which installs Debian's knot package", err)
	}
	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	s := &Server{Zone: strings.TrimSuffix(zone, ".") + ".", Key: dnsupdate.Key{Name: "tandem-test.", Algorithm: "hmac-sha256", Secret: base64.StdEncoding.EncodeToString(raw)}}
	lines := []string{
		"$ORIGIN " + s.Zone, "$TTL 60",
		fmt.Sprintf("@ SOA ns.%s admin.%s 1 3600 600 86400 60", s.Zone, s.Zone),
		"@ NS ns." + s.Zone, "ns A 127.0.0.1",
	}
	zoneFile := filepath.Join(dir, "zone")
	if err := os.WriteFile(zoneFile, []byte(strings.Join(append(lines, records...), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		s.Addr = loopback.Free(t)
		conf := fmt.Sprintf(`server:
    rundir: %q
    listen: %s
key:
  - id: %s
    algorithm: %s
    secret: %s
acl:
  - id: update
    key: %s
    action: update
database:
    storage: %q
template:
  - id: default
    storage: %q
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: %s
    file: %q
    acl: update
log:
  - target: stderr
    any: warning
`, dir, strings.Replace(s.Addr, ":", "@", 1), s.Key.Name, s.Key.Algorithm, s.Key.Secret, s.Key.Name, dir, dir, s.Zone, zoneFile)
		confFile := filepath.Join(dir, "knot.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd := exec.Command(Knotd, "-c", confFile)
		cmd.Stdout, cmd.Stderr = &out, &out
		// A test killed before its cleanup takes its server with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start knotd: %v", err)
		}
		s.cmd, s.done = cmd, make(chan struct{})
		go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
		if err := s.wait(); err == nil {
			break
		} else if attempt == 3 {
			t.Fatalf("knotd did not answer on %s: %v\n%s", s.Addr, err, out.String())
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server.
func (s *Server) Stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.done
		s.cmd = nil
	}
}

// wait returns once the server answers for its zone.
func (s *Server) wait() error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.done:
			return fmt.Errorf("knotd exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = s.Update().Lookup(ctx, "ns."+s.Zone, "A")
		cancel()
		if err == nil {
			return nil
		}
	}
	s.Stop()
	return err
}
