// Package loopback is about addresses of this host only: free ones for
// servers that choose their port before they start (knotd, PostgreSQL,
// the demo's forwarders, tests), and whether a listen address is one.
package loopback

import (
	"net"
	"testing"
)

// Addr returns a 127.0.0.1:port address that was free a moment ago.
func Addr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Free is Addr for a test, which it fails when no port is free.
func Free(t testing.TB) string {
	t.Helper()
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Only reports whether a listen address accepts connections from this
// host only.
func Only(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
