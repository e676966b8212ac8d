package connectorstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
)

// What the test-server packages (s3test, gcstest, azuritetest) share.

// Shared is a test server started once per test binary, on first use,
// and stopped by Shutdown (or Main) after the tests.
type Shared[S any] struct {
	// What is started, for messages ("s3test: start versitygw").
	What string
	// Start starts the server; Stop stops it and removes its files.
	Start func() (S, error)
	Stop  func(S) error

	once    sync.Once
	srv     S
	started bool
	err     error
}

// Get returns the server, starting it on first use; it fails t if the
// server cannot start (or the tests have finished). Under -short (the fast
// tier) it skips t instead: the cloud emulators run in the full suite,
// where nothing skips.
func (x *Shared[S]) Get(t testing.TB) S {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: a cloud emulator, left out by -short", x.What)
	}
	x.once.Do(func() {
		x.srv, x.err = x.Start()
		x.started = x.err == nil
	})
	if x.err != nil {
		t.Fatalf("%s: %v", x.What, x.err)
	}
	return x.srv
}

// Shutdown stops the server if a test started it; later Gets fail. A
// TestMain that runs several such servers calls each Shutdown after
// m.Run.
func (x *Shared[S]) Shutdown() error {
	x.once.Do(func() { x.err = errors.New("tests have finished") })
	if !x.started {
		return nil
	}
	x.started = false
	return x.Stop(x.srv)
}

// Main runs the tests, then Shutdown; a failed Shutdown fails the run.
// Use it from TestMain: os.Exit(x.Main(m)).
func (x *Shared[S]) Main(m *testing.M) int {
	code := m.Run()
	if err := x.Shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", x.What, err)
		code = max(code, 1)
	}
	return code
}

// BucketName makes a valid, unique bucket (or container) name from a test
// name and a counter: "t<n>-" and the test name's letters and digits, runs
// of anything else as one "-", at most 63 characters. It is valid on S3,
// GCS and Azure alike.
func BucketName(test string, n int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "-") {
				b.WriteByte('-')
			}
		}
	}
	name := fmt.Sprintf("t%d-", n) + strings.Trim(b.String(), "-")
	return strings.TrimRight(name[:min(len(name), 63)], "-")
}

// FreeAddr returns "127.0.0.1:<port>" for a port that was free just now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
