package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// signer signs the requests package direct sends (AWS Signature Version 4
// for S3: https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html)
// for the few shapes tandem sends: a header-signed GET and a presigned PUT
// or DELETE, with a handful of headers. The SDK's general signer spent a
// tenth of a small-object copy's CPU in maps, sorting and allocations; this
// one keeps the day's signing key and builds each string once.
// TestSignerMatchesSDK checks it against the SDK's signer.
type signer struct {
	region string

	mu  sync.Mutex
	key signingKey
}

type signingKey struct {
	day, secret string
	key         []byte
}

const (
	algorithm     = "AWS4-HMAC-SHA256"
	unsignedBody  = "UNSIGNED-PAYLOAD"
	amzDateLayout = "20060102T150405Z"
)

// header is one header to sign and send: its lower-case name and value.
type header struct{ name, value string }

// dayKey is the signing key of a day (YYYYMMDD), kept while the day and
// the secret stay the same.
func (s *signer) dayKey(day, secret string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key.day == day && s.key.secret == secret {
		return s.key.key
	}
	k := hmacSum([]byte("AWS4"+secret), day)
	k = hmacSum(k, s.region)
	k = hmacSum(k, "s3")
	k = hmacSum(k, "aws4_request")
	s.key = signingKey{day: day, secret: secret, key: k}
	return k
}

func hmacSum(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// sign returns the signature of a request: method, the escaped path as
// sent, the canonical query (sorted, escaped; "" for none), the headers
// sorted by name, and the payload's hash.
func (s *signer) sign(creds aws.Credentials, at time.Time, method, path, query string, hs []header, payload string) string {
	var b strings.Builder
	b.Grow(512)
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	b.WriteString(query)
	b.WriteByte('\n')
	for _, h := range hs {
		b.WriteString(h.name)
		b.WriteByte(':')
		b.WriteString(strings.TrimSpace(h.value))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	writeNames(&b, hs)
	b.WriteByte('\n')
	b.WriteString(payload)
	sum := sha256.Sum256([]byte(b.String()))

	day := at.Format("20060102")
	b.Reset()
	b.WriteString(algorithm)
	b.WriteByte('\n')
	b.WriteString(at.Format(amzDateLayout))
	b.WriteByte('\n')
	b.WriteString(s.scope(day))
	b.WriteByte('\n')
	b.WriteString(hex.EncodeToString(sum[:]))
	mac := hmac.New(sha256.New, s.dayKey(day, creds.SecretAccessKey))
	return hexMAC(mac, b.String())
}

func hexMAC(h hash.Hash, data string) string {
	h.Write([]byte(data))
	return hex.EncodeToString(h.Sum(nil))
}

func (s *signer) scope(day string) string {
	return day + "/" + s.region + "/s3/aws4_request"
}

func writeNames(b *strings.Builder, hs []header) {
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(h.name)
	}
}

func sortHeaders(hs []header) {
	slices.SortFunc(hs, func(a, b header) int { return strings.Compare(a.name, b.name) })
}

// authorization signs a request in its headers: it returns the headers to
// send, Authorization and the signed ones (x-amz-date,
// x-amz-content-sha256, and the session token when there is one) among
// them. hs holds the request's own headers to sign, host first.
func (s *signer) authorization(creds aws.Credentials, at time.Time, method, path string, hs []header, payload string) []header {
	at = at.UTC()
	hs = append(hs, header{"x-amz-content-sha256", payload}, header{"x-amz-date", at.Format(amzDateLayout)})
	if creds.SessionToken != "" {
		hs = append(hs, header{"x-amz-security-token", creds.SessionToken})
	}
	sortHeaders(hs)
	sig := s.sign(creds, at, method, path, "", hs, payload)
	var b strings.Builder
	b.WriteString(algorithm + " Credential=")
	b.WriteString(creds.AccessKeyID)
	b.WriteByte('/')
	b.WriteString(s.scope(at.Format("20060102")))
	b.WriteString(", SignedHeaders=")
	writeNames(&b, hs)
	b.WriteString(", Signature=")
	b.WriteString(sig)
	return append(hs, header{"authorization", b.String()})
}

// presign returns the query string of a presigned request valid for
// expires seconds from at, signed with its headers hs (host first) and an
// unsigned payload.
func (s *signer) presign(creds aws.Credentials, at time.Time, expires int64, method, path string, hs []header) string {
	at = at.UTC()
	sortHeaders(hs)
	var names strings.Builder
	writeNames(&names, hs)
	q := []header{
		{"X-Amz-Algorithm", algorithm},
		{"X-Amz-Credential", creds.AccessKeyID + "/" + s.scope(at.Format("20060102"))},
		{"X-Amz-Date", at.Format(amzDateLayout)},
		{"X-Amz-Expires", strconv.FormatInt(expires, 10)},
		{"X-Amz-SignedHeaders", names.String()},
	}
	if creds.SessionToken != "" {
		q = append(q, header{"X-Amz-Security-Token", creds.SessionToken})
	}
	sortHeaders(q)
	var b strings.Builder
	for i, p := range q {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(queryEscape(p.name))
		b.WriteByte('=')
		b.WriteString(queryEscape(p.value))
	}
	query := b.String()
	return query + "&X-Amz-Signature=" + s.sign(creds, at, method, path, query, hs, unsignedBody)
}

// queryEscape escapes a query component as SigV4's canonical query wants
// (RFC 3986: spaces as %20, "~" kept).
func queryEscape(v string) string {
	return strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
}
