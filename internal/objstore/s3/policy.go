package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// PolicySid names the statement tandem adds to a replica bucket's policy;
// tandem changes no other statement.
const PolicySid = "TandemReadOnlyReplica"

// writeActions are the object writes the statement denies.
var writeActions = []string{
	"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
	"s3:PutObjectAcl", "s3:PutObjectTagging", "s3:AbortMultipartUpload",
}

// statement denies object writes under the bucket's prefix to every
// principal but the one given.
func (b *Bucket) statement(principal string) map[string]any {
	return map[string]any{
		"Sid":       PolicySid,
		"Effect":    "Deny",
		"Principal": "*",
		"Action":    writeActions,
		"Resource":  "arn:aws:s3:::" + b.bucket + "/" + b.prefix + "*",
		"Condition": map[string]any{"StringNotEquals": map[string]any{"aws:PrincipalArn": principal}},
	}
}

// Protect makes the replica read-only to every principal but tandem's: it
// adds to the bucket policy a statement (PolicySid) that denies object
// writes under the prefix to any other principal, keeping the policy's
// other statements. It writes only when the statement is missing or
// different. It needs s3:GetBucketPolicy and s3:PutBucketPolicy.
func (b *Bucket) Protect(ctx context.Context, principal string) error {
	doc, stmts, err := b.policy(ctx)
	if err != nil {
		return err
	}
	want := b.statement(principal)
	kept := others(stmts)
	for _, s := range stmts {
		if s["Sid"] == PolicySid && sameJSON(s, want) && len(kept) == len(stmts)-1 {
			return nil
		}
	}
	doc["Statement"] = append(kept, want)
	return b.putPolicy(ctx, doc)
}

// Unprotect removes tandem's statement from the bucket policy (bucket
// promote), and the policy when nothing else is in it. It needs
// s3:GetBucketPolicy, s3:PutBucketPolicy and s3:DeleteBucketPolicy.
func (b *Bucket) Unprotect(ctx context.Context) error {
	doc, stmts, err := b.policy(ctx)
	if err != nil {
		return err
	}
	kept := others(stmts)
	switch {
	case len(kept) == len(stmts):
		return nil
	case len(kept) == 0:
		if _, err := b.client.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: &b.bucket}); err != nil {
			return b.policyErr("remove the read-only policy of", err)
		}
		return nil
	}
	doc["Statement"] = kept
	return b.putPolicy(ctx, doc)
}

// policy reads the bucket policy: the document and its statements (a
// policy may hold one statement as an object). A bucket without one gives
// an empty document.
func (b *Bucket) policy(ctx context.Context) (map[string]any, []map[string]any, error) {
	out, err := b.client.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: &b.bucket})
	if code(err) == "NoSuchBucketPolicy" {
		return map[string]any{"Version": "2012-10-17"}, nil, nil
	}
	if err != nil {
		return nil, nil, b.policyErr("read the policy of", err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(aws.ToString(out.Policy)), &doc); err != nil {
		return nil, nil, fmt.Errorf("the bucket policy of %s is not JSON tandem can read (%v): fix it or remove it", b.url, err)
	}
	var stmts []map[string]any
	switch s := doc["Statement"].(type) {
	case map[string]any:
		stmts = []map[string]any{s}
	case []any:
		for _, e := range s {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("the bucket policy of %s has a statement that is not an object: fix it or remove it", b.url)
			}
			stmts = append(stmts, m)
		}
	}
	return doc, stmts, nil
}

func (b *Bucket) putPolicy(ctx context.Context, doc map[string]any) error {
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if _, err := b.client.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: &b.bucket, Policy: aws.String(string(data))}); err != nil {
		return b.policyErr("write the read-only policy of", err)
	}
	return nil
}

// others are the statements that are not tandem's.
func others(stmts []map[string]any) []map[string]any {
	var out []map[string]any
	for _, s := range stmts {
		if s["Sid"] != PolicySid {
			out = append(out, s)
		}
	}
	return out
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func (b *Bucket) policyErr(op string, err error) error {
	if status(err) == http.StatusForbidden {
		return fmt.Errorf("%s %s: %w (tandem needs s3:GetBucketPolicy, s3:PutBucketPolicy and s3:DeleteBucketPolicy on the bucket to keep a replica read-only)", op, b.url, err)
	}
	return fmt.Errorf("%s %s: %w", op, b.url, err)
}
