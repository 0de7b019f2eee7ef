// Package stream is tandem's view of an event stream in one region: a log
// of events, each with a stable id, at positions 1, 2, 3... (a NATS
// JetStream stream's sequence; a Kafka topic partition's offset + 1).
// Producers write every event to the stream of both regions (Dual); the
// region holding the lease delivers them to a sink (Sink) under its
// fencing epoch, and the sink keeps the effect, the id and the position in
// one transaction, so an event takes effect once whichever region
// delivers it. Mirror catches a region up with the events it missed.
package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// IDHeader is the header that carries an event's id on Kafka; on NATS the
// id is the Nats-Msg-Id header, which JetStream deduplicates by.
const IDHeader = "tandem-id"

// Event is one event of a region's log.
type Event struct {
	ID   string
	Data []byte
	// Pos is its position in the log it was read from (1 for the first).
	Pos int64
}

// Log is one region's stream.
type Log interface {
	// Append writes an event with its id and returns its position. A
	// broker that deduplicates by id (JetStream, within its duplicate
	// window) returns the first copy's position for a repeated id.
	Append(ctx context.Context, id string, data []byte) (int64, error)
	// Read returns up to n events after position after, in order. It
	// returns none when there are none yet (waiting at most wait), and may
	// return none while a slow broker has yet to send events the log holds:
	// a caller that takes an empty read for the log's end asks Head too
	// (see the mirror's next).
	Read(ctx context.Context, after int64, max int, wait time.Duration) ([]Event, error)
	// Head is the position of the last event (0 for an empty log).
	Head(ctx context.Context) (int64, error)
	// Where names the log in messages: "nats stream ORDERS at 127.0.0.1:4222".
	Where() string
	Close()
}

// Spec says where a region's stream is.
type Spec struct {
	// Broker is nats://host:port or kafka://host:port[,host:port...].
	Broker string
	// Stream is the JetStream stream or the Kafka topic.
	Stream string
	// Subject is the subject events are published on (NATS; default: the
	// stream's only subject).
	Subject string
}

// Redact is a broker URL fit to print: credentials removed from every host.
func Redact(broker string) string {
	scheme, hosts, ok := strings.Cut(broker, "://")
	if !ok {
		return "(not a broker URL)"
	}
	list := strings.Split(hosts, ",")
	for i, h := range list {
		if at := strings.LastIndex(h, "@"); at >= 0 {
			list[i] = h[at+1:]
		}
		if q := strings.IndexAny(list[i], "/?#"); q >= 0 {
			list[i] = list[i][:q]
		}
	}
	return scheme + "://" + strings.Join(list, ",")
}

// ErrNoStream: the stream or topic does not exist in the broker.
var ErrNoStream = errors.New("no such stream")

// Open connects to the stream spec names.
func Open(ctx context.Context, spec Spec) (Log, error) {
	scheme, hosts, ok := strings.Cut(spec.Broker, "://")
	if !ok || hosts == "" {
		return nil, fmt.Errorf("broker %s: want nats://host:port or kafka://host:port", Redact(spec.Broker))
	}
	switch scheme {
	case "nats":
		return openNATS(ctx, spec)
	case "kafka":
		return openKafka(ctx, spec, strings.Split(hosts, ","))
	}
	return nil, fmt.Errorf("broker %s: unknown scheme %q (nats or kafka)", Redact(spec.Broker), scheme)
}

// Named gives every event read from region's log that arrived without an
// id (a producer that is not tandem's) the id "tandem:REGION:POSITION".
// The mirror copies such an event to the other region under that id, so
// from then on it is as stable as any other.
func Named(region string, evs []Event) []Event {
	for i := range evs {
		if evs[i].ID == "" {
			evs[i].ID = fmt.Sprintf("tandem:%s:%d", region, evs[i].Pos)
		}
	}
	return evs
}
