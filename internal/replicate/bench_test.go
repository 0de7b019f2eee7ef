package replicate

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
