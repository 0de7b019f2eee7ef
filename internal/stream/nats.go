package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tandem/internal/redact"
)

// natsLog is a JetStream stream.
type natsLog struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	s       jetstream.Stream
	subject string
	where   string

	cons jetstream.Consumer // ordered consumer reading at next
	next int64
}

func openNATS(ctx context.Context, spec Spec) (Log, error) {
	where := fmt.Sprintf("nats stream %s at %s", spec.Stream, Redact(spec.Broker))
	nc, err := nats.Connect(spec.Broker, nats.Timeout(3*time.Second), nats.MaxReconnects(-1),
		nats.ReconnectWait(200*time.Millisecond), nats.Name("tandem"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, redact.Err(err))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s, err := js.Stream(ctx, spec.Stream)
	if err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%s: %w: create it (nats stream add %s) or fix the stream's name", where, ErrNoStream, spec.Stream)
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	subject := spec.Subject
	if subject == "" {
		subs := s.CachedInfo().Config.Subjects
		if len(subs) != 1 || strings.ContainsAny(subs[0], "*>") {
			nc.Close()
			return nil, fmt.Errorf("%s: its subjects are %v: set subject to the one tandem publishes on", where, subs)
		}
		subject = subs[0]
	}
	return &natsLog{nc: nc, js: js, s: s, subject: subject, where: where}, nil
}

func (l *natsLog) Where() string { return l.where }

func (l *natsLog) Close() {
	l.drop()
	l.nc.Close()
}

// drop deletes the reading consumer, if any (best effort: an unused one
// goes by itself).
func (l *natsLog) drop() {
	if l.cons == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = l.s.DeleteConsumer(ctx, l.cons.CachedInfo().Name)
	l.cons = nil
}

func (l *natsLog) Append(ctx context.Context, id string, data []byte) (int64, error) {
	ack, err := l.js.Publish(ctx, l.subject, data, jetstream.WithMsgID(id))
	if err != nil {
		return 0, fmt.Errorf("%s: publish %s: %w", l.where, id, err)
	}
	return int64(ack.Sequence), nil
}

func (l *natsLog) Read(ctx context.Context, after int64, n int, wait time.Duration) ([]Event, error) {
	if l.cons == nil || l.next != after+1 {
		l.drop()
		// A consumer of tandem's own, acknowledging nothing, reading in
		// order from after+1; the server removes it once unused.
		cfg := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
			InactiveThreshold: time.Minute, MemoryStorage: true}
		if after > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, uint64(after+1)
		}
		c, err := l.s.CreateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: read after %d: %w", l.where, after, err)
		}
		l.cons, l.next = c, after+1
	}
	batch, err := l.cons.FetchNoWait(n)
	if err != nil {
		l.drop()
		return nil, fmt.Errorf("%s: read after %d: %w", l.where, after, err)
	}
	var out []Event
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		pos := int64(md.Sequence.Stream)
		out = append(out, Event{ID: m.Headers().Get(nats.MsgIdHdr), Data: m.Data(), Pos: pos})
		l.next = pos + 1
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		l.drop()
		return out, fmt.Errorf("%s: read after %d: %w", l.where, after, err)
	}
	if len(out) == 0 && wait > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(min(wait, 50*time.Millisecond)):
		}
	}
	return out, nil
}

func (l *natsLog) Head(ctx context.Context) (int64, error) {
	info, err := l.s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.where, err)
	}
	return int64(info.State.LastSeq), nil
}
