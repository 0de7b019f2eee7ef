// Package streamtest runs real brokers for tests: an embedded NATS
// JetStream server and a kfake Kafka cluster per region, on loopback.
package streamtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"tandem/internal/stream/embed"
)

// NATS starts a JetStream server for the test with stream name over
// subject name+".events", and returns its nats:// URL.
func NATS(t testing.TB, name string) string {
	t.Helper()
	n, err := embed.StartNATS(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	if name != "" {
		if err := embed.CreateStream(context.Background(), n.URL, name, name+".events"); err != nil {
			t.Fatal(err)
		}
	}
	return n.URL
}

// Kafka starts a kfake cluster for the test with topics of one partition,
// and returns its kafka:// URL.
func Kafka(t testing.TB, topics ...string) string {
	t.Helper()
	_, url := KafkaCluster(t, topics...)
	return url
}

// KafkaCluster is Kafka with the cluster itself, for a test that controls
// its requests (delays, failures).
func KafkaCluster(t testing.TB, topics ...string) (*kfake.Cluster, string) {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(1, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, "kafka://" + strings.Join(c.ListenAddrs(), ",")
}

// Broker starts a broker of kind (nats or kafka) holding stream name.
func Broker(t testing.TB, kind, name string) string {
	switch kind {
	case "nats":
		return NATS(t, name)
	case "kafka":
		return Kafka(t, name)
	}
	panic(fmt.Sprintf("streamtest: no broker %q", kind))
}
