package gcs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/exportstream/exportstream/connectors"
)

// Operations, as errors name them.
const (
	opRead       = "read"
	opAttributes = "attributes"
	opList       = "list"
	opDelete     = "delete"
	opWrite      = "write"
	opSign       = "sign"
)

// mapErr wraps an SDK error for op on key in the connectors sentinels,
// keeping the cause. write holds the options of a write, nil otherwise.
// After a 404 on an object it asks GCS (with ctx) whether the bucket
// exists, to tell a missing object from a missing bucket.
func (b *driver) mapErr(ctx context.Context, op, key string, err error, write *connectors.WriteOptions) error {
	status := 0
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		status = ge.Code
	}
	// A 404 from signing is about the service account, not the object.
	notFound := op != opSign && (status == http.StatusNotFound || errors.Is(err, storage.ErrObjectNotExist))
	var sentinels []error
	switch {
	case errors.Is(err, storage.ErrBucketNotExist):
		sentinels = []error{connectors.ErrBucketNotFound}
	case write != nil && status == http.StatusPreconditionFailed && write.IfAbsent:
		sentinels = []error{connectors.ErrExists}
	case write != nil && status == http.StatusPreconditionFailed && write.IfMatch != "":
		// GCS answers 412 whether the object changed or is gone.
		sentinels = []error{connectors.ErrPrecondition}
		if _, aerr := b.bucket.Object(key).Attrs(ctx); errors.Is(aerr, storage.ErrObjectNotExist) {
			sentinels = append(sentinels, connectors.ErrNotFound)
		}
	case notFound && op == opList:
		// objects.list only answers 404 for the bucket.
		sentinels = []error{connectors.ErrBucketNotFound}
	case notFound && b.bucketMissing(ctx):
		sentinels = []error{connectors.ErrBucketNotFound}
	case notFound && write != nil && write.IfMatch != "":
		// Nothing to compare with: the compare-and-swap fails.
		sentinels = []error{connectors.ErrPrecondition, connectors.ErrNotFound}
	case notFound && write == nil:
		sentinels = []error{connectors.ErrNotFound}
	case status == http.StatusUnauthorized || tokenRefused(err):
		sentinels = []error{connectors.ErrNoCredentials}
	case status == http.StatusForbidden:
		sentinels = []error{connectors.ErrPermission}
	case dialFailed(err):
		sentinels = []error{connectors.ErrUnreachable}
	}
	switch len(sentinels) {
	case 0:
		return fmt.Errorf("gcs: %s %q: %w", op, key, err)
	case 1:
		return fmt.Errorf("gcs: %s %q: %w: %w", op, key, sentinels[0], err)
	default:
		return fmt.Errorf("gcs: %s %q: %w: %w: %w", op, key, sentinels[0], sentinels[1], err)
	}
}

// bucketMissing reports whether GCS says the bucket does not exist. Any
// other answer (it exists, no permission to read its metadata, a network
// error) counts as not missing.
func (b *driver) bucketMissing(ctx context.Context) bool {
	_, err := b.bucket.Attrs(ctx)
	return errors.Is(err, storage.ErrBucketNotExist)
}

// tokenRefused reports whether the token endpoint refused the credentials
// (an OAuth error answer such as invalid_grant), as opposed to failing.
func tokenRefused(err error) bool {
	var ae *auth.Error
	return errors.As(err, &ae) && ae.Response != nil &&
		ae.Response.StatusCode >= 400 && ae.Response.StatusCode < 500
}

// dialFailed reports whether no connection could be made: DNS failure or
// a refused or timed-out dial.
func dialFailed(err error) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	return errors.As(err, &dnsErr) || errors.As(err, &opErr) && opErr.Op == "dial"
}
