// Package gcs is a connectors.Bucket on Google Cloud Storage, built on
// cloud.google.com/go/storage (JSON API over HTTP).
//
// What it promises, on top of the connectors.Bucket contract:
//
//   - Writes stream: a Writer is a storage.Writer doing a resumable upload in
//     chunks of Options.ChunkSize (8 MiB by default). It holds about one
//     chunk in memory, whatever the object's size. When the caller keeps
//     several writers open at once (WriteOptions.Writers > 1, an export's
//     formats), each streams its object in one request instead, with no
//     chunk buffer: the SDK cannot resend it, so a failed request fails
//     the write (and the export, which is retried as a whole); an object smaller than
//     one chunk goes out in a single request at Close. Nothing is visible
//     until the upload is finalized, which only happens after Close.
//   - Abort, or a cancelled context, cancels the upload's context before
//     the stream ends, so the server never sees the end of the object and
//     never finalizes it: no object is created and the previous one stays.
//     (The abandoned resumable session is left to expire on the server; it
//     holds no object.)
//   - ETags are object generations, in decimal ("1712345678901234"). They
//     are opaque and only meant for WriteOptions.IfMatch, which sends
//     ifGenerationMatch=<generation>; WriteOptions.IfAbsent sends
//     ifGenerationMatch=0. GCS checks the condition atomically when it
//     finalizes the upload (and may refuse a resumable upload already when
//     it starts, in which case Write reports it). A refused condition (HTTP
//     412) becomes ErrExists (IfAbsent) or ErrPrecondition (IfMatch; with
//     ErrNotFound too when the object is missing, which GCS also answers
//     with 412: the package then looks the object up to tell).
//   - SDK errors are translated with errors.Is and errors.As on
//     storage.ErrObjectNotExist, storage.ErrBucketNotExist, *googleapi.Error
//     and *auth.Error, never by matching text, into the connectors sentinels,
//     keeping the cause: 404 → ErrNotFound, 403 → ErrPermission, 401 or a
//     token refused by the token endpoint → ErrNoCredentials, a failed dial
//     → ErrUnreachable. GCS answers a missing object and a missing bucket
//     with the same 404, so after a 404 on an object the package asks for the
//     bucket (buckets.get) and reports ErrBucketNotFound, not ErrNotFound,
//     when it is gone. Without permission to read the bucket's metadata a
//     missing bucket reads as a missing object.
//   - Idempotent requests (reads, lists, deletes, conditional writes) are
//     retried by the SDK on transient errors until the context is done:
//     callers bound them with context deadlines.
//
// # Credentials
//
// Options.CredentialsFile names a service-account key (JSON); without it
// the client uses Application Default Credentials
// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, the GCE metadata server).
// With an Options.Endpoint (an emulator such as fake-gcs-server) and no
// CredentialsFile the client sends no credentials at all. If no credentials
// can be found, New fails with an error wrapping ErrNoCredentials.
//
// # Signed URLs
//
// SignedURL makes V4 signed GET URLs (GOOG4-RSA-SHA256). With a
// service-account key (in CredentialsFile or as the default credentials) it
// signs locally with the key's private key. Otherwise it signs remotely with
// the IAM Credentials signBlob API as Options.SigningAccount, or as the
// service account the default credentials name (impersonation, GCE); the
// credentials then need iam.serviceAccounts.signBlob on that account
// (roles/iam.serviceAccountTokenCreator). With an Endpoint the URL points at
// that endpoint. If nothing can sign, SignedURL returns an error wrapping
// ErrNotSupported that says what to configure.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/auth/httptransport"
	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/exportstream/exportstream/connectors"
)

const (
	// DefaultChunkSize is the resumable upload chunk size when
	// Options.ChunkSize is 0.
	DefaultChunkSize = 8 << 20
	// ChunkSizeUnit is what Options.ChunkSize must be a multiple of (GCS's
	// resumable upload granularity, 256 KiB).
	ChunkSizeUnit = 256 << 10

	// ListPageSize is how many objects List asks for per request: GCS's
	// default and maximum, asked for explicitly so that emulators page too.
	ListPageSize = 1000

	// apiPath is the JSON API's path under an endpoint given without one.
	apiPath = "/storage/v1/"
	// defaultSignHost is the host signed URLs point at without an Endpoint.
	defaultSignHost = "storage.googleapis.com"
)

// scopes are the OAuth scopes requested for the credentials: storage, and
// cloud-platform for the IAM signBlob API.
var scopes = []string{storage.ScopeFullControl, "https://www.googleapis.com/auth/cloud-platform"}

// Options configure a Bucket. Only Bucket is required.
type Options struct {
	// Bucket is the GCS bucket name.
	Bucket string
	// CredentialsFile is the path of a service-account key file (JSON, type
	// "service_account"). Empty: Application Default Credentials, or no
	// credentials at all with an Endpoint.
	CredentialsFile string
	// Endpoint is the JSON API base URL of a GCS-compatible server or a
	// private endpoint, "http://127.0.0.1:4443/storage/v1/"; a URL without a
	// path gets "/storage/v1/" appended. Empty: Google Cloud Storage.
	Endpoint string
	// KMSKeyName is the Cloud KMS key new objects are encrypted with
	// ("projects/P/locations/L/keyRings/R/cryptoKeys/K"). Empty: the bucket's
	// default encryption.
	KMSKeyName string
	// SigningAccount is the service account whose key signs URLs through the
	// IAM signBlob API. Empty: the account of the service-account key, or
	// the one the default credentials name.
	SigningAccount string
	// ChunkSize is the resumable upload chunk size in bytes, a multiple of
	// ChunkSizeUnit (256 KiB). 0 means DefaultChunkSize (8 MiB). A Writer
	// holds about one chunk in memory.
	ChunkSize int
	// HTTPClient replaces the HTTP client (timeouts, proxies, TLS). The
	// package adds the credentials to it; it is also used to fetch tokens.
	HTTPClient *http.Client
}

// String describes the options. None of them is a secret (CredentialsFile
// is a path), so all are shown, except the HTTP client's internals.
func (o Options) String() string {
	hc := "default"
	if o.HTTPClient != nil {
		hc = "custom"
	}
	return fmt.Sprintf("{Bucket:%s CredentialsFile:%s Endpoint:%s KMSKeyName:%s SigningAccount:%s ChunkSize:%d HTTPClient:%s}",
		o.Bucket, o.CredentialsFile, o.Endpoint, o.KMSKeyName, o.SigningAccount, o.ChunkSize, hc)
}

// GoString is String, so that %#v does not print the HTTP client either.
func (o Options) GoString() string { return "gcs.Options" + o.String() }

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var errs []error
	switch {
	case o.Bucket == "":
		errs = append(errs, errors.New("bucket is required"))
	case !validBucketName(o.Bucket):
		errs = append(errs, fmt.Errorf("bucket %q is not a valid bucket name (3-222 characters of a-z, 0-9, '-', '_' and '.')", o.Bucket))
	}
	if o.ChunkSize < 0 || o.ChunkSize%ChunkSizeUnit != 0 {
		errs = append(errs, fmt.Errorf("chunk size %d is not a positive multiple of %d", o.ChunkSize, ChunkSizeUnit))
	}
	if o.Endpoint != "" {
		if _, err := endpointURL(o.Endpoint); err != nil {
			errs = append(errs, err)
		}
		if o.CredentialsFile == "" && o.SigningAccount != "" {
			errs = append(errs, errors.New("signing account needs a credentials file: with an endpoint and no credentials file no credentials are sent"))
		}
	}
	if o.SigningAccount != "" && !strings.Contains(o.SigningAccount, "@") {
		errs = append(errs, fmt.Errorf("signing account %q is not a service account email", o.SigningAccount))
	}
	if o.KMSKeyName != "" && (!strings.HasPrefix(o.KMSKeyName, "projects/") || !strings.Contains(o.KMSKeyName, "/cryptoKeys/")) {
		errs = append(errs, fmt.Errorf("KMS key name %q is not projects/P/locations/L/keyRings/R/cryptoKeys/K", o.KMSKeyName))
	}
	return errors.Join(errs...)
}

func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 222 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// endpointURL parses an Endpoint, appending apiPath when it has no path.
func endpointURL(endpoint string) (*url.URL, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not an http(s) URL", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = apiPath
	} else if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u, nil
}

// Bucket is a GCS bucket as a connectors.Bucket. Create it with New. All
// methods are safe for concurrent use.
type Bucket struct {
	*connectors.Portable
	d *driver
}

// driver is the provider's side of Bucket (see connectors.Driver).
type driver struct {
	client     *storage.Client
	bucket     *storage.BucketHandle
	name       string
	chunkSize  int
	kmsKeyName string
	signer     *signer
}

var (
	_ connectors.Bucket = (*Bucket)(nil)
	_ connectors.Driver = (*driver)(nil)
)

// newDriver builds the driver New wraps.
func newDriver(ctx context.Context, opts Options) (*driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("gcs: invalid options: %w", err)
	}
	var creds *auth.Credentials
	detect := &credentials.DetectOptions{Scopes: scopes, Client: opts.HTTPClient}
	var err error
	switch {
	case opts.CredentialsFile != "":
		creds, err = credentials.NewCredentialsFromFile(credentials.ServiceAccount, opts.CredentialsFile, detect)
		if err != nil {
			return nil, fmt.Errorf("gcs: credentials file %s: %w: %w", opts.CredentialsFile, connectors.ErrNoCredentials, err)
		}
	case opts.Endpoint == "":
		creds, err = credentials.DetectDefault(detect)
		if err != nil {
			return nil, fmt.Errorf("gcs: application default credentials: %w: %w", connectors.ErrNoCredentials, err)
		}
	}

	var clientOpts []option.ClientOption
	signHost, insecure := defaultSignHost, false
	if opts.Endpoint != "" {
		u, _ := endpointURL(opts.Endpoint) // validated above
		clientOpts = append(clientOpts, option.WithEndpoint(u.String()))
		signHost, insecure = u.Host, u.Scheme == "http"
	}
	// authOpt reaches Google APIs with the credentials (storage, and IAM for
	// signing).
	var authOpt option.ClientOption
	switch {
	case creds != nil && opts.HTTPClient != nil:
		// option.WithHTTPClient bypasses the SDK's own authentication: put
		// the credentials into a copy of the caller's client.
		hc := *opts.HTTPClient
		if err := httptransport.AddAuthorizationMiddleware(&hc, creds); err != nil {
			return nil, fmt.Errorf("gcs: %w", err)
		}
		authOpt = option.WithHTTPClient(&hc)
	case creds != nil:
		authOpt = option.WithAuthCredentials(creds)
	case opts.HTTPClient != nil:
		authOpt = option.WithHTTPClient(opts.HTTPClient)
	default:
		authOpt = option.WithoutAuthentication()
	}
	client, err := storage.NewClient(ctx, append(clientOpts, authOpt)...)
	if err != nil {
		return nil, fmt.Errorf("gcs: create client: %w", err)
	}
	s, err := newSigner(ctx, creds, authOpt, opts.SigningAccount)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("gcs: %w", err)
	}
	s.host, s.insecure = signHost, insecure
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	return &driver{
		client:     client,
		bucket:     client.Bucket(opts.Bucket),
		name:       opts.Bucket,
		chunkSize:  chunkSize,
		kmsKeyName: opts.KMSKeyName,
		signer:     s,
	}, nil
}

// New validates opts, finds the credentials and builds the client. It
// sends no request to the bucket: a wrong bucket or permissions show up on
// the first request. (Looking for Application Default Credentials may ask
// the GCE metadata server whether it exists.) If no credentials are found,
// or CredentialsFile is not a service-account key, the error wraps
// connectors.ErrNoCredentials.
func New(ctx context.Context, opts Options) (*Bucket, error) {
	d, err := newDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Bucket{Portable: connectors.NewPortable("gcs", d), d: d}, nil
}

// Client returns the underlying SDK client, for what the Bucket interface
// does not cover (tests, administration).
func (b *Bucket) Client() *storage.Client { return b.d.client }

// NewWriter starts a streaming upload of key. See connectors.Bucket.NewWriter
// for the contract (connectors.Portable has checked ctx and opts). The
// caller must call Close or Abort (or cancel ctx). An IfMatch that is not
// an ETag from this package (a generation number) is refused with an
// error wrapping ErrPrecondition. An IfMatch write on a missing key fails
// at Close with an error wrapping both ErrPrecondition and ErrNotFound.
func (b *driver) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	obj := b.bucket.Object(key)
	switch {
	case opts.IfAbsent:
		obj = obj.If(storage.Conditions{DoesNotExist: true})
	case opts.IfMatch != "":
		gen, err := strconv.ParseInt(opts.IfMatch, 10, 64)
		if err != nil || gen <= 0 {
			return nil, fmt.Errorf("gcs: write %q: %w: IfMatch %q is not an ETag (object generation) from Attributes", key, connectors.ErrPrecondition, opts.IfMatch)
		}
		obj = obj.If(storage.Conditions{GenerationMatch: gen})
	}
	// The SDK retries a failed upload by itself, and a single-request
	// upload (the SDK's writer passes no attempt limit to it) until the
	// context ends: an unreachable bucket made exports hang, uncounted
	// and unlogged. Bounded here, the write fails after uploadAttempts,
	// counts as a failed bucket operation, and the export is retried by
	// the pipeline (as soon as the bucket answers again).
	obj = obj.Retryer(storage.WithErrorFunc(boundedRetry(uploadAttempts)), storage.WithMaxAttempts(uploadAttempts))
	uctx, cancel := context.WithCancel(ctx)
	sw := obj.NewWriter(uctx)
	sw.ContentType = opts.ContentType
	sw.ChunkSize = shareChunk(b.chunkSize, opts.Writers)
	sw.KMSKeyName = b.kmsKeyName
	return &writer{b: b, key: key, opts: opts, ctx: ctx, cancel: cancel, sw: sw}, nil
}

// NewReader opens key for reading. If key does not exist, the error wraps
// connectors.ErrNotFound; if the bucket does not exist,
// connectors.ErrBucketNotFound.
func (b *driver) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := b.bucket.Object(key).NewReader(ctx)
	if err != nil {
		return nil, b.mapErr(ctx, opRead, key, err, nil)
	}
	return r, nil
}

// Attributes returns key's size, ETag (generation), modification time and
// content type. If key does not exist, the error wraps
// connectors.ErrNotFound; if the bucket does not exist,
// connectors.ErrBucketNotFound.
func (b *driver) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	a, err := b.bucket.Object(key).Attrs(ctx)
	if err != nil {
		return connectors.Attributes{}, b.mapErr(ctx, opAttributes, key, err, nil)
	}
	return connectors.Attributes{
		Key:         a.Name,
		Size:        a.Size,
		ETag:        etag(a.Generation),
		ModTime:     a.Updated,
		ContentType: a.ContentType,
	}, nil
}

// List pages through objects.list (ListPageSize objects per page) in GCS's
// ascending UTF-8 byte order. If the bucket does not exist, the error
// wraps connectors.ErrBucketNotFound.
func (b *driver) List(ctx context.Context, prefix string, fn func(connectors.Attributes) bool) error {
	q := &storage.Query{Prefix: prefix}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Generation", "Updated"}); err != nil {
		return fmt.Errorf("gcs: list %q: %w", prefix, err)
	}
	it := b.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = ListPageSize
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return b.mapErr(ctx, opList, prefix, err, nil)
		}
		if !fn(connectors.Attributes{Key: a.Name, Size: a.Size, ETag: etag(a.Generation), ModTime: a.Updated}) {
			return nil
		}
	}
}

// Delete removes key; a missing key is not an error, a missing bucket is
// (connectors.ErrBucketNotFound).
func (b *driver) Delete(ctx context.Context, key string) error {
	err := b.bucket.Object(key).Delete(ctx)
	if err == nil {
		return nil
	}
	err = b.mapErr(ctx, opDelete, key, err, nil)
	if errors.Is(err, connectors.ErrNotFound) {
		return nil
	}
	return err
}

// Close releases the client's connections.
func (b *driver) Close() error {
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("gcs: close client: %w", err)
	}
	return nil
}

// etag is the ETag this package uses: the object generation, in decimal.
func etag(generation int64) string { return strconv.FormatInt(generation, 10) }

// uploadAttempts bounds the SDK's attempts at one upload (or one chunk of
// a resumable upload): with its back-off (1 s, doubling) a bucket that
// does not answer fails a write after about 7 s.
const uploadAttempts = 4

// boundedRetry is the SDK's own retry rule (storage.ShouldRetry) for at
// most attempts tries of one writer's requests.
func boundedRetry(attempts int) func(error) bool {
	var n atomic.Int32
	return func(err error) bool {
		return storage.ShouldRetry(err) && int(n.Add(1)) < attempts
	}
}

// shareChunk is the chunk size of one of writers writers open at once
// (WriteOptions.Writers): chunk for a writer alone, else 0: the object
// goes out in one streaming request, with no chunk buffer at all. Four
// writers of 8 MiB chunks held 32 MiB on the heap (36 MiB of live heap
// in SharedWriters, 178 MB of peak RSS for the service with four
// formats); a quarter chunk each kept the memory down but made every
// writer stop for a request every 2 MiB, and the export twice as slow.
// Without a buffer the SDK cannot resend a failed request: the write
// fails, and the export with it, which the pipeline retries.
func shareChunk(chunk, writers int) int {
	if writers > 1 {
		return 0
	}
	return chunk
}
