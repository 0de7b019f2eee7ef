package streams_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"tandem/internal/config"
	"tandem/internal/health"
	"tandem/internal/member"
)

// The stream_lag health check against a real NATS broker and sink: the
// events of a region's log after its position in the sink.
func TestStreamLagCheck(t *testing.T) {
	r := newRig(t, "nats", 1)
	cfgPath, _ := r.config(0)
	var lines strings.Builder
	for i := range 20 {
		fmt.Fprintf(&lines, "lag-%02d {}\n", i)
	}
	if code, out := runIn(t, lines.String(), "stream", "produce", "--config", cfgPath, "--lines", "orders0"); code != 0 {
		t.Fatalf("produce: exit %d\n%s", code, out)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	env := member.NewEnv(cfg, nil)
	check := func(stream string, max int64) health.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return health.Run(ctx, "east", config.HealthCheck{StreamLag: &config.StreamLagCheck{Stream: stream, Max: max}}, env)
	}
	if res := check("orders0", 100); !res.OK || !strings.Contains(res.Detail, "20 events behind (position 0 of 20)") {
		t.Fatalf("within max: %+v", res)
	}
	if res := check("orders0", 10); res.OK || !strings.Contains(res.Detail, "20 events after the position 0, more than 10") {
		t.Fatalf("past max: %+v", res)
	}
	if res := check("nope", 10); res.OK || !strings.Contains(res.Detail, `no stream named "nope"`) {
		t.Fatalf("unknown stream: %+v", res)
	}
}
