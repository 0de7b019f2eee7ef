package delta

import (
	"errors"
	"strings"
	"testing"
)

// TestPathsStayInside: every path a log can give resolves to a key inside
// the table and out of its log, or is refused with the path named.
func TestPathsStayInside(t *testing.T) {
	const root = "s3://lake/tables/t2"
	good := map[string]string{
		"part-0.parquet":                  "part-0.parquet",
		"date=2026-12-01/part-0.parquet":  "date=2026-12-01/part-0.parquet",
		"date%3D2026/part%200.parquet":    "date=2026/part 0.parquet",
		"s3://lake/tables/t2/a/b.parquet": "a/b.parquet",
		"s3a://lake/tables/t2/a.parquet":  "a.parquet",
		"/tables/t2/x.parquet":            "x.parquet",
		"dir/sub%2Fname.parquet":          "dir/sub/name.parquet",
	}
	for p, want := range good {
		if got, err := decodePath(p, root); err != nil || got != want {
			t.Errorf("decodePath(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	bad := []string{
		"../outside/x.parquet",
		"s3://lake/tables/t2/../../outside/x.parquet",
		"s3://lake/tables/t2/../t3/x.parquet",
		"s3://lake/tables/t2x/y.parquet",
		"s3://other/tables/t2/x.parquet",
		"%2e%2e/x.parquet",
		"a/%2e%2e/%2e%2e/x.parquet",
		"/etc/passwd",
		"file:///etc/passwd",
		"_delta_log/00000000000000000099.json",
		"s3://lake/tables/t2/_delta_log/00000000000000000099.json",
		"./_delta_log/x.json",
		"a//b.parquet",
		"a/./b.parquet",
		"line%0Abreak.parquet",
		"nul%00.parquet",
		".",
		"",
	}
	for _, p := range bad {
		if got, err := decodePath(p, root); !errors.Is(err, ErrOutsideTable) {
			t.Errorf("decodePath(%q) = %q, %v; want it refused", p, got, err)
		}
	}
	// Deletion vectors of every storage type.
	for _, dv := range []DeletionVector{
		{StorageType: "p", PathOrInlineDv: "s3://lake/tables/t2/../../outside/dv.bin"},
		{StorageType: "p", PathOrInlineDv: "../dv.bin"},
		{StorageType: "u", PathOrInlineDv: "../../" + "vCz6JDVl5KHVu*3<hd=2"},
		{StorageType: "u", PathOrInlineDv: "_delta_log" + "vCz6JDVl5KHVu*3<hd=2"},
	} {
		if got, err := dv.File(root); !errors.Is(err, ErrOutsideTable) {
			t.Errorf("deletion vector %+v: %q, %v; want it refused", dv, got, err)
		}
	}
	// Sidecars live in _delta_log/_sidecars/ and nowhere else.
	for p, ok := range map[string]bool{
		"a.parquet": true, "s3://lake/tables/t2/_delta_log/_sidecars/b.parquet": true,
		"..": false, "s3://lake/tables/t2/x.parquet": false, "s3://lake/tables/t2/_delta_log/_sidecars/../00.json": false,
	} {
		if _, err := sidecarKey(p, root); (err == nil) != ok {
			t.Errorf("sidecarKey(%q): %v", p, err)
		}
	}
}

func FuzzDecodePath(f *testing.F) {
	for _, s := range []string{"part-0.parquet", "s3://lake/tables/t2/a", "../x", "%2e%2e/x", "_delta_log/x", "a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rel, err := decodePath(p, "s3://lake/tables/t2")
		if err != nil {
			return
		}
		if rel == "" || strings.HasPrefix(rel, "/") || rel == ".." || strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") ||
			strings.HasSuffix(rel, "/..") || strings.HasPrefix(rel, LogDir) || strings.ContainsAny(rel, "\x00\n") {
			t.Fatalf("decodePath(%q) = %q: outside the table or in its log", p, rel)
		}
	})
}
