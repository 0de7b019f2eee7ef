package streams_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"tandem/produce"
)

var rtoRe = regexp.MustCompile(`succeeded: RTO ([0-9.]+)s`)

// BenchmarkSwitchover runs `tandem plan run switchover` back and forth
// between two regions' serve processes while events flow (one every 2 ms),
// and reports the plan's own RTO (from the decision to its last step) with
// a lease_ttl of 500ms:
//
//	go test -run '^$' -bench Switchover -benchtime 10x ./internal/member/streams
func BenchmarkSwitchover(b *testing.B) {
	ctx := context.Background()
	r := newRig(b, "nats", 1)
	cfg, sink := r.config(0)
	startServe(b, cfg, "east")
	startServe(b, cfg, "west")
	waitLease(b, cfg, "east")
	var targets []produce.Target
	for _, region := range []string{"east", "west"} {
		targets = append(targets, produce.Target{Region: region, Broker: r.urls[region], Stream: "orders0"})
	}
	p, err := produce.Open(ctx, targets)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	pctx, stop := context.WithCancel(ctx)
	sent := make(chan int)
	go func() {
		n := 0
		for ; pctx.Err() == nil; n++ {
			p.Send(pctx, fmt.Sprintf("e%07d", n), []byte("x"))
			time.Sleep(2 * time.Millisecond)
		}
		sent <- n
	}()
	var total float64
	b.ResetTimer()
	for range b.N {
		out := must(b, "plan", "run", "--config", cfg, "switchover")
		m := rtoRe.FindStringSubmatch(out)
		if m == nil {
			b.Fatalf("no RTO in:\n%s", out)
		}
		rto, _ := strconv.ParseFloat(m[1], 64)
		total += rto
	}
	b.StopTimer()
	stop()
	n := <-sent
	waitEffects(b, sink, n-1)
	b.ReportMetric(total/float64(b.N), "rto-s/switchover")
	b.ReportMetric(float64(n), "events")
}
