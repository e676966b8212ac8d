package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/simulate"
	"github.com/exportstream/exportstream/pipeline"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// The crash test's world: one simulated project, a deterministic stream and
// three export definitions over it (a directory, a job and the project).
const (
	crashProject = "crash-scenes"
	crashSeed    = 20261128
	crashFiles   = 1500  // root files the simulated team uploads
	crashEvents  = 45000 // events taken from the simulator: a project export of a few MB

	crashStream   = "DIFFGRAM_EVENTS"
	crashConsumer = "exportstream"
	crashPrefix   = "EXPORTSTREAM"
)

// The definitions' coalescing differs so that their exports rarely run at
// the same moment: a kill during one definition's export leaves that
// definition's lease behind (30s until it expires), and the next kill
// point needs another definition that is free to export. luckfrill-all
// writes every format beside the Diffgram document (formats), so the kill
// points also fall between its objects.
var crashDefs = []struct{ name, source, coalesce, formats string }{
	{"luckfrill-all", `{directory: Luckfrill}`, `{quiet: 200ms, max_delay: 2s}`, `[diffgram, coco, yolo, jsonl]`},
	{"night-review-all", `{job: "Night Review"}`, `{quiet: 600ms, max_delay: 3s}`, ``},
	{"project-all", `{project: true}`, `{quiet: 1s, max_delay: 4s}`, ``},
}

// crashTail is how many events are held back for the last kill point: one
// kill per event, between its state write and its dirty marks (see
// holdBack).
const crashTail = 4

// TestCrashRecovery kills the service with SIGKILL at several points while
// events flow and exports are written: while applying events, during
// start-up, while uploading an export, right after a data object or a whole
// export is committed, and between an event's state write and its dirty
// mark; it restarts the service each time and checks that
//   - no visible object in the bucket is ever incomplete or inconsistent with
//     its manifest, and latest.json never moves back;
//   - after the last restart the exports converge to exactly what a second,
//     never-killed instance fed the same stream once produces, and the state
//     holds as many entities: no event was lost.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash suite: restarts the built service dozens of times, left out by -short")
	}
	start := time.Now()
	bin := buildService(t)
	t.Logf("built the service in %v", time.Since(start).Round(time.Millisecond))

	stream, err := holdBack(simulatedStream(crashEvents), crashTail)
	if err != nil {
		t.Fatal(err)
	}
	var streamBytes int
	for _, ev := range stream {
		streamBytes += len(ev.Body)
	}
	t.Logf("stream: %d events, %d KB", len(stream), streamBytes>>10)

	crashed := newServiceInstance(t, bin, "crashed")
	scan := newBucketScan(crashed.bucket)
	feed := &feeder{events: stream}
	cut := func(f float64) int { return int(f * float64(len(stream))) }
	held := len(stream) - crashTail

	stateDir := filepath.Join(crashed.dir, "data", "state") // the default state.dir, from the instance's folder
	passes := []struct {
		name  string
		until int // publish the stream up to here during the pass; 0: nothing
		kill  func(t *testing.T, in *serviceInstance) string
		prep  func(t *testing.T) // before the start, when not nil
	}{
		{"applying", cut(0.25), nil, nil},
		{"startup-nats", 0, killAtLog(`"msg":"embedded NATS started"`), nil},
		{"startup-state-loaded", 0, killAtLog(`"msg":"state loaded"`), nil},
		{"uploading", cut(0.45), killWhileUploading, nil},
		{"data-committed", cut(0.60), killAfterDataCommitted, nil},
		// Between the objects of a multi-format export: a format's object
		// is committed, the manifest not yet written.
		{"format-committed", cut(0.68), killAfterFormatCommitted, nil},
		{"export-written", cut(0.75), killAtLog(`"msg":"export written"`), nil},
		// The local state store deleted: the service loads it again from
		// the state bucket, and is killed amid those writes.
		{"local-store-loading", 0, killAtLog(`"msg":"state loading"`), func(t *testing.T) { removeAll(t, stateDir) }},
		// Killed again while applying, then the store damaged: it is
		// emptied and loaded again.
		{"local-store-writes", cut(0.82), nil, nil},
		{"local-store-damaged", cut(0.88), nil, func(t *testing.T) { damageStore(t, stateDir) }},
		{"applying-tail", held, nil, nil},
	}
	for i, p := range passes {
		passStart := time.Now()
		stopScan := scan.watch(t.Context())
		if p.prep != nil {
			p.prep(t)
		}
		crashed.start(t)
		var what string
		if p.until == 0 {
			what = p.kill(t, crashed)
			crashed.kill(t)
		} else {
			js := crashed.waitRunning(t)
			if i == 0 {
				// The first start tries every definition and finds its
				// source empty (nothing is written): let those attempts
				// finish so that the first kill hits event handling.
				crashed.waitLogCount(t, `"msg":"export skipped: its source matches no file`, len(crashDefs), 60*time.Second)
			}
			pub := feed.start(t, js, p.until)
			if p.kill == nil {
				// Kill as soon as the events are in the stream: the service
				// is still applying them.
				if err := pub.wait(); err != nil {
					t.Fatalf("pass %d (%s): publish: %v", i+1, p.name, err)
				}
				what = "right after publishing (" + crashed.consumerState(t, js) + ")"
			} else {
				what = p.kill(t, crashed)
			}
			crashed.kill(t)
			pub.stop()
		}
		if err := stopScan(); err != nil {
			t.Fatalf("pass %d (%s): bucket while running: %v", i+1, p.name, err)
		}
		if err := scan.check(); err != nil {
			t.Fatalf("pass %d (%s): bucket after the kill: %v", i+1, p.name, err)
		}
		t.Logf("pass %d %-20s killed %s; %d/%d events published; %v", i+1, p.name, what,
			feed.acked(), len(stream), time.Since(passStart).Round(time.Millisecond))
	}

	// Restart and let everything published so far be exported. Meanwhile
	// (this waits for the killed processes' leases to expire), the reference:
	// a fresh instance fed the same events once.
	passStart := time.Now()
	crashed.start(t)
	js := crashed.waitRunning(t)
	if err := feed.start(t, js, held).wait(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	ref := newServiceInstance(t, bin, "reference")
	ref.start(t)
	refJS := ref.waitRunning(t)
	refFeed := &feeder{events: stream}
	refPub := refFeed.start(t, refJS, held)
	crashed.waitConverged(t, js, scan, 90*time.Second)
	t.Logf("converged %v after restarting", time.Since(passStart).Round(time.Millisecond))
	if err := refPub.wait(); err != nil {
		t.Fatalf("publish to the reference: %v", err)
	}
	ref.waitIdle(t, refJS, 60*time.Second)

	// The held-back events, one at a time. Each changes project-all (see
	// holdBack); the reference shows which other definitions it marks dirty.
	// The service is killed right after the event's state write is stored
	// and before its dirty marks are, restarted, and once it has acked the
	// event again, each of those definitions must have had a mark written
	// (or cleared by an export) since the event was published.
	for i := range crashTail {
		passStart := time.Now()
		n := feed.acked()
		refFrom := dirtySeq(t, refJS)
		if err := refFeed.start(t, refJS, n+1).wait(); err != nil {
			t.Fatalf("publish to the reference: %v", err)
		}
		ref.waitIdle(t, refJS, 60*time.Second)
		wantMarked := dirtySince(t, refJS, refFrom)
		if !slices.Contains(wantMarked, "project-all") {
			t.Errorf("the reference (never killed) acked event %d (%s), which changes project-all, without marking project-all dirty "+
				"(marked: %v): its effect on that export is lost", n, stream[n].Subject, wantMarked)
			wantMarked = append(wantMarked, "project-all")
		}

		from := dirtySeq(t, js)
		what := killAtStateWrite(t, crashed, feed, js)
		crashed.kill(t)
		if err := scan.check(); err != nil {
			t.Fatalf("event %d: bucket after the kill: %v", n, err)
		}
		crashed.start(t)
		js = crashed.waitRunning(t)
		crashed.waitIdle(t, js, 60*time.Second)
		marked := dirtySince(t, js, from)
		var lost []string
		for _, d := range wantMarked {
			if !slices.Contains(marked, d) {
				lost = append(lost, d)
			}
		}
		t.Logf("pass %d %-20s killed %s; dirty marks written since the event: %v, by the reference: %v; %v",
			len(passes)+i+1, "state-written", what, marked, wantMarked, time.Since(passStart).Round(time.Millisecond))
		if len(lost) > 0 {
			t.Errorf("event %d (%s) was acked after the restart, but no dirty mark was written for %v, which it changes: "+
				"its effect on those exports is lost", n, stream[n].Subject, lost)
		}
	}

	// Converge and compare with the reference.
	passStart = time.Now()
	if err := feed.start(t, js, len(stream)).wait(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := crashed.waitConverged(t, js, scan, 60*time.Second)
	t.Logf("converged %v after the last restart", time.Since(passStart).Round(time.Millisecond))
	want := ref.waitConverged(t, refJS, newBucketScan(ref.bucket), 60*time.Second)
	if err := scan.check(); err != nil {
		t.Fatalf("bucket after convergence: %v", err)
	}

	// The multi-format definition's newest export, in every format, passes
	// the format readers.
	lb, err := local.New(crashed.bucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range crashDefs {
		if d.formats == "" {
			continue
		}
		if _, ps := pipelinetest.CheckLatestFormats(t.Context(), lb, "exports/"+d.name+"/", []string{"diffgram", "coco", "yolo", "jsonl"}); len(ps) > 0 {
			t.Errorf("%s after the crashes:\n%s", d.name, strings.Join(ps, "\n"))
		}
	}
	for _, d := range crashDefs {
		g, w := got[d.name], want[d.name]
		t.Logf("%s: export %d (%d files, %d instances, %d bytes, state revision %d, watermark %d); reference: export %d (%d files, %d instances)",
			d.name, g.ID, g.FileListLength, g.InstanceCount, g.Bytes, g.StateRevision, g.Watermark, w.ID, w.FileListLength, w.InstanceCount)
		diff := diffExports(crashed.bucket, g.DataKey, ref.bucket, w.DataKey)
		switch {
		case g.ContentHash != w.ContentHash:
			t.Errorf("%s: converged to content_sha256 %s, the reference to %s; %s", d.name, g.ContentHash, w.ContentHash, diff)
		case diff != "":
			t.Errorf("%s: same content_sha256 but different documents: %s", d.name, diff)
		}
	}
	gotKeys, gotRev := stateKeys(t, js)
	wantKeys, _ := stateKeys(t, refJS)
	if gotKeys != wantKeys {
		t.Errorf("state bucket %s_STATE holds %d keys after the crashes, %d in the reference: events were lost", crashPrefix, gotKeys, wantKeys)
	}
	if t.Failed() {
		t.Logf("crashed instance: state bucket at revision %d, no dirty mark left, consumer drained", gotRev)
	}
	if info, err := eventStreamInfo(t.Context(), js); err == nil && info.State.Msgs != uint64(len(stream)) {
		t.Logf("note: the crashed instance's stream holds %d messages for %d events", info.State.Msgs, len(stream))
	}
	crashed.logUnfinishedRecords(t, js)
	orphans, tmps := scan.leftovers()
	busy := 0
	for _, l := range crashed.logs {
		busy += countInLog(l, `"msg":"definition busy on another replica"`)
	}
	t.Logf("left behind by the kills: %d data object(s) without a manifest, %d temporary file(s) in .tmp/; "+
		"%d \"definition busy on another replica\" retries (leases of killed processes)", orphans, tmps, busy)
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// ---- the binary and its instances ----

// buildService builds this package's binary with the go command running the
// test.
func buildService(t testing.TB) string {
	t.Helper()
	goCmd := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); pathExists(p) {
			goCmd = p
		}
	}
	bin := filepath.Join(t.TempDir(), "exportstream")
	cmd := exec.CommandContext(t.Context(), goCmd, "build", "-o", bin, ".")
	// As deploy/Dockerfile builds it: without cgo, so Pebble's block
	// cache and memtables are Go memory.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func pathExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serviceInstance is one deployment of the service: a config, a NATS store
// and a bucket that survive restarts. One process runs at a time.
type serviceInstance struct {
	name, bin, dir, config, bucket, natsURL string
	env                                     []string // set in the process's environment, over the test's

	runs int
	cur  *serviceProcess
	logs []string
	nc   *nats.Conn // the test's connection to the current process's NATS
}

type serviceProcess struct {
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	err    error
	killed atomic.Bool // the test sent SIGKILL
}

// sigkill kills the process group.
// sigkill kills the process group. Killing a group that is already gone
// (killed before, and reaped) is not an error.
func (p *serviceProcess) sigkill() error {
	p.killed.Store(true)
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func newServiceInstance(t *testing.T, bin, name string) *serviceInstance {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	in := &serviceInstance{name: name, bin: bin, dir: dir, bucket: filepath.Join(dir, "bucket"),
		config: filepath.Join(dir, "config.yaml")}
	port := freeLoopbackPort(t)
	in.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	var cfg strings.Builder
	// ack_wait: the events a killed process held come back after it (the
	// default, 30s, would only make the test slower).
	fmt.Fprintf(&cfg, "nats:\n  ack_wait: 2s\n  embedded:\n    listen: 127.0.0.1:%d\n    store_dir: %s\n", port, filepath.Join(dir, "nats"))
	fmt.Fprintf(&cfg, "connections:\n  - name: disk\n    type: local\n    local: {dir: %s}\n", in.bucket)
	fmt.Fprintf(&cfg, "exports:\n")
	for _, d := range crashDefs {
		fmt.Fprintf(&cfg, "  - name: %s\n    project: %s\n    source: %s\n    completion: all\n    connection: disk\n"+
			"    path: exports/%s/\n    coalesce: %s\n", d.name, crashProject, d.source, d.name, d.coalesce)
		if d.formats != "" {
			fmt.Fprintf(&cfg, "    formats: %s\n", d.formats)
		}
	}
	fmt.Fprintf(&cfg, "http:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n  format: json\n")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.config, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.closeConn()
		if in.cur != nil {
			_ = in.cur.sigkill()
			<-in.cur.done
		}
		if t.Failed() {
			for _, l := range in.logs {
				t.Logf("---- %s: last lines of %s ----\n%s", in.name, filepath.Base(l), logTail(l, 40))
			}
		}
	})
	return in
}

// start starts a new process of the instance; it does not wait for it.
func (in *serviceInstance) start(t *testing.T) {
	t.Helper()
	if in.cur != nil {
		t.Fatalf("%s: start while running", in.name)
	}
	in.runs++
	logPath := filepath.Join(in.dir, fmt.Sprintf("run-%d.log", in.runs))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(in.bin, "run", "--config", in.config)
	cmd.Dir = in.dir
	if in.env != nil {
		cmd.Env = append(os.Environ(), in.env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", in.name, err)
	}
	p := &serviceProcess{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	in.cur = p
	in.logs = append(in.logs, logPath)
}

// kill SIGKILLs the process group and waits for the process to be gone.
func (in *serviceInstance) kill(t *testing.T) {
	t.Helper()
	in.closeConn()
	p := in.cur
	in.cur = nil
	select {
	case <-p.done:
		if !p.killed.Load() {
			t.Fatalf("%s: the service exited on its own before the kill: %v\n%s", in.name, p.err, logTail(p.log, 40))
		}
	default:
		if err := p.sigkill(); err != nil {
			t.Fatalf("%s: kill: %v", in.name, err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: process %d still there 10s after SIGKILL", in.name, p.cmd.Process.Pid)
	}
}

func (in *serviceInstance) closeConn() {
	if in.nc != nil {
		in.nc.Close()
		in.nc = nil
	}
}

// checkAlive fails the test if the current process is gone.
func (in *serviceInstance) checkAlive(t *testing.T) {
	t.Helper()
	select {
	case <-in.cur.done:
		t.Fatalf("%s: the service exited: %v\n%s", in.name, in.cur.err, logTail(in.cur.log, 40))
	default:
	}
}

// waitRunning waits until the current process consumes events and returns
// a JetStream handle on its NATS server.
func (in *serviceInstance) waitRunning(t *testing.T) jetstream.JetStream {
	t.Helper()
	in.waitLogCount(t, `"msg":"exportstream running"`, 1, 60*time.Second)
	nc, err := nats.Connect(in.natsURL, nats.Name("crash-test"), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("%s: connect to %s: %v", in.name, in.natsURL, err)
	}
	in.nc = nc
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024), jetstream.WithPublishAsyncTimeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitLogCount waits until the current run's log holds n lines containing
// substr.
func (in *serviceInstance) waitLogCount(t *testing.T, substr string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if c := countInLog(in.cur.log, substr); c >= n {
			return
		}
		in.checkAlive(t)
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d log line(s) with %s within %v\n%s", in.name, n, substr, timeout, logTail(in.cur.log, 40))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logUnfinishedRecords logs the export records that are neither complete
// nor failed: the exports a kill interrupted.
func (in *serviceInstance) logUnfinishedRecords(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, crashPrefix+"_EXPORTS")
	if err != nil {
		t.Fatalf("%s: bucket %s_EXPORTS: %v", in.name, crashPrefix, err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("%s: export records: %v", in.name, err)
	}
	var stuck []string
	for _, k := range keys {
		if !strings.HasPrefix(k, pipeline.RecordKeyPrefix) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var r struct {
			Name, Status string
		}
		_ = json.Unmarshal(e.Value(), &r)
		if r.Status != "complete" && r.Status != "failed" {
			stuck = append(stuck, fmt.Sprintf("%s(%s %s)", k, r.Name, r.Status))
		}
	}
	if len(stuck) > 0 {
		slices.Sort(stuck)
		t.Logf("%s: %d export record(s) left unfinished by the kills: %s", in.name, len(stuck), strings.Join(stuck, ", "))
	}
}

// waitConverged waits until the consumer has nothing pending, no dirty mark
// is left, and every definition's latest.json has stayed the same for a
// while; it returns the latest.json of each definition.
func (in *serviceInstance) waitConverged(t *testing.T, js jetstream.JetStream, scan *bucketScan, timeout time.Duration) map[string]manifestDoc {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	const stable = 1500 * time.Millisecond
	var last map[string]manifestDoc
	var since time.Time
	var why string
	nextScan := time.Now()
	for {
		in.checkAlive(t)
		cur, reason := in.convergenceState(ctx, js)
		switch {
		case reason != "":
			why, last = reason, nil
		case last == nil || !sameContent(last, cur):
			why, last, since = "latest.json changed", cur, time.Now()
		case time.Since(since) >= stable:
			return cur
		}
		if time.Now().After(nextScan) {
			if err := scan.check(); err != nil {
				t.Fatalf("%s: bucket while converging: %v", in.name, err)
			}
			nextScan = time.Now().Add(2 * time.Second)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: did not converge within %v: %s", in.name, timeout, why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitIdle waits until the consumer has acked every event and no dirty mark
// is left: every change has been exported.
func (in *serviceInstance) waitIdle(t *testing.T, js jetstream.JetStream, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	for {
		in.checkAlive(t)
		_, reason := in.convergenceState(ctx, js)
		if reason == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not idle within %v: %s", in.name, timeout, reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dirtySeq returns the last sequence of the dirty-mark bucket's stream.
func dirtySeq(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, pipeline.KVStream(pipeline.BucketName(crashPrefix, pipeline.BucketDirty)))
	if err != nil {
		t.Fatalf("dirty-mark stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("dirty-mark stream: %v", err)
	}
	return info.State.LastSeq
}

// dirtySince returns the definitions whose dirty mark was written or
// deleted after stream sequence seq (the stream keeps the last message per
// key, and a mark is only deleted by an export after it was written).
func dirtySince(t *testing.T, js jetstream.JetStream, seq uint64) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, pipeline.KVStream(pipeline.BucketName(crashPrefix, pipeline.BucketDirty)))
	if err != nil {
		t.Fatalf("dirty-mark stream: %v", err)
	}
	var out []string
	for _, d := range crashDefs {
		m, err := s.GetLastMsgForSubject(ctx, pipeline.KVSubject(pipeline.BucketName(crashPrefix, pipeline.BucketDirty), d.name))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("dirty mark %s: %v", d.name, err)
		}
		if m.Sequence > seq {
			out = append(out, d.name)
		}
	}
	return out
}

// convergenceState returns every definition's latest.json, or why the
// instance has not converged yet.
func (in *serviceInstance) convergenceState(ctx context.Context, js jetstream.JetStream) (map[string]manifestDoc, string) {
	c, err := js.Consumer(ctx, crashStream, crashConsumer)
	if err != nil {
		return nil, "consumer: " + err.Error()
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, "consumer info: " + err.Error()
	}
	sinfo, err := eventStreamInfo(ctx, js)
	if err != nil {
		return nil, "stream info: " + err.Error()
	}
	// NumPending lags a publish a little: the ack floor is the sure sign.
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < sinfo.State.LastSeq {
		return nil, fmt.Sprintf("consumer has %d pending and %d unacked events, acked up to %d of %d",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream, sinfo.State.LastSeq)
	}
	kv, err := js.KeyValue(ctx, crashPrefix+"_DIRTY")
	if err != nil {
		return nil, "dirty bucket: " + err.Error()
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, "dirty marks: " + err.Error()
	}
	if len(keys) > 0 {
		return nil, fmt.Sprintf("dirty marks left: %v", keys)
	}
	out := map[string]manifestDoc{}
	for _, d := range crashDefs {
		var m manifestDoc
		if err := readJSONObject(filepath.Join(in.bucket, "exports", d.name, "latest.json"), &m); err != nil {
			return nil, fmt.Sprintf("%s: latest.json: %v", d.name, err)
		}
		out[d.name] = m
	}
	return out, ""
}

func sameContent(a, b map[string]manifestDoc) bool {
	for k, m := range a {
		if b[k].ID != m.ID || b[k].ContentHash != m.ContentHash {
			return false
		}
	}
	return len(a) == len(b)
}

// stateKeys returns the number of keys in the state bucket and its last
// revision.
func stateKeys(t *testing.T, js jetstream.JetStream) (int, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, crashPrefix+"_STATE")
	if err != nil {
		t.Fatalf("state bucket: %v", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("state keys: %v", err)
	}
	n := 0
	for range lister.Keys() {
		n++
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatalf("state bucket status: %v", err)
	}
	var rev uint64
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		rev = s.StreamInfo().State.LastSeq
	}
	return n, rev
}

func eventStreamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, crashStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func countInLog(file, substr string) int {
	b, _ := os.ReadFile(file)
	return bytes.Count(b, []byte(substr))
}

// logTail returns the last lines of a log, debug lines left out.
func logTail(file string, lines int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	var keep []string
	debug := 0
	for l := range strings.SplitSeq(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(l, `"level":"DEBUG"`) {
			debug++
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > lines {
		keep = keep[len(keep)-lines:]
	}
	return fmt.Sprintf("(%d debug lines left out)\n%s", debug, strings.Join(keep, "\n"))
}

// ---- kill points ----

func removeAll(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("no local state store to delete: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

// damageStore overwrites the local state store's manifests, so that it
// cannot be opened.
func damageStore(t *testing.T, dir string) {
	t.Helper()
	manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatalf("no MANIFEST in %s", dir)
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, []byte("damaged"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// consumerState describes the event consumer's progress.
func (in *serviceInstance) consumerState(t *testing.T, js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, crashStream, crashConsumer)
	if err != nil {
		return err.Error()
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d events not yet delivered, %d unacked", info.NumPending, info.NumAckPending)
}

// killAtStateWrite publishes the next event and kills the service as soon
// as NATS acknowledges the service's write of that event's state (the
// PubAck from the state bucket's stream, seen on _INBOX.>): after the state
// write, before the dirty marks. The test fails if no state write is seen
// within 10 s (the kill point was missed).
func killAtStateWrite(t *testing.T, in *serviceInstance, feed *feeder, js jetstream.JetStream) string {
	t.Helper()
	proc := in.cur
	stateAck := []byte(`"stream":"KV_` + crashPrefix + `_STATE"`)
	acked := make(chan string, 1)
	var marks atomic.Int32
	sub, err := in.nc.Subscribe("_INBOX.>", func(m *nats.Msg) {
		if bytes.Contains(m.Data, stateAck) && proc.sigkill() == nil {
			select {
			case acked <- string(m.Data):
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	dsub, err := in.nc.Subscribe(pipeline.KVSubject(pipeline.BucketName(crashPrefix, pipeline.BucketDirty), ">"), func(*nats.Msg) { marks.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer dsub.Unsubscribe()
	if err := in.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n := feed.acked()
	ev := feed.events[n]
	if err := feed.start(t, js, n+1).wait(); err != nil {
		t.Fatalf("publish event %d: %v", n, err)
	}
	select {
	case ack := <-acked:
		<-proc.done
		return fmt.Sprintf("at the state write of %s (%s), %d dirty mark write(s) seen before",
			strings.TrimPrefix(ev.Subject, "diffgram.events."+crashProject+"."), ack, marks.Load())
	case <-time.After(10 * time.Second):
		// Every held-back event changes project-all (holdBack), so it
		// writes state: no write seen means the kill point was missed and
		// the pass would test nothing.
		t.Errorf("%s: no state write of %s seen within 10s of publishing it: the kill missed the point between the state write and the dirty marks\n%s",
			in.name, ev.Subject, logTail(proc.log, 40))
		return fmt.Sprintf("10s after %s, which wrote no state (missed: failed)", ev.Subject)
	}
}

// killWhileUploading kills while an export's data object is being written:
// a new temporary file of the local connection (under .tmp/) has grown past
// the size of any manifest.
func killWhileUploading(t *testing.T, in *serviceInstance) string {
	t.Helper()
	tmp := filepath.Join(in.bucket, ".tmp")
	old := map[string]bool{}
	if es, err := os.ReadDir(tmp); err == nil {
		for _, e := range es {
			old[e.Name()] = true
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		es, _ := os.ReadDir(tmp)
		for _, e := range es {
			if old[e.Name()] || !strings.HasPrefix(e.Name(), "w-") {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.Size() >= 16<<10 {
				return fmt.Sprintf("while uploading (.tmp/%s at %d KB)", e.Name(), fi.Size()>>10)
			}
		}
		in.checkAlive(t)
		time.Sleep(300 * time.Microsecond)
	}
	t.Fatalf("%s: no export upload seen in %s within 60s\n%s", in.name, tmp, logTail(in.cur.log, 40))
	return ""
}

// killAfterDataCommitted kills as soon as a new data object is visible,
// ideally before its manifest and latest.json are written.
func killAfterDataCommitted(t *testing.T, in *serviceInstance) string {
	return killAfterNewObject(t, in, "data object", func(k string) (string, bool) {
		if !dataKeyRE.MatchString(filepath.Base(k)) {
			return "", false
		}
		return strings.TrimSuffix(k, ".json") + ".manifest.json", true
	}, func(k string, manifest bool) string {
		if manifest {
			return "just after an export was committed (" + k + ", manifest already written)"
		}
		return "just after a data object was committed, before its manifest (" + k + ")"
	})
}

// killAfterFormatCommitted kills as soon as an object of a format beside
// the Diffgram document is visible, ideally before the manifest naming it
// is written.
func killAfterFormatCommitted(t *testing.T, in *serviceInstance) string {
	return killAfterNewObject(t, in, "format object", func(k string) (string, bool) {
		sm := formatKeyRE.FindStringSubmatch(path.Base(k))
		if sm == nil {
			return "", false
		}
		return path.Dir(k) + "/" + sm[1] + ".manifest.json", true
	}, func(k string, manifest bool) string {
		if manifest {
			return "just after a multi-format export was committed (" + k + ", manifest already written)"
		}
		return "just after a " + formatKeyRE.FindStringSubmatch(path.Base(k))[2] + " object was committed, before its manifest (" + k + ")"
	})
}

// killAfterNewObject returns (the process is killed then) as soon as an
// object appears in a definition's folder that match accepts (it names
// the manifest that will name it), saying where with say (manifest: that
// manifest is there already).
func killAfterNewObject(t *testing.T, in *serviceInstance, what string, match func(k string) (manifest string, ok bool), say func(k string, manifest bool) string) string {
	t.Helper()
	list := func() map[string]bool {
		out := map[string]bool{}
		for _, d := range crashDefs {
			es, _ := os.ReadDir(filepath.Join(in.bucket, "exports", d.name))
			for _, e := range es {
				out[d.name+"/"+e.Name()] = true
			}
		}
		return out
	}
	old := list()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		cur := list()
		for k := range cur {
			if old[k] {
				continue
			}
			if manifest, ok := match(k); ok {
				return say(k, cur[manifest])
			}
		}
		in.checkAlive(t)
		time.Sleep(300 * time.Microsecond)
	}
	t.Fatalf("%s: no new %s within 60s\n%s", in.name, what, logTail(in.cur.log, 40))
	return ""
}

// killAtLog kills as soon as the current run logs a line containing substr.
func killAtLog(substr string) func(*testing.T, *serviceInstance) string {
	return func(t *testing.T, in *serviceInstance) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if b, _ := os.ReadFile(in.cur.log); bytes.Contains(b, []byte(substr)) {
				line := string(b[bytes.Index(b, []byte(substr)):])
				line, _, _ = strings.Cut(line, "\n")
				return "at log line " + substr + " (" + shorten(line, 160) + ")"
			}
			in.checkAlive(t)
			time.Sleep(10 * time.Millisecond) // reads the whole log: not too often
		}
		t.Fatalf("%s: no log line %s within 60s\n%s", in.name, substr, logTail(in.cur.log, 40))
		return ""
	}
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ---- the event stream ----

// simulatedStream returns the first n events of the deterministic stream.
func simulatedStream(n int) []simulate.Event {
	sim := simulate.New(simulate.Options{Project: crashProject, Rate: -1, Files: crashFiles, Seed: crashSeed}, nil)
	out := make([]simulate.Event, n)
	for i := range out {
		subj, body, id := sim.Next()
		out[i] = simulate.Event{Subject: subj, Body: body, ID: id}
	}
	return out
}

// holdBack moves to the end of the stream the last k events that flip a
// file's ann_is_complete, are the last event of that file and leave it not
// removed. Each of them changes every project export (which shows every
// file that is not removed, with its ann_is_complete), and moving them
// leaves the final state the same (the newest version of each entity wins).
func holdBack(stream []simulate.Event, k int) ([]simulate.Event, error) {
	type fileEvent struct {
		i    int
		file *events.File
	}
	files := map[int64][]fileEvent{}
	for i, e := range stream {
		if !strings.Contains(e.Subject, ".file.") {
			continue
		}
		ev, err := events.Decode(e.Subject, e.Body, 0)
		if err != nil {
			return nil, fmt.Errorf("simulated event %d: %w", i, err)
		}
		f, ok := ev.Entity.(*events.File)
		if !ok || ev.Partial {
			continue
		}
		files[ev.EntityID] = append(files[ev.EntityID], fileEvent{i, f})
	}
	var held []int
	for _, evs := range files {
		if len(evs) < 2 {
			continue
		}
		last, prev := evs[len(evs)-1], evs[len(evs)-2]
		if strings.HasSuffix(stream[last.i].Subject, ".completion_changed") && !last.file.Removed() &&
			last.file.Complete() != prev.file.Complete() {
			held = append(held, last.i)
		}
	}
	if len(held) < k {
		return nil, fmt.Errorf("only %d events to hold back, want %d", len(held), k)
	}
	slices.Sort(held)
	held = held[len(held)-k:]
	out := make([]simulate.Event, 0, len(stream))
	for i, ev := range stream {
		if !slices.Contains(held, i) {
			out = append(out, ev)
		}
	}
	for _, i := range held {
		out = append(out, stream[i])
	}
	return out, nil
}

// feeder publishes a stream across restarts: everything before its cursor
// is stored in the stream (acknowledged); a publish a kill interrupted is
// repeated from the cursor (the Nats-Msg-Id makes that harmless).
type feeder struct {
	events []simulate.Event
	mu     sync.Mutex
	cursor int
}

func (f *feeder) acked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cursor
}

// publishing is one feeder run in the background.
type publishing struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// wait waits for the publishing to finish and returns its error.
func (p *publishing) wait() error {
	<-p.done
	return p.err
}

// stop cancels the publishing (the process it publishes to is gone) and
// waits for it.
func (p *publishing) stop() {
	p.cancel()
	<-p.done
}

// start publishes events [cursor, until) in the background.
func (f *feeder) start(t *testing.T, js jetstream.JetStream, until int) *publishing {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	p := &publishing{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer cancel()
		p.err = f.publish(ctx, js, until)
	}()
	return p
}

func (f *feeder) publish(ctx context.Context, js jetstream.JetStream, until int) error {
	const window = 512
	for {
		from := f.acked()
		if from >= until {
			return nil
		}
		to := min(from+window, until)
		futs := make([]jetstream.PubAckFuture, 0, to-from)
		for _, ev := range f.events[from:to] {
			m := nats.NewMsg(ev.Subject)
			m.Data = ev.Body
			m.Header.Set(jetstream.MsgIDHeader, ev.ID)
			fut, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second))
			if err != nil {
				return fmt.Errorf("publish event %d: %w", from+len(futs), err)
			}
			futs = append(futs, fut)
		}
		for i, fut := range futs {
			select {
			case <-fut.Ok():
			case err := <-fut.Err():
				return fmt.Errorf("publish event %d: %w", from+i, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f.mu.Lock()
		f.cursor = to
		f.mu.Unlock()
	}
}

// ---- the bucket ----

var dataKeyRE = regexp.MustCompile(`^(\d+)_diffgram_annotations__source_(directory|job|task|project)_([A-Za-z0-9._-]+)_datetime_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{6})\.json$`)

// formatKeyRE matches the object of a format beside the Diffgram document:
// the Diffgram stem (1), the format (2).
var formatKeyRE = regexp.MustCompile(`^(\d+_diffgram_annotations__source_[a-z]+_[A-Za-z0-9._-]+_datetime_[0-9T.-]+)\.(coco\.json|yolo\.tar|jsonl)$`)

// manifestDoc is the part of a manifest (and latest.json) the test reads.
type manifestDoc struct {
	ID             int64  `json:"id"`
	Name           string `json:"name"`
	Status         string `json:"status"`
	Key            string `json:"key"`
	ManifestKey    string `json:"manifest_key"`
	DataKey        string `json:"data_key"`
	Bytes          int64  `json:"bytes"`
	SHA256         string `json:"sha256"`
	ContentHash    string `json:"content_sha256"`
	FileListLength int    `json:"file_list_length"`
	InstanceCount  int    `json:"instance_count"`
	StateRevision  uint64 `json:"state_revision"`
	Watermark      uint64 `json:"watermark"`
	// Formats are the export's objects by format (the Diffgram one too).
	Formats map[string]struct {
		Key    string `json:"key"`
		SHA256 string `json:"sha256"`
		Bytes  int64  `json:"bytes"`
	} `json:"formats"`
}

// bucketScan checks what a downstream reader of the bucket can see. Data
// objects are checked once and must never change afterwards.
type bucketScan struct {
	mu       sync.Mutex // one check at a time
	root     string
	objects  map[string]objectCheck // data objects already checked, by key
	latestID map[string]int64       // highest latest.json id seen, by folder
}

type objectCheck struct {
	size  int64
	mtime time.Time
	sha   string
}

func newBucketScan(root string) *bucketScan {
	return &bucketScan{root: root, objects: map[string]objectCheck{}, latestID: map[string]int64{}}
}

// watch checks the bucket every 100ms in the background until the
// returned func is called (or ctx is done); stop returns the first problem
// found.
func (s *bucketScan) watch(ctx context.Context) (stop func() error) {
	done := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		for {
			if err := s.check(); err != nil {
				result <- err
				return
			}
			select {
			case <-done:
				result <- nil
				return
			case <-ctx.Done():
				result <- ctx.Err()
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() error {
		close(done)
		return <-result
	}
}

// check scans the whole bucket (not .tmp/) and returns every problem found.
func (s *bucketScan) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var manifests, latests []string
	err := filepath.WalkDir(s.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		key := filepath.ToSlash(rel)
		if e.IsDir() {
			if key == ".tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		base := e.Name()
		switch {
		case base == "latest.json":
			latests = append(latests, key)
		case strings.HasSuffix(base, ".manifest.json"):
			manifests = append(manifests, key)
		case dataKeyRE.MatchString(base):
			if _, err := s.data(key); err != nil {
				add("%s: %v", key, err)
			}
		case formatKeyRE.MatchString(base):
			if _, err := s.data(key); err != nil {
				add("%s: %v", key, err)
			}
		default:
			add("%s: unexpected object", key)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		add("walk: %v", err)
	}
	for _, key := range manifests {
		var m manifestDoc
		if err := readJSONObject(filepath.Join(s.root, key), &m); err != nil {
			add("%s: %v", key, err)
			continue
		}
		if want := path.Dir(key) + "/" + strings.TrimSuffix(path.Base(key), ".manifest.json") + ".json"; m.DataKey != want {
			add("%s: data_key %q, want %q", key, m.DataKey, want)
		}
		if err := s.matches(m); err != nil {
			add("%s: %v", key, err)
		}
	}
	for _, key := range latests {
		var m manifestDoc
		if err := readJSONObject(filepath.Join(s.root, key), &m); err != nil {
			add("%s: %v", key, err)
			continue
		}
		if err := s.matches(m); err != nil {
			add("%s: %v", key, err)
		}
		if _, err := os.Stat(filepath.Join(s.root, filepath.FromSlash(m.ManifestKey))); err != nil {
			add("%s: manifest_key %q: %v", key, m.ManifestKey, err)
		}
		dir := path.Dir(key)
		if prev := s.latestID[dir]; m.ID < prev {
			add("%s: went back from export %d to %d", key, prev, m.ID)
		}
		s.latestID[dir] = max(s.latestID[dir], m.ID)
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// matches checks a manifest against its data object.
func (s *bucketScan) matches(m manifestDoc) error {
	if m.Status != "complete" {
		return fmt.Errorf("status %q", m.Status)
	}
	if m.DataKey == "" || m.DataKey != m.Key {
		return fmt.Errorf("data_key %q, key %q", m.DataKey, m.Key)
	}
	c, err := s.data(m.DataKey)
	if err != nil {
		return fmt.Errorf("data object %s: %v", m.DataKey, err)
	}
	if c.sha != m.SHA256 || c.size != m.Bytes {
		return fmt.Errorf("data object %s has %d bytes, sha256 %s; manifest says %d bytes, %s", m.DataKey, c.size, c.sha, m.Bytes, m.SHA256)
	}
	if id := idFromKey(m.DataKey); id != m.ID {
		return fmt.Errorf("id %d, object %s", m.ID, m.DataKey)
	}
	// Every format object the manifest names is there, complete: never a
	// manifest naming a missing object.
	for f, o := range m.Formats {
		if f == "diffgram" {
			if o.Key != m.DataKey || o.SHA256 != m.SHA256 || o.Bytes != m.Bytes {
				return fmt.Errorf("formats.diffgram %+v is not the data object", o)
			}
			continue
		}
		c, err := s.data(o.Key)
		if err != nil {
			return fmt.Errorf("%s object %s: %v", f, o.Key, err)
		}
		if c.sha != o.SHA256 || c.size != o.Bytes {
			return fmt.Errorf("%s object %s has %d bytes, sha256 %s; manifest says %d bytes, %s", f, o.Key, c.size, c.sha, o.Bytes, o.SHA256)
		}
	}
	return nil
}

func idFromKey(key string) int64 {
	sm := dataKeyRE.FindStringSubmatch(path.Base(key))
	if sm == nil {
		return -1
	}
	id, _ := strconv.ParseInt(sm[1], 10, 64)
	return id
}

// data checks a data object once: a complete export document (the five
// metadata keys, then file ids; as many files as export_info says; the id
// of its name); later calls only check that it did not change.
func (s *bucketScan) data(key string) (objectCheck, error) {
	p := filepath.Join(s.root, filepath.FromSlash(key))
	fi, err := os.Stat(p)
	if err != nil {
		return objectCheck{}, err
	}
	if c, ok := s.objects[key]; ok {
		if c.size != fi.Size() || !c.mtime.Equal(fi.ModTime()) {
			return c, fmt.Errorf("changed after it was published (%d bytes at %v, now %d at %v)", c.size, c.mtime, fi.Size(), fi.ModTime())
		}
		return c, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return objectCheck{}, err
	}
	sum := sha256.Sum256(b)
	c := objectCheck{size: int64(len(b)), mtime: fi.ModTime(), sha: hex.EncodeToString(sum[:])}
	if int64(len(b)) != fi.Size() {
		return c, fmt.Errorf("read %d bytes of %d", len(b), fi.Size())
	}
	if sm := formatKeyRE.FindStringSubmatch(path.Base(key)); sm != nil {
		if err := checkFormatObject(sm[2], b); err != nil {
			return c, err
		}
		s.objects[key] = c
		return c, nil
	}
	if err := checkDocument(b, idFromKey(key)); err != nil {
		return c, err
	}
	s.objects[key] = c
	return c, nil
}

func checkDocument(b []byte, id int64) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object (%d bytes)", len(b))
	}
	meta := []string{"readme", "label_map", "label_colour_map", "export_info", "attribute_groups_reference"}
	var info struct {
		ID             int64 `json:"id"`
		FileListLength int   `json:"file_list_length"`
	}
	files := 0
	for i := 0; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON after %d keys: %v", i, err)
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("invalid JSON at key %q: %v", k, err)
		}
		switch {
		case i < len(meta):
			if k != meta[i] {
				return fmt.Errorf("top-level key %d is %q, want %q", i, k, meta[i])
			}
			if k == "export_info" {
				if err := json.Unmarshal(v, &info); err != nil {
					return fmt.Errorf("export_info: %v", err)
				}
			}
		default:
			if _, err := strconv.ParseInt(k, 10, 64); err != nil {
				return fmt.Errorf("top-level key %q is not a file id", k)
			}
			files++
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("truncated document: %v", err)
	}
	if dec.More() || dec.InputOffset() != int64(len(bytes.TrimRight(b, " \n"))) {
		return errors.New("trailing data after the document")
	}
	if info.FileListLength != files {
		return fmt.Errorf("export_info.file_list_length %d, %d file entries", info.FileListLength, files)
	}
	if info.ID != id {
		return fmt.Errorf("export_info.id %d in object of export %d", info.ID, id)
	}
	return nil
}

// checkFormatObject checks that a format object is complete: a COCO
// document that decodes with its three lists, a tar that reads to its end
// with data.yaml first, JSONL whose every line decodes.
func checkFormatObject(ext string, b []byte) error {
	switch ext {
	case "coco.json":
		var c struct{ Images, Annotations, Categories []json.RawMessage }
		if err := json.Unmarshal(b, &c); err != nil || c.Images == nil || c.Annotations == nil || c.Categories == nil {
			return fmt.Errorf("not a complete COCO document (%d bytes): %v", len(b), err)
		}
	case "yolo.tar":
		if _, ps := pipelinetest.ReadYOLO(b); len(ps) > 0 {
			return fmt.Errorf("not a complete YOLO tar (%d bytes): %s", len(b), ps[0])
		}
	case "jsonl":
		if len(b) == 0 || b[len(b)-1] != '\n' {
			return fmt.Errorf("JSONL (%d bytes) does not end with a newline", len(b))
		}
		for l := range bytes.SplitSeq(b[:len(b)-1], []byte("\n")) {
			if !json.Valid(l) {
				return fmt.Errorf("JSONL line %.80q is not JSON", l)
			}
		}
	}
	return nil
}

// leftovers counts data objects without a manifest and temporary files.
func (s *bucketScan) leftovers() (orphans, tmps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.objects {
		if sm := formatKeyRE.FindStringSubmatch(path.Base(key)); sm != nil {
			key = path.Dir(key) + "/" + sm[1] + ".json"
		}
		if !pathExists(filepath.Join(s.root, filepath.FromSlash(strings.TrimSuffix(key, ".json")+".manifest.json"))) {
			orphans++
		}
	}
	es, _ := os.ReadDir(filepath.Join(s.root, ".tmp"))
	for _, e := range es {
		if strings.HasPrefix(e.Name(), "w-") {
			tmps++
		}
	}
	return orphans, tmps
}

func readJSONObject(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// diffExports compares two export documents apart from export_info.id and
// created_time and describes the first differences ("" if none).
func diffExports(rootA, keyA, rootB, keyB string) string {
	load := func(root, key string) (map[string]json.RawMessage, error) {
		var doc map[string]json.RawMessage
		err := readJSONObject(filepath.Join(root, filepath.FromSlash(key)), &doc)
		if err != nil {
			return nil, err
		}
		var info map[string]any
		if err := json.Unmarshal(doc["export_info"], &info); err != nil {
			return nil, err
		}
		delete(info, "id")
		delete(info, "created_time")
		doc["export_info"], _ = json.Marshal(info)
		return doc, nil
	}
	a, err := load(rootA, keyA)
	if err != nil {
		return err.Error()
	}
	b, err := load(rootB, keyB)
	if err != nil {
		return err.Error()
	}
	var diffs []string
	for k, va := range a {
		vb, ok := b[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("key %s only in the crashed instance's export", k))
		case !jsonEqual(va, vb):
			diffs = append(diffs, fmt.Sprintf("key %s differs:\n    crashed:   %s\n    reference: %s", k, shorten(string(va), 400), shorten(string(vb), 400)))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("key %s only in the reference export", k))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	slices.Sort(diffs)
	n := len(diffs)
	if n > 8 {
		diffs = append(diffs[:8], "…")
	}
	return fmt.Sprintf("%d top-level key(s) differ:\n  %s", n, strings.Join(diffs, "\n  "))
}

func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
