package s3

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestSignerMatchesSDK: tandem's signer gives the signatures the SDK's
// signer gives for the requests direct sends (header-signed GETs, presigned
// PUTs and DELETEs), with and without a session token, for keys that need
// escaping.
func TestSignerMatchesSDK(t *testing.T) {
	ctx := context.Background()
	sdk := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	at := time.Date(2026, 12, 6, 23, 59, 58, 0, time.UTC)
	for _, creds := range []aws.Credentials{
		{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"},
		{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "secret", SessionToken: "token/with+odd=chars"},
	} {
		for _, key := range []string{"plain/key.bin", "a b/c+d=e&f", "ünï/cödé €", "q?x#y%2Fz"} {
			for _, region := range []string{"us-east-1", "eu-west-3"} {
				d := &direct{base: url.URL{Scheme: "https", Host: "bucket.s3.example.com:8443", Path: "/"}, raw: "/", host: "bucket.s3.example.com:8443", signer: signer{region: region}}
				u, path := d.objectURL("pre/" + key)

				// A GET signed in its headers, with a range and a condition.
				extra := map[string]string{"Range": "bytes=3-9", "If-Match": `"abc"`}
				hs := d.signer.authorization(creds, at, http.MethodGet, path, d.headers(extra), emptySHA256)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
				req.Host = d.host
				for k, v := range extra {
					req.Header.Set(k, v)
				}
				req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
				if err := sdk.SignHTTP(ctx, creds, req, emptySHA256, "s3", region, at); err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for _, h := range hs {
					got[h.name] = h.value
				}
				if got["authorization"] == "" {
					t.Fatalf("GET %q: no Authorization header", key)
				}
				for _, name := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
					if w := req.Header.Get(name); w != got[strings.ToLower(name)] {
						t.Errorf("GET %q (%s, token %v): %s = %q, the SDK's %q", key, region, creds.SessionToken != "", name, got[strings.ToLower(name)], w)
					}
				}

				// Presigned PUT and DELETE, with a condition.
				for _, method := range []string{http.MethodPut, http.MethodDelete} {
					q := d.signer.presign(creds, at, 2, method, path, d.headers(map[string]string{"If-None-Match": "*"}))
					preq, _ := http.NewRequestWithContext(ctx, method, u.String()+"?X-Amz-Expires=2", nil)
					preq.Host = d.host
					preq.Header.Set("If-None-Match", "*")
					signed, _, err := sdk.PresignHTTP(ctx, creds, preq, unsignedBody, "s3", region, at)
					if err != nil {
						t.Fatal(err)
					}
					su, _ := url.Parse(signed)
					gq, _ := url.ParseQuery(q)
					if gq.Get("X-Amz-Signature") == "" {
						t.Fatalf("%s %q: no signature in %s", method, key, q)
					}
					if want := su.Query(); gq.Encode() != want.Encode() {
						t.Errorf("%s %q (%s, token %v):\n got  %s\n want %s", method, key, region, creds.SessionToken != "", gq.Encode(), want.Encode())
					}
				}
			}
		}
	}
}
