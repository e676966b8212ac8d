package connectors

import (
	"context"
	"io"
	"strings"
	"time"
)

// Prefixed returns a Bucket that keeps every key of b under prefix (which
// should end in "/"): writes, reads, listings and signed URLs see keys
// without it. It lets several users, such as test runs against one real
// cloud bucket, share a bucket without seeing each other's objects. Close
// closes b.
func Prefixed(b Bucket, prefix string) Bucket { return &prefixed{b: b, p: prefix} }

type prefixed struct {
	b Bucket
	p string
}

func (x *prefixed) NewWriter(ctx context.Context, key string, opts WriteOptions) (Writer, error) {
	return x.b.NewWriter(ctx, x.p+key, opts)
}

func (x *prefixed) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	return x.b.NewReader(ctx, x.p+key)
}

func (x *prefixed) Attributes(ctx context.Context, key string) (Attributes, error) {
	a, err := x.b.Attributes(ctx, x.p+key)
	a.Key = strings.TrimPrefix(a.Key, x.p)
	return a, err
}

func (x *prefixed) List(ctx context.Context, prefix string, fn func(Attributes) bool) error {
	return x.b.List(ctx, x.p+prefix, func(a Attributes) bool {
		a.Key = strings.TrimPrefix(a.Key, x.p)
		return fn(a)
	})
}

func (x *prefixed) Delete(ctx context.Context, key string) error { return x.b.Delete(ctx, x.p+key) }

func (x *prefixed) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	return x.b.SignedURL(ctx, x.p+key, expiry)
}

func (x *prefixed) Close() error { return x.b.Close() }
