// Package azuritetest runs a real Azure Blob server for tests: Azurite
// (the azurite npm package, pinned in npm/package-lock.json beside this
// file), as a child process listening on 127.0.0.1 on a free port, keeping
// its data in a temporary folder and checking shared-key and SAS signatures
// for the well-known development account (AccountName, AccountKey).
//
// The server is started once per test binary, on first use, and each test
// gets its own fresh container:
//
//	func TestMain(m *testing.M) { os.Exit(azuritetest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		opts := azuritetest.NewBucket(t) // azure.Options for a new, empty container
//		b, err := azure.New(t.Context(), opts)
//		...
//	}
//
// Main stops the server and removes its folder after the tests; without it
// the server is killed when the test binary exits (Linux) but its folder
// stays. If Azurite cannot be installed or started, every test that asks
// for it fails (never skips) with the reason.
//
// # Installing Azurite
//
// The first Start installs Azurite when npm/node_modules does not hold the
// pinned version: "npm ci --prefix <npm dir> --no-audit --no-fund" (about
// 20 s and 360 MB), under an exclusive file lock so that test binaries
// starting at once install it once. This needs node (20 or later) and npm
// on PATH and the npm registry, and nothing else: "go test ./..." works on
// a fresh clone. CI installs it beforehand with the same command.
//
// # Outages
//
// Server.Stop and Server.Start take the server down and bring it back on
// the same port with the same data, for tests of what a client does when
// the connection goes away mid-stream. See Stop for what survives.
package azuritetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/exportstream/exportstream/connectors/azure"
	"github.com/exportstream/exportstream/connectors/connectorstest"
)

// The well-known development account every Azurite accepts. The key is
// public (it is in Microsoft's documentation), not a secret.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

const (
	// startTimeout bounds how long Azurite may take to answer requests.
	startTimeout = 30 * time.Second
	// stopTimeout bounds how long Stop waits for Azurite to save its
	// metadata before it kills it anyway.
	stopTimeout = 15 * time.Second
	// installTimeout bounds npm ci.
	installTimeout = 10 * time.Minute
	// closedMessage is what Azurite prints once a graceful shutdown has
	// saved its metadata.
	closedMessage = "Azurite Blob service successfully closed"
)

// Server is a running (or stopped) Azurite blob service.
type Server struct {
	// Endpoint is the blob service URL of the development account,
	// "http://127.0.0.1:<port>/devstoreaccount1". It does not change
	// across Stop and Start.
	Endpoint string
	// Client is an SDK client for the service with the account key.
	Client *service.Client

	root       string // temporary folder: data/ and azurite.log
	addr       string // "127.0.0.1:<port>"
	containers atomic.Int64

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed when cmd has been waited for
	log    *logFile
}

var shared = connectorstest.Shared[*Server]{What: "azuritetest", Start: New, Stop: (*Server).Close}

// Start returns the shared server, installing and starting Azurite on
// first use. It fails t if Azurite cannot start.
func Start(t testing.TB) *Server {
	t.Helper()
	return shared.Get(t)
}

// Main runs the tests, then stops the shared server (if a test started it)
// and removes its folder. Use it from TestMain: os.Exit(azuritetest.Main(m)).
func Main(m *testing.M) int { return shared.Main(m) }

// Shutdown stops the shared server (if a test started it) and removes its
// folder; later Starts fail. Main calls it; a TestMain that runs several
// such servers calls it after m.Run.
func Shutdown() error { return shared.Shutdown() }

// NewBucket creates a fresh, empty container on the shared server and
// returns the options to reach it. It fails t if the server is not running.
func NewBucket(t testing.TB) azure.Options {
	t.Helper()
	return Start(t).NewBucket(t)
}

// New installs Azurite if needed and starts a server of its own, on a free
// port and a new temporary folder. Most tests want the shared one (Start);
// a test that stops its server needs its own, and must Close it.
func New() (*Server, error) {
	dir, err := install()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "azuritetest-*")
	if err != nil {
		return nil, err
	}
	s := &Server{root: root}
	// A free port can be taken between choosing and binding it: retry.
	var errs []error
	for range 3 {
		if s.addr, err = connectorstest.FreeAddr(); err != nil {
			return nil, errors.Join(err, os.RemoveAll(root))
		}
		s.Endpoint = "http://" + s.addr + "/" + AccountName
		if err = s.start(dir); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if err != nil {
		return nil, errors.Join(append(errs, os.RemoveAll(root))...)
	}
	cred, err := service.NewSharedKeyCredential(AccountName, AccountKey)
	if err == nil {
		s.Client, err = service.NewClientWithSharedKeyCredential(s.Endpoint+"/", cred, nil)
	}
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// ConnectionString is a connection string for the development account on
// this server, with the account key.
func (s *Server) ConnectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=" + AccountName + ";AccountKey=" + AccountKey +
		";BlobEndpoint=" + s.Endpoint + ";"
}

// NewBucket creates a fresh, empty container (through the SDK) and returns
// the options to reach it with azure.New: its name and ConnectionString.
// The container is left in place; Close removes the server's data.
func (s *Server) NewBucket(t testing.TB) azure.Options {
	t.Helper()
	name := connectorstest.BucketName(t.Name(), s.containers.Add(1))
	if _, err := s.Client.CreateContainer(t.Context(), name, nil); err != nil {
		t.Fatalf("azuritetest: create container %q: %v", name, err)
	}
	return azure.Options{Container: name, ConnectionString: s.ConnectionString()}
}

// Stop takes the server down: it stops accepting connections at once,
// saves Azurite's metadata (what was committed before Stop survives a
// Start), then kills the process group, cutting the connections still
// open; requests on them fail. A request that completes during the
// second or so the shutdown takes may be lost. Stop of a stopped server
// does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stop()
}

// Start brings a stopped server back, on the same port and with the same
// data, and waits until it answers. Start of a running server does
// nothing.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	dir, err := install()
	if err != nil {
		return err
	}
	return s.startLocked(dir)
}

// Close stops the server and removes its folder.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.stop(), os.RemoveAll(s.root))
}

func (s *Server) start(npmDir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(npmDir)
}

// startLocked starts Azurite on s.addr and waits until it answers.
func (s *Server) startLocked(npmDir string) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("node is not on PATH (%v): Azurite needs Node.js 20 or later", err)
	}
	host, port, _ := net.SplitHostPort(s.addr)
	data := filepath.Join(s.root, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	log, err := newLogFile(filepath.Join(s.root, "azurite.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(node, filepath.Join(npmDir, "node_modules", "azurite", "dist", "src", "blob", "main.js"),
		"--blobHost", host, "--blobPort", port, "--location", data,
		"--skipApiVersionCheck", "--disableTelemetry", "--silent")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start Azurite: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		log.Close()
		close(exited)
	}()
	s.cmd, s.exited, s.log = cmd, exited, log

	deadline := time.Now().Add(startTimeout)
	for {
		if err := ping(s.Endpoint); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("azuritetest: Azurite on %s not answering after %v: %w; its output:\n%s", s.addr, startTimeout, err, log.tail())
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("azuritetest: Azurite on %s exited (%v); its output:\n%s", s.addr, cmd.ProcessState, log.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop is Stop with s.mu held.
func (s *Server) stop() error {
	if s.cmd == nil {
		return nil
	}
	pid := s.cmd.Process.Pid
	// SIGTERM: Azurite closes its listener and saves its metadata, but
	// keeps serving open connections; the kill below ends those.
	if err := terminate(pid); err == nil {
		deadline := time.After(stopTimeout)
	wait:
		for !s.log.contains(closedMessage) {
			select {
			case <-s.exited:
				break wait
			case <-deadline:
				break wait
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	killGroup(pid)
	var err error
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		err = fmt.Errorf("azuritetest: Azurite (pid %d) still running 10s after SIGKILL", pid)
	}
	s.cmd = nil
	return err
}

// ping checks that Azurite answers HTTP at endpoint.
func ping(endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?comp=list", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Server"), "Azurite-Blob") {
		return fmt.Errorf("something else answers: %s, Server %q", resp.Status, resp.Header.Get("Server"))
	}
	return nil
}

// npmDir is the folder of package.json that pins Azurite, beside this
// file.
func npmDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the azuritetest package's source")
	}
	dir := filepath.Join(filepath.Dir(file), "npm")
	if _, err := os.Stat(filepath.Join(dir, "package-lock.json")); err != nil {
		return "", fmt.Errorf("the Azurite pin is missing: %w", err)
	}
	return dir, nil
}

// install runs "npm ci" in the npm folder unless node_modules holds the
// pinned Azurite, under an exclusive lock, and returns the folder. It
// fails if node is not on PATH.
func install() (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("node is not on PATH (%v): Azurite needs Node.js 20 or later", err)
	}
	dir, err := npmDir()
	if err != nil {
		return "", err
	}
	want, err := pinnedVersion(dir)
	if err != nil {
		return "", err
	}
	if installedVersion(dir) == want {
		return dir, nil
	}
	unlock, err := lockFile(filepath.Join(os.TempDir(), "exportstream-azuritetest-npm.lock"))
	if err != nil {
		return "", fmt.Errorf("lock for npm ci: %w", err)
	}
	defer unlock()
	if installedVersion(dir) == want { // another test binary installed it meanwhile
		return dir, nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm is not on PATH (%v): the Azure tests need Node.js 20 or later and npm to install Azurite %s", err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--prefix", dir, "--no-audit", "--no-fund")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("install Azurite %s: npm ci --prefix %s: %w\n%s", want, dir, err, out)
	}
	if got := installedVersion(dir); got != want {
		return "", fmt.Errorf("npm ci installed Azurite %q, want %s", got, want)
	}
	return dir, nil
}

// pinnedVersion is the Azurite version package.json in dir asks for.
func pinnedVersion(dir string) (string, error) {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err == nil {
		err = json.Unmarshal(data, &pkg)
	}
	if err != nil {
		return "", fmt.Errorf("read the Azurite pin: %w", err)
	}
	v := pkg.Dependencies["azurite"]
	if v == "" {
		return "", fmt.Errorf("%s does not depend on azurite", filepath.Join(dir, "package.json"))
	}
	return v, nil
}

// installedVersion is the version of Azurite in dir's node_modules, or ""
// if there is none.
func installedVersion(dir string) string {
	var pkg struct {
		Version string `json:"version"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "node_modules", "azurite", "package.json"))
	if err != nil || json.Unmarshal(data, &pkg) != nil {
		return ""
	}
	return pkg.Version
}

// logFile collects a process's output in a file and remembers whether a
// line was seen.
type logFile struct {
	f    *os.File
	mu   sync.Mutex
	seen strings.Builder // the output so far, for contains and tail (Azurite says little with --silent)
}

func newLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &logFile{f: f}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen.Len() < 64<<10 {
		l.seen.Write(p)
	}
	return l.f.Write(p)
}

func (l *logFile) Close() error { return l.f.Close() }

func (l *logFile) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.seen.String(), s)
}

func (l *logFile) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.seen.String()
	return s[max(0, len(s)-4096):]
}
