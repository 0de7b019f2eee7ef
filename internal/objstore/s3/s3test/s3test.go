// Package s3test runs a real S3 server (versitygw with its posix backend) on
// loopback for tests and benchmarks. versitygw allows one gateway per process,
// so tests share one server and each takes buckets of its own. Its posix
// backend changes the process's working directory to its root: tests resolve
// relative paths before they start it.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"

	s3store "tandem/internal/objstore/s3"
)

const (
	Access = "tandem-test"
	Secret = "tandem-test-secret"
)

// Server is a running gateway.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Root     string // folder that holds the buckets
	client   *s3.Client
}

// Run serves the folder root as an S3 endpoint on addr ("127.0.0.1:0" picks
// a port) until ctx ends. ready receives the endpoint once it answers.
func Run(ctx context.Context, root, addr string, ready chan<- string) error {
	if addr == "" || strings.HasSuffix(addr, ":0") {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		l.Close()
	}
	be, err := posix.New(root, meta.XattrMeta{}, posix.PosixOpts{NewDirPerm: 0o755, Concurrency: 5000})
	if err != nil {
		return fmt.Errorf("versitygw posix backend on %s: %w", root, err)
	}
	cfg := &embedgw.Config{
		RootUserAccess:    Access,
		RootUserSecret:    Secret,
		Region:            "us-east-1",
		Ports:             []string{addr},
		MaxConnections:    1000,
		MaxRequests:       1000,
		MultipartMaxParts: 10000,
		KeepAlive:         true, // as S3 does: one connection serves many requests
		Quiet:             true,
	}
	errc := make(chan error, 1)
	go func() { errc <- embedgw.RunVersityGW(ctx, be, cfg) }()
	endpoint := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(endpoint)
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-errc:
			return fmt.Errorf("versitygw: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw did not answer on %s", endpoint)
		}
	}
	if ready != nil {
		ready <- endpoint
	}
	err = <-errc
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}

var (
	shared    *Server
	sharedErr error
	once      sync.Once
	seq       atomic.Int64
)

// Shared returns the process's gateway, starting it on first use. It stops
// when the test binary exits.
func Shared(t testing.TB) *Server {
	t.Helper()
	once.Do(func() {
		root, err := os.MkdirTemp("", "tandem-s3test-")
		if err != nil {
			sharedErr = err
			return
		}
		ready := make(chan string, 1)
		errc := make(chan error, 1)
		go func() { errc <- Run(context.Background(), root, "127.0.0.1:0", ready) }()
		select {
		case ep := <-ready:
			shared = Connect(ep)
			shared.Root = root
		case err := <-errc:
			sharedErr = err
		}
	})
	if sharedErr != nil {
		t.Fatalf("start S3 server: %v", sharedErr)
	}
	return shared
}

// Connect returns a handle on a server already running at endpoint.
func Connect(endpoint string) *Server {
	return &Server{Endpoint: endpoint, client: s3.New(s3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(Access, Secret, ""),
	})}
}

// Options returns client options for this server.
// Client is an S3 client of the gateway's root user.
func (s *Server) Client() *s3.Client { return s.client }

func (s *Server) Options() s3store.Options {
	return s3store.Options{Endpoint: s.Endpoint, Region: "us-east-1", PathStyle: true, AccessKeyID: Access, SecretAccessKey: Secret}
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", os.Getpid(), seq.Add(1))
	if err := s.CreateBucket(context.Background(), name); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// CreateBucket creates the named bucket.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	return err
}

// Counter is a reverse proxy in front of a server that counts requests by
// kind: "HEAD", "GET-list", "GET", "PUT", "POST", "DELETE".
type Counter struct {
	Endpoint string
	mu       sync.Mutex
	counts   map[string]int
}

// NewCounter starts a counting proxy to s; it stops when the test ends.
func (s *Server) NewCounter(t testing.TB) *Counter {
	t.Helper()
	target, _ := url.Parse(s.Endpoint)
	c := &Counter{counts: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := r.Method
		if r.Method == http.MethodGet && (r.URL.Query().Has("list-type") || strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0) {
			kind = "GET-list"
		}
		c.mu.Lock()
		c.counts[kind]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	c.Endpoint = hs.URL
	return c
}

// Take returns the counts so far and resets them.
func (c *Counter) Take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}
