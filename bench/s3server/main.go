// Command s3server serves a folder as an S3 endpoint on loopback (versitygw,
// posix backend) for the benchmarks: bench/run.sh starts two of them, one
// per region. It prints the endpoint and runs until killed or -for elapses.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"tandem/internal/objstore/s3/s3test"
)

func main() {
	root := flag.String("root", "", "folder that holds the buckets")
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	bucket := flag.String("bucket", "", "create this bucket once up")
	lifetime := flag.Duration("for", 2*time.Hour, "stop after this long")
	flag.Parse()
	if *root == "" {
		log.Fatal("-root is required")
	}
	os.MkdirAll(*root, 0o755)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, *lifetime)
	defer cancel2()
	ready := make(chan string, 1)
	go func() {
		ep := <-ready
		if *bucket != "" {
			if err := s3test.Connect(ep).CreateBucket(ctx, *bucket); err != nil {
				log.Fatalf("create bucket %s: %v", *bucket, err)
			}
		}
		fmt.Println(ep)
	}()
	if err := s3test.Run(ctx, *root, *addr, ready); err != nil {
		log.Fatal(err)
	}
}
