// Package gcstest runs a GCS emulator for tests: fake-gcs-server
// (github.com/fsouza/fake-gcs-server, pinned as a Go tool in go.mod) as a
// separate process, over plain HTTP on 127.0.0.1 on a free port, with its
// filesystem backend on a temporary folder.
//
// It runs out of process so that the objects it holds (it keeps uploads and
// reads in its own memory) do not count in the test binary's Go heap, which
// the conformance suite measures while streaming large objects.
//
// The server is started once per test binary, on first use, and each test
// gets its own fresh bucket:
//
//	func TestMain(m *testing.M) { os.Exit(gcstest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		opts := gcstest.NewBucket(t) // gcs.Options for a new, empty bucket
//		b, err := gcs.New(t.Context(), opts)
//		...
//	}
//
// The options authenticate with a generated service-account key
// (Server.Account) whose token_uri points at a token endpoint the package
// serves in-process, so requests carry a bearer token (the emulator ignores
// it) and SignedURL signs with the key's private key; the URLs point at the
// emulator, which serves them without checking the signature. Clear
// CredentialsFile for the unauthenticated emulator mode.
//
// The binary is built on first use with `go tool -n fake-gcs-server`, run
// in the test's working directory, which builds it at the version go.mod
// pins into the Go build cache (about a minute cold, instant after). A
// missing go command, a failed build or a server that does not start fails
// every test that asks for it, with the reason; it never skips.
//
// Main stops the server and removes its folder after the tests; without it
// the server is killed when the test binary exits (on Linux, through the
// parent-death signal).
package gcstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/gcs"
)

const (
	// Tool is the Go tool name of the emulator, as go.mod's tool directive
	// pins it.
	Tool = "fake-gcs-server"
	// ProjectID is the project buckets are created in.
	ProjectID = "gcstest"

	buildTimeout = 10 * time.Minute
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// Server is a running (or stopped) fake-gcs-server process.
type Server struct {
	// URL is the server's base URL, "http://127.0.0.1:<port>". It stays the
	// same across Stop and Start.
	URL string
	// Endpoint is the JSON API endpoint, URL + "/storage/v1/".
	Endpoint string
	// Client is an unauthenticated SDK client for the server.
	Client *storage.Client
	// Account is the service account the Options authenticate and sign as.
	Account *ServiceAccount

	bin     string
	root    string // filesystem backend folder, kept across Stop and Start
	addr    string
	tokens  *httptest.Server
	buckets atomic.Int64

	mu   sync.Mutex
	proc *process // nil while stopped
}

var shared = connectorstest.Shared[*Server]{What: "gcstest: start " + Tool, Start: start, Stop: (*Server).close}

// Start returns the shared server, starting it on first use. It fails t if
// the server cannot be built or started.
func Start(t testing.TB) *Server {
	t.Helper()
	return shared.Get(t)
}

// Main runs the tests, then stops the server (if a test started it) and
// removes its folder. Use it from TestMain: os.Exit(gcstest.Main(m)).
func Main(m *testing.M) int { return shared.Main(m) }

// Shutdown stops the shared server (if a test started it) and removes its
// folder; later Starts fail. Main calls it; a TestMain that runs several
// such servers calls it after m.Run.
func Shutdown() error { return shared.Shutdown() }

// NewBucket creates a fresh, empty bucket on the shared server and returns
// the options to reach it. It fails t if the server is not running.
func NewBucket(t testing.TB) gcs.Options {
	t.Helper()
	return Start(t).NewBucket(t)
}

// NewBucket creates a fresh, empty bucket and returns the options to reach
// it with gcs.New. The bucket is left in place; Main removes them all.
func (s *Server) NewBucket(t testing.TB) gcs.Options {
	t.Helper()
	name := connectorstest.BucketName(t.Name(), s.buckets.Add(1))
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	if err := s.Client.Bucket(name).Create(ctx, ProjectID, nil); err != nil {
		t.Fatalf("gcstest: create bucket %q: %v", name, err)
	}
	return s.Options(name)
}

// Options returns the options to reach bucket on the server, authenticated
// as Account (see the package documentation).
func (s *Server) Options(bucket string) gcs.Options {
	return gcs.Options{
		Bucket:          bucket,
		Endpoint:        s.Endpoint,
		CredentialsFile: s.Account.File,
	}
}

// Stop kills the server; its data stays. Requests fail with a refused
// connection until Start. Tests that stop the shared server must not run
// in parallel with others that use it.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.stop()
	s.proc = nil
	return err
}

// Start starts a stopped server again, on the same port and with the same
// data, and waits until it answers. It does nothing if the server runs.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	p, err := s.run()
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}

func start() (*Server, error) {
	bin, err := buildTool()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "gcstest-*")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, root: root}
	s.tokens = httptest.NewServer(http.HandlerFunc(s.serveToken))
	if s.Account, err = NewServiceAccount(root, s.tokens.URL+"/token"); err != nil {
		s.tokens.Close()
		os.RemoveAll(root)
		return nil, err
	}
	// A free port can be taken between choosing and binding it: retry.
	var errs []error
	for range 3 {
		if s.addr, err = connectorstest.FreeAddr(); err != nil {
			errs = append(errs, err)
			break
		}
		s.URL = "http://" + s.addr
		s.Endpoint = s.URL + "/storage/v1/"
		p, err := s.run()
		if err == nil {
			s.proc = p
			break
		}
		errs = append(errs, err)
	}
	if s.proc == nil {
		s.tokens.Close()
		os.RemoveAll(root)
		return nil, errors.Join(errs...)
	}
	s.Client, err = storage.NewClient(context.Background(), option.WithEndpoint(s.Endpoint), option.WithoutAuthentication())
	if err != nil {
		s.close()
		return nil, fmt.Errorf("create client: %w", err)
	}
	return s, nil
}

// serveToken is the token endpoint of Account: it checks the JWT
// assertion's signature and hands out a bearer token.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := s.Account.verifyAssertion(r); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%q}`, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"gcstest-token","token_type":"Bearer","expires_in":3600}`)
}

// buildTool builds the pinned emulator (or finds it in the build cache)
// and returns the binary's path.
func buildTool() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "tool", "-n", Tool)
	// In the module that pins the tool, whatever the process's working
	// directory is (s3test, for one, changes it).
	if _, file, _, ok := runtime.Caller(0); ok {
		cmd.Dir = filepath.Dir(file)
	}
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build the %s tool pinned in go.mod (go tool -n %s): %w: %s", Tool, Tool, err, strings.TrimSpace(stderr.String()))
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("go tool -n %s printed %q: %w", Tool, bin, err)
	}
	return bin, nil
}

// run starts the server process on s.addr and waits until it answers.
func (s *Server) run() (*process, error) {
	_, port, _ := net.SplitHostPort(s.addr)
	cmd := exec.Command(s.bin,
		"-scheme", "http",
		"-host", "127.0.0.1",
		"-port", port,
		"-public-host", s.addr,
		"-external-url", s.URL,
		"-backend", "filesystem",
		"-filesystem-root", filepath.Join(s.root, "data"),
		"-log-level", "error",
	)
	p, err := startProcess(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := hc.Get(s.Endpoint + "b")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
			err = fmt.Errorf("listing buckets: %s", resp.Status)
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s on %s exited (%v): %s", Tool, s.addr, p.err, p.output.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stopErr := p.stop()
			return nil, fmt.Errorf("%s on %s not answering after %v: %w (output: %s)", Tool, s.addr, startTimeout, errors.Join(err, stopErr), p.output.String())
		}
	}
}

// close stops the server for good and removes its folder.
func (s *Server) close() error {
	err := s.Stop()
	if s.Client != nil {
		err = errors.Join(err, s.Client.Close())
	}
	s.tokens.Close()
	return errors.Join(err, os.RemoveAll(s.root))
}

// process is one run of the server.
type process struct {
	cmd    *exec.Cmd
	output *tail
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
}

// startProcess starts cmd in its own process group, with its output kept
// for error messages. On Linux the process gets SIGKILL if the test binary
// dies: the thread that starts it stays locked until it exits, since the
// parent-death signal follows that thread.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, output: &tail{max: 8 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	cmd.SysProcAttr = sysProcAttr()
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			p.err = err
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop terminates the process group, then kills it if it lingers, and
// waits for the process to exit.
func (p *process) stop() error {
	terminate(p.cmd.Process)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	kill(p.cmd.Process)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", Tool, p.cmd.Process.Pid)
	}
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
