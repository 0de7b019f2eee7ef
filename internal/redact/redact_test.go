package redact

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestNothingSecretPrints: whatever the URL, its secret never shows.
func TestNothingSecretPrints(t *testing.T) {
	for _, raw := range []string{
		"s3://AKIA:hunter2@bucket/x",
		"s3://AKIA:hun/ter2@bucket/x", // does not parse: a / in the secret
		"https://hooks.example/T%zz/hunter2",
		"https://hooks.example/hook?token=hunter2",
		"http://user:hunter2@127.0.0.1:9000",
		"http://user:hun%zzter2@127.0.0.1:9000",
		"postgres://u:hunter2@db:5432/x?sslmode=disable",
	} {
		for name, got := range map[string]string{"URL": URL(raw), "Host": Host(raw)} {
			if leaks(got) {
				t.Errorf("%s(%q) = %q", name, raw, got)
			}
		}
		if _, err := Parse(raw); err != nil && leaks(err.Error()) {
			t.Errorf("Parse(%q): %v", raw, err)
		}
		_, err := http.NewRequest("GET", raw, nil)
		if err != nil && leaks(Err(err).Error()) {
			t.Errorf("Err(NewRequest(%q)): %v", raw, Err(err))
		}
	}
	if got := URL("s3://AKIA@bucket/x"); got != "s3://AKIA@bucket/x" {
		t.Errorf("user kept: %q", got)
	}
	if Err(errors.New("x")).Error() != "x" {
		t.Error("other errors pass unchanged")
	}
}

// leaks reports whether s shows any part of the secret hunter2.
func leaks(s string) bool { return strings.Contains(s, "hun") || strings.Contains(s, "ter2") }
