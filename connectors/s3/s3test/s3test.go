// Package s3test runs a real S3 server for tests: versitygw
// (github.com/versity/versitygw), embedded in the test binary through its
// embedgw package, with its posix backend on a temporary folder, listening
// on 127.0.0.1 on a free port and checking signatures with a fixed access
// key and secret.
//
// The gateway is started once per test binary, on first use (versitygw
// allows one gateway per process), and each test gets its own fresh bucket:
//
//	func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		opts := s3test.NewBucket(t) // s3.Options for a new, empty bucket
//		b, err := s3.New(t.Context(), opts)
//		...
//	}
//
// Main stops the gateway and removes its folder after the tests; without
// it the gateway simply dies with the process. If the gateway cannot start,
// every test that asks for it fails (never skips) with the reason.
//
// Trap: versitygw's posix backend changes the process's working directory
// to its root folder (os.Chdir) and works with relative paths from there.
// Tests in a binary that uses s3test must not rely on the working directory
// (resolve testdata paths before the first call, or use absolute paths), and
// must not change it.
package s3test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"

	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/s3"
)

// Credentials and region of the test gateway.
const (
	AccessKeyID     = "s3test-access"
	SecretAccessKey = "s3test-secret-0123456789"
	Region          = "us-east-1"
)

// startTimeout bounds how long the gateway may take to answer requests.
const startTimeout = 20 * time.Second

// Server is the running gateway.
type Server struct {
	// Endpoint is the gateway's base URL, "http://127.0.0.1:<port>".
	Endpoint string
	// Client is an SDK client for the gateway with the root credentials.
	Client *awss3.Client

	root    string // posix backend root
	sidecar string // metadata folder when the filesystem has no xattrs
	cancel  context.CancelFunc
	done    chan struct{} // closed when the gateway has shut down
	runErr  error         // RunVersityGW's result, valid after done
	buckets atomic.Int64
}

var shared = connectorstest.Shared[*Server]{What: "s3test: start versitygw", Start: start, Stop: (*Server).stop}

// Start returns the shared gateway, starting it on first use. It fails t
// if the gateway cannot start.
func Start(t testing.TB) *Server {
	t.Helper()
	return shared.Get(t)
}

// Main runs the tests, then stops the gateway (if a test started it) and
// removes its folder. Use it from TestMain: os.Exit(s3test.Main(m)).
func Main(m *testing.M) int { return shared.Main(m) }

// Shutdown stops the gateway (if it was started) and removes its folder,
// for a TestMain that runs another package's Main.
func Shutdown() error { return shared.Shutdown() }

// NewBucket creates a fresh, empty bucket on the shared gateway and returns
// the options to reach it. It fails t if the gateway is not running.
func NewBucket(t testing.TB) s3.Options {
	t.Helper()
	return Start(t).NewBucket(t)
}

// NewBucket creates a fresh, empty bucket and returns the options to reach
// it with s3.New. The bucket is left in place; Main removes them all.
func (s *Server) NewBucket(t testing.TB) s3.Options {
	t.Helper()
	name := connectorstest.BucketName(t.Name(), s.buckets.Add(1))
	if _, err := s.Client.CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("s3test: create bucket %q: %v", name, err)
	}
	return s.Options(name)
}

// Options returns the options to reach bucket on the gateway with the
// root credentials. PartSize is s3.MinPartSize, so that multipart uploads
// start at 5 MiB.
func (s *Server) Options(bucket string) s3.Options {
	return s3.Options{
		Bucket:          bucket,
		Region:          Region,
		Endpoint:        s.Endpoint,
		PathStyle:       true,
		AccessKeyID:     AccessKeyID,
		SecretAccessKey: SecretAccessKey,
		PartSize:        s3.MinPartSize,
	}
}

func start() (*Server, error) {
	root, err := os.MkdirTemp("", "s3test-root-*")
	if err != nil {
		return nil, err
	}
	s := &Server{root: root}
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		// tmpfs without user xattrs, for example: keep metadata in files.
		if s.sidecar, err = os.MkdirTemp("", "s3test-meta-*"); err != nil {
			s.removeDirs()
			return nil, err
		}
	}
	// A free port can be taken between choosing and binding it: retry.
	var errs []error
	for range 3 {
		err := s.run()
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
	}
	s.removeDirs()
	return nil, errors.Join(errs...)
}

// run starts the gateway on a free port and waits until it answers.
func (s *Server) run() error {
	var ms meta.MetadataStorer = meta.XattrMeta{}
	if s.sidecar != "" {
		sc, err := meta.NewSideCar(s.sidecar)
		if err != nil {
			return fmt.Errorf("sidecar metadata: %w", err)
		}
		ms = sc
	}
	be, err := posix.New(s.root, ms, posix.PosixOpts{SideCarDir: s.sidecar})
	if err != nil {
		return fmt.Errorf("posix backend: %w", err)
	}
	addr, err := connectorstest.FreeAddr()
	if err != nil {
		return err
	}
	cfg := &embedgw.Config{
		RootUserAccess:    AccessKeyID,
		RootUserSecret:    SecretAccessKey,
		Region:            Region,
		Ports:             []string{addr},
		MaxConnections:    1000,
		MaxRequests:       1000,
		MultipartMaxParts: 10000,
		Quiet:             true,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.runErr = embedgw.RunVersityGW(ctx, be, cfg)
	}()

	s.Endpoint = "http://" + addr
	s.Client = awss3.NewFromConfig(aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
	}, func(o *awss3.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.UsePathStyle = true
	})

	deadline := time.Now().Add(startTimeout)
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := s.Client.ListBuckets(rctx, &awss3.ListBucketsInput{})
		rcancel()
		if err == nil {
			s.cancel, s.done = cancel, done
			return nil
		}
		select {
		case <-done:
			cancel()
			return fmt.Errorf("gateway on %s stopped: %v", addr, s.runErr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return fmt.Errorf("gateway on %s not answering after %v: %w", addr, startTimeout, err)
		}
	}
}

// stop shuts the gateway down and removes its folders.
func (s *Server) stop() error {
	s.cancel()
	var err error
	select {
	case <-s.done:
		if s.runErr != nil && !errors.Is(s.runErr, context.Canceled) {
			err = fmt.Errorf("gateway: %w", s.runErr)
		}
	case <-time.After(10 * time.Second):
		err = errors.New("gateway did not shut down within 10s")
	}
	return errors.Join(err, s.removeDirs())
}

func (s *Server) removeDirs() error {
	// The posix backend chdir'ed into root: leave it before removing it.
	os.Chdir(os.TempDir())
	err := os.RemoveAll(s.root)
	if s.sidecar != "" {
		err = errors.Join(err, os.RemoveAll(s.sidecar))
	}
	return err
}
