package connectors

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"time"
)

// Probe outcomes, in the words an operator acts on.
const (
	ProbeOK            = "OK"
	ProbeBucketMissing = "bucket missing"
	ProbeAccessDenied  = "access denied"
	ProbeWrongRegion   = "wrong region"
	ProbeNoCredentials = "no credentials found"
	ProbeUnreachable   = "endpoint unreachable"
	ProbeFailed        = "failed"
)

// ProbeResult is what Probe found out about one bucket.
type ProbeResult struct {
	// Outcome is one of the Probe* constants.
	Outcome string
	// Step is what failed: "write", "read", "delete" ("" when OK).
	Step string
	// Err is the provider's error ("" when OK).
	Err string
}

// OK reports whether the probe wrote, read and deleted its object.
func (r ProbeResult) OK() bool { return r.Outcome == ProbeOK }

func (r ProbeResult) String() string {
	if r.OK() {
		return ProbeOK
	}
	return r.Outcome + " (" + r.Step + "): " + r.Err
}

// Probe writes a small object under prefix (".exportstream-probe-<random>"),
// reads it back, and deletes it, and says in one word what went wrong, if
// anything. It gives up after timeout.
func Probe(ctx context.Context, b Bucket, prefix string, timeout time.Duration) ProbeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := prefix + ".exportstream-probe-" + hex.EncodeToString(rnd[:])
	body := []byte(`{"probe":"exportstream"}`)
	fail := func(step string, err error) ProbeResult {
		return ProbeResult{Outcome: Classify(err), Step: step, Err: err.Error()}
	}
	w, err := b.NewWriter(ctx, key, WriteOptions{IfAbsent: true})
	if err != nil {
		return fail("write", err)
	}
	if _, err := w.Write(body); err != nil {
		_ = w.Abort()
		return fail("write", err)
	}
	if err := w.Close(); err != nil {
		return fail("write", err)
	}
	r, err := b.NewReader(ctx, key)
	if err == nil {
		var got []byte
		got, err = io.ReadAll(r)
		_ = r.Close()
		if err == nil && string(got) != string(body) {
			err = errors.New("read back different content than was written")
		}
	}
	if err != nil {
		_ = b.Delete(context.WithoutCancel(ctx), key)
		return fail("read", err)
	}
	if err := b.Delete(ctx, key); err != nil {
		return fail("delete", err)
	}
	return ProbeResult{Outcome: ProbeOK}
}

// Classify names the kind of a provider error with a Probe outcome:
// ProbeBucketMissing, ProbeAccessDenied, ProbeWrongRegion,
// ProbeNoCredentials, ProbeUnreachable, or ProbeFailed for anything else.
func Classify(err error) string {
	var (
		dnsErr  *net.DNSError
		opErr   *net.OpError
		x509Err x509.UnknownAuthorityError
		hostErr x509.HostnameError
		certErr *tls.CertificateVerificationError
	)
	switch {
	case err == nil:
		return ProbeOK
	case errors.Is(err, ErrBucketNotFound):
		return ProbeBucketMissing
	case errors.Is(err, ErrNoCredentials):
		return ProbeNoCredentials
	case errors.Is(err, ErrWrongRegion):
		return ProbeWrongRegion
	case errors.Is(err, ErrPermission):
		return ProbeAccessDenied
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.As(err, &x509Err),
		errors.As(err, &hostErr), errors.As(err, &certErr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrUnreachable):
		return ProbeUnreachable
	}
	return ProbeFailed
}
