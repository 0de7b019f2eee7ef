package dnsupdate_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"tandem/internal/dnsupdate"
	"tandem/internal/dnsupdate/knottest"
)

func TestSwapOnKnot(t *testing.T) {
	ctx := context.Background()
	k := knottest.Start(t, "example.test", "app 60 A 10.0.0.1", "web 30 CNAME east.example.test.")
	s := k.Update()

	got, err := s.Lookup(ctx, "app.example.test", "A")
	if err != nil || !slices.Equal(got.Values, []string{"10.0.0.1"}) || got.TTL != 60 {
		t.Fatalf("lookup %+v %v", got, err)
	}
	if err := s.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, "app.example.test", "A"); !slices.Equal(got.Values, []string{"10.0.0.2"}) || got.TTL != 30 {
		t.Fatalf("after swap %+v", got)
	}
	// Again: a no-op.
	if err := s.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	// A stale writer expecting the old record cannot swing it back.
	err = s.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.3"})
	if !errors.Is(err, dnsupdate.ErrMismatch) || !strings.Contains(err.Error(), "10.0.0.2") {
		t.Fatalf("stale swap: %v", err)
	}
	if got, _ := s.Lookup(ctx, "app.example.test", "A"); !slices.Equal(got.Values, []string{"10.0.0.2"}) {
		t.Fatalf("stale swap changed it: %+v", got)
	}
	// CNAME.
	if err := s.Swap(ctx, "web.example.test", "CNAME", 30, []string{"east.example.test"}, []string{"West.Example.Test."}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Lookup(ctx, "web.example.test", "CNAME"); !slices.Equal(got.Values, []string{"west.example.test."}) {
		t.Fatalf("cname %+v", got)
	}
}

func TestRefusedUpdates(t *testing.T) {
	ctx := context.Background()
	k := knottest.Start(t, "example.test", "app 60 A 10.0.0.1")
	bad := k.Update()
	bad.Key.Secret = "bm90IHRoZSBzZWNyZXQgYXQgYWxsIG5vdCBpdCBhdCBhbGw="
	err := bad.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"})
	if err == nil || !strings.Contains(err.Error(), "TSIG") || strings.Contains(err.Error(), bad.Key.Secret) {
		t.Fatalf("bad key: %v", err)
	}
	unknown := k.Update()
	unknown.Key.Name = "someone-else."
	if err := unknown.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"}); err == nil || !strings.Contains(err.Error(), "TSIG") {
		t.Fatalf("unknown key: %v", err)
	}
	wrongZone := k.Update()
	wrongZone.Zone = "other.test."
	if err := wrongZone.Swap(ctx, "app.other.test", "A", 30, nil, []string{"10.0.0.2"}); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Fatalf("wrong zone: %v", err)
	}
	noKey := k.Update()
	noKey.Key = nil
	if err := noKey.Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"}); err == nil || !strings.Contains(err.Error(), "dns.key") {
		t.Fatalf("unsigned: %v", err)
	}
	if got, _ := k.Update().Lookup(ctx, "app.example.test", "A"); !slices.Equal(got.Values, []string{"10.0.0.1"}) {
		t.Fatalf("a refused update changed the record: %+v", got)
	}
	k.Stop()
	if err := k.Update().Swap(ctx, "app.example.test", "A", 30, []string{"10.0.0.1"}, []string{"10.0.0.2"}); err == nil {
		t.Fatal("a stopped server took an update")
	}
}
