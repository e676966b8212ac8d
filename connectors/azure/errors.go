package azure

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/exportstream/exportstream/connectors"
)

// mapErr wraps an SDK error for op on key in the connectors sentinels,
// keeping the cause, with the bucket's secrets redacted. write holds the
// options of a write, nil otherwise.
func (b *driver) mapErr(op, key string, err error, write *connectors.WriteOptions) error {
	// Before any wrapping: fmt.Errorf copies the message it wraps.
	err = b.redact.wrap(err)
	status := 0
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		status = re.StatusCode
	}
	ifAbsent := write != nil && write.IfAbsent
	ifMatch := write != nil && write.IfMatch != ""
	var sentinels []error
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		// Not ErrNotFound: see the package documentation.
		sentinels = []error{connectors.ErrBucketNotFound}
	case ifAbsent && (bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) ||
		status == http.StatusPreconditionFailed):
		// Azure answers 409 BlobAlreadyExists to "If-None-Match: *".
		sentinels = []error{connectors.ErrExists}
	case ifMatch && (bloberror.HasCode(err, bloberror.ConditionNotMet) || status == http.StatusPreconditionFailed):
		sentinels = []error{connectors.ErrPrecondition}
	case ifAbsent && bloberror.HasCode(err, bloberror.InvalidBlockList):
		// Azure drops a blob's uncommitted blocks when another writer
		// commits it: this writer's blocks are gone because the key was
		// created meanwhile.
		sentinels = []error{connectors.ErrExists}
	case ifMatch && bloberror.HasCode(err, bloberror.InvalidBlockList):
		// As above: the key was rewritten meanwhile.
		sentinels = []error{connectors.ErrPrecondition}
	case ifMatch && (bloberror.HasCode(err, bloberror.BlobNotFound) || status == http.StatusNotFound):
		// Nothing to compare with: the compare-and-swap fails.
		sentinels = []error{connectors.ErrPrecondition, connectors.ErrNotFound}
	case bloberror.HasCode(err, bloberror.BlobNotFound) || (status == http.StatusNotFound && re.ErrorCode == ""):
		// A HEAD response has no body, but Azure still sends the code in
		// a header; a bare 404 is a missing blob.
		sentinels = []error{connectors.ErrNotFound}
	case errors.Is(err, connectors.ErrNoCredentials):
		// The token credential found none (see tokenCredential): the
		// sentinel is in the chain already.
	case bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.InvalidAuthenticationInfo,
		bloberror.NoAuthenticationInformation) || status == http.StatusUnauthorized:
		sentinels = []error{connectors.ErrNoCredentials}
	case status == http.StatusForbidden:
		// AuthorizationPermissionMismatch, AuthorizationFailure,
		// InsufficientAccountPermissions, ...: authenticated, not allowed.
		sentinels = []error{connectors.ErrPermission}
	}
	switch len(sentinels) {
	case 0:
		return fmt.Errorf("azure: %s %q: %w", op, key, err)
	case 1:
		return fmt.Errorf("azure: %s %q: %w: %w", op, key, sentinels[0], err)
	default:
		return fmt.Errorf("azure: %s %q: %w: %w: %w", op, key, sentinels[0], sentinels[1], err)
	}
}

// redactor keeps a Bucket's secrets out of its errors.
type redactor struct {
	secrets []string // account key, SAS token and signature, as sent and as given
}

// newRedactor hides key and sas (and sas's signature) in error messages.
func newRedactor(key, sas string) redactor {
	var r redactor
	add := func(s string) {
		if len(s) >= 8 { // a signature or key is never shorter; hiding "a" would mangle messages
			r.secrets = append(r.secrets, s, url.QueryEscape(s))
		}
	}
	add(key)
	add(sas)
	if q, err := url.ParseQuery(sas); err == nil {
		add(q.Get("sig"))
	}
	return r
}

// wrap returns err with every secret in its message replaced by
// "<secret>", and the signature of a URL quoted by a transport error
// (*url.Error) redacted. The chain stays intact for errors.Is and
// errors.As; only the messages change. Call it on the SDK's error before
// wrapping that in fmt.Errorf, which copies the message as it is then.
func (r redactor) wrap(err error) error {
	if err == nil {
		return nil
	}
	// net/http quotes the whole request URL, SAS query included. The
	// *url.Error was made for this one request, so it is ours to edit.
	var ue *url.Error
	for e := err; errors.As(e, &ue); e = ue.Err {
		ue.URL = redactURL(ue.URL)
	}
	msg := err.Error()
	redacted := msg
	for _, s := range r.secrets {
		redacted = strings.ReplaceAll(redacted, s, "<secret>")
	}
	if redacted == msg {
		return err
	}
	return &redactedError{msg: redacted, err: err}
}

// redactURL replaces the value of a "sig" query parameter (a SAS
// signature) in u by "REDACTED"; if u does not parse, it drops its query.
func redactURL(u string) string {
	base, query, ok := strings.Cut(u, "?")
	if !ok {
		return u
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return base + "?REDACTED"
	}
	if q.Has("sig") {
		q.Set("sig", "REDACTED")
	}
	return base + "?" + q.Encode()
}

// redactedError is an error whose message had secrets removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
