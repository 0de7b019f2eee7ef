// Package redact makes URLs and the errors about them fit for messages,
// logs and records: no password, token or credential they carry prints,
// whatever the input.
package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URL is raw as it may print. A URL that parses keeps its scheme, host and
// path, with its userinfo cut to the user name and its query dropped (both
// often carry secrets). One that does not parse prints as its scheme only:
// a secret with a / or a bad %-escape in it would otherwise show.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		scheme, _, ok := strings.Cut(raw, "://")
		if !ok || strings.ContainsAny(scheme, "/@:") {
			return "(a URL that does not parse, not shown)"
		}
		return scheme + "://(a URL that does not parse, not shown)"
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	if u.RawQuery != "" {
		u.RawQuery = "..."
	}
	u.Fragment = ""
	return u.String()
}

// Host is a URL's scheme and host only, for endpoints whose paths carry
// tokens (webhooks).
func Host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(a URL that does not parse, not shown)"
	}
	return u.Scheme + "://" + u.Host
}

// Parse is url.Parse whose error names neither the URL nor any part of it
// (url.Parse quotes the URL, and a bad port or escape is often part of a
// credential).
func Parse(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid URL: check its %%-escapes, its host and port, and keep credentials out of it", URL(raw))
	}
	return u, nil
}

// Err is err without the URL a *url.Error in it quotes (as the HTTP client
// returns them): the operation and the cause stay.
func Err(err error) error {
	var ue *url.Error
	switch {
	case !errors.As(err, &ue):
		return err
	case ue.Op == "parse":
		return errors.New("the URL does not parse: check its %-escapes, its host and port, and keep credentials out of it")
	}
	return fmt.Errorf("%s: %w", ue.Op, ue.Err)
}
