//go:build linux

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/events/simulate"
	"github.com/exportstream/exportstream/pipeline"
)

// The fault suite (issue 10): the built service, several processes of it,
// on an in-process 3-node NATS cluster (R3 streams and buckets, as
// deploy/nats runs), one shared bucket. Each test injects one fault while
// events flow and exports are written, clears it, and checks that
//   - nothing is lost: once everything is published, every definition's
//     newest export has the content of a single, never-disturbed replica
//     fed the same stream (faultReference), and the state bucket holds as
//     many keys;
//   - no two writers: no two exports of one definition were ever written
//     at once (for a local bucket, from the objects' write intervals seen
//     on disk, writeIntervals; for GCS, from the export records);
//   - latest.json never moves back, and no manifest names a missing or
//     different object (checked while running and at the end);
//   - the recovery time: the first export after the fault clears comes
//     within faultRecovery.
//
// The tests are long (about a minute each: most of it the outage itself)
// and are left out by -short.
const (
	// faultOutage is how long a bucket or the NATS store stays broken, as
	// issue 10 asks ("for 30 s"): long enough for the retries to back off
	// to retry.max_backoff and stay there.
	faultOutage = 30 * time.Second
	// faultRecovery bounds the time from the fault clearing to the first
	// export written after it.
	faultRecovery = 10 * time.Second
	// faultEvents is how many simulated events each test publishes (of the
	// crash test's stream: the same project and definitions).
	faultEvents = 8000
	// faultAckWait is nats.ack_wait: the events a killed replica held are
	// redelivered this long after (the default, 30s, only slows the test).
	faultAckWait = 5 * time.Second
	// faultLiveness is the pipeline's default liveness TTL: a killed
	// replica's leases are taken over this long after its last heartbeat.
	faultLiveness = 10 * time.Second
)

func TestMain(m *testing.M) {
	code := gcstest.Main(m)
	// The process benchmark's S3 and Azure servers
	// (EXPORTSTREAM_BENCH_BUCKET).
	for name, shutdown := range map[string]func() error{"s3test": s3test.Shutdown, "azuritetest": azuritetest.Shutdown} {
		if err := shutdown(); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			code = max(code, 1)
		}
	}
	if faultBuild.dir != "" {
		os.RemoveAll(faultBuild.dir)
	}
	os.Exit(code)
}

// faultBuild is the service binary, built once per test binary run.
var faultBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

func faultBinary(t *testing.T) string {
	t.Helper()
	faultBuild.once.Do(func() {
		start := time.Now()
		faultBuild.dir, faultBuild.err = os.MkdirTemp("", "exportstream-faults-")
		if faultBuild.err != nil {
			return
		}
		goCmd := "go"
		if root := os.Getenv("GOROOT"); root != "" && pathExists(filepath.Join(root, "bin", "go")) {
			goCmd = filepath.Join(root, "bin", "go")
		}
		faultBuild.path = filepath.Join(faultBuild.dir, "exportstream")
		cmd := exec.Command(goCmd, "build", "-o", faultBuild.path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			faultBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		t.Logf("built the service in %v", time.Since(start).Round(time.Millisecond))
	})
	if faultBuild.err != nil {
		t.Fatal(faultBuild.err)
	}
	return faultBuild.path
}

// faultRef is what a single replica, never disturbed, exports from the
// whole stream: content_sha256 by definition, and the state bucket's key
// count. It is computed once per test binary run.
var faultRef struct {
	mu     sync.Mutex
	hashes map[string]string
	keys   int
}

func faultReference(t *testing.T, bin string, stream []simulate.Event) (map[string]string, int) {
	t.Helper()
	faultRef.mu.Lock()
	defer faultRef.mu.Unlock()
	if faultRef.hashes != nil {
		return faultRef.hashes, faultRef.keys
	}
	start := time.Now()
	ref := newServiceInstance(t, bin, "fault-reference")
	ref.start(t)
	js := ref.waitRunning(t)
	if err := (&feeder{events: stream}).start(t, js, len(stream)).wait(); err != nil {
		t.Fatalf("publish to the reference: %v", err)
	}
	got := ref.waitConverged(t, js, newBucketScan(ref.bucket), 90*time.Second)
	hashes := map[string]string{}
	for name, m := range got {
		hashes[name] = m.ContentHash
	}
	keys, _ := stateKeys(t, js)
	ref.kill(t)
	t.Logf("reference (one replica, embedded NATS, never disturbed): %d events exported in %v", len(stream), time.Since(start).Round(time.Millisecond))
	faultRef.hashes, faultRef.keys = hashes, keys
	return hashes, keys
}

// faultStream is the stream every fault test publishes.
var faultStream = sync.OnceValue(func() []simulate.Event { return simulatedStream(faultEvents) })

// ---- the world: a NATS cluster, a bucket, service processes ----

type faultWorld struct {
	t       *testing.T
	bin     string
	name    string
	cluster *eventstest.Cluster
	dir     string
	// The bucket: a local folder (bucketDir) or GCS (behind proxy).
	bucketDir string
	gcsOpts   gcs.Options
	proxy     *faultProxy
	bucket    connectors.Bucket // the test's own handle on it

	procs    []*faultProc
	nc       *nats.Conn
	js       jetstream.JetStream
	feed     *feeder
	latest   *latestWatch
	temps    *tempWatch     // local buckets: the writers' temporary files
	recs     *recordWriters // GCS: export records in progress
	scan     *bucketScan    // local buckets: the crash test's checks
	stopScan func() error
}

type faultOptions struct {
	procs int
	// unshare runs each process as pid 1 of its own PID namespace.
	unshare bool
	// bucketDir: a local bucket in this folder; else GCS.
	bucketDir string
	gcs       bool
	// adjust changes the NATS nodes' options.
	adjust func(*server.Options)
}

func newFaultWorld(t *testing.T, o faultOptions) *faultWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: about a minute per test; runs without -short")
	}
	bin := faultBinary(t)
	w := &faultWorld{t: t, bin: bin, name: t.Name(), dir: t.TempDir(), feed: &feeder{events: faultStream()}}
	w.cluster = eventstest.NewCluster(t, 3, o.adjust)
	nc, err := nats.Connect(w.cluster.URLs(), nats.Name("fault-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	w.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	var connYAML string
	switch {
	case o.gcs:
		srv := gcstest.Start(t)
		opts := srv.NewBucket(t)
		w.proxy = startFaultProxy(t, opts.Endpoint)
		w.gcsOpts = opts
		w.gcsOpts.Endpoint = w.proxy.endpoint
		// The test reads the server directly: its reads do not count as
		// the service's requests, and it sees the bucket during the outage
		// of the proxy too (the server is stopped as well).
		b, err := gcs.New(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		w.bucket = b
		connYAML = fmt.Sprintf("    type: gcs\n    gcs: {bucket: %s, endpoint: %q, credentials_file: %s}\n",
			opts.Bucket, w.gcsOpts.Endpoint, opts.CredentialsFile)
		w.recs = watchRecordWriters(t, w.js, crashPrefix+"_EXPORTS")
	default:
		w.bucketDir = o.bucketDir
		if w.bucketDir == "" {
			w.bucketDir = filepath.Join(w.dir, "bucket")
		}
		b, err := local.New(w.bucketDir)
		if err != nil {
			t.Fatal(err)
		}
		w.bucket = b
		w.temps = watchTemps(t, filepath.Join(w.bucketDir, ".tmp"))
		w.scan = newBucketScan(w.bucketDir)
		connYAML = fmt.Sprintf("    type: local\n    local: {dir: %s}\n", w.bucketDir)
	}
	for i := range o.procs {
		w.procs = append(w.procs, w.newProc(fmt.Sprintf("replica-%d", i+1), connYAML, o.unshare))
	}
	t.Cleanup(w.stopAll)
	// One after another: the first creates the streams and buckets. (Started
	// at once on a fresh R3 cluster, a replica may exit with "exports stream
	// DIFFGRAM_EXPORTS: context deadline exceeded": pipeline.Open creates
	// that stream without asking again, as createKV does, while the cluster
	// elects the new stream's leader.)
	for _, p := range w.procs {
		p.start(t)
		p.waitRunning(t)
	}
	w.latest = watchLatest(t, w.bucket)
	if w.scan != nil {
		w.stopScan = w.scan.watch(t.Context())
	}
	return w
}

// stopAll kills the running processes and, when the test failed, logs
// the last lines of each one's logs.
func (w *faultWorld) stopAll() {
	for _, p := range w.procs {
		p.stop()
	}
	if w.t.Failed() {
		for _, p := range w.procs {
			for _, l := range p.logs {
				w.t.Logf("---- %s: last lines of %s ----\n%s", p.name, filepath.Base(l), logTail(l, 30))
			}
		}
	}
}

// faultProc is one service process (restartable).
type faultProc struct {
	name, dir, config string
	bin               string
	unshare           bool
	owner             string // lease owner of the current run
	http              string // the current run's HTTP address
	cur               *serviceProcess
	logs              []string
}

func (w *faultWorld) newProc(name, connYAML string, unshare bool) *faultProc {
	t := w.t
	p := &faultProc{name: name, dir: filepath.Join(w.dir, name), bin: w.bin, unshare: unshare}
	p.config = filepath.Join(p.dir, "config.yaml")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "nats:\n  url: %q\n  replicas: 3\n  ack_wait: %s\n", w.cluster.URLs(), faultAckWait)
	fmt.Fprintf(&cfg, "connections:\n  - name: bucket\n%s", connYAML)
	fmt.Fprintf(&cfg, "exports:\n")
	for _, d := range crashDefs {
		fmt.Fprintf(&cfg, "  - name: %s\n    project: %s\n    source: %s\n    completion: all\n    connection: bucket\n"+
			"    path: exports/%s/\n    coalesce: %s\n", d.name, crashProject, d.source, d.name, d.coalesce)
		if d.formats != "" {
			fmt.Fprintf(&cfg, "    formats: %s\n", d.formats)
		}
	}
	fmt.Fprintf(&cfg, "state:\n  dir: %s\nhttp:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n  format: json\n", filepath.Join(p.dir, "state"))
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.config, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *faultProc) start(t *testing.T) {
	t.Helper()
	logPath := filepath.Join(p.dir, fmt.Sprintf("run-%d.log", len(p.logs)+1))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := []string{p.bin, "run", "--config", p.config}
	if p.unshare {
		args = append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", p.name, err)
	}
	sp := &serviceProcess{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		sp.err = cmd.Wait()
		close(sp.done)
	}()
	p.cur = sp
	p.owner = ""
	p.logs = append(p.logs, logPath)
}

// waitRunning waits for the start line and reads the lease owner from it.
func (p *faultProc) waitRunning(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(p.cur.log)
		for l := range strings.SplitSeq(string(b), "\n") {
			if !strings.Contains(l, `"msg":"exportstream running"`) {
				continue
			}
			var line struct{ Owner, HTTP string }
			if err := json.Unmarshal([]byte(l), &line); err != nil || line.Owner == "" {
				t.Fatalf("%s: start line without the lease owner: %s", p.name, l)
			}
			p.owner, p.http = line.Owner, line.HTTP
			return
		}
		select {
		case <-p.cur.done:
			t.Fatalf("%s: exited: %v\n%s", p.name, p.cur.err, logTail(p.cur.log, 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not running after 60s\n%s", p.name, logTail(p.cur.log, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill SIGKILLs the process group and waits for it to be gone.
func (p *faultProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cur.sigkill(); err != nil {
		t.Fatalf("%s: kill: %v", p.name, err)
	}
	select {
	case <-p.cur.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still there 10s after SIGKILL", p.name)
	}
	p.cur = nil
}

func (p *faultProc) stop() {
	if p.cur != nil {
		_ = p.cur.sigkill()
		<-p.cur.done
		p.cur = nil
	}
}

// checkAlive fails the test if a running process exited by itself.
func (w *faultWorld) checkAlive() {
	w.t.Helper()
	for _, p := range w.procs {
		if p.cur == nil {
			continue
		}
		select {
		case <-p.cur.done:
			w.t.Fatalf("%s exited: %v\n%s", p.name, p.cur.err, logTail(p.cur.log, 30))
		default:
		}
	}
}

// publish publishes the stream up to until, again after a failure (a node
// gone, the store full) until it is stored or timeout passes.
func (w *faultWorld) publish(until int, timeout time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := w.feed.start(w.t, w.js, until).wait()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("publish up to event %d: %v", until, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastSeq is the events stream's last sequence.
func (w *faultWorld) lastSeq() uint64 {
	w.t.Helper()
	info, err := eventStreamInfo(w.t.Context(), w.js)
	if err != nil {
		w.t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitIdle waits until the replicas have acked every event, no dirty
// mark is left and every definition has a latest.json: everything
// published is exported.
func (w *faultWorld) waitIdle(timeout time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.checkAlive()
		why := w.idle()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("not idle after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finish publishes the rest of the stream, waits until the service has
// converged to the reference, and checks everything the suite promises.
// cleared is when the fault cleared (zero: the test measured its recovery
// itself).
func (w *faultWorld) finish(cleared time.Time) {
	w.finishWithin(cleared, faultRecovery)
}

// finishWithin is finish with another bound on the recovery time.
func (w *faultWorld) finishWithin(cleared time.Time, bound time.Duration) {
	t := w.t
	if !cleared.IsZero() {
		w.recovery(cleared, bound)
	}
	w.publish(len(w.feed.events), 60*time.Second)
	want, wantKeys := faultReference(t, w.bin, w.feed.events)
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	for {
		w.checkAlive()
		why := w.convergence(want)
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged to the reference's exports within 90s: %s", why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("converged to the reference's exports %v after the last publish", time.Since(start).Round(time.Millisecond))
	if keys, _ := stateKeys(t, w.js); keys != wantKeys {
		t.Errorf("state bucket holds %d keys, the reference's %d: events were lost", keys, wantKeys)
	}
	w.checkBucket()
}

// recovery measures and checks the time from cleared to the first export
// written after it.
func (w *faultWorld) recovery(cleared time.Time, bound time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if at, name, id, ok := w.latest.firstAfter(cleared, ""); ok {
			rec := at.Sub(cleared)
			w.t.Logf("recovery: first export after the fault cleared in %v (%s, export %d)", rec.Round(time.Millisecond), name, id)
			if rec > bound {
				w.t.Errorf("first export %v after the fault cleared, want <= %v", rec.Round(time.Millisecond), bound)
			}
			return
		}
		w.checkAlive()
		if time.Now().After(deadline) {
			w.t.Fatalf("no export within 60s after the fault cleared")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// convergence returns why the cluster has not converged to want yet ("":
// it has): the consumer has acked everything, no dirty mark is left and
// every definition's latest.json has the reference's content.
func (w *faultWorld) convergence(want map[string]string) string {
	if why := w.idle(); why != "" {
		return why
	}
	var diffs []string
	for name, h := range want {
		m, ok := w.latest.current(name)
		if !ok || m.ContentHash != h {
			diffs = append(diffs, fmt.Sprintf("%s: latest export %d has content_sha256 %.12s, the reference %.12s", name, m.ID, m.ContentHash, h))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; ")
}

// idle returns why the replicas are not idle ("": they are): events not
// acked, dirty marks left, a definition without latest.json.
func (w *faultWorld) idle() string {
	ctx, cancel := context.WithTimeout(w.t.Context(), 5*time.Second)
	defer cancel()
	c, err := w.js.Consumer(ctx, crashStream, crashConsumer)
	if err != nil {
		return "consumer: " + err.Error()
	}
	info, err := c.Info(ctx)
	if err != nil {
		return "consumer info: " + err.Error()
	}
	sinfo, err := eventStreamInfo(ctx, w.js)
	if err != nil {
		return "stream info: " + err.Error()
	}
	// NumPending lags a publish a little: the ack floor is the sure sign.
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < sinfo.State.LastSeq {
		return fmt.Sprintf("consumer has %d pending and %d unacked events, acked up to %d of %d",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, sinfo.State.LastSeq)
	}
	kv, err := w.js.KeyValue(ctx, crashPrefix+"_DIRTY")
	if err != nil {
		return "dirty bucket: " + err.Error()
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return "dirty marks: " + err.Error()
	}
	if len(keys) > 0 {
		return fmt.Sprintf("dirty marks left: %v", keys)
	}
	for _, d := range crashDefs {
		if _, ok := w.latest.current(d.name); !ok {
			return d.name + ": no latest.json seen yet"
		}
	}
	return ""
}

// checkBucket: latest.json never went back, no manifest names a missing
// or different object, and no two exports of one definition were written
// at once.
func (w *faultWorld) checkBucket() {
	t := w.t
	if err := w.latest.err(); err != nil {
		t.Errorf("latest.json: %v", err)
	}
	if w.scan != nil {
		if err := w.stopScan(); err != nil {
			t.Errorf("bucket while running: %v", err)
		}
		if err := w.scan.check(); err != nil {
			t.Errorf("bucket at the end: %v", err)
		}
	}
	if ps := checkManifests(t.Context(), w.bucket); len(ps) > 0 {
		t.Errorf("manifests:\n%s", strings.Join(ps, "\n"))
	}
	switch {
	case w.temps != nil:
		spans := writeIntervals(t, w.bucketDir, w.temps)
		n := 0
		for _, s := range spans {
			n += len(s)
		}
		if ps := overlaps(spans); len(ps) > 0 {
			t.Errorf("two writers of one definition at once (objects of two exports written at the same time):\n%s", strings.Join(ps, "\n"))
		}
		t.Logf("no overlapping writer: %d objects' write intervals checked", n)
	case w.recs != nil:
		w.recs.mu.Lock()
		for name, n := range w.recs.most {
			if n > 1 {
				t.Errorf("%s: %d exports in progress at once in the export records, want at most 1", name, n)
			}
		}
		t.Logf("no overlapping writer: at most one export in progress per definition in %d record updates", w.recs.updates)
		w.recs.mu.Unlock()
	}
	var written []string
	for _, d := range crashDefs {
		written = append(written, fmt.Sprintf("%s %d", d.name, w.latest.count(d.name)))
	}
	t.Logf("latest.json changes seen: %s", strings.Join(written, ", "))
}

// metric sums one series ("name{labels}" as /metrics prints it) over the
// running processes, and counts the processes that have it.
func (w *faultWorld) metric(series string) (sum float64, n int) {
	for _, p := range w.procs {
		if p.cur == nil {
			continue
		}
		resp, err := http.Get("http://" + p.http + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				sum += f
				n++
			}
		}
	}
	return sum, n
}

// bucketOutageShows checks that a bucket outage shows where the README's
// faults table says it does: failed writes counted, the connection's last
// write not ok, export failures counted, "export failed; retrying" logged.
//
// known, when not "", names a known defect that hides the outage: the
// finding is logged, not failed (see the callers).
func (w *faultWorld) bucketOutageShows(known string) {
	w.t.Helper()
	errs, _ := w.metric(`exportstream_bucket_errors_total{connection="bucket",op="write"}`)
	okSum, okN := w.metric(`exportstream_bucket_last_write_ok{connection="bucket"}`)
	var failures float64
	for _, d := range crashDefs {
		f, _ := w.metric(`exportstream_export_failures_total{definition="` + d.name + `"}`)
		failures += f
	}
	logged := countInLogs(w.procs, `"msg":"export failed; retrying"`)
	w.t.Logf("during the outage: %v failed bucket writes counted, %v of %d replicas' last write ok, %v export failures counted, %d logged",
		errs, okSum, okN, failures, logged)
	hidden := errs == 0 || okSum == float64(okN) || failures == 0 || logged == 0
	if hidden && known != "" {
		w.t.Logf("KNOWN DEFECT, the outage does not show: %s", known)
		return
	}
	if hidden {
		w.t.Errorf("the bucket outage does not show: exportstream_bucket_errors_total{op=write} %v, exportstream_bucket_last_write_ok %v of %d replicas, "+
			"exportstream_export_failures_total %v, %d \"export failed; retrying\" logged; want all rising and a last write not ok",
			errs, okSum, okN, failures, logged)
	}
}

// procByOwner returns the running process whose lease owner is owner.
func (w *faultWorld) procByOwner(owner string) *faultProc {
	for _, p := range w.procs {
		if p.cur != nil && p.owner == owner {
			return p
		}
	}
	return nil
}

// ---- watching latest.json ----

// latestWatch reads every definition's latest.json every 50 ms and keeps
// each new version seen, with when it was seen; a version with a lower
// export id than one seen before is an error.
type latestWatch struct {
	mu       sync.Mutex
	versions map[string][]latestVersion
	problems []string
}

type latestVersion struct {
	seen time.Time
	doc  manifestDoc
}

func watchLatest(t *testing.T, b connectors.Bucket) *latestWatch {
	names := make([]string, len(crashDefs))
	for i, d := range crashDefs {
		names[i] = d.name
	}
	return watchLatestOf(t, b, names)
}

// watchLatestOf is watchLatest for the named definitions.
func watchLatestOf(t *testing.T, b connectors.Bucket, names []string) *latestWatch {
	lw := &latestWatch{versions: map[string][]latestVersion{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		etags := map[string]string{}
		for ctx.Err() == nil {
			for _, name := range names {
				lw.poll(ctx, b, name, etags)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return lw
}

func (lw *latestWatch) poll(ctx context.Context, b connectors.Bucket, name string, etags map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	key := "exports/" + name + "/latest.json"
	a, err := b.Attributes(ctx, key)
	if err != nil || a.ETag == etags[name] {
		return
	}
	seen := time.Now()
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return
	}
	var m manifestDoc
	err = json.NewDecoder(r).Decode(&m)
	r.Close()
	if err != nil {
		return // replaced while read: the next poll reads it again
	}
	etags[name] = a.ETag
	lw.mu.Lock()
	defer lw.mu.Unlock()
	vs := lw.versions[name]
	if n := len(vs); n > 0 {
		prev := vs[n-1].doc
		if m.ID == prev.ID {
			return
		}
		if m.ID < prev.ID {
			lw.problems = append(lw.problems, fmt.Sprintf("%s: went back from export %d to %d", name, prev.ID, m.ID))
		}
	}
	lw.versions[name] = append(vs, latestVersion{seen, m})
}

func (lw *latestWatch) err() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.problems) > 0 {
		return errors.New(strings.Join(lw.problems, "; "))
	}
	return nil
}

func (lw *latestWatch) current(name string) (manifestDoc, bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	vs := lw.versions[name]
	if len(vs) == 0 {
		return manifestDoc{}, false
	}
	return vs[len(vs)-1].doc, true
}

func (lw *latestWatch) count(name string) int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.versions[name])
}

// firstAfter returns the first new latest.json seen after t, of the
// definition name ("": any).
func (lw *latestWatch) firstAfter(t time.Time, name string) (at time.Time, def string, id int64, ok bool) {
	return lw.firstReflecting(t, name, 0)
}

// firstReflecting is firstAfter, of a latest.json whose watermark is at
// least seq.
func (lw *latestWatch) firstReflecting(t time.Time, name string, seq uint64) (at time.Time, def string, id int64, ok bool) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for n, vs := range lw.versions {
		if name != "" && n != name {
			continue
		}
		for _, v := range vs {
			if v.seen.After(t) && v.doc.Watermark >= seq && (!ok || v.seen.Before(at)) {
				at, def, id, ok = v.seen, n, v.doc.ID, true
			}
		}
	}
	return at, def, id, ok
}

// checkManifests reads every manifest and latest.json under exports/ and
// checks that the objects they name are there, with their size and
// SHA-256: never a manifest naming a missing object.
func checkManifests(ctx context.Context, b connectors.Bucket) []string {
	var problems []string
	var keys []string
	if err := b.List(ctx, "exports/", func(a connectors.Attributes) bool {
		keys = append(keys, a.Key)
		return true
	}); err != nil {
		return []string{"list: " + err.Error()}
	}
	sums := map[string]string{}
	sum := func(key string) (string, int64, error) {
		r, err := b.NewReader(ctx, key)
		if err != nil {
			return "", 0, err
		}
		defer r.Close()
		h := sha256.New()
		n, err := io.Copy(h, r)
		return hex.EncodeToString(h.Sum(nil)), n, err
	}
	check := func(key, sha string, size int64) error {
		got, n, err := sum(key)
		if err != nil {
			return err
		}
		if got != sha || n != size {
			return fmt.Errorf("has %d bytes, sha256 %.12s; named with %d bytes, %.12s", n, got, size, sha)
		}
		sums[key] = got
		return nil
	}
	for _, key := range keys {
		base := path.Base(key)
		if base != "latest.json" && !strings.HasSuffix(base, ".manifest.json") {
			continue
		}
		r, err := b.NewReader(ctx, key)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", key, err))
			continue
		}
		var m manifestDoc
		err = json.NewDecoder(r).Decode(&m)
		r.Close()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", key, err))
			continue
		}
		if m.Status != "complete" {
			problems = append(problems, fmt.Sprintf("%s: status %q", key, m.Status))
		}
		if err := check(m.DataKey, m.SHA256, m.Bytes); err != nil {
			problems = append(problems, fmt.Sprintf("%s names %s, which %v", key, m.DataKey, err))
		}
		for f, o := range m.Formats {
			if err := check(o.Key, o.SHA256, o.Bytes); err != nil {
				problems = append(problems, fmt.Sprintf("%s names its %s object %s, which %v", key, f, o.Key, err))
			}
		}
		if base == "latest.json" {
			if _, err := b.Attributes(ctx, m.ManifestKey); err != nil {
				problems = append(problems, fmt.Sprintf("%s names manifest %s: %v", key, m.ManifestKey, err))
			}
		}
	}
	return problems
}

// ---- no two writers ----

// tempWatch records when each temporary file of a local bucket was
// created (inotify on its .tmp folder), by inode: a writer's object keeps
// its inode when it is published under its key, so an object's write
// began when its temporary file was created. It stands in for the birth
// time on file systems without one (an inode number may be reused, so
// that is second best).
type tempWatch struct {
	mu      sync.Mutex
	created map[uint64]time.Time
}

func watchTemps(t *testing.T, dir string) *tempWatch {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE); err != nil {
		syscall.Close(fd)
		t.Fatalf("inotify %s: %v", dir, err)
	}
	tw := &tempWatch{created: map[uint64]time.Time{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer syscall.Close(fd)
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(fd, buf)
			now := time.Now()
			if err != nil || n <= 0 {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				continue
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nameBytes := buf[off+syscall.SizeofInotifyEvent : off+syscall.SizeofInotifyEvent+int(ev.Len)]
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				name := strings.TrimRight(string(nameBytes), "\x00")
				if !strings.HasPrefix(name, "w-") {
					continue
				}
				var st syscall.Stat_t
				if syscall.Stat(filepath.Join(dir, name), &st) != nil {
					continue // already published or removed: too short to matter
				}
				tw.mu.Lock()
				tw.created[st.Ino] = now
				tw.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return tw
}

// writeSpan is one object of an export being written.
type writeSpan struct {
	key        string
	id         int64
	start, end time.Time
}

// writeIntervals returns, by definition, the write interval of every
// object of an export (data, other formats, manifest) in a local bucket:
// from its temporary file's creation (or, when that was not seen, its
// last write) to its last write.
func writeIntervals(t *testing.T, root string, tw *tempWatch) map[string][]writeSpan {
	t.Helper()
	births := 0
	defer func() { t.Logf("write intervals: %d objects' birth times read", births) }()
	tw.mu.Lock()
	defer tw.mu.Unlock()
	out := map[string][]writeSpan{}
	err := filepath.WalkDir(filepath.Join(root, "exports"), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		base := e.Name()
		id, err := strconv.ParseInt(strings.SplitN(base, "_", 2)[0], 10, 64)
		if err != nil {
			return nil // latest.json
		}
		// The object's inode was its writer's temporary file: its birth
		// time is when the write began. Without one (a file system that
		// does not keep it), the creation inotify saw; else the last write.
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME|unix.STATX_MTIME|unix.STATX_INO, &st); err != nil {
			return err
		}
		end := time.Unix(st.Mtime.Sec, int64(st.Mtime.Nsec))
		start, ok := time.Unix(st.Btime.Sec, int64(st.Btime.Nsec)), st.Mask&unix.STATX_BTIME != 0
		if ok {
			births++
		} else {
			start, ok = tw.created[st.Ino]
		}
		if !ok || start.After(end) {
			start = end
		}
		def := filepath.Base(filepath.Dir(p))
		out[def] = append(out[def], writeSpan{key: base, id: id, start: start, end: end})
		return nil
	})
	if err != nil {
		t.Fatalf("write intervals: %v", err)
	}
	return out
}

// overlaps returns the pairs of objects of two different exports of one
// definition that were written at the same time.
func overlaps(spans map[string][]writeSpan) []string {
	var out []string
	for def, ss := range spans {
		slices.SortFunc(ss, func(a, b writeSpan) int { return a.start.Compare(b.start) })
		for i, a := range ss {
			for _, b := range ss[i+1:] {
				if !b.start.Before(a.end) {
					break
				}
				if a.id != b.id {
					out = append(out, fmt.Sprintf("%s: %s written %s..%s, %s written %s..%s", def,
						a.key, a.start.Format("15:04:05.000000"), a.end.Format("15:04:05.000000"),
						b.key, b.start.Format("15:04:05.000000"), b.end.Format("15:04:05.000000")))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// recordWriters follows the export records and keeps, per definition, the
// most exports in progress (generating or uploading) at once. A record a
// killed replica left in progress is marked failed ("interrupted") by the
// replica that takes its definition over, before it starts its own.
type recordWriters struct {
	mu      sync.Mutex
	running map[string]map[string]bool
	most    map[string]int
	updates int
}

func watchRecordWriters(t *testing.T, js jetstream.JetStream, bucket string) *recordWriters {
	t.Helper()
	rw := &recordWriters{running: map[string]map[string]bool{}, most: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var kv jetstream.KeyValue
		for ctx.Err() == nil {
			var err error
			// The bucket is created by the first replica that starts.
			if kv, err = js.KeyValue(ctx, bucket); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if kv == nil {
			return
		}
		wa, err := kv.WatchFiltered(ctx, []string{pipeline.RecordKeyPrefix + ">"})
		if err != nil {
			return
		}
		defer wa.Stop()
		for e := range wa.Updates() {
			var r struct{ Name, Status string }
			if e == nil || e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
				continue
			}
			rw.mu.Lock()
			rw.updates++
			set := rw.running[r.Name]
			if set == nil {
				set = map[string]bool{}
				rw.running[r.Name] = set
			}
			if r.Status == "generating" || r.Status == "uploading" {
				set[e.Key()] = true
			} else {
				delete(set, e.Key())
			}
			rw.most[r.Name] = max(rw.most[r.Name], len(set))
			rw.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return rw
}

// ---- a bucket endpoint that can become unreachable ----

// faultProxy is a reverse proxy to an HTTP bucket server on a fixed
// loopback port: down closes the port (connections refused, those open
// are cut), up opens it again.
type faultProxy struct {
	t        *testing.T
	addr     string
	endpoint string
	handler  http.Handler
	mu       sync.Mutex
	srv      *http.Server
}

func startFaultProxy(t *testing.T, endpoint string) *faultProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, addr: ln.Addr().String()}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(&url.URL{Scheme: target.Scheme, Host: target.Host})
		r.Out.Host = target.Host
	}}
	p.handler = rp
	e := *target
	e.Host = p.addr
	p.endpoint = e.String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *faultProxy) serve(ln net.Listener) {
	srv := &http.Server{Handler: p.handler}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	go srv.Serve(ln)
}

func (p *faultProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		p.srv.Close()
		p.srv = nil
	}
}

func (p *faultProxy) up() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("proxy: listen on %s again: %v", p.addr, err)
}

// ---- the tests ----

// warmUp publishes the first part of the stream and waits until every
// definition has exported it.
func (w *faultWorld) warmUp(until int) {
	w.t.Helper()
	start := time.Now()
	w.publish(until, 60*time.Second)
	w.waitIdle(90 * time.Second)
	w.t.Logf("warm-up: %d events published and exported by %d replicas in %v", until, len(w.procs), time.Since(start).Round(time.Millisecond))
}

// TestFaultReplicaKill: three replicas; the one holding a definition's
// lease is SIGKILLed in the middle of that export. Its heartbeat expires
// (the fault clears) within the liveness TTL, and another replica exports
// the definition within faultRecovery after that.
func TestFaultReplicaKill(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	w := newFaultWorld(t, faultOptions{procs: 3})
	killLeaseHolder(w, len(w.feed.events)*5/10)
}

// TestFaultTwoReplicasOneHostName: two replicas with one host name and,
// each being the first process of its own PID namespace, one process id
// (1), as two containers sharing a host name. Their lease owners differ,
// they never write one definition at once, and when the one exporting is
// killed the other takes over as after any replica kill (a replica whose
// owner looks like the dead one's, same host and pid, is not mistaken for
// it).
func TestFaultTwoReplicasOneHostName(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	unshare := canUnsharePID(t)
	w := newFaultWorld(t, faultOptions{procs: 2, unshare: unshare})
	host, _ := os.Hostname()
	a, b := w.procs[0].owner, w.procs[1].owner
	hostPid := func(o string) string { return o[:strings.LastIndex(o, "/")] }
	if a == b || !strings.HasPrefix(a, host+"/") || hostPid(a) != hostPid(b) && unshare {
		t.Errorf("lease owners %q and %q: want two identities with the one host name %s and pid", a, b, host)
	}
	if unshare && !strings.HasSuffix(hostPid(a), "/1") {
		t.Errorf("lease owner %q: want pid 1 (its own PID namespace)", a)
	}
	t.Logf("lease owners: %s, %s", a, b)
	killLeaseHolder(w, len(w.feed.events)*5/10)
}

// canUnsharePID reports whether processes can be started as pid 1 of a
// new PID namespace (root, or user namespaces allowed).
func canUnsharePID(t *testing.T) bool {
	out, err := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", "echo $$").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Logf("no PID namespaces here (%v: %s): the two replicas run as two processes of this machine, one host name, two pids",
			err, strings.TrimSpace(string(out)))
		return false
	}
	return true
}

// killLeaseHolder warms up with the stream up to warm, then publishes more
// and SIGKILLs the first replica seen taking a lease (mid-export). It
// measures when the killed replica's heartbeat key expired (the fault
// cleared: the others may now take its leases) and the first export of
// that definition after it.
func killLeaseHolder(w *faultWorld, warm int) {
	t := w.t
	w.warmUp(warm)
	leases, err := w.js.KeyValue(t.Context(), crashPrefix+"_LEASES")
	if err != nil {
		t.Fatal(err)
	}
	replicas, err := w.js.KeyValue(t.Context(), crashPrefix+"_REPLICAS")
	if err != nil {
		t.Fatal(err)
	}
	watch, err := leases.WatchAll(t.Context(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	pub := w.feed.start(t, w.js, len(w.feed.events)*7/10)
	var victim *faultProc
	var def string
	var killed time.Time
	timeout := time.After(60 * time.Second)
	for victim == nil {
		select {
		case e := <-watch.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var lv struct{ Owner, Liveness string }
			if json.Unmarshal(e.Value(), &lv) != nil {
				continue
			}
			if p := w.procByOwner(lv.Owner); p != nil {
				if err := p.cur.sigkill(); err != nil {
					t.Fatal(err)
				}
				killed = time.Now()
				victim, def = p, e.Key()
			}
		case <-timeout:
			t.Fatal("no replica took a lease within 60s of publishing")
		}
	}
	victim.kill(t)
	if err := pub.wait(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	key := victim.owner[strings.LastIndex(victim.owner, "/")+1:]
	var cleared time.Time
	for deadline := time.Now().Add(3 * faultLiveness); ; time.Sleep(50 * time.Millisecond) {
		if _, err := replicas.Get(t.Context(), key); errors.Is(err, jetstream.ErrKeyNotFound) {
			cleared = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed replica's heartbeat %s still there %v after the kill", key, 3*faultLiveness)
		}
	}
	t.Logf("killed %s (%s) while it held the lease of %s; its heartbeat expired %v later",
		victim.name, victim.owner, def, cleared.Sub(killed).Round(time.Millisecond))
	if d := cleared.Sub(killed); d > faultLiveness+time.Second {
		t.Errorf("the killed replica's heartbeat expired %v after the kill, want <= the liveness TTL %v", d.Round(time.Millisecond), faultLiveness)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if at, _, id, ok := w.latest.firstAfter(killed, def); ok {
			rec := at.Sub(cleared)
			t.Logf("recovery: %s exported (export %d) %v after the kill, %v after the heartbeat expired", def, id,
				at.Sub(killed).Round(time.Millisecond), rec.Round(time.Millisecond))
			if rec > faultRecovery {
				t.Errorf("%s exported %v after the killed replica's heartbeat expired, want <= %v", def, rec.Round(time.Millisecond), faultRecovery)
			}
			break
		}
		w.checkAlive()
		if time.Now().After(deadline) {
			t.Fatalf("%s not exported within 60s after the kill of the replica holding its lease", def)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := countInLogs(w.procs, `"msg":"lease taken over from a replica whose heartbeat stopped"`); n == 0 {
		t.Errorf("no replica logged that it took a lease over from the killed one")
	}
	w.finish(time.Time{})
}

// logReadyz logs what each running replica's /readyz?verbose answers and
// returns how many answered 200.
func (w *faultWorld) logReadyz() (ready int) {
	for _, p := range w.procs {
		if p.cur == nil {
			continue
		}
		resp, err := http.Get("http://" + p.http + "/readyz?verbose")
		if err != nil {
			w.t.Logf("%s /readyz?verbose: %v", p.name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		w.t.Logf("%s /readyz?verbose: %d\n%s", p.name, resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusOK {
			ready++
		}
	}
	return ready
}

// logSummary logs how often each WARN and ERROR message was logged by
// the replicas between from and to: what the fault looks like in the logs.
func (w *faultWorld) logSummary(from, to time.Time) {
	counts, examples := map[string]int{}, map[string]string{}
	for _, p := range w.procs {
		for _, l := range p.logs {
			b, _ := os.ReadFile(l)
			for line := range strings.SplitSeq(string(b), "\n") {
				var e struct {
					Time            time.Time
					Level, Msg, Err string
				}
				if json.Unmarshal([]byte(line), &e) != nil || e.Time.Before(from) || e.Time.After(to) ||
					e.Level != "WARN" && e.Level != "ERROR" {
					continue
				}
				key := e.Level + " " + e.Msg
				if counts[key] == 0 && e.Err != "" {
					examples[key] = shorten(e.Err, 200)
				}
				counts[key]++
			}
		}
	}
	var out []string
	for m, n := range counts {
		l := fmt.Sprintf("%4d × %s", n, m)
		if ex := examples[m]; ex != "" {
			l += " (err: " + ex + ")"
		}
		out = append(out, l)
	}
	slices.Sort(out)
	w.t.Logf("logged during the fault (all replicas):\n%s", strings.Join(out, "\n"))
}

func countInLogs(procs []*faultProc, substr string) int {
	n := 0
	for _, p := range procs {
		for _, l := range p.logs {
			n += countInLog(l, substr)
		}
	}
	return n
}

// TestFaultNATSNodeKill: three replicas on a 3-node cluster; the node
// leading the events stream is shut down while events flow, and comes
// back faultOutage later. The two nodes left keep quorum: the fault is
// the leader election and the replicas' reconnects, and the first export
// of an event published right after the kill comes within faultRecovery.
func TestFaultNATSNodeKill(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	w := newFaultWorld(t, faultOptions{procs: 3})
	w.warmUp(len(w.feed.events) * 5 / 10)
	info, err := eventStreamInfo(t.Context(), w.js)
	if err != nil || info.Cluster == nil {
		t.Fatalf("events stream: %+v, %v", info, err)
	}
	victim := -1
	for i, ns := range w.cluster.Nodes {
		if ns.Name() == info.Cluster.Leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no node named %q (the events stream's leader)", info.Cluster.Leader)
	}
	before := w.lastSeq()
	w.cluster.Stop(victim)
	killed := time.Now()
	t.Logf("shut node %s down (the events stream's leader)", info.Cluster.Leader)
	w.publish(len(w.feed.events)*6/10, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		// An export of an event published after the kill.
		if at, name, id, ok := w.latest.firstReflecting(killed, "", before+1); ok {
			rec := at.Sub(killed)
			t.Logf("recovery: first export of an event published after the kill %v after it (%s, export %d)", rec.Round(time.Millisecond), name, id)
			if rec > faultRecovery {
				t.Errorf("first export %v after the node was killed, want <= %v", rec.Round(time.Millisecond), faultRecovery)
			}
			break
		}
		w.checkAlive()
		if time.Now().After(deadline) {
			t.Fatal("nothing exported within 60s of the node kill")
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.publish(len(w.feed.events)*7/10, 60*time.Second)
	time.Sleep(time.Until(killed.Add(faultOutage)))
	w.cluster.Restart(victim)
	back := time.Now()
	t.Logf("node %s back after %v", info.Cluster.Leader, back.Sub(killed).Round(time.Millisecond))
	w.publish(len(w.feed.events)*8/10, 60*time.Second)
	w.finish(time.Time{})
}

// TestFaultBucketFull: two replicas writing to a local bucket on a small
// file system that fills up (every write fails, no space left on device)
// for faultOutage while events flow; then the space is freed.
// Without root (no tmpfs mount), the bucket's temporary folder is made
// read-only instead (every write refused).
func TestFaultBucketFull(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	if testing.Short() {
		t.Skip("fault suite: about a minute per test; runs without -short")
	}
	mnt := t.TempDir()
	ballast := filepath.Join(mnt, "ballast")
	var fill, free func()
	if os.Geteuid() == 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount a tmpfs as root: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
			}
		})
		fill = func() {
			f, err := os.Create(ballast)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			for {
				if _, err := f.Write(buf); err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("fill the bucket's file system: %v", err)
					}
					break
				}
			}
			for { // the last blocks, byte by byte in chunks
				if _, err := f.Write(buf[:512]); err != nil {
					break
				}
			}
			var st syscall.Statfs_t
			_ = syscall.Statfs(mnt, &st)
			t.Logf("bucket's file system (tmpfs, 64 MB) full: %d bytes free", st.Bavail*uint64(st.Bsize))
		}
		free = func() {
			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
		}
	}
	bucketDir := filepath.Join(mnt, "bucket")
	w := newFaultWorld(t, faultOptions{procs: 2, bucketDir: bucketDir})
	if fill == nil {
		tmp := filepath.Join(bucketDir, ".tmp")
		fill = func() {
			if err := os.Chmod(tmp, 0o555); err != nil {
				t.Fatal(err)
			}
			t.Logf("not root: the bucket's %s is read-only instead of a full file system", tmp)
		}
		free = func() {
			if err := os.Chmod(tmp, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.warmUp(len(w.feed.events) * 5 / 10)
	fill()
	start := time.Now()
	w.publish(len(w.feed.events)*6/10, 60*time.Second)
	time.Sleep(time.Until(start.Add(faultOutage / 2)))
	w.publish(len(w.feed.events)*7/10, 60*time.Second)
	time.Sleep(time.Until(start.Add(faultOutage)))
	if at, name, _, ok := w.latest.firstAfter(start.Add(2*time.Second), ""); ok {
		t.Errorf("%s exported at %v while the bucket was full", name, at.Sub(start).Round(time.Millisecond))
	}
	w.bucketOutageShows("")
	w.logReadyz()
	free()
	cleared := time.Now()
	w.logSummary(start, cleared)
	t.Logf("bucket full for %v", cleared.Sub(start).Round(time.Millisecond))
	w.finish(cleared)
}

// TestFaultBucketUnreachable: two replicas writing to GCS (the emulator,
// behind a proxy on a fixed port); the server and the port go away for
// faultOutage while events flow (connections refused), then come back on
// the same port.
func TestFaultBucketUnreachable(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	w := newFaultWorld(t, faultOptions{procs: 2, gcs: true})
	w.warmUp(len(w.feed.events) * 5 / 10)
	srv := gcstest.Start(t)
	w.proxy.down()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w.publish(len(w.feed.events)*6/10, 60*time.Second)
	time.Sleep(time.Until(start.Add(faultOutage / 2)))
	w.publish(len(w.feed.events)*7/10, 60*time.Second)
	time.Sleep(time.Until(start.Add(faultOutage)))
	if at, name, _, ok := w.latest.firstAfter(start.Add(2*time.Second), ""); ok {
		t.Errorf("%s exported at %v while the bucket was unreachable", name, at.Sub(start).Round(time.Millisecond))
	}
	w.bucketOutageShows("")
	w.logReadyz()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	w.proxy.up()
	cleared := time.Now()
	w.logSummary(start, cleared)
	t.Logf("bucket unreachable for %v", cleared.Sub(start).Round(time.Millisecond))
	// The connector bounds the SDK's attempts (about 7 s), and the
	// pipeline retries as soon as a probe finds the bucket back.
	w.finish(cleared)
}

// TestFaultNATSStoreFull: two replicas on a cluster whose nodes may store
// 48 MB each (max_file_store); more events are published (held back by
// pausing the consumer), then a ballast stream fills the store, so that
// state writes, records, heartbeats and leases all fail with
// "insufficient resources" for faultOutage; then the ballast is deleted.
func TestFaultNATSStoreFull(t *testing.T) {
	t.Parallel() // two at a time on two cores (-parallel): most of each test is waiting out a fault
	const maxStore = 48 << 20
	w := newFaultWorld(t, faultOptions{procs: 2, adjust: func(o *server.Options) { o.JetStreamMaxStore = maxStore }})
	w.warmUp(len(w.feed.events) * 5 / 10)
	// The next events are stored but held back from the replicas (the
	// consumer paused) until the store is full: then they are what the
	// replicas cannot apply or export.
	if _, err := w.js.PauseConsumer(t.Context(), crashStream, crashConsumer, time.Now().Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	w.publish(len(w.feed.events)*7/10, 60*time.Second)
	if _, err := w.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "BALLAST", Subjects: []string{"ballast"},
		Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	filled := 0
	for ; filled < 2*maxStore>>20; filled++ {
		if _, err := w.js.Publish(t.Context(), "ballast", chunk); err != nil {
			t.Logf("ballast: %d MB stored, then %v", filled, err)
			break
		}
	}
	for size := len(chunk) / 2; size >= 1<<10; size /= 2 {
		for {
			if _, err := w.js.Publish(t.Context(), "ballast", chunk[:size]); err != nil {
				break
			}
		}
	}
	if _, err := w.js.ResumeConsumer(t.Context(), crashStream, crashConsumer); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(time.Until(start.Add(faultOutage)))
	if at, name, _, ok := w.latest.firstAfter(start.Add(2*time.Second), ""); ok {
		t.Errorf("%s exported at %v while the NATS store was full", name, at.Sub(start).Round(time.Millisecond))
	}
	failures := countInLogs(w.procs, `"msg":"applying events failed; they will be redelivered"`)
	// A full server store makes nats-server step its stream leaders
	// down: the consumer delivers nothing, so no state write is tried and
	// fails; the replicas' heartbeats (a key-value write every 2.5 s)
	// fail, and readiness says so.
	if ready := w.logReadyz(); ready > 0 {
		t.Errorf("%d of %d replicas answer /readyz 200 with the NATS store full (nothing applied or exported for %v)",
			ready, len(w.procs), time.Since(start).Round(time.Second))
	}
	if err := w.js.DeleteStream(t.Context(), "BALLAST"); err != nil {
		t.Fatal(err)
	}
	cleared := time.Now()
	w.logSummary(start, cleared)
	t.Logf("NATS store full for %v: %d failed event batches, %d failed export attempts logged", cleared.Sub(start).Round(time.Millisecond),
		failures, countInLogs(w.procs, `"msg":"export failed; retrying"`))
	w.finish(cleared)
}

// TestFaultOverlapsDetects: the no-two-writers check finds objects of two
// exports of one definition written at the same time, and nothing else.
func TestFaultOverlapsDetects(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	spans := map[string][]writeSpan{
		"a": { // one export after another; an export's own objects
			{"1_x.json", 1, at(0), at(10)}, {"1_x.coco.json", 1, at(5), at(12)}, {"1_x.manifest.json", 1, at(12), at(12)},
			{"4_x.json", 4, at(12), at(20)},
		},
		"b": {{"2_y.json", 2, at(0), at(10)}, {"3_y.json", 3, at(9), at(15)}},
	}
	got := overlaps(spans)
	if len(got) != 1 || !strings.HasPrefix(got[0], "b: 2_y.json") {
		t.Errorf("overlaps = %q, want one, b's exports 2 and 3", got)
	}
}
