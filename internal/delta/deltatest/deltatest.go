// Package deltatest finds the Spark-written Delta tables tests read, in
// ../shared/testdata/delta beside the repository (or TANDEM_DELTA_TESTDATA).
package deltatest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// dir is resolved once, from this file's place in the repository, so that
// tests find it whatever the working directory (the embedded S3 server
// changes it).
var dir = func() string {
	if d := os.Getenv("TANDEM_DELTA_TESTDATA"); d != "" {
		abs, _ := filepath.Abs(d)
		return abs
	}
	_, file, _, _ := runtime.Caller(0)
	// internal/delta/deltatest/deltatest.go -> repository root -> ../shared
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "shared", "testdata", "delta")
}()

// Dir returns the folder of test tables, failing the test loudly when it is
// missing.
func Dir(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Delta test tables not found at %s: the repository needs shared/ beside it (or set TANDEM_DELTA_TESTDATA): %v", dir, err)
	}
	return dir
}

// CopyTo copies the test table name into dst, for tests that write to or
// damage a table (the test tables themselves stay read-only).
func CopyTo(t testing.TB, name, dst string) {
	t.Helper()
	src := filepath.Join(Dir(t), name)
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy test table %s: %v", name, err)
	}
}

// Copy copies the test table name into a new temporary folder.
func Copy(t testing.TB, name string) string {
	t.Helper()
	dst := t.TempDir()
	CopyTo(t, name, dst)
	return dst
}
