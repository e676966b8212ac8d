// Package s3 is a connectors.Bucket on Amazon S3 or an S3-compatible store,
// built on aws-sdk-go-v2.
//
// What it promises, on top of the connectors.Bucket contract:
//
//   - Writes stream: a Writer fills part buffers of Options.PartSize and
//     sends a single PutObject for an object that ends within its first
//     part, and a multipart upload (CreateMultipartUpload, UploadPart,
//     CompleteMultipartUpload) otherwise, each part going out once the
//     next byte after it is written. Nothing is visible until the
//     PutObject or CompleteMultipartUpload succeeds.
//   - Memory is bounded per Bucket, not per Writer: all Writers of a
//     Bucket share one budget of Concurrency+2 part buffers (20 MiB with
//     the defaults of 5 MiB and 2; see "Memory" below), and a Bucket
//     uploads at most Concurrency parts at once.
//   - WriteOptions.IfAbsent sends "If-None-Match: *" and IfMatch sends
//     "If-Match: <etag>", on PutObject and on CompleteMultipartUpload, so
//     S3 itself decides atomically.
//   - Abort, a cancelled context (even without Close or Abort), or any
//     failed request aborts the multipart upload (AbortMultipartUpload,
//     after the parts in flight have returned), so no parts are left
//     behind to pay for, and gives the Writer's buffers back. A part in
//     flight is let finish, for up to 5 s, rather than cut: a part cut
//     mid-request may be stored after the abort, leaving an upload behind.
//   - SDK errors are translated with errors.As on smithy.APIError and the
//     HTTP response error, never by matching text, into the connectors
//     sentinels, keeping the cause: 412 → ErrExists (IfAbsent) or
//     ErrPrecondition (IfMatch); 404 NoSuchKey/NotFound → ErrNotFound (an
//     IfMatch write on a missing key → ErrPrecondition and ErrNotFound);
//     403 → ErrPermission; NoSuchBucket → ErrBucketNotFound, deliberately not
//     ErrNotFound: a misconfigured bucket must not look like an absent
//     object; missing credentials (the signer's error) → ErrNoCredentials;
//     InvalidAccessKeyId, SignatureDoesNotMatch and expired tokens →
//     ErrNoCredentials and ErrPermission;
//     AuthorizationHeaderMalformed, PermanentRedirect and 301 (another
//     region) → ErrWrongRegion.
//   - Options.RoleARN assumes a role (STS) on top of the found credentials;
//     Options.SSE and KMSKeyID ask for SSE-S3 or SSE-KMS on every object
//     (on its PutObject or CreateMultipartUpload).
//   - SignedURL presigns a GetObject (SigV4 query string).
//   - ETags are S3's, verbatim (quoted, as HeadObject and ListObjectsV2
//     return them); they are opaque and only meant for WriteOptions.IfMatch.
//
// # Memory
//
// A Writer keeps an object's first 256 KiB in a small buffer of its own;
// past that it takes a part buffer from its Bucket's budget and fills it.
// When a part is full and more follows, the Writer hands it to an upload
// in the background and takes a new buffer, if the budget has one to
// spare; if not, it waits while parts are in flight (they give theirs
// back), and when none is, it uploads the full part itself, inside Write,
// and fills the same buffer again. So a Bucket's Writers hold at most
// Concurrency+2 buffers between them, with one exception that keeps
// Writers fed by one goroutine (the exporter's render pass feeds one
// Writer per format) from waiting on each other: a Writer that needs its
// first buffer while every buffer of the budget is being filled by
// another Writer takes one beyond the budget instead of waiting. N
// Writers at once therefore hold at most max(Concurrency+2, N) part
// buffers, plus up to 256 KiB each before their first, whatever the
// objects' sizes (before 2026-12-01 each Writer held up to Concurrency+2
// of its own).
//
// On Linux, macOS and FreeBSD the part buffers are mapped outside the Go
// heap (anonymous mmap, as the Azure SDK does for its block buffers), so
// the garbage collector's headroom is not spent on them: on the heap, at
// the service's GOGC of 50, 32 MiB of buffers let the heap grow by another
// 16 MiB. The buffers are reused; once none is held, their pages are
// given back to the system (madvise MADV_DONTNEED) and they stay mapped
// for the next writes, so an idle Bucket holds no part memory. Close
// unmaps them. Elsewhere they are ordinary heap slices.
//
// # Checksums
//
// The client keeps the SDK's default RequestChecksumCalculation
// (WhenSupported), and every PutObject, CreateMultipartUpload and
// UploadPart asks for CRC32: every PutObject and UploadPart carries a CRC32
// the server verifies, and a multipart object gets a composite checksum.
// This works over plain HTTP too, because every request body is a
// seekable, in-memory buffer (a bytes.Reader over the part); the package
// never sends an unseekable stream as a request body (which over HTTP
// would fail: "unseekable stream is not supported without TLS and trailing
// checksum"). Turning checksums off (WhenRequired) only to please a test
// server would drop end-to-end integrity checking in production, so it is
// not done. Responses are validated when the object has a full-object
// checksum; the SDK's warning for objects without one (multipart
// composites) is switched off.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/exportstream/exportstream/connectors"
)

const (
	// DefaultPartSize is the multipart part size when Options.PartSize is 0.
	DefaultPartSize = 5 << 20
	// MinPartSize is S3's smallest part size (except for the last part).
	MinPartSize = 5 << 20
	// MaxPartSize is S3's largest part size.
	MaxPartSize = 5 << 30
	// DefaultConcurrency is how many parts a Bucket uploads at once when
	// Options.Concurrency is 0.
	DefaultConcurrency = 2

	// abortTimeout bounds the AbortMultipartUpload sent after a failed,
	// cancelled or aborted write.
	abortTimeout = 30 * time.Second
	// defaultEndpointRegion is the region used with a custom Endpoint when
	// none is configured anywhere; S3-compatible servers accept it.
	defaultEndpointRegion = "us-east-1"
)

// Options configure a Bucket. Only Bucket is required.
type Options struct {
	// Bucket is the S3 bucket name.
	Bucket string
	// Region of the bucket. Empty: the SDK's default chain (AWS_REGION,
	// shared config); with a custom Endpoint and no region anywhere,
	// "us-east-1".
	Region string
	// Endpoint is the base URL of an S3-compatible server
	// ("http://127.0.0.1:7070"). Empty: AWS.
	Endpoint string
	// PathStyle addresses buckets as "<endpoint>/<bucket>/<key>" instead of
	// "<bucket>.<endpoint>/<key>"; most S3-compatible servers need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey (and SessionToken, for temporary
	// credentials) are static credentials. Empty: the SDK's default chain
	// (environment, shared files, web identity, ECS/EC2 roles).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PartSize is the multipart part size in bytes, at least MinPartSize
	// (5 MiB), and the size of every part buffer. 0 means DefaultPartSize
	// (5 MiB: objects up to 10,000 × 5 MiB ≈ 48.8 GiB). Objects of at most one part are sent with one PutObject.
	// The Bucket's Writers share (Concurrency+2) × PartSize bytes of part
	// buffers (see the package doc, "Memory").
	PartSize int64
	// RoleARN, when set, is assumed with STS AssumeRole using the
	// credentials above (static or the default chain); ExternalID goes
	// with it. The temporary credentials are cached and refreshed.
	RoleARN    string
	ExternalID string
	// SSE asks for server-side encryption on every object written:
	// "AES256" (SSE-S3) or "aws:kms" (SSE-KMS with KMSKeyID, or the
	// account's default KMS key when it is empty). Empty: the bucket's
	// default encryption.
	SSE      string
	KMSKeyID string
	// Concurrency is how many parts the Bucket uploads at once, across all
	// its Writers; the Writers share Concurrency+2 part buffers. 0 means
	// DefaultConcurrency.
	Concurrency int
	// HTTPClient replaces the SDK's HTTP client (timeouts, proxies, TLS).
	HTTPClient *http.Client
}

// String describes the options without their secrets.
func (o Options) String() string {
	secret := func(s string) string {
		if s == "" {
			return ""
		}
		return "<secret>"
	}
	return fmt.Sprintf("{Bucket:%s Region:%s Endpoint:%s PathStyle:%t AccessKeyID:%s SecretAccessKey:%s SessionToken:%s PartSize:%d RoleARN:%s SSE:%s KMSKeyID:%s Concurrency:%d}",
		o.Bucket, o.Region, o.Endpoint, o.PathStyle, o.AccessKeyID, secret(o.SecretAccessKey), secret(o.SessionToken), o.PartSize,
		o.RoleARN, o.SSE, o.KMSKeyID, o.Concurrency)
}

// GoString is String, so that %#v does not print secrets either.
func (o Options) GoString() string { return "s3.Options" + o.String() }

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var errs []error
	if o.Bucket == "" {
		errs = append(errs, errors.New("bucket is required"))
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		errs = append(errs, errors.New("access key ID and secret access key must be given together"))
	}
	if o.SessionToken != "" && (o.AccessKeyID == "" || o.SecretAccessKey == "") {
		errs = append(errs, errors.New("session token needs an access key ID and secret access key"))
	}
	if o.PartSize != 0 && (o.PartSize < MinPartSize || o.PartSize > MaxPartSize) {
		errs = append(errs, fmt.Errorf("part size %d is outside [%d, %d]", o.PartSize, MinPartSize, MaxPartSize))
	}
	if o.SSE != "" && o.SSE != string(types.ServerSideEncryptionAes256) && o.SSE != string(types.ServerSideEncryptionAwsKms) {
		errs = append(errs, fmt.Errorf("sse %q is not AES256 or aws:kms", o.SSE))
	}
	if o.KMSKeyID != "" && o.SSE != string(types.ServerSideEncryptionAwsKms) {
		errs = append(errs, errors.New("a KMS key id needs sse aws:kms"))
	}
	if o.ExternalID != "" && o.RoleARN == "" {
		errs = append(errs, errors.New("an external id needs a role ARN"))
	}
	if o.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d is negative", o.Concurrency))
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("endpoint %q is not an http(s) URL", o.Endpoint))
		}
	}
	return errors.Join(errs...)
}

// Bucket is an S3 bucket as a connectors.Bucket. Create it with New. All
// methods are safe for concurrent use.
type Bucket struct {
	*connectors.Portable
	d *driver
}

// driver is the provider's side of Bucket (see connectors.Driver).
type driver struct {
	opts    Options
	client  *s3.Client
	presign *s3.PresignClient
	budget  *budget // part buffers, shared by the writers
	bucket  string
	// maxParts is S3's limit on the parts of one upload (maxParts; the
	// tests lower it to reach it with small parts).
	maxParts int32
	// partDrain is how long a discarded write's parts in flight may go
	// on (partDrain; the tests shorten it).
	partDrain time.Duration
}

var (
	_ connectors.Bucket = (*Bucket)(nil)
	_ connectors.Driver = (*driver)(nil)
)

// newDriver builds the driver New wraps.
func newDriver(ctx context.Context, opts Options) (*driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("s3: invalid options: %w", err)
	}
	var load []func(*config.LoadOptions) error
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	if opts.AccessKeyID != "" {
		load = append(load, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)))
	}
	if opts.HTTPClient != nil {
		load = append(load, config.WithHTTPClient(opts.HTTPClient))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		if opts.Endpoint == "" {
			return nil, errors.New("s3: no region: set Region, AWS_REGION or a shared config profile")
		}
		cfg.Region = defaultEndpointRegion
	}
	if opts.RoleARN != "" {
		stsClient := sts.NewFromConfig(cfg)
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, opts.RoleARN,
			func(o *stscreds.AssumeRoleOptions) {
				o.RoleSessionName = "exportstream"
				if opts.ExternalID != "" {
					o.ExternalID = aws.String(opts.ExternalID)
				}
			}))
	}
	if cfg.Credentials != nil {
		cfg.Credentials = credentialsProvider{cfg.Credentials}
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	partSize := opts.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	concurrency := opts.Concurrency
	if concurrency == 0 {
		concurrency = DefaultConcurrency
	}
	return &driver{opts: opts, client: client, presign: s3.NewPresignClient(client),
		budget: newBudget(int(partSize), concurrency), bucket: opts.Bucket, maxParts: maxParts, partDrain: partDrain}, nil
}

// New validates opts and builds the client. It does no network I/O: a
// wrong bucket or credentials show up on the first request.
func New(ctx context.Context, opts Options) (*Bucket, error) {
	d, err := newDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Bucket{Portable: connectors.NewPortable("s3", d), d: d}, nil
}

// credentialsProvider marks the errors of finding credentials (no source
// in the chain had any, or STS refused the role) with
// connectors.ErrNoCredentials; the SDK gives them no type of their own.
type credentialsProvider struct{ aws.CredentialsProvider }

func (p credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return c, fmt.Errorf("%w: %w", connectors.ErrNoCredentials, err)
	}
	return c, err
}

// Client returns the underlying SDK client, for what the Bucket interface
// does not cover (tests, administration).
func (b *Bucket) Client() *s3.Client { return b.d.client }

// NewReader opens key for reading. If key does not exist, the error wraps
// connectors.ErrNotFound.
func (b *driver) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, mapErr("read", key, err, nil)
	}
	return out.Body, nil
}

// Attributes returns key's size, ETag and modification time (HeadObject).
// If key does not exist, the error wraps connectors.ErrNotFound. (HEAD
// responses have no body, so a missing bucket also reads as not found here.)
func (b *driver) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		return connectors.Attributes{}, mapErr("attributes", key, err, nil)
	}
	return connectors.Attributes{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ETag:        aws.ToString(out.ETag),
		ModTime:     aws.ToTime(out.LastModified),
		ContentType: aws.ToString(out.ContentType),
	}, nil
}

// SignedURL presigns a GetObject of key (SigV4 query signature), valid
// for expiry (S3 allows at most 7 days, and no longer than the
// credentials themselves live).
func (b *driver) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	req, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)},
		s3.WithPresignExpires(expiry))
	if err != nil {
		return "", mapErr("sign", key, err, nil)
	}
	return req.URL, nil
}

// List pages through ListObjectsV2 (1000 keys per request), in S3's
// ascending UTF-8 byte order.
func (b *driver) List(ctx context.Context, prefix string, fn func(connectors.Attributes) bool) error {
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.bucket),
		Prefix: aws.String(prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return mapErr("list", prefix, err, nil)
		}
		for _, o := range page.Contents {
			a := connectors.Attributes{
				Key:     aws.ToString(o.Key),
				Size:    aws.ToInt64(o.Size),
				ETag:    aws.ToString(o.ETag),
				ModTime: aws.ToTime(o.LastModified),
			}
			if !fn(a) {
				return nil
			}
		}
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (b *driver) Delete(ctx context.Context, key string) error {
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		err = mapErr("delete", key, err, nil)
		if errors.Is(err, connectors.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// Close unmaps the part buffers (see budget); no Writer may be writing
// after it. The SDK client holds no resources that need releasing beyond
// idle HTTP connections.
func (b *driver) Close() error {
	b.budget.close()
	return nil
}

// mapErr wraps an SDK error for op on key in the connectors sentinels,
// keeping the cause. write holds the options of a write, nil otherwise.
func mapErr(op, key string, err error, write *connectors.WriteOptions) error {
	status, code := 0, ""
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var signErr *v4.SigningError
	var sentinels []error
	switch {
	case code == "NoSuchBucket":
		// Not ErrNotFound: see the package documentation.
		sentinels = []error{connectors.ErrBucketNotFound}
	case errors.As(err, &signErr):
		// The signer could not get credentials from any source.
		sentinels = []error{connectors.ErrNoCredentials}
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
		code == "InvalidToken" || code == "TokenRefreshRequired":
		// Refused credentials: also a permission error, as before.
		sentinels = []error{connectors.ErrNoCredentials, connectors.ErrPermission}
	case code == "AuthorizationHeaderMalformed" || code == "PermanentRedirect" || code == "IllegalLocationConstraintException" ||
		status == http.StatusMovedPermanently:
		// The request was signed for, or sent to, another region.
		sentinels = []error{connectors.ErrWrongRegion}
	case write != nil && write.IfAbsent && (status == http.StatusPreconditionFailed || code == "PreconditionFailed"):
		sentinels = []error{connectors.ErrExists}
	case write != nil && write.IfMatch != "" && (status == http.StatusPreconditionFailed || code == "PreconditionFailed"):
		sentinels = []error{connectors.ErrPrecondition}
	case write != nil && write.IfMatch != "" && code == "ConditionalRequestConflict":
		// S3's 409 for a concurrent conditional write: someone else won.
		sentinels = []error{connectors.ErrPrecondition}
	case write != nil && write.IfMatch != "" && (status == http.StatusNotFound || code == "NoSuchKey"):
		// Nothing to compare with: the compare-and-swap fails.
		sentinels = []error{connectors.ErrPrecondition, connectors.ErrNotFound}
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		sentinels = []error{connectors.ErrNotFound}
	case status == http.StatusForbidden || code == "AccessDenied":
		sentinels = []error{connectors.ErrPermission}
	}
	switch len(sentinels) {
	case 0:
		return fmt.Errorf("s3: %s %q: %w", op, key, err)
	case 1:
		return fmt.Errorf("s3: %s %q: %w: %w", op, key, sentinels[0], err)
	default:
		return fmt.Errorf("s3: %s %q: %w: %w: %w", op, key, sentinels[0], sentinels[1], err)
	}
}
