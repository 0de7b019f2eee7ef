package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tandem/internal/dnsupdate/knottest"
	"tandem/internal/loopback"
)

// listen accepts connections on a loopback port and answers each line
// with name and the line; got receives every line it was sent.
type echo struct {
	addr string
	mu   sync.Mutex
	got  []string
}

func startEcho(t *testing.T, name string) *echo {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	e := &echo{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					e.mu.Lock()
					e.got = append(e.got, s.Text())
					e.mu.Unlock()
					c.Write([]byte(name + ": " + s.Text() + "\n"))
				}
			}()
		}
	}()
	return e
}

func (e *echo) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// TestEndpointDNS: plans switch a real DNS name on a real server (Knot)
// with TSIG-signed compare-and-swap updates: a failover points it at the
// new primary, a failback puts back a name someone swung away, a
// switchover points it home; status says when it points elsewhere; a
// wrong key is refused with a message that never prints the secret.
func TestEndpointDNS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k := knottest.Start(t, "example.test", "app 60 A 10.0.0.1")
	probeEast, probeWest := startEcho(t, "east"), startEcho(t, "west")
	dir, cfg := eastWest(t, strings.NewReplacer("SERVER", k.Addr, "PEAST", probeEast.addr, "PWEST", probeWest.addr).Replace(`
endpoints:
  - name: app
    targets: {east: 10.0.0.1, west: 10.0.0.2}
    probe: {east: PEAST, west: PWEST}
    dns:
      server: SERVER
      zone: example.test
      name: app.example.test
      ttl: 30s
      key: {name: tandem-test., algorithm: hmac-sha256, secret_file: tsig.key}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 1h, endpoints: [app]}
`))
	writeFile(t, filepath.Join(dir, "tsig.key"), k.Key.Secret+"\n")
	points := func() []string {
		r, err := k.Update().Lookup(ctx, "app.example.test", "A")
		if err != nil {
			t.Fatal(err)
		}
		return r.Values
	}
	run := expecter(t)
	run(0, "ok   check.name:app", "plan", "precheck", "--config", cfg, "switchover")
	run(0, "endpoint.switch:app", "plan", "show", "--config", cfg, "failover")

	run(0, "endpoint app points at west (10.0.0.2)", "plan", "run", "--config", cfg, "failover")
	if got := points(); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after the failover the name holds %v", got)
	}
	if _, out := tandem(t, nil, "status", "--config", cfg); !strings.Contains(out, "endpoint app: ok\n  points at west (10.0.0.2), TTL 30s") {
		t.Fatalf("status after the failover:\n%s", out)
	}

	// Someone points it back at the old primary: status says so, and the
	// failback (west stays primary) puts it right.
	if err := k.Update().Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.2"}, []string{"10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	_, out := tandem(t, nil, "status", "--config", cfg)
	if !strings.Contains(out, "endpoint app: points-elsewhere\n  holds 10.0.0.1, not the primary west's target (10.0.0.2)") {
		t.Fatalf("status with the name swung back:\n%s", out)
	}
	run(0, "endpoint app points at west", "plan", "run", "--config", cfg, "failback")
	if got := points(); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("after the failback the name holds %v", got)
	}
	run(0, "endpoint app points at east (10.0.0.1)", "plan", "run", "--config", cfg, "switchover")
	if got := points(); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("after the switchover the name holds %v", got)
	}

	// A name that holds neither region's target stops a switchover.
	if err := k.Update().Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.9.9.9"}); err != nil {
		t.Fatal(err)
	}
	run(1, "endpoint app holds 10.9.9.9: neither east's nor west's target", "plan", "precheck", "--config", cfg, "switchover")
	k.Update().Swap(ctx, "app.example.test", "A", 600, []string{"10.9.9.9"}, []string{"10.0.0.1"})

	// A long TTL and a standby that does not answer fail the prechecks.
	writeFile(t, cfg, strings.Replace(mustReadString(t, cfg), probeWest.addr, "127.0.0.1:1", 1))
	out = run(1, "west's target does not answer", "plan", "precheck", "--config", cfg, "switchover")
	if !strings.Contains(out, "the record's TTL is 10m0s, above max_ttl 5m0s") {
		t.Fatalf("precheck with TTL 30s above max_ttl:\n%s", out)
	}

	// A wrong key: refused, said, the secret never printed.
	bad := "bm90IHRoZSBrZXkgbm90IHRoZSBrZXkgbm90IHRoZSBrZXk="
	writeFile(t, filepath.Join(dir, "tsig.key"), bad)
	out = run(1, "TSIG", "plan", "precheck", "--config", cfg, "switchover")
	if strings.Contains(out, bad) || strings.Contains(out, k.Key.Secret) {
		t.Fatalf("a secret printed:\n%s", out)
	}
	if got := points(); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("a refused key changed the name: %v", got)
	}
}

func mustReadString(t *testing.T, path string) string { return string(mustRead(t, path)) }

// TestEndpointForward: serve's forwarder sends each connection to the
// lease holder's target, cuts connections to the old holder when the
// lease moves, refuses while no region holds the lease, and a forwarder
// paused past the lease (SIGSTOP) forwards nothing more to the old
// primary when it resumes.
func TestEndpointForward(t *testing.T) {
	t.Parallel()
	east, west := startEcho(t, "east"), startEcho(t, "west")
	lEast, lWest := loopback.Free(t), loopback.Free(t)
	dir, cfg := eastWest(t, strings.NewReplacer("TEAST", east.addr, "TWEST", west.addr, "LEAST", lEast, "LWEST", lWest).Replace(`
endpoints:
  - name: app
    targets: {east: TEAST, west: TWEST}
    forward: {listen: {east: LEAST, west: LWEST}}
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 1s, endpoints: [app]}
`))
	eastServe := startServe(t, cfg, "east")
	westServe := startServe(t, cfg, "west")
	waitFor(t, "east's serve did not take the lease", leaseIs(dir, "east"))

	say := func(c net.Conn, line string) (string, error) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	dial := func(addr string) net.Conn {
		var c net.Conn
		waitFor(t, "no forwarder on "+addr, func() bool {
			var err error
			c, err = net.Dial("tcp", addr)
			return err == nil
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Both regions' forwarders send to east, the holder. A forwarder
	// trusts its read of the lease for one grace (100ms with this TTL) and
	// refuses a connection once that read is stale, which a loaded machine
	// can make it: each check dials again until one goes through.
	through := func(addr, line, want string) net.Conn {
		var c net.Conn
		waitFor(t, "through "+addr+": no "+strings.TrimSpace(want), func() bool {
			c = dial(addr)
			got, _ := say(c, line)
			return got == want
		})
		return c
	}
	viaWest := through(lWest, "hello", "east: hello\n")
	through(lEast, "hi", "east: hi\n")

	// SIGSTOP east's serve with a connection open through its forwarder;
	// the lease moves to west meanwhile; what the client sends is never
	// forwarded to east once east's serve resumes.
	paused := through(lEast, "before", "east: before\n")
	eastServe.cmd.Process.Signal(syscall.SIGSTOP)
	waitFor(t, "east's serve never stopped", func() bool { return stopped(eastServe.cmd.Process.Pid) })
	paused.Write([]byte("after-the-lease-moved\n"))
	run := expecter(t)
	run(0, "RTO", "plan", "run", "--config", cfg, "failover")
	waitFor(t, "west did not take the lease", leaseIs(dir, "west"))
	eastServe.cmd.Process.Signal(syscall.SIGCONT)
	through(lWest, "again", "west: again\n")
	// The connection west's forwarder had open to east was cut.
	if got, err := say(viaWest, "still there?"); err == nil && got == "east: still there?\n" {
		t.Fatalf("west's forwarder kept forwarding to east after the failover")
	}
	time.Sleep(500 * time.Millisecond) // east's serve had time to forward, if it would
	if slices.Contains(east.received(), "after-the-lease-moved") || slices.Contains(east.received(), "still there?") {
		t.Fatalf("east received bytes after the lease moved: %v", east.received())
	}

	// No region holds the lease: the forwarders refuse.
	westServe.kill()
	eastServe.stop()
	run(0, "held by nobody", "lease", "release", "--config", cfg, "lakehouse", "--region", "west")
	startServe(t, cfg, "east")
	c := dial(lEast)
	if got, err := say(c, "anyone?"); err == nil && got != "" {
		// east's serve takes the lease only if it was never taken; it was,
		// and west released it: nobody holds it.
		t.Fatalf("forwarded with no lease holder: %q", got)
	}
}

// stopped reports whether process pid is stopped (SIGSTOP took effect).
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "T"
}

// hostedDNS is a hosted DNS's API: a record read and a conditional update
// (the expected value must match, as Route 53's change batches or
// Cloudflare's and OCI's conditional requests do), behind a bearer token.
type hostedDNS struct {
	mu      sync.Mutex
	value   string
	updates int
}

func (h *hostedDNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer dns-token-55" {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
		return
	}
	switch r.Method {
	case http.MethodGet:
		fmt.Fprintf(w, `{"record": {"name": "app.example.test", "rdata": [%q], "ttl": 30}}`, h.value)
	case http.MethodPut:
		var body struct{ Value, Expected string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
			return
		}
		if body.Expected != h.value {
			http.Error(w, `{"error":"precondition failed: the record changed"}`, http.StatusPreconditionFailed)
			return
		}
		h.value = body.Value
		h.updates++
		fmt.Fprintf(w, `{"status": "INSYNC"}`)
	}
}

func (h *hostedDNS) get() (string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.value, h.updates
}

// TestEndpointAPI: a hosted DNS's HTTP API switches the name at a
// failover and back at a switchover, the expected record sent with each
// update; a record someone else changed is refused before any update;
// the API's token never prints.
func TestEndpointAPI(t *testing.T) {
	t.Parallel()
	h := &hostedDNS{value: "10.0.0.1"}
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, cfg := eastWest(t, strings.ReplaceAll(`
endpoints:
  - name: app
    targets: {east: 10.0.0.1, west: 10.0.0.2}
    api:
      read: {http: {url: "API/zones/example.test/records/app", headers: {Authorization: "Bearer dns-token-55"}}}
      field: record.rdata
      update:
        http:
          method: PUT
          url: "API/zones/example.test/records/app"
          headers: {Authorization: "Bearer dns-token-55"}
          body: '{"value": "{{.Value}}", "expected": "{{.Expected}}"}'
protection_groups:
  - {name: lakehouse, primary: east, standby: west, lease_ttl: 1h, endpoints: [app]}
`, "API", srv.URL))
	run := expecter(t)
	run(0, "endpoint app points at east (10.0.0.1)", "plan", "precheck", "--config", cfg, "failover")
	out := run(0, "endpoint app points at west (10.0.0.2)", "plan", "run", "--config", cfg, "failover")
	if v, n := h.get(); v != "10.0.0.2" || n != 1 || strings.Contains(out, "dns-token-55") {
		t.Fatalf("after the failover: %s after %d updates\n%s", v, n, out)
	}
	run(0, "RTO", "plan", "run", "--config", cfg, "failback")
	if _, n := h.get(); n != 1 {
		t.Fatalf("the failback updated a name that pointed at the primary already (%d updates)", n)
	}
	h.mu.Lock()
	h.value = "10.7.7.7"
	h.mu.Unlock()
	run(1, "endpoint app holds 10.7.7.7: neither west's nor east's target", "plan", "precheck", "--config", cfg, "switchover")
	// Past a disabled precheck, the switch itself compares before it swaps.
	writeFile(t, cfg, strings.Replace(mustReadString(t, cfg), "endpoints: [app]}", `endpoints: [app], steps: {"check.name:app": {disabled: true}}}`, 1))
	out = run(1, "holds 10.7.7.7, not west's target as expected", "plan", "run", "--config", cfg, "switchover")
	if v, n := h.get(); v != "10.7.7.7" || n != 1 || strings.Contains(out, "dns-token-55") {
		t.Fatalf("a changed record was overwritten: %s after %d updates\n%s", v, n, out)
	}
}
