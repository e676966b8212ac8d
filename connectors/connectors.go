// Package connectors defines the bucket that exports are written to, as a
// contract every provider (local, s3, gcs, azure) keeps.
//
// Providers live in sub-packages and translate their SDK's errors into the
// sentinels below with errors.Is-compatible wrapping, keeping the cause.
// connectorstest holds the conformance suite every provider runs.
//
// Each provider package registers itself for its connection type
// (Register, in an init function); Open and Validate go through the
// registry, so a program supports the types whose packages it imports.
// Adding a type is a provider package, its config block (config's
// Connection.blocks) and the import that registers it.
//
// What every provider does alike is written once, in Portable, the front
// door each provider's Bucket embeds around its Driver; Metrics wraps any
// Bucket.
package connectors

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Providers wrap them (fmt.Errorf("...: %w", ErrNotFound))
// so callers test with errors.Is, never ==.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: a create-if-absent write found the key already there.
	ErrExists = errors.New("object already exists")
	// ErrPrecondition: a compare-and-swap write found a different version
	// than the one it expected.
	ErrPrecondition = errors.New("object changed since it was read")
	// ErrPermission: the credentials are not allowed to do this.
	ErrPermission = errors.New("permission denied")
	// ErrBucketNotFound: the bucket (container, folder) does not exist.
	ErrBucketNotFound = errors.New("bucket not found")
	// ErrNoCredentials: no credentials were found, or they were refused
	// as invalid (not merely lacking a permission).
	ErrNoCredentials = errors.New("no valid credentials")
	// ErrWrongRegion: the bucket lives in another region than the one
	// configured.
	ErrWrongRegion = errors.New("bucket is in another region")
	// ErrUnreachable: the endpoint could not be reached (DNS, refused or
	// timed-out connection, TLS failure).
	ErrUnreachable = errors.New("endpoint unreachable")
	// ErrNotSupported: the provider cannot do this as configured (for
	// example signed URLs without a signing key).
	ErrNotSupported = errors.New("not supported")
)

// Bucket is one place exports are written to. Keys are slash-separated
// paths relative to the bucket's root; they never start with "/".
// All methods are safe for concurrent use.
type Bucket interface {
	// NewWriter starts writing the object key. Nothing is visible under key
	// until Close returns nil: readers see the previous object (if any) or
	// ErrNotFound. Abort, or cancelling ctx before Close, discards the write
	// and leaves the previous object in place. Data is streamed: a provider
	// never holds the whole object in memory.
	//
	// With opts.IfAbsent, Close returns an error wrapping ErrExists if the
	// key already exists, and writes nothing. With opts.IfMatch set, Close
	// returns an error wrapping ErrPrecondition unless the key's current
	// ETag equals it.
	NewWriter(ctx context.Context, key string, opts WriteOptions) (Writer, error)

	// NewReader opens the object key. If the key does not exist, an error
	// wrapping ErrNotFound is returned.
	NewReader(ctx context.Context, key string) (io.ReadCloser, error)

	// Attributes returns the object's size, ETag and modification time. If
	// the key does not exist, an error wrapping ErrNotFound is returned.
	Attributes(ctx context.Context, key string) (Attributes, error)

	// List calls fn for every object whose key starts with prefix, in
	// ascending key order, until fn returns false or an error occurs.
	// Providers page through large listings internally.
	List(ctx context.Context, prefix string, fn func(Attributes) bool) error

	// Delete removes the object key. Deleting a key that does not exist is
	// not an error.
	Delete(ctx context.Context, key string) error

	// Signer: every bucket signs GET links to its objects (download
	// links of exports, media links in them).
	Signer

	// Close releases the bucket's resources.
	Close() error
}

// MaxSignedURLExpiry is the longest validity every provider can sign a
// link for: SigV4 (S3) and V4 (GCS) signed URLs, and Azure links signed
// with a user delegation key, live at most 7 days. Local links and Azure
// links signed with the account key may live longer.
const MaxSignedURLExpiry = 7 * 24 * time.Hour

// Signer signs links to objects. Safe for concurrent use.
type Signer interface {
	// SignedURL returns a URL that lets whoever holds it GET the object
	// over plain HTTP(S), without credentials, until expiry has passed
	// (counted from the call). It does not check that the object exists.
	// Every provider accepts any expiry up to MaxSignedURLExpiry. A
	// provider that cannot sign as configured returns an error wrapping
	// ErrNotSupported that says what is missing.
	SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// Writer streams one object into a Bucket (see Bucket.NewWriter).
type Writer interface {
	io.Writer
	// Close finishes the write and makes the object visible atomically.
	// It returns the provider's error for a failed or refused write.
	Close() error
	// Abort discards the write; nothing becomes visible. Abort after a
	// successful Close does nothing.
	Abort() error
}

// WriteOptions are conditions and metadata for a write.
type WriteOptions struct {
	// ContentType of the object; DefaultContentType ("application/json")
	// when empty.
	ContentType string
	// IfAbsent makes the write create-only: it fails with ErrExists if the
	// key exists.
	IfAbsent bool
	// IfMatch makes the write a compare-and-swap on the ETag from
	// Attributes.
	IfMatch string
	// Writers says how many writers of the Bucket, this one included, the
	// caller keeps open at once (an export writes one object per format
	// in one pass); 0 means 1. A provider whose buffers belong to each
	// writer cuts them down so that the caller's writers together hold
	// about what one would: azure divides its block size by Writers (at
	// least 1 MiB); gcs streams each object in one request without a
	// chunk buffer. S3's writers share one budget per Bucket and ignore
	// it.
	Writers int
}

// Attributes describe a stored object. List fills Key, Size, ETag and
// ModTime; Attributes fills ContentType too.
type Attributes struct {
	Key         string
	Size        int64
	ETag        string
	ModTime     time.Time
	ContentType string
}
