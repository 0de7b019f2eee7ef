// Command mktable turns a folder of files into a Delta table: one commit
// that adds every file. bench/run.sh uses it to compare table sync with
// bucket replication on the same bytes.
package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: mktable DIR")
	}
	dir := os.Args[1]
	var lines []string
	add := func(v any) {
		b, _ := json.Marshal(v)
		lines = append(lines, string(b))
	}
	add(map[string]any{"commitInfo": map[string]any{"operation": "WRITE"}})
	add(map[string]any{"protocol": map[string]any{"minReaderVersion": 1, "minWriterVersion": 2}})
	add(map[string]any{"metaData": map[string]any{"id": "bench", "format": map[string]any{"provider": "parquet", "options": map[string]any{}},
		"schemaString": `{"type":"struct","fields":[]}`, "partitionColumns": []string{}, "configuration": map[string]any{}}})
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		add(map[string]any{"add": map[string]any{"path": filepath.ToSlash(rel), "partitionValues": map[string]any{},
			"size": info.Size(), "modificationTime": info.ModTime().UnixMilli(), "dataChange": true}})
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "_delta_log"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", 0)), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
}
