package location

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "/data/lake", want: "file:///data/lake"},
		{in: "file:///data/lake/", want: "file:///data/lake"},
		{in: "s3://bucket", want: "s3://bucket/"},
		{in: "s3://bucket/a/b", want: "s3://bucket/a/b/"},
		{in: "gs://bucket/x", err: `unknown scheme "gs"`},
		{in: "s3:///x", err: "names no bucket"},
		{in: "file://host/x", err: "three slashes"},
		{in: "s3://key:secret@bucket/x", err: "credentials do not belong"},
		{in: "", err: "empty location"},
	} {
		l, err := Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, want error containing %q", tc.in, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("Parse(%q) leaked the secret: %v", tc.in, err)
			}
			continue
		}
		if err != nil || l.String() != tc.want {
			t.Errorf("Parse(%q) = %s, %v; want %s", tc.in, l, err, tc.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	p := func(s string) Location {
		l, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		a, b string
		ea   string
		eb   string
		want bool
	}{
		{a: "/x/a", b: "/x/a/b", want: true},
		{a: "/x/a", b: "/x/ab", want: false},
		{a: "/x/a", b: "/x/a", want: true},
		{a: "s3://b/p", b: "s3://b/p/q", want: true},
		{a: "s3://b/p", b: "s3://b/pq", want: false},
		{a: "s3://b", b: "s3://b/anything", want: true},
		{a: "s3://b/p", b: "s3://b/p", ea: "http://one", eb: "http://two", want: false},
		{a: "s3://b/p", b: "/b/p", want: false},
	} {
		if got := Overlaps(p(tc.a), tc.ea, p(tc.b), tc.eb); got != tc.want {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestRel(t *testing.T) {
	p := func(s string) Location {
		l, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		outer, inner, want string
		ok                 bool
	}{
		{"/r/lake", "/r/lake/tables/gold", "tables/gold/", true},
		{"/r/lake", "/r/lake", "", false},
		{"/r/lake", "/r/lakehouse/x", "", false},
		{"s3://b/lake", "s3://b/lake/tables/gold", "tables/gold/", true},
		{"s3://b", "s3://b/x", "x/", true},
		{"s3://b/lake", "s3://other/lake/tables", "", false},
		{"s3://b/lake", "/b/lake/tables", "", false},
	} {
		got, ok := Rel(p(tc.outer), p(tc.inner))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Rel(%s, %s) = %q, %v; want %q, %v", tc.outer, tc.inner, got, ok, tc.want, tc.ok)
		}
	}
}

// Folders overlap as they resolve: a target inside its source through a
// symbolic link, or a state folder reached through one into a target.
func TestOverlapsThroughLinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "inner"), 0o755)
	os.Symlink(filepath.Join(src, "inner"), filepath.Join(dir, "looks-outside"))
	os.Symlink(src, filepath.Join(dir, "alias"))
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{src, filepath.Join(dir, "looks-outside"), true},
		{src, filepath.Join(dir, "looks-outside", "not-made-yet", "state"), true},
		{filepath.Join(dir, "alias"), filepath.Join(src, "inner"), true},
		{src, filepath.Join(dir, "elsewhere"), false},
	} {
		a, _ := Parse(tc.a)
		b, _ := Parse(tc.b)
		if got := Overlaps(a, "", b, ""); got != tc.want {
			t.Errorf("Overlaps(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
