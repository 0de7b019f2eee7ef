package s3_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tandem/internal/objstore"
	s3store "tandem/internal/objstore/s3"
	"tandem/internal/objstore/s3/s3test"
)

// Protect adds tandem's statement to a bucket policy and keeps the
// others; protecting again changes nothing; Unprotect takes only its own
// statement away, and the policy when nothing else is left.
func TestProtect(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Shared(t)
	name := srv.NewBucket(t)
	b, err := s3store.Open(ctx, name, "replica", srv.Options())
	if err != nil {
		t.Fatal(err)
	}
	o := srv.Options()
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(o.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")})
	theirs := `{"Version":"2012-10-17","Statement":[{"Sid":"Readers","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::` + name + `/*"}]}`
	if _, err := c.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: &name, Policy: &theirs}); err != nil {
		t.Fatal(err)
	}
	sids := func() map[string]map[string]any {
		out, err := c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: &name})
		if err != nil {
			return nil
		}
		var doc struct{ Statement []map[string]any }
		if err := json.Unmarshal([]byte(*out.Policy), &doc); err != nil {
			t.Fatal(err)
		}
		m := map[string]map[string]any{}
		for _, s := range doc.Statement {
			m[s["Sid"].(string)] = s
		}
		return m
	}
	const arn = "arn:aws:iam::123456789012:role/tandem"
	for range 2 {
		if err := objstore.Protect(ctx, b, arn); err != nil {
			t.Fatal(err)
		}
		got := sids()
		ours := got[s3store.PolicySid]
		if len(got) != 2 || got["Readers"] == nil || ours == nil || ours["Effect"] != "Deny" || ours["Resource"] != "arn:aws:s3:::"+name+"/replica/*" {
			t.Fatalf("policy after Protect: %v", got)
		}
	}
	if err := objstore.Unprotect(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := sids(); len(got) != 1 || got["Readers"] == nil {
		t.Fatalf("policy after Unprotect: %v", got)
	}
	// Alone in the policy, tandem's statement goes with the policy.
	if _, err := c.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: &name}); err != nil {
		t.Fatal(err)
	}
	if err := objstore.Protect(ctx, b, arn); err != nil {
		t.Fatal(err)
	}
	if err := objstore.Unprotect(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := sids(); got != nil {
		t.Fatalf("a policy is left: %v", got)
	}
	// Folders cannot be protected by a policy: said, not ignored.
	if err := objstore.Protect(ctx, objstore.Empty("file:///x"), arn); err == nil {
		t.Fatal("Protect of a folder succeeded")
	}
}
