// Package produce writes events to a tandem stream in both regions (dual
// produce): each event goes to the stream of every region with the same
// id, so that whichever region processes it, and however often it is
// sent, it takes effect once in the sink.
//
//	p, err := produce.Open(ctx, []produce.Target{
//		{Region: "east", Broker: "nats://nats.east:4222", Stream: "ORDERS"},
//		{Region: "west", Broker: "kafka://kafka.west:9092", Stream: "orders"},
//	})
//	...
//	res, err := p.Send(ctx, orderID, body) // err only when no region took it
//
// Give every event an id of your own that a retry repeats (an order id, a
// hash of the payload): a retried send with the same id is one event. A
// region that is down when an event is sent is caught up by tandem serve
// (the stream's catch-up) when it returns.
package produce

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"tandem/internal/stream"
)

// Target is the stream of one region.
type Target struct {
	Region string
	// Broker is nats://host:port or kafka://host:port[,host:port].
	Broker string
	// Stream is the JetStream stream or the Kafka topic (one partition).
	Stream string
	// Subject is the NATS subject (default: the stream's only subject).
	Subject string
}

// Producer sends to every target.
type Producer struct {
	// Timeout bounds the send to one region (default 5s).
	Timeout time.Duration

	targets []Target
	mu      sync.Mutex
	logs    map[string]stream.Log
}

// Open returns a producer for targets. A region that does not answer now
// is tried again at each send.
func Open(ctx context.Context, targets []Target) (*Producer, error) {
	if len(targets) == 0 {
		return nil, errors.New("produce: no target")
	}
	p := &Producer{Timeout: 5 * time.Second, targets: targets, logs: map[string]stream.Log{}}
	for _, t := range targets {
		p.log(ctx, t) // errors show at the first send
	}
	return p, nil
}

func (p *Producer) log(ctx context.Context, t Target) (stream.Log, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.logs[t.Region]; l != nil {
		return l, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	l, err := stream.Open(ctx, stream.Spec{Broker: t.Broker, Stream: t.Stream, Subject: t.Subject})
	if err != nil {
		return nil, err
	}
	p.logs[t.Region] = l
	return l, nil
}

// Result says where an event went.
type Result struct {
	ID string `json:"id"`
	// Positions are the event's positions in the regions that took it.
	Positions map[string]int64 `json:"positions"`
	// Failed are the regions that did not, and why.
	Failed map[string]string `json:"failed,omitempty"`
}

// NewID returns a random event id, for events with no id of their own (a
// retry must reuse it to stay one event).
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Send writes the event to every region at once. It fails only when no
// region took it; a region that failed is in Result.Failed (tandem's
// catch-up brings it the event later).
func (p *Producer) Send(ctx context.Context, id string, data []byte) (Result, error) {
	if id == "" {
		return Result{}, errors.New("produce: an event needs an id (produce.NewID gives one; a retry must reuse it)")
	}
	r := Result{ID: id, Positions: map[string]int64{}, Failed: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, t := range p.targets {
		wg.Go(func() {
			pos, err := p.send(ctx, t, id, data)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.Failed[t.Region] = err.Error()
				errs = append(errs, fmt.Errorf("%s: %w", t.Region, err))
				return
			}
			r.Positions[t.Region] = pos
		})
	}
	wg.Wait()
	if len(r.Positions) == 0 {
		return r, fmt.Errorf("event %s reached no region: %w", id, errors.Join(errs...))
	}
	return r, nil
}

func (p *Producer) send(ctx context.Context, t Target, id string, data []byte) (int64, error) {
	l, err := p.log(ctx, t)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	return l.Append(ctx, id, data)
}

// Close closes the connections.
func (p *Producer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.logs {
		l.Close()
	}
	p.logs = map[string]stream.Log{}
}
