package streams

import (
	"context"
	"fmt"
	"time"

	"tandem/internal/config"
	"tandem/internal/health"
)

func init() { health.RegisterCheck("stream_lag", lagCheck) }

// lagCheck is the stream_lag health check of a region: the stream's
// broker there answers, and the events of the region's log after the
// region's position in the sink are at most the check's max.
func lagCheck(ctx context.Context, env health.Env, region string, c config.HealthCheck) (string, error) {
	s := Find(env.Config(), c.StreamLag.Stream)
	if s == nil {
		return "", fmt.Errorf("no stream named %q in the configuration", c.StreamLag.Stream)
	}
	if _, ok := s.Regions[region]; !ok {
		return "", fmt.Errorf("stream %s has no end in %s", s.Name, region)
	}
	l, err := openLog(ctx, s, region)
	if err != nil {
		return "", err
	}
	defer l.Close()
	head, err := l.Head(ctx)
	if err != nil {
		return "", fmt.Errorf("stream %s in %s: %w", s.Name, region, err)
	}
	sk, err := OpenSink(ctx, s, time.Second)
	if err != nil {
		return "", err
	}
	defer sk.Close()
	pos, err := sk.Position(ctx, s.Consumer(region))
	if err != nil {
		return "", fmt.Errorf("stream %s: its sink: %w", s.Name, err)
	}
	lag := max(head-pos, 0)
	if lag > c.StreamLag.Max {
		return "", fmt.Errorf("stream %s in %s: %d events after the position %d, more than %d", s.Name, region, lag, pos, c.StreamLag.Max)
	}
	return fmt.Sprintf("stream %s in %s: %d events behind (position %d of %d)", s.Name, region, lag, pos, head), nil
}
