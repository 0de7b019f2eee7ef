// Package s3 implements objstore.Bucket on any S3-compatible service (AWS S3,
// OCI Object Storage's S3 API, MinIO, R2, versitygw) with aws-sdk-go-v2.
// Conditional writes use If-None-Match: * and If-Match: <etag>; large objects
// go up as multipart uploads with parts sent in parallel.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/semaphore"

	"tandem/internal/objstore"

	"tandem/internal/redact"
)

// Options say how to reach the service. Empty credentials mean the standard
// AWS chain: environment, shared config and credentials files, profiles.
type Options struct {
	Endpoint        string // https://host[:port]; empty for AWS
	Region          string // default us-east-1
	PathStyle       bool
	Profile         string
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// MaxAttempts bounds the SDK's own retries of one request (default 3).
	MaxAttempts int
}

// Bucket is a bucket and key prefix on an S3-compatible service.
type Bucket struct {
	client  *s3.Client
	direct  *direct // the requests made per object
	http    *awshttp.BuildableClient
	bucket  string
	prefix  string // "" or ending in "/"
	url     string
	ident   string              // the URL with the endpoint and the bucket's region
	uploads sync.Map            // upload ids of this handle's multipart uploads under way
	buffers *semaphore.Weighted // putBudget
}

var (
	_ objstore.Bucket      = (*Bucket)(nil)
	_ objstore.PartPutter  = (*Bucket)(nil)
	_ objstore.Gated       = (*Bucket)(nil)
	_ objstore.GateDeleter = (*Bucket)(nil)
	_ objstore.Revoker     = (*Bucket)(nil)
	_ objstore.InFlighter  = (*Bucket)(nil)
)

// Open connects to bucket and checks, with one HeadBucket request, that it
// exists and that the credentials are accepted.
func Open(ctx context.Context, bucket, prefix string, o Options) (*Bucket, error) {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	b := &Bucket{bucket: bucket, prefix: prefix, url: "s3://" + bucket + "/" + prefix, http: httpClient(), buffers: semaphore.NewWeighted(putBudget)}
	if err := CheckEndpoint(o.Endpoint); err != nil {
		return nil, fmt.Errorf("%s: %w", b.url, err)
	}
	region := o.Region
	if region == "" {
		region = "us-east-1"
	}
	attempts := o.MaxAttempts
	if attempts == 0 {
		attempts = 3
	}
	loadOpts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = attempts
				so.MaxBackoff = 2 * time.Second
			})
		}),
		awsconfig.WithHTTPClient(b.http),
	}
	if o.Profile != "" {
		loadOpts = append(loadOpts, awsconfig.WithSharedConfigProfile(o.Profile))
	}
	if o.AccessKeyID != "" || o.SecretAccessKey != "" {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, o.SessionToken)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s: load AWS configuration: %w", b.url, err)
	}
	b.client = s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		// Checksums only where the API requires them: several S3-compatible
		// services reject the SDK's default trailing checksums.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	head, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &b.bucket})
	if err != nil {
		return nil, b.openErr(o.Endpoint, err)
	}
	if b.direct, err = newDirect(ctx, s3.NewPresignClient(b.client), bucket, cfg.Credentials, b.http, attempts); err != nil {
		return nil, fmt.Errorf("%s: %w", b.url, err)
	}
	b.ident = b.url
	if o.Endpoint != "" {
		b.ident += " at " + strings.TrimRight(o.Endpoint, "/")
	}
	if r := aws.ToString(head.BucketRegion); r != "" {
		b.ident += " in " + r
	}
	return b, nil
}

// CheckEndpoint refuses an endpoint that is not an http(s) URL or that
// carries credentials (they go in the access key settings); its message
// never shows them.
func CheckEndpoint(ep string) error {
	if ep == "" {
		return nil
	}
	u, err := redact.Parse(ep)
	switch {
	case err != nil:
		return fmt.Errorf("endpoint %w", err)
	case u.User != nil:
		return fmt.Errorf("endpoint %s: credentials do not belong in the endpoint URL: use access_key_id and secret_access_key, or the AWS environment", redact.URL(ep))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("endpoint %q must be http://host[:port] or https://host[:port]", redact.URL(ep))
	}
	return nil
}

func httpClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConns = 256
			tr.MaxIdleConnsPerHost = 256
			// A small object's request or answer in one write and one
			// read, headers and body together (the default 4 KiB buffers
			// split a 4 KiB object in two: twice the system calls on both
			// ends).
			tr.WriteBufferSize = 64 << 10
			tr.ReadBufferSize = 64 << 10
		})
}

func (b *Bucket) openErr(endpoint string, err error) error {
	where := endpoint
	if where == "" {
		where = "AWS S3"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Errorf("%s: cannot reach endpoint %s: check the endpoint and the network: %w", b.url, where, err)
	}
	switch code(err) {
	case "NotFound", "NoSuchBucket":
		return fmt.Errorf("%s: bucket %q does not exist at %s: create it or correct the URL: %w", b.url, b.bucket, where, objstore.ErrNotExist)
	case "Forbidden", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken":
		return fmt.Errorf("%s: %s refused the credentials (%s): check the access key, secret and profile", b.url, where, code(err))
	}
	return fmt.Errorf("%s: %w", b.url, err)
}

// code is the S3 error code, or the HTTP status text for HEAD requests.
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func status(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// wrap maps S3 errors to the objstore sentinels.
func (b *Bucket) wrap(op, key string, err error) error {
	switch {
	case code(err) == "NoSuchKey" || code(err) == "NotFound" || status(err) == http.StatusNotFound:
		return fmt.Errorf("%s %s in %s: %w", op, key, b.url, objstore.ErrNotExist)
	case code(err) == "PreconditionFailed" || code(err) == "ConditionalRequestConflict" ||
		status(err) == http.StatusPreconditionFailed || status(err) == http.StatusConflict:
		return fmt.Errorf("%s %s in %s: %w", op, key, b.url, objstore.ErrPrecondition)
	}
	return fmt.Errorf("%s %s in %s: %w", op, key, b.url, err)
}

// putErr maps a failed write. With If-Match, AWS answers NoSuchKey for a
// missing object; the contract says that is a failed precondition.
func (b *Bucket) putErr(key string, opts objstore.PutOptions, err error) error {
	err = b.wrap("put", key, err)
	if opts.IfMatch != "" && errors.Is(err, objstore.ErrNotExist) {
		return fmt.Errorf("put %s in %s: object is missing: %w", key, b.url, objstore.ErrPrecondition)
	}
	return err
}

func (b *Bucket) URL() string { return b.url }

// Identity is the URL with the service's endpoint and, when the service
// reports it, the bucket's region.
func (b *Bucket) Identity() string { return b.ident }

func trimETag(s *string) string { return strings.Trim(aws.ToString(s), `"`) }

// List reads one page ahead: the next page is on its way while the
// caller works through the current one (a pass that copies as it lists
// would otherwise wait for every page with its copies idle).
func (b *Bucket) List(ctx context.Context, prefix string) iter.Seq2[objstore.Info, error] {
	return func(yield func(objstore.Info, error) bool) {
		// stop ends the reader when the caller stops early; a canceled
		// ctx reaches the caller as the error of the page it was reading.
		ctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		type result struct {
			page *s3.ListObjectsV2Output
			err  error
		}
		pages := make(chan result, 1)
		go func() {
			defer close(pages)
			p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
				Bucket: &b.bucket,
				Prefix: aws.String(b.prefix + prefix),
			})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				select {
				case pages <- result{page, err}:
				case <-done:
					return
				}
				if err != nil {
					return
				}
			}
		}()
		defer func() {
			close(done)
			stop()
			for range pages {
			}
		}()
		for r := range pages {
			if r.err != nil {
				yield(objstore.Info{}, b.wrap("list", prefix, r.err))
				return
			}
			for _, o := range r.page.Contents {
				key := strings.TrimPrefix(aws.ToString(o.Key), b.prefix)
				if !yield(objstore.Info{
					Key:     key,
					Size:    aws.ToInt64(o.Size),
					ETag:    trimETag(o.ETag),
					ModTime: aws.ToTime(o.LastModified),
				}, nil) {
					return
				}
			}
		}
	}
}

func (b *Bucket) Stat(ctx context.Context, key string) (objstore.Info, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: aws.String(b.prefix + key)})
	if err != nil {
		return objstore.Info{}, b.wrap("stat", key, err)
	}
	return objstore.Info{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: trimETag(out.ETag), ModTime: aws.ToTime(out.LastModified)}, nil
}

func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, objstore.Info, error) {
	resp, err := b.direct.get(ctx, b.prefix+key, nil)
	if err != nil {
		return nil, objstore.Info{}, b.wrap("get", key, err)
	}
	return resp.Body, responseInfo(key, resp), nil
}

func (b *Bucket) GetRange(ctx context.Context, key string, off, n int64, etag string) (io.ReadCloser, error) {
	h := map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, off+n-1)}
	if etag != "" {
		h["If-Match"] = `"` + etag + `"`
	}
	resp, err := b.direct.get(ctx, b.prefix+key, h)
	if err != nil {
		return nil, b.wrap("get", key, err)
	}
	return resp.Body, nil
}

// seekable returns a body the SDK can sign and resend: S3 over plain HTTP
// needs a seekable payload of known length.
func seekable(r io.Reader, size int64) (io.ReadSeeker, int64, error) {
	if rs, ok := r.(io.ReadSeeker); ok && size >= 0 {
		return rs, size, nil
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size))
	}
	n, err := buf.ReadFrom(r)
	if err != nil {
		return nil, 0, err
	}
	if size >= 0 && n != size {
		return nil, 0, fmt.Errorf("source gave %d bytes, expected %d", n, size)
	}
	return bytes.NewReader(buf.Bytes()), n, nil
}

// GatesWrites: PutOptions.Gate is called just before the request that makes
// an object visible (PutObject, CompleteMultipartUpload). A gated PutObject
// and delete are sent presigned, expiring when the gate's grant ends; a
// gated multipart upload can be taken away by Revoke.
func (b *Bucket) GatesWrites() bool { return true }

// LateBound: the server refuses a gated request that arrives after its
// presigned expiry, within objstore.StoreSlack of the grant's end.
func (b *Bucket) LateBound() time.Duration { return objstore.StoreSlack }

// once turns off the SDK's own retries of a gated request: a retry would
// land after its gate, perhaps long after. Callers retry with a new gate.
func once(opts objstore.PutOptions) func(*s3.Options) {
	return func(o *s3.Options) {
		if opts.Gate != nil {
			o.RetryMaxAttempts = 1
		}
	}
}

func conditions(opts objstore.PutOptions) (ifNoneMatch, ifMatch *string) {
	if opts.IfAbsent {
		ifNoneMatch = aws.String("*")
	}
	if opts.IfMatch != "" {
		ifMatch = aws.String(`"` + opts.IfMatch + `"`)
	}
	return
}

// InFlight: each request waits a round trip to the service, most of it
// idle for tandem, so small objects want many at once; the memory they
// hold is bounded by putBudget.
func (b *Bucket) InFlight() int { return 64 }

// putBudget bounds the bytes that Puts of bodies that cannot be read
// twice (a GET's answer) hold in memory at once, whatever the number of
// Puts in flight.
const putBudget = 128 << 20

func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objstore.PutOptions) (objstore.Info, error) {
	if err := objstore.CheckKey(key); err != nil {
		return objstore.Info{}, err
	}
	if _, ok := r.(io.ReadSeeker); !ok || size < 0 {
		w := int64(gatedSingleMax)
		if size >= 0 {
			w = min(size, putBudget)
		}
		if err := b.buffers.Acquire(ctx, w); err != nil {
			return objstore.Info{}, fmt.Errorf("put %s in %s: %w", key, b.url, err)
		}
		defer b.buffers.Release(w)
	}
	body, n, err := seekable(r, size)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("put %s in %s: read source: %w", key, b.url, err)
	}
	ifNoneMatch, ifMatch := conditions(opts)
	in := &s3.PutObjectInput{
		Bucket:        &b.bucket,
		Key:           aws.String(b.prefix + key),
		Body:          body,
		ContentLength: aws.Int64(n),
		IfNoneMatch:   ifNoneMatch,
		IfMatch:       ifMatch,
	}
	if ra, ok := body.(io.ReaderAt); ok && opts.Gate != nil && n > gatedSingleMax {
		// A large gated object goes up in parts: the step that makes it
		// visible is then a small request that a Revoke can stop.
		open := func(ctx context.Context, off, size int64) (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(ra, off, size)), nil
		}
		return b.PutParts(ctx, key, n, DefaultGatedPart, 4, open, opts)
	}
	if opts.Gate != nil {
		h := map[string]string{}
		if opts.IfAbsent {
			h["If-None-Match"] = "*"
		}
		if opts.IfMatch != "" {
			h["If-Match"] = `"` + opts.IfMatch + `"`
		}
		resp, err := b.sendGated(ctx, http.MethodPut, key, h, opts.Gate, body, n)
		if err != nil {
			return objstore.Info{}, b.putErr(key, opts, err)
		}
		return objstore.Info{Key: key, Size: n, ETag: strings.Trim(resp.Header.Get("ETag"), `"`)}, nil
	}
	out, err := b.client.PutObject(ctx, in)
	if err != nil {
		return objstore.Info{}, b.putErr(key, opts, err)
	}
	return objstore.Info{Key: key, Size: n, ETag: trimETag(out.ETag)}, nil
}

// sendGated runs the gate, then sends the request presigned with a
// signing time taken at once after it, expiring so that the server
// refuses it after the grant ends: SigV4 counts whole seconds from the
// signing time truncated to the second, so it expires within a second
// after the grant. However long the writer is held up afterwards, the
// request's deadline stays. A gate without an end (a zero time: a check,
// not a grant) gets unbounded's expiry, so that a slow store or a loaded
// machine does not fail it. An expired request fails with
// objstore.ErrRevoked; other errors carry the S3 code and status.
func (b *Bucket) sendGated(ctx context.Context, method, key string, header map[string]string, gate objstore.Gate, body io.ReadSeeker, n int64) (*http.Response, error) {
	until, err := gate.Run()
	if err != nil {
		return nil, err
	}
	at := time.Now()
	if until.IsZero() {
		until = at.Add(unbounded)
	}
	if !at.Before(until) {
		return nil, fmt.Errorf("its grant ended before it was sent: %w", objstore.ErrRevoked)
	}
	secs := int64(until.Sub(at.Truncate(time.Second))/time.Second) + 1
	url, signed, err := b.direct.presign(ctx, method, b.prefix+key, header, at, time.Duration(secs)*time.Second)
	if err != nil {
		return nil, err
	}
	if beforeSend != nil {
		beforeSend()
	}
	var rd io.Reader = http.NoBody
	if body != nil && n > 0 {
		rd = body
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range signed {
		if !strings.EqualFold(k, "host") {
			req.Header[k] = v
		}
	}
	req.ContentLength = n
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, answerErr(resp)
	}
	io.Copy(io.Discard, resp.Body)
	return resp, nil
}

// Gated objects larger than gatedSingleMax go up in parts of
// DefaultGatedPart: a single PUT whose upload is held up in the middle of
// its body would land when it resumes (the server checks the signature's
// time when the request starts), an upload's completion can be revoked.
const (
	gatedSingleMax   = 8 << 20
	DefaultGatedPart = 8 << 20
)

// unbounded is the expiry of a gated request whose gate sets no end.
const unbounded = time.Hour

// beforeSend, in tests, holds a presigned request up before it is sent.
var beforeSend func()

// Slack is how long after its grant ends a gated request may still land:
// the server's expiry of a presigned request counts whole seconds.
const Slack = time.Second

// apiError is an S3 error answer to a request tandem sent itself
// (package direct).
type apiError struct {
	status        int
	Code, Message string
}

func (e *apiError) Error() string                 { return fmt.Sprintf("%d %s: %s", e.status, e.Code, e.Message) }
func (e *apiError) ErrorCode() string             { return e.Code }
func (e *apiError) ErrorMessage() string          { return e.Message }
func (e *apiError) ErrorFault() smithy.ErrorFault { return smithy.FaultUnknown }
func (e *apiError) HTTPStatusCode() int           { return e.status }

// PutParts uploads size bytes as a multipart upload with up to concurrency
// parts in flight; each part is read into memory before it is sent so that a
// failed part can be resent. On any failure the upload is aborted, so no
// partial object is ever visible.
func (b *Bucket) PutParts(ctx context.Context, key string, size, partSize int64, concurrency int,
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error), opts objstore.PutOptions) (objstore.Info, error) {
	if err := objstore.CheckKey(key); err != nil {
		return objstore.Info{}, err
	}
	if partSize < 5<<20 {
		partSize = 5 << 20
	}
	for size/partSize >= 10000 { // S3 allows 10,000 parts
		partSize *= 2
	}
	full := aws.String(b.prefix + key)
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b.bucket, Key: full})
	if err != nil {
		return objstore.Info{}, b.wrap("put", key, err)
	}
	uploadID := created.UploadId
	b.uploads.Store(*uploadID, true)
	defer b.uploads.Delete(*uploadID)
	abort := func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &b.bucket, Key: full, UploadId: uploadID})
	}

	nparts := int((size + partSize - 1) / partSize)
	if nparts == 0 {
		nparts = 1
	}
	parts := make([]types.CompletedPart, nparts)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, concurrency))
	for i := range nparts {
		off := int64(i) * partSize
		n := min(partSize, size-off)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			etag, err := b.uploadPart(ctx, full, uploadID, int32(i+1), off, n, open)
			if err != nil {
				cancel(fmt.Errorf("part %d: %w", i+1, err))
				return
			}
			parts[i] = types.CompletedPart{ETag: etag, PartNumber: aws.Int32(int32(i + 1))}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		abort()
		return objstore.Info{}, b.wrap("put", key, err)
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	ifNoneMatch, ifMatch := conditions(opts)
	if _, err := opts.Gate.Run(); err != nil {
		abort()
		return objstore.Info{}, fmt.Errorf("put %s in %s: %w", key, b.url, err)
	}
	out, err := b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &b.bucket,
		Key:             full,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     ifNoneMatch,
		IfMatch:         ifMatch,
	}, once(opts))
	if err != nil {
		abort()
		if code(err) == "NoSuchUpload" && opts.Gate != nil {
			return objstore.Info{}, fmt.Errorf("put %s in %s: its upload was aborted: another region took over while it was held up: %w", key, b.url, objstore.ErrRevoked)
		}
		return objstore.Info{}, b.putErr(key, opts, err)
	}
	return objstore.Info{Key: key, Size: size, ETag: trimETag(out.ETag)}, nil
}

func (b *Bucket) uploadPart(ctx context.Context, key, uploadID *string, num int32, off, n int64,
	open func(ctx context.Context, off, n int64) (io.ReadCloser, error)) (*string, error) {
	rc, err := open(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	body, n, err := seekable(rc, n)
	if err != nil {
		return nil, err
	}
	out, err := b.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &b.bucket, Key: key, UploadId: uploadID,
		PartNumber: aws.Int32(num), Body: body, ContentLength: aws.Int64(n),
	})
	if err != nil {
		return nil, err
	}
	return out.ETag, nil
}

// DeleteGated sends the delete presigned, expiring when the gate's grant
// ends.
func (b *Bucket) DeleteGated(ctx context.Context, key string, gate objstore.Gate) error {
	if err := objstore.CheckKey(key); err != nil {
		return err
	}
	if gate == nil {
		return b.Delete(ctx, key)
	}
	if _, err := b.sendGated(ctx, http.MethodDelete, key, nil, gate, nil, 0); err != nil && !errors.Is(b.wrap("delete", key, err), objstore.ErrNotExist) {
		return b.wrap("delete", key, err)
	}
	return nil
}

// Revoke aborts every multipart upload under the prefix but this handle's
// own: a gated upload held up past it cannot complete.
func (b *Bucket) Revoke(ctx context.Context) (int, error) {
	return b.abortUploads(ctx, "revoke", func(time.Time) bool { return true })
}

// Sweep aborts the multipart uploads under the prefix that were started
// before before and are not this Bucket's own: an interrupted writer's
// parts, which S3 keeps (and bills) until they are aborted.
func (b *Bucket) Sweep(ctx context.Context, before time.Time) (int, error) {
	return b.abortUploads(ctx, "clean up", func(initiated time.Time) bool { return initiated.Before(before) })
}

// abortUploads aborts the uploads under the prefix that are not this
// Bucket's own and that abort says to, by their start.
func (b *Bucket) abortUploads(ctx context.Context, what string, abort func(initiated time.Time) bool) (int, error) {
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: &b.bucket, Prefix: aws.String(b.prefix)}
	for {
		out, err := b.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, fmt.Errorf("%s uploads in %s: %w", what, b.url, err)
		}
		for _, u := range out.Uploads {
			if _, own := b.uploads.Load(aws.ToString(u.UploadId)); own || !abort(aws.ToTime(u.Initiated)) {
				continue
			}
			if _, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.bucket, Key: u.Key, UploadId: u.UploadId}); err != nil && code(err) != "NoSuchUpload" {
				return n, fmt.Errorf("%s the upload of %s in %s: %w", what, aws.ToString(u.Key), b.url, err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := objstore.CheckKey(key); err != nil {
		return err
	}
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: aws.String(b.prefix + key)})
	if err != nil && !errors.Is(b.wrap("delete", key, err), objstore.ErrNotExist) {
		return b.wrap("delete", key, err)
	}
	return nil
}
