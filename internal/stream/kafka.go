package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaLog is a Kafka topic of one partition: tandem keeps one order per
// stream, so that a position means the same thing to every reader.
type kafkaLog struct {
	seeds []string
	topic string
	where string
	prod  *kgo.Client
	adm   *kadm.Client

	cons *kgo.Client // consuming at next
	next int64
}

func openKafka(ctx context.Context, spec Spec, seeds []string) (Log, error) {
	if strings.Contains(spec.Broker, "@") {
		return nil, fmt.Errorf("broker %s: tandem does not speak SASL to Kafka yet: give the brokers without credentials", Redact(spec.Broker))
	}
	where := fmt.Sprintf("kafka topic %s at %s", spec.Stream, Redact(spec.Broker))
	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(spec.Stream),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequestRetries(2),
		kgo.RecordDeliveryTimeout(5*time.Second), kgo.DialTimeout(3*time.Second))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	l := &kafkaLog{seeds: seeds, topic: spec.Stream, where: where, prod: prod, adm: kadm.NewClient(prod)}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	topics, err := l.adm.ListTopics(tctx, spec.Stream)
	if err == nil {
		err = topics.Error()
	}
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		prod.Close()
		return nil, fmt.Errorf("%s: %w: create it with one partition, or fix the topic's name", where, ErrNoStream)
	case err != nil:
		prod.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	case len(topics[spec.Stream].Partitions) != 1:
		prod.Close()
		return nil, fmt.Errorf("%s has %d partitions: tandem keeps one order per stream and needs a topic of one partition", where, len(topics[spec.Stream].Partitions))
	}
	return l, nil
}

func (l *kafkaLog) Where() string { return l.where }

func (l *kafkaLog) Close() {
	l.prod.Close()
	if l.cons != nil {
		l.cons.Close()
	}
}

func (l *kafkaLog) Append(ctx context.Context, id string, data []byte) (int64, error) {
	r := &kgo.Record{Value: data, Partition: 0, Headers: []kgo.RecordHeader{{Key: IDHeader, Value: []byte(id)}}}
	if err := l.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		return 0, fmt.Errorf("%s: produce %s: %w", l.where, id, err)
	}
	return r.Offset + 1, nil
}

func (l *kafkaLog) Read(ctx context.Context, after int64, n int, wait time.Duration) ([]Event, error) {
	if l.cons == nil || l.next != after+1 {
		if l.cons != nil {
			l.cons.Close()
		}
		c, err := kgo.NewClient(kgo.SeedBrokers(l.seeds...), kgo.DialTimeout(3*time.Second),
			kgo.FetchMaxWait(100*time.Millisecond),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: {0: kgo.NewOffset().At(after)}}))
		if err != nil {
			return nil, fmt.Errorf("%s: read after %d: %w", l.where, after, err)
		}
		l.cons, l.next = c, after+1
	}
	// PollRecords returns as soon as a fetch has records: the wait costs
	// only when there are none.
	pctx, cancel := context.WithTimeout(ctx, max(wait, 100*time.Millisecond))
	defer cancel()
	fs := l.cons.PollRecords(pctx, n)
	var out []Event
	fs.EachRecord(func(r *kgo.Record) {
		ev := Event{Data: r.Value, Pos: r.Offset + 1}
		for _, h := range r.Headers {
			if h.Key == IDHeader {
				ev.ID = string(h.Value)
			}
		}
		out = append(out, ev)
		l.next = ev.Pos + 1
	})
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue
		}
		l.cons.Close()
		l.cons = nil
		return out, fmt.Errorf("%s: read after %d: %w", l.where, after, fe.Err)
	}
	return out, nil
}

func (l *kafkaLog) Head(ctx context.Context) (int64, error) {
	offs, err := l.adm.ListEndOffsets(ctx, l.topic)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.where, err)
	}
	o, ok := offs.Lookup(l.topic, 0)
	if !ok {
		return 0, fmt.Errorf("%s: no end offset for partition 0", l.where)
	}
	if o.Err != nil {
		return 0, fmt.Errorf("%s: %w", l.where, o.Err)
	}
	return o.Offset, nil
}
