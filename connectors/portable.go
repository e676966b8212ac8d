package connectors

import (
	"context"
	"fmt"
	"io"
	"time"
)

// DefaultContentType is the content type of an object written without
// WriteOptions.ContentType.
const DefaultContentType = "application/json"

// Driver is a provider's side of a Bucket, wrapped by a Portable, which
// keeps for every provider what they all do alike. It has Bucket's methods
// and keeps Bucket's contract, except that NewWriter is only called with
// a context that is not done, a WriteOptions.ContentType that is set, and
// never IfAbsent together with IfMatch.
type Driver interface {
	Bucket
}

// Portable is the front door of a provider's bucket, as gocloud's
// blob.Bucket is of its drivers: it refuses a write with both IfAbsent
// and IfMatch, refuses a write whose context is already done, and fills
// in DefaultContentType, then calls the driver. Instrumentation (Metrics)
// goes around it. Providers embed a Portable in their Bucket, so that
// their New returns a Bucket that keeps the whole contract.
type Portable struct {
	provider string
	d        Driver
}

// NewPortable returns the front door of driver d; provider names it in
// errors ("s3: write \"k\": ...").
func NewPortable(provider string, d Driver) *Portable {
	return &Portable{provider: provider, d: d}
}

// NewWriter refuses a write whose ctx is done (the error wraps ctx.Err())
// or with both IfAbsent and IfMatch, fills in DefaultContentType when
// opts.ContentType is empty, and starts the driver's write.
func (p *Portable) NewWriter(ctx context.Context, key string, opts WriteOptions) (Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: write %q: %w", p.provider, key, err)
	}
	if opts.IfAbsent && opts.IfMatch != "" {
		return nil, fmt.Errorf("%s: write %q: IfAbsent and IfMatch cannot be combined", p.provider, key)
	}
	if opts.ContentType == "" {
		opts.ContentType = DefaultContentType
	}
	return p.d.NewWriter(ctx, key, opts)
}

// NewReader is the driver's.
func (p *Portable) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	return p.d.NewReader(ctx, key)
}

// Attributes is the driver's.
func (p *Portable) Attributes(ctx context.Context, key string) (Attributes, error) {
	return p.d.Attributes(ctx, key)
}

// List is the driver's.
func (p *Portable) List(ctx context.Context, prefix string, fn func(Attributes) bool) error {
	return p.d.List(ctx, prefix, fn)
}

// Delete is the driver's.
func (p *Portable) Delete(ctx context.Context, key string) error { return p.d.Delete(ctx, key) }

// SignedURL is the driver's.
func (p *Portable) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	return p.d.SignedURL(ctx, key, expiry)
}

// Close closes the driver.
func (p *Portable) Close() error { return p.d.Close() }
