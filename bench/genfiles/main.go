// Command genfiles writes N files of a given size under each folder named on
// the command line, with the same bytes and modification times in every
// folder, so that a second folder is an exact replica of the first.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

func main() {
	n := flag.Int("n", 10000, "number of files")
	size := flag.Int("size", 4096, "bytes per file")
	perDir := flag.Int("per-dir", 1000, "files per subfolder")
	flag.Parse()
	if flag.NArg() == 0 {
		log.Fatal("usage: genfiles [-n N] [-size BYTES] DIR...")
	}
	rng := rand.New(rand.NewPCG(7, 7))
	data := make([]byte, *size)
	mt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range *n {
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		rel := filepath.Join(fmt.Sprintf("d%04d", i / *perDir), fmt.Sprintf("obj-%07d.bin", i))
		for _, root := range flag.Args() {
			p := filepath.Join(root, rel)
			if i%*perDir == 0 {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					log.Fatal(err)
				}
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				log.Fatal(err)
			}
			if err := os.Chtimes(p, mt, mt); err != nil {
				log.Fatal(err)
			}
		}
	}
}
