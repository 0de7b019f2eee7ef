package replicate

import (
	"context"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
)

// BenchmarkSmallFiles copies 2,000 files of 4 KiB folder to folder per op.
func BenchmarkSmallFiles(b *testing.B) {
	src := b.TempDir()
	data := make([]byte, 4096)
	for i := range 2000 {
		p := filepath.Join(src, fmt.Sprintf("d%d/f%05d", i/500, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, data, 0o644)
	}
	sb, _ := local.Open(src, false)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dst := b.TempDir()
		db, _ := local.Open(dst, false)
		b.StartTimer()
		p := &Pair{Source: sb, Target: db}
		if _, err := p.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "objects/s")
}

// synthetic lists n generated objects without storing anything, so that a
// benchmark measures listing and comparing alone.
type synthetic struct {
	objstore.Bucket
	n int
}

func (s synthetic) URL() string        { return "synthetic://" }
func (s synthetic) KeepsModTime() bool { return true }

func (s synthetic) List(ctx context.Context, prefix string) iter.Seq2[objstore.Info, error] {
	mt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func(yield func(objstore.Info, error) bool) {
		for i := range s.n {
			key := fmt.Sprintf("d%04d/obj-%08d.bin", i/1000, i)
			if !yield(objstore.Info{Key: key, Size: 4096, ETag: "0-1000-" + key[len(key)-8:], ModTime: mt}, nil) {
				return
			}
		}
	}
}

// BenchmarkCompare lists and compares 1,000,000 unchanged objects per op
// (source and target agree, no index) and reports the peak heap per object.
func BenchmarkCompare(b *testing.B) {
	const n = 1_000_000
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	for range b.N {
		p := &Pair{Source: synthetic{n: n}, Target: synthetic{n: n}}
		sum, err := p.RunOnce(ctx)
		if err != nil || sum.Adopted != n {
			b.Fatalf("%+v %v", sum, err)
		}
	}
	close(stop)
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "objects/s")
	b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapInuse))/n, "peak-heap-B/object")
}
