package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tandem/internal/objstore"
)

// direct sends the requests a copy makes for every object (GetObject, and
// the presigned PutObject and DeleteObject of a gated write) as plain HTTP
// requests that it signs itself (signer), without the SDK's middleware
// stack: for small objects that stack cost about half of tandem's CPU per
// object (docs/BENCHMARKS.md). Where the requests go (the endpoint, path
// or virtual-host style, the signing region) is what the SDK itself
// resolves for the bucket: Open asks its presigner once.
type direct struct {
	base   url.URL // scheme://host/[bucket/], the URL of the key "" without escaping
	raw    string  // base's path as sent
	host   string  // the Host header: base's host without a default port
	signer signer
	creds  aws.CredentialsProvider
	http   *awshttp.BuildableClient
	tries  int
}

// emptySHA256 is the SHA-256 of an empty payload, which a GET or DELETE
// signs.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// newDirect resolves the bucket's base URL and signing region by presigning
// a GetObject of a probe key with the SDK.
func newDirect(ctx context.Context, presign *s3.PresignClient, bucket string, creds aws.CredentialsProvider, hc *awshttp.BuildableClient, tries int) (*direct, error) {
	const probe = "tandem-probe"
	pr, err := presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: aws.String(probe)})
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(pr.URL)
	if err != nil {
		return nil, err
	}
	raw := u.EscapedPath()
	if !strings.HasSuffix(raw, "/"+probe) {
		// Without the query: it holds the access key's id and a signature.
		return nil, fmt.Errorf("the service's URL for an object is %s://%s%s, which tandem does not know how to address", u.Scheme, u.Host, raw)
	}
	d := &direct{creds: creds, http: hc, tries: max(tries, 1)}
	d.raw = strings.TrimSuffix(raw, probe)
	d.base = url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, probe)}
	d.host = u.Host
	if port := u.Port(); u.Scheme == "http" && port == "80" || u.Scheme == "https" && port == "443" {
		d.host = u.Hostname()
	}
	// X-Amz-Credential is AKID/date/region/s3/aws4_request.
	parts := strings.Split(u.Query().Get("X-Amz-Credential"), "/")
	if len(parts) < 5 {
		return nil, fmt.Errorf("the SDK's presigned URL has no signing region")
	}
	d.signer.region = parts[len(parts)-3]
	return d, nil
}

// objectURL is the URL of a full key (prefix included), and its path as
// sent.
func (d *direct) objectURL(full string) (*url.URL, string) {
	u := d.base
	u.Path += full
	u.RawPath = d.raw + escapeKey(full)
	return &u, u.RawPath
}

// headers are a request's own headers to sign, host first, lower-case.
func (d *direct) headers(extra map[string]string) []header {
	hs := make([]header, 0, 4+len(extra))
	hs = append(hs, header{"host", d.host})
	for k, v := range extra {
		hs = append(hs, header{strings.ToLower(k), v})
	}
	return hs
}

// escapeKey percent-encodes every byte of a key but the unreserved
// characters of RFC 3986 and "/", as S3's canonical URI wants.
func escapeKey(key string) string {
	clean := true
	for i := 0; i < len(key); i++ {
		if !unreserved(key[i]) {
			clean = false
			break
		}
	}
	if clean {
		return key
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key) + 16)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~' || c == '/'
}

func (d *direct) credentials(ctx context.Context) (aws.Credentials, bool, error) {
	if d.creds == nil {
		return aws.Credentials{}, false, nil
	}
	c, err := d.creds.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, false, fmt.Errorf("credentials: %w", err)
	}
	return c, c.AccessKeyID != "", nil
}

// get sends a signed GetObject of full with the extra headers, retrying
// what the SDK retries (a connection that failed, 500, 503, throttling) up
// to tries attempts, and returns the response of a 2xx answer; other
// answers are errors carrying the S3 code and status (apiError).
func (d *direct) get(ctx context.Context, full string, header map[string]string) (*http.Response, error) {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		resp, err := d.getOnce(ctx, full, header)
		if err == nil || attempt >= d.tries || !transient(err) || ctx.Err() != nil {
			return resp, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (d *direct) getOnce(ctx context.Context, full string, extra map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "", http.NoBody)
	if err != nil {
		return nil, err
	}
	u, path := d.objectURL(full)
	req.URL, req.Host = u, d.host
	hs := d.headers(extra)
	creds, sign, err := d.credentials(ctx)
	if err != nil {
		return nil, err
	}
	if sign {
		hs = d.signer.authorization(creds, time.Now(), http.MethodGet, path, hs, emptySHA256)
	}
	for _, h := range hs {
		if h.name != "host" {
			req.Header[http.CanonicalHeaderKey(h.name)] = []string{h.value}
		}
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, answerErr(resp)
}

// presign returns the URL and the headers to send of a request of method
// on full, signed at at and valid for expires (whole seconds), with the
// headers given (conditions) signed too.
func (d *direct) presign(ctx context.Context, method, full string, extra map[string]string, at time.Time, expires time.Duration) (string, http.Header, error) {
	u, path := d.objectURL(full)
	hs := d.headers(extra)
	creds, sign, err := d.credentials(ctx)
	if err != nil {
		return "", nil, err
	}
	if sign {
		u.RawQuery = d.signer.presign(creds, at, int64(expires/time.Second), method, path, hs)
	}
	send := http.Header{}
	for _, h := range hs {
		if h.name != "host" {
			send[http.CanonicalHeaderKey(h.name)] = []string{h.value}
		}
	}
	return u.String(), send, nil
}

// transient tells whether a request is worth sending again at once.
func transient(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.status {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return ae.Code == "SlowDown" || ae.Code == "RequestTimeout" || ae.Code == "InternalError"
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// answerErr reads an S3 error answer: its status, code and message. A
// presigned request the server found expired fails with
// objstore.ErrRevoked.
func answerErr(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := &apiError{status: resp.StatusCode, Code: element(data, "Code"), Message: element(data, "Message")}
	if resp.StatusCode == http.StatusForbidden && strings.Contains(strings.ToLower(ae.Message), "expired") {
		return fmt.Errorf("its time ran out before it reached the store (%s): %w", ae.Message, objstore.ErrRevoked)
	}
	return ae
}

// element is the text of the first <name> element of an XML answer.
func element(data []byte, name string) string {
	open, end := []byte("<"+name+">"), []byte("</"+name+">")
	i := bytes.Index(data, open)
	if i < 0 {
		return ""
	}
	rest := data[i+len(open):]
	j := bytes.Index(rest, end)
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// responseInfo is the Info a GetObject's answer describes.
func responseInfo(key string, resp *http.Response) objstore.Info {
	info := objstore.Info{Key: key, Size: resp.ContentLength, ETag: strings.Trim(resp.Header.Get("ETag"), `"`)}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		info.ModTime = t
	}
	return info
}
