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
