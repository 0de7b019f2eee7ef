// Package embed runs a NATS server with JetStream inside the process, on
// loopback at a port of the system's choosing: the demo's broker of each
// region, and the tests'.
package embed

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is a running server.
type NATS struct {
	srv  *server.Server
	URL  string
	Dir  string
	Port int
}

// StartNATS starts a JetStream server keeping its streams in dir, on
// 127.0.0.1 (port 0: any free one).
func StartNATS(dir string, port int) (*NATS, error) {
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("the embedded NATS server did not start")
	}
	return &NATS{srv: srv, URL: srv.ClientURL(), Dir: dir, Port: srv.Addr().(*net.TCPAddr).Port}, nil
}

// Stop shuts the server down.
func (n *NATS) Stop() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// CreateStream creates (or keeps) a file-backed stream over subject.
func CreateStream(ctx context.Context, url, name, subject string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
	return err
}
