// Package azure is a connectors.Bucket on an Azure Blob Storage container
// (or Azurite), built on the Azure SDK for Go (azblob, azidentity).
//
// What it promises, on top of the connectors.Bucket contract:
//
//   - Writes stream into a block blob: a Writer feeds an io.Pipe into the
//     SDK's blockblob.Client.UploadStream, which sends one Put Blob for an
//     object smaller than one block, and otherwise stages BlockSize blocks
//     (Put Block, Concurrency at a time) and commits them with one Put Block
//     List. A Writer holds at most Concurrency × BlockSize bytes of block
//     buffers (16 MiB with the defaults of 8 MiB and 2; the SDK maps them
//     outside the Go heap), whatever the object's size; BlockSize divided
//     by WriteOptions.Writers (at least MinBlockSize) when the caller keeps
//     several writers open at once. Nothing is visible
//     until the Put Blob or Put Block List succeeds.
//   - WriteOptions.IfAbsent sends "If-None-Match: *" and IfMatch sends
//     "If-Match: <etag>" on that Put Blob or Put Block List, so Azure itself
//     decides atomically when the object is published. Azure (and Azurite)
//     answer 409 BlobAlreadyExists to the former and 412 ConditionNotMet to
//     the latter.
//   - Two multi-block writes of one key at once do not both succeed: the
//     first Put Block List drops the blocks the other staged, so the later
//     Close fails (400 InvalidBlockList) and the first write's object
//     stays. For a conditional write that means its condition failed
//     (ErrExists, ErrPrecondition); an unconditional one just fails.
//   - Abort, a cancelled context, or any failed upload never sends the
//     commit: the blocks staged so far stay uncommitted, invisible to
//     readers and listings, and the previous blob (if any) is untouched.
//     Azure garbage-collects uncommitted blocks after a week (or at the
//     blob's next commit); there is no call to delete them.
//   - SDK errors are translated with bloberror.HasCode and errors.As on
//     azcore.ResponseError, never by matching text, into the connectors
//     sentinels, keeping the cause: BlobNotFound → ErrNotFound (an IfMatch
//     write on a missing blob → ErrPrecondition and ErrNotFound);
//     ContainerNotFound → ErrBucketNotFound (deliberately not ErrNotFound: a
//     misconfigured container must not look like an absent object);
//     AuthenticationFailed, InvalidAuthenticationInfo,
//     NoAuthenticationInformation, 401, and a credential that cannot get a
//     token → ErrNoCredentials; other 403s (AuthorizationPermissionMismatch,
//     AuthorizationFailure, ...) → ErrPermission.
//   - Errors never carry secrets: the account key and the SAS signature are
//     replaced by "<secret>" in every error message, and the "sig" of a
//     request URL quoted by a transport error is redacted. Options print
//     their secrets as "<secret>" too.
//   - ETags are Azure's, quoted as Get Blob Properties returns them (List
//     Blobs returns them bare; List quotes them, so the two compare equal);
//     they are opaque and only meant for WriteOptions.IfMatch.
//   - SignedURL makes a read-only blob SAS: signed with the account key
//     when there is one, otherwise with a user delegation key obtained
//     with the Azure AD credential. A connection that authenticates with a
//     SAS token alone cannot sign, and says so (connectors.ErrNotSupported).
//
// # Authentication
//
// Exactly one of Options.ConnectionString and Options.AccountName locates
// the account. A connection string carries either an AccountKey or a
// SharedAccessSignature. With AccountName, AccountKey authenticates with the
// shared key, SASToken with a shared access signature, and neither with
// azidentity.DefaultAzureCredential (environment, workload identity,
// managed identity, Azure CLI, ...), which needs an https endpoint.
//
// # Integrity
//
// No transactional checksum is sent with the blocks: the transfer is
// protected by TLS, and the SDK's streaming CRC64 (structured messages,
// TransferValidationTypeComputeStructuredMessageCRC64) is not understood by
// Azurite, which stores the framing as part of the blob. The SDK retries
// failed requests with the same block (Options.Retry).
package azure

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/exportstream/exportstream/connectors"
)

const (
	// DefaultBlockSize is the block size when Options.BlockSize is 0.
	DefaultBlockSize = 8 << 20
	// MinBlockSize is the smallest block size the SDK's streaming upload
	// uses.
	MinBlockSize = 1 << 20
	// MaxBlockSize is Azure's largest block (4000 MiB). A blob has at most
	// 50,000 blocks, so BlockSize also caps the object's size (390 GiB
	// with the default 8 MiB).
	MaxBlockSize = 4000 << 20
	// DefaultConcurrency is how many blocks of one object are buffered
	// and uploaded at once when Options.Concurrency is 0.
	DefaultConcurrency = 2
	// MaxListPageSize is the most blobs Azure returns per List Blobs
	// request, and the default page size.
	MaxListPageSize = 5000

	// defaultEndpoint is the blob service URL of an account, for %s.
	defaultEndpoint = "https://%s.blob.core.windows.net/"
)

// Options configure a Bucket. Container is required, and exactly one of
// ConnectionString and AccountName (see the package documentation).
type Options struct {
	// Container is the container name.
	Container string
	// ConnectionString authenticates and locates the account
	// ("DefaultEndpointsProtocol=https;AccountName=...;AccountKey=...",
	// or with BlobEndpoint and SharedAccessSignature).
	ConnectionString string
	// AccountName names the storage account. With AccountKey it uses a
	// shared key, with SASToken a shared access signature, and with
	// neither DefaultAzureCredential.
	AccountName string
	// AccountKey is the account's base64 shared key.
	AccountKey string
	// SASToken is a shared access signature ("sv=...&sig=...", with or
	// without a leading "?") with read, create, write, delete and list
	// permissions on the container.
	SASToken string
	// Endpoint is the blob service URL, http(s), without a query
	// ("http://127.0.0.1:10000/devstoreaccount1" for Azurite). Empty:
	// the connection string's, or https://<AccountName>.blob.core.windows.net/.
	// Set, it replaces a connection string's endpoint.
	Endpoint string
	// EncryptionScope names the encryption scope blobs are written with
	// (it must exist in the account); empty: the container's default.
	EncryptionScope string
	// BlockSize is the size of a staged block in bytes, in
	// [MinBlockSize, MaxBlockSize]; 0 means DefaultBlockSize (8 MiB).
	// Objects smaller than one block are sent in one request.
	BlockSize int64
	// Concurrency is how many blocks of one object are buffered and
	// uploaded at once; 0 means DefaultConcurrency (2). A Writer holds
	// at most Concurrency × BlockSize bytes.
	Concurrency int
	// ListPageSize is how many blobs List asks for per request, in
	// [1, MaxListPageSize]; 0 means MaxListPageSize.
	ListPageSize int
	// HTTPClient replaces the SDK's HTTP client (timeouts, proxies, TLS).
	HTTPClient *http.Client
	// Retry tunes how the SDK retries a request that failed to connect or
	// got a 408, 429 or 5xx answer. The zero value is the SDK's default:
	// 3 retries, back-off (2^n-1) × 0.8 s ± 20 % (about 9 s in all), no
	// per-try timeout; MaxRetries -1 means no retries.
	Retry policy.RetryOptions
	// Credential replaces DefaultAzureCredential when only AccountName is
	// set (a specific managed identity, a workload identity, tests).
	Credential azcore.TokenCredential
}

// String describes the options without their secrets.
func (o Options) String() string {
	secret := func(s string) string {
		if s == "" {
			return ""
		}
		return "<secret>"
	}
	cred := ""
	if o.Credential != nil {
		cred = fmt.Sprintf("%T", o.Credential)
	}
	return fmt.Sprintf("{Container:%s ConnectionString:%s AccountName:%s AccountKey:%s SASToken:%s Endpoint:%s EncryptionScope:%s BlockSize:%d Concurrency:%d ListPageSize:%d Retry:{MaxRetries:%d TryTimeout:%v RetryDelay:%v MaxRetryDelay:%v} Credential:%s}",
		o.Container, secret(o.ConnectionString), o.AccountName, secret(o.AccountKey), secret(o.SASToken),
		withoutQuery(o.Endpoint), o.EncryptionScope, o.BlockSize, o.Concurrency, o.ListPageSize,
		o.Retry.MaxRetries, o.Retry.TryTimeout, o.Retry.RetryDelay, o.Retry.MaxRetryDelay, cred)
}

// GoString is String, so that %#v does not print secrets either.
func (o Options) GoString() string { return "azure.Options" + o.String() }

// withoutQuery is the URL u without its query, which might hold a SAS that
// was put in the wrong place.
func withoutQuery(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

// containerName is Azure's rule for container names: 3 to 63 lowercase
// letters, digits and single hyphens, starting and ending with a letter or
// digit.
var containerName = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// Validate reports every problem with the options at once. Its messages
// never quote a secret.
func (o Options) Validate() error {
	var errs []error
	switch {
	case o.Container == "":
		errs = append(errs, errors.New("container is required"))
	case len(o.Container) > 63 || !containerName.MatchString(o.Container):
		errs = append(errs, fmt.Errorf("container %q is not a valid container name (3-63 lowercase letters, digits and single hyphens)", o.Container))
	}
	switch {
	case o.ConnectionString != "" && o.AccountName != "":
		errs = append(errs, errors.New("set only one of connection string and account name"))
	case o.ConnectionString == "" && o.AccountName == "":
		errs = append(errs, errors.New("one of connection string and account name is required"))
	case o.ConnectionString != "":
		if _, err := parseConnectionString(o.ConnectionString); err != nil {
			errs = append(errs, err)
		}
	}
	if o.AccountKey != "" && o.AccountName == "" {
		errs = append(errs, errors.New("account key requires an account name"))
	}
	if o.SASToken != "" && o.AccountName == "" {
		errs = append(errs, errors.New("SAS token requires an account name"))
	}
	if o.AccountKey != "" && o.SASToken != "" {
		errs = append(errs, errors.New("set only one of account key and SAS token"))
	}
	if o.AccountKey != "" {
		if _, err := base64.StdEncoding.DecodeString(o.AccountKey); err != nil {
			errs = append(errs, errors.New("account key is not base64"))
		}
	}
	if o.SASToken != "" {
		if err := checkSAS(o.SASToken); err != nil {
			errs = append(errs, fmt.Errorf("SAS token: %w", err))
		}
	}
	if o.Credential != nil && (o.AccountName == "" || o.AccountKey != "" || o.SASToken != "") {
		errs = append(errs, errors.New("a credential is used only with an account name alone (no account key or SAS token)"))
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("endpoint %q is not an http(s) URL", withoutQuery(o.Endpoint)))
		case u.RawQuery != "" || u.Fragment != "":
			errs = append(errs, errors.New("endpoint must not have a query or fragment (a SAS goes in the SAS token)"))
		case o.AccountName != "" && o.AccountKey == "" && o.SASToken == "" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("endpoint %q: Azure AD credentials are only sent over https", withoutQuery(o.Endpoint)))
		}
	}
	if o.BlockSize != 0 && (o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize) {
		errs = append(errs, fmt.Errorf("block size %d is outside [%d, %d]", o.BlockSize, MinBlockSize, MaxBlockSize))
	}
	if o.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d is negative", o.Concurrency))
	}
	if o.ListPageSize < 0 || o.ListPageSize > MaxListPageSize {
		errs = append(errs, fmt.Errorf("list page size %d is outside [1, %d]", o.ListPageSize, MaxListPageSize))
	}
	return errors.Join(errs...)
}

// Bucket is an Azure Blob Storage container as a connectors.Bucket. Create
// it with New. All methods are safe for concurrent use.
type Bucket struct {
	*connectors.Portable
	d *driver
}

// driver is the provider's side of Bucket (see connectors.Driver).
type driver struct {
	client    *container.Client
	service   *service.Client // for user delegation keys; nil unless Azure AD
	auth      auth
	name      string // the container's
	blockSize int64
	conc      int
	pageSize  int32
	scope     *blob.CPKScopeInfo // nil without an encryption scope
	redact    redactor

	delegation struct { // the user delegation key SignedURL reuses
		mu      sync.Mutex
		cred    *service.UserDelegationCredential
		expires time.Time
	}
}

var (
	_ connectors.Bucket = (*Bucket)(nil)
	_ connectors.Driver = (*driver)(nil)
)

// newDriver builds the driver New wraps.
func newDriver(ctx context.Context, opts Options) (*driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("azure: invalid options: %w", err)
	}
	a, err := newAuth(opts)
	if err != nil {
		return nil, fmt.Errorf("azure: %w", a.redact.wrap(err))
	}
	clientOpts := &container.ClientOptions{}
	clientOpts.Retry = opts.Retry
	if opts.HTTPClient != nil {
		clientOpts.Transport = opts.HTTPClient
	}
	b := &driver{
		auth:      a,
		name:      opts.Container,
		blockSize: cmp.Or(opts.BlockSize, DefaultBlockSize),
		conc:      cmp.Or(opts.Concurrency, DefaultConcurrency),
		pageSize:  int32(cmp.Or(opts.ListPageSize, MaxListPageSize)),
		redact:    a.redact,
	}
	if opts.EncryptionScope != "" {
		b.scope = &blob.CPKScopeInfo{EncryptionScope: to.Ptr(opts.EncryptionScope)}
	}
	containerURL := strings.TrimSuffix(a.serviceURL, "/") + "/" + url.PathEscape(opts.Container)
	switch {
	case a.sharedKey != nil:
		b.client, err = container.NewClientWithSharedKeyCredential(containerURL, a.sharedKey, clientOpts)
	case a.token != nil:
		b.client, err = container.NewClient(containerURL, a.token, clientOpts)
		if err == nil {
			b.service, err = service.NewClient(a.serviceURL, a.token, (*service.ClientOptions)(clientOpts))
		}
	default:
		b.client, err = container.NewClientWithNoCredential(containerURL+"?"+a.sas, clientOpts)
	}
	if err != nil {
		return nil, fmt.Errorf("azure: client for container %q: %w", opts.Container, b.redact.wrap(err))
	}
	return b, nil
}

// New validates opts and builds the client. It does no network I/O: a
// missing container or refused credentials show up on the first request.
func New(ctx context.Context, opts Options) (*Bucket, error) {
	d, err := newDriver(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Bucket{Portable: connectors.NewPortable("azure", d), d: d}, nil
}

// Client returns the underlying SDK client of the container, for what the
// Bucket interface does not cover (tests, administration).
func (b *Bucket) Client() *container.Client { return b.d.client }

// NewReader opens key for reading (Get Blob). If key does not exist, the
// error wraps connectors.ErrNotFound; if the container does not, it wraps
// connectors.ErrBucketNotFound. A read interrupted by a network error is
// resumed where it stopped (up to 3 times), and only if the blob has not
// changed meanwhile.
func (b *driver) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	resp, err := b.client.NewBlobClient(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, b.mapErr("read", key, err, nil)
	}
	return &reader{key: key, b: b, rc: resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 3})}, nil
}

// reader translates the errors of a download's body.
type reader struct {
	key string
	b   *driver
	rc  io.ReadCloser
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.mapErr("read", r.key, err, nil)
	}
	return n, err
}

func (r *reader) Close() error { return r.rc.Close() }

// Attributes returns key's size, ETag, modification time and content type
// (Get Blob Properties). If key does not exist, the error wraps
// connectors.ErrNotFound; if the container does not, it wraps
// connectors.ErrBucketNotFound.
func (b *driver) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	p, err := b.client.NewBlobClient(key).GetProperties(ctx, nil)
	if err != nil {
		return connectors.Attributes{}, b.mapErr("attributes", key, err, nil)
	}
	return connectors.Attributes{
		Key:         key,
		Size:        deref(p.ContentLength),
		ETag:        string(deref(p.ETag)),
		ModTime:     deref(p.LastModified),
		ContentType: deref(p.ContentType),
	}, nil
}

// List pages through List Blobs (Options.ListPageSize blobs per request),
// a flat listing in Azure's ascending order. Uncommitted blobs (writes in
// progress) are not listed.
func (b *driver) List(ctx context.Context, prefix string, fn func(connectors.Attributes) bool) error {
	opts := &container.ListBlobsFlatOptions{MaxResults: to.Ptr(b.pageSize)}
	if prefix != "" {
		opts.Prefix = to.Ptr(prefix)
	}
	pager := b.client.NewListBlobsFlatPager(opts)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return b.mapErr("list", prefix, err, nil)
		}
		if page.Segment == nil {
			continue
		}
		for _, item := range page.Segment.BlobItems {
			a := connectors.Attributes{Key: deref(item.Name)}
			if p := item.Properties; p != nil {
				a.Size = deref(p.ContentLength)
				a.ETag = quoteETag(deref(p.ETag))
				a.ModTime = deref(p.LastModified)
			}
			if !fn(a) {
				return nil
			}
		}
	}
	return nil
}

// quoteETag returns e in the quoted form Azure's response headers use:
// List Blobs returns ETags bare (0x8D...), Get Blob Properties quoted
// ("0x8D..."), and the two must compare equal.
func quoteETag(e azcore.ETag) string {
	s := string(e)
	if s == "" || strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `W/"`) {
		return s
	}
	return `"` + s + `"`
}

// Delete removes key and its snapshots; a missing key is not an error. A
// missing container is (connectors.ErrBucketNotFound).
func (b *driver) Delete(ctx context.Context, key string) error {
	_, err := b.client.NewBlobClient(key).Delete(ctx, &blob.DeleteOptions{
		DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude),
	})
	if err != nil {
		err = b.mapErr("delete", key, err, nil)
		if errors.Is(err, connectors.ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// Close does nothing: the SDK client holds no resources that need
// releasing beyond idle HTTP connections.
func (b *driver) Close() error { return nil }

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
