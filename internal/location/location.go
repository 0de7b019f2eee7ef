// Package location parses the URLs that name where objects live (a local
// folder, or a bucket and prefix on an S3-compatible service), tells whether
// two locations overlap, and opens the right objstore backend.
package location

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"tandem/internal/objstore"
	"tandem/internal/objstore/local"
	s3store "tandem/internal/objstore/s3"

	"tandem/internal/redact"
)

// Location is a parsed location URL.
type Location struct {
	Scheme string // "file" or "s3"
	Path   string // file: absolute, cleaned folder path
	Bucket string // s3
	Prefix string // s3: "" or ending in "/"
}

// Parse accepts file:///path, a plain path, or s3://bucket[/prefix].
func Parse(raw string) (Location, error) {
	if raw == "" {
		return Location{}, fmt.Errorf("empty location: use a folder path, file:///path or s3://bucket/prefix")
	}
	if !strings.Contains(raw, "://") {
		abs, err := filepath.Abs(raw)
		if err != nil {
			return Location{}, fmt.Errorf("location %q: %w", raw, err)
		}
		return Location{Scheme: "file", Path: abs}, nil
	}
	u, err := redact.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("location %w", err)
	}
	if u.User != nil {
		return Location{}, fmt.Errorf("location %q: credentials do not belong in the URL: put them in the region's s3 settings or the AWS environment", redact.URL(raw))
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return Location{}, fmt.Errorf("location %q: a file URL has three slashes: file:///path", redact.URL(raw))
		}
		if u.Path == "" {
			return Location{}, fmt.Errorf("location %q names no folder", redact.URL(raw))
		}
		return Location{Scheme: "file", Path: filepath.Clean(u.Path)}, nil
	case "s3":
		if u.Host == "" {
			return Location{}, fmt.Errorf("location %q names no bucket: use s3://bucket/prefix", redact.URL(raw))
		}
		prefix := strings.TrimPrefix(u.Path, "/")
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		return Location{Scheme: "s3", Bucket: u.Host, Prefix: prefix}, nil
	}
	return Location{}, fmt.Errorf("location %q has unknown scheme %q: use a folder path, file:///path or s3://bucket/prefix", redact.URL(raw), u.Scheme)
}

// String is the canonical URL.
func (l Location) String() string {
	if l.Scheme == "file" {
		return "file://" + l.Path
	}
	return "s3://" + l.Bucket + "/" + l.Prefix
}

// Overlaps reports whether one location contains the other. endpointA and
// endpointB tell S3 services apart; pass "" for AWS.
func Overlaps(a Location, endpointA string, b Location, endpointB string) bool {
	if a.Scheme != b.Scheme {
		return false
	}
	if a.Scheme == "file" {
		// Compared as they resolve: a folder reached through a symbolic
		// link is the folder it leads to.
		pa, pb := resolved(a.Path)+string(filepath.Separator), resolved(b.Path)+string(filepath.Separator)
		return strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa)
	}
	if strings.TrimRight(endpointA, "/") != strings.TrimRight(endpointB, "/") || a.Bucket != b.Bucket {
		return false
	}
	return strings.HasPrefix(a.Prefix, b.Prefix) || strings.HasPrefix(b.Prefix, a.Prefix)
}

// resolved is path with the symbolic links of its longest existing part
// resolved; the rest, not made yet, is kept as written.
func resolved(path string) string {
	rest := ""
	for p := path; ; p = filepath.Dir(p) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest)
		}
		if filepath.Dir(p) == p {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// Rel is the key prefix (ending in "/") of inner within outer, when inner
// lies strictly inside outer on the same service; endpoints are compared by
// the caller.
func Rel(outer, inner Location) (string, bool) {
	switch {
	case outer.Scheme != inner.Scheme:
		return "", false
	case outer.Scheme == "file" && strings.HasPrefix(inner.Path, outer.Path+"/"):
		return strings.TrimPrefix(inner.Path, outer.Path+"/") + "/", true
	case outer.Scheme == "s3" && outer.Bucket == inner.Bucket && strings.HasPrefix(inner.Prefix, outer.Prefix) && inner.Prefix != outer.Prefix:
		return strings.TrimPrefix(inner.Prefix, outer.Prefix), true
	}
	return "", false
}

// Open opens the location. create makes a missing local folder (for state
// locations); buckets are never created.
func Open(ctx context.Context, l Location, s3opts s3store.Options, create bool) (objstore.Bucket, error) {
	switch l.Scheme {
	case "file":
		return local.Open(l.Path, create)
	case "s3":
		return s3store.Open(ctx, l.Bucket, l.Prefix, s3opts)
	}
	return nil, fmt.Errorf("location %s: unknown scheme %q", l, l.Scheme)
}
