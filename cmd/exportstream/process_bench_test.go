package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
	"github.com/exportstream/exportstream/connectors/s3"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
)

// BenchmarkProcess measures the service as production runs it: the built
// binary against nats-server in its own process. For each size it
// publishes files × 10 box instances, then measures in the same run
//   - a bare durable pull consumer that only acks the backlog (the
//     baseline: events/s);
//   - the service draining the same backlog (events/s, and its ratio to
//     the baseline), the first full export after the backlog, and one
//     regeneration after a single edit;
//   - the service's peak RSS (VmHWM) over all of it.
//
// EXPORTSTREAM_BENCH_FILES sets the sizes (default "10000,100000");
// EXPORTSTREAM_BENCH_BASE=<git revision> also measures that version of the
// service on the same server and data, for a ratio against it;
// EXPORTSTREAM_BENCH_FORMATS=all measures each version again with every
// format on; EXPORTSTREAM_BENCH_BUCKET=s3, gcs or azure writes the exports
// to that kind of test server instead of a local folder.
//
//	go test ./cmd/exportstream -run '^$' -bench Process -benchtime 1x -timeout 60m
func BenchmarkProcess(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if v := os.Getenv("EXPORTSTREAM_BENCH_FILES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				b.Fatalf("EXPORTSTREAM_BENCH_FILES: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	natsBin := buildNATSServer(b)
	versions := []struct{ name, bin string }{{"current", buildService(b)}}
	if rev := os.Getenv("EXPORTSTREAM_BENCH_BASE"); rev != "" {
		versions = append(versions, struct{ name, bin string }{"base-" + rev, buildRevision(b, rev)})
	}
	// EXPORTSTREAM_BENCH_FORMATS=all also measures each version with
	// every format on (coco, yolo, jsonl beside the Diffgram one).
	allFormats := os.Getenv("EXPORTSTREAM_BENCH_FORMATS") == "all"
	// EXPORTSTREAM_BENCH_ASOF=all measures the point-in-time export on
	// the base version too (it must have as_of), not only the current.
	asOfAll := os.Getenv("EXPORTSTREAM_BENCH_ASOF") == "all"
	// EXPORTSTREAM_BENCH_ASOF_PROFILE_SECONDS: how long the point-in-time
	// export's CPU profiles are (with EXPORTSTREAM_BENCH_PROFILE; 30 s by
	// default). Keep it shorter than the replay: the service stops when
	// the export is done. Read here, so that a bad value fails at once.
	asOfProfileSecs := 30
	if v := os.Getenv("EXPORTSTREAM_BENCH_ASOF_PROFILE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("EXPORTSTREAM_BENCH_ASOF_PROFILE_SECONDS=%q", v)
		}
		asOfProfileSecs = n
	}
	for _, files := range sizes {
		for i, v := range versions {
			b.Run(fmt.Sprintf("files=%d/%s", files, v.name), func(b *testing.B) {
				for b.Loop() {
					runProcessBench(b, natsBin, v.bin, files, benchVariant{asOf: i == 0 || asOfAll, asOfProfileSecs: asOfProfileSecs})
				}
			})
			if allFormats {
				b.Run(fmt.Sprintf("files=%d/%s-all-formats", files, v.name), func(b *testing.B) {
					for b.Loop() {
						runProcessBench(b, natsBin, v.bin, files, benchVariant{formats: true})
					}
				})
			}
		}
	}
}

// buildNATSServer builds go.mod's nats-server as a binary.
func buildNATSServer(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "nats-server")
	out, err := exec.CommandContext(b.Context(), "go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		b.Fatalf("go build nats-server: %v\n%s", err, out)
	}
	return bin
}

// buildRevision builds the service as it was at a git revision.
func buildRevision(b *testing.B, rev string) string {
	dir := filepath.Join(b.TempDir(), "src")
	if out, err := exec.Command("git", "worktree", "add", "--detach", dir, rev).CombinedOutput(); err != nil {
		b.Fatalf("git worktree add %s: %v\n%s", rev, err, out)
	}
	b.Cleanup(func() { _ = exec.Command("git", "worktree", "remove", "--force", dir).Run() })
	bin := filepath.Join(b.TempDir(), "exportstream-"+rev)
	cmd := exec.CommandContext(b.Context(), "go", "build", "-o", bin, "./cmd/exportstream")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as buildService
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build at %s: %v\n%s", rev, err, out)
	}
	return bin
}

// startProcess starts a command in its own process group, its output in
// logPath; the cleanup kills the group.
func startProcess(b *testing.B, logPath, bin string, args ...string) *exec.Cmd {
	f, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Dir(logPath) // relative folders (state.dir's ./data/state) land beside the log
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		f.Close()
	})
	return cmd
}

// cpuSeconds reads a process's user+system CPU time in seconds.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the command name (which may hold spaces) start
	// after its closing parenthesis; utime and stime are the 14th and
	// 15th fields of the line.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// exited reports whether the process has ended (a zombie not waited for
// yet, or gone).
func exited(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// peakRSS reads a process's VmHWM in MB.
func peakRSS(pid int) float64 { return statusMB(pid, "VmHWM:") }

// statusMB reads a kB field of /proc/<pid>/status, in MB (-1 if unknown).
func statusMB(pid int, field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

func benchEvent(typ, data string, n int) []byte {
	return []byte(`{"specversion":"1.0","id":"b` + strconv.Itoa(n) + `","source":"bench","type":"` + typ +
		`","time":"2026-11-28T10:00:00Z","datacontenttype":"application/json","diffgramproject":"bench","data":` + data + `}`)
}

// publishBacklog publishes the project: labels, a directory, files × 10
// box instances, asynchronously.
func publishBacklog(b *testing.B, js jetstream.JetStream, files int) int {
	ctx := b.Context()
	n := 0
	pub := func(entity, action string, body []byte) {
		n++
		if _, err := js.PublishAsync("diffgram.events.bench."+entity+"."+action, body, jetstream.WithStallWait(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	pub("project", "upserted", benchEvent("diffgram.project.upserted", `{"project":{"string_id":"bench","name":"Bench","version":1}}`, n))
	pub("directory", "upserted", benchEvent("diffgram.directory.upserted", `{"directory":{"id":1,"nickname":"all","created_time":"2026-01-01T00:00:00Z","version":1}}`, n))
	for l := 1; l <= 2; l++ {
		pub("label", "upserted", benchEvent("diffgram.label.upserted", fmt.Sprintf(`{"label_file":{"id":%d,"label":{"id":%d,"name":"l%d"},"colour":{"hex":"#ff0000"},"state":"added","version":1}}`, l, l, l), n))
	}
	inst := 1_000_000
	for f := 1; f <= files; f++ {
		pub("file", "uploaded", benchEvent("diffgram.file.uploaded", fmt.Sprintf(`{"file":{"id":%d,"type":"image","original_filename":"img_%d.jpg","created_time":"2026-02-01T00:00:00Z","state":"added","ann_is_complete":true,"directory_ids":[1],"parent_id":null,"blob_url":"https://media.example/%d","image":{"width":1920,"height":1080,"image_signed_url":"https://media.example/%d","image_signed_expiry":1900000000},"version":1}}`, f, f, f, f), n))
		for i := 0; i < 10; i++ {
			inst++
			pub("instance", "created", benchEvent("diffgram.instance.created", fmt.Sprintf(`{"instance":{"id":%d,"root_id":%d,"previous_id":null,"version":1,"file_id":%d,"soft_delete":false,"type":"box","label_file_id":%d,"attribute_groups":null,"x_min":%d,"y_min":20,"x_max":%d,"y_max":120}}`, inst, inst, f, 1+i%2, 10+i, 110+i), n))
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	return n
}

// drainBare consumes the stream with a durable pull consumer that only
// acks, and returns how long the backlog took.
func drainBare(b *testing.B, js jetstream.JetStream, total int) time.Duration {
	ctx := b.Context()
	cons, err := js.CreateOrUpdateConsumer(ctx, "DIFFGRAM_EVENTS", jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 10000})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	n := 0
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		n++
		if n == total {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatal("bare consumer did not drain in 10 minutes")
	}
	return time.Since(start)
}

// benchVariant is what a run of runProcessBench measures besides the
// basics: formats turns every format on; asOf (a version that has it)
// asks, after the restart on the kept store, for the first full export
// again as of its watermark, and measures that replay; asOfProfileSecs
// is how long that replay's CPU profiles are, when profiles are taken.
type benchVariant struct {
	formats, asOf   bool
	asOfProfileSecs int
}

func runProcessBench(b *testing.B, natsBin, svcBin string, files int, variant benchVariant) {
	dir := b.TempDir()
	port := freeLoopbackPort(b)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	natsArgs := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "nats")}
	profileDir := os.Getenv("EXPORTSTREAM_BENCH_PROFILE")
	natsProfPort := 0
	if profileDir != "" {
		natsProfPort = freeLoopbackPort(b)
		natsArgs = append(natsArgs, "--profile", strconv.Itoa(natsProfPort))
	}
	natsProc := startProcess(b, filepath.Join(dir, "nats.log"), natsBin, natsArgs...)
	var nc *nats.Conn
	var err error
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if nc, err = nats.Connect(url); err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := b.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DIFFGRAM_EVENTS", Subjects: []string{"diffgram.events.>"}}); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	total := publishBacklog(b, js, files)
	bareCPU0 := cpuSeconds(natsProc.Process.Pid)
	bare := drainBare(b, js, total)
	bareNATSCPU := cpuSeconds(natsProc.Process.Pid) - bareCPU0
	b.StartTimer()

	bucket := filepath.Join(dir, "bucket")
	cfgPath := filepath.Join(dir, "config.yaml")
	formats := ""
	if variant.formats {
		formats = "\n    formats: [diffgram, coco, yolo, jsonl]"
	}
	// EXPORTSTREAM_BENCH_BUCKET=s3, gcs or azure: the exports go to that
	// kind of server (versitygw in this process, fake-gcs-server or
	// Azurite as processes of their own) with the connector's defaults
	// (EXPORTSTREAM_BENCH_PART_SIZE=<bytes>: S3's part size), instead of
	// a local folder.
	connection := fmt.Sprintf("type: local\n    local: {dir: %s}", bucket)
	var cloud connectors.Bucket // nil: the local folder
	switch kind := os.Getenv("EXPORTSTREAM_BENCH_BUCKET"); kind {
	case "", "local":
	case "s3":
		o := s3test.Start(b).NewBucket(b)
		partSize := ""
		if v := os.Getenv("EXPORTSTREAM_BENCH_PART_SIZE"); v != "" {
			partSize = ", part_size: " + v
		}
		connection = fmt.Sprintf("type: s3\n    s3: {bucket: %s, region: %s, endpoint: %q, path_style: true, access_key_id: %s, secret_access_key: %s%s}",
			o.Bucket, o.Region, o.Endpoint, o.AccessKeyID, o.SecretAccessKey, partSize)
		bk, err := s3.New(b.Context(), o)
		if err != nil {
			b.Fatal(err)
		}
		cloud = bk
	case "gcs":
		o := gcstest.NewBucket(b)
		connection = fmt.Sprintf("type: gcs\n    gcs: {bucket: %s, endpoint: %q, credentials_file: %s}", o.Bucket, o.Endpoint, o.CredentialsFile)
		bk, err := gcs.New(b.Context(), o)
		if err != nil {
			b.Fatal(err)
		}
		cloud = bk
	case "azure":
		o := azuritetest.NewBucket(b)
		connection = fmt.Sprintf("type: azure\n    azure: {container: %s, connection_string: %q}", o.Container, o.ConnectionString)
		bk, err := azure.New(b.Context(), o)
		if err != nil {
			b.Fatal(err)
		}
		cloud = bk
	default:
		b.Fatalf("EXPORTSTREAM_BENCH_BUCKET=%q: want local, s3, gcs or azure", kind)
	}
	readLatest := func() ([]byte, error) { return os.ReadFile(filepath.Join(bucket, "exports", "all", "latest.json")) }
	if cloud != nil {
		b.Cleanup(func() { cloud.Close() })
		readLatest = func() ([]byte, error) {
			r, err := cloud.NewReader(b.Context(), "exports/all/latest.json")
			if err != nil {
				return nil, err
			}
			defer r.Close()
			return io.ReadAll(r)
		}
	}
	cfg := fmt.Sprintf(`nats:
  url: %s
connections:
  - name: disk
    %s
exports:
  - name: all
    project: bench
    source: {directory: all}
    completion: all
    connection: disk
    path: exports/all/
    coalesce: {quiet: 1s, max_delay: 30s}%s
http:
  listen: 127.0.0.1:0
log:
  level: info
`, url, connection, formats)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(dir, "service.log")
	natsCPU0 := cpuSeconds(natsProc.Process.Pid)
	start := time.Now()
	svc := startProcess(b, logPath, svcBin, "run", "--config", cfgPath)
	cons, err := js.Consumer(ctx, "DIFFGRAM_EVENTS", "exportstream")
	for end := time.Now().Add(time.Minute); err != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			b.Fatalf("the service's consumer never appeared: %v", err)
		}
		cons, err = js.Consumer(ctx, "DIFFGRAM_EVENTS", "exportstream")
	}
	// EXPORTSTREAM_BENCH_PROFILE=<dir>: a 10 s CPU profile of the
	// service while it drains, from its /debug/pprof.
	profiled := make(chan struct{})
	if profileDir != "" {
		go func() {
			defer close(profiled)
			if addr := serviceHTTPAddr(logPath, 30*time.Second); addr != "" {
				saveURL("http://"+addr+"/debug/pprof/profile?seconds=10",
					filepath.Join(profileDir, fmt.Sprintf("drain-%d-%s.pprof", files, filepath.Base(svcBin))))
			}
		}()
		// The NATS server's profile over the same 10 s.
		go saveURL(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=10", natsProfPort),
			filepath.Join(profileDir, fmt.Sprintf("drain-%d-nats-for-%s.pprof", files, filepath.Base(svcBin))))
	} else {
		close(profiled)
	}
	var drained time.Duration
	var natsCPU, svcCPU, drainRSS float64
	for end := time.Now().Add(20 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		info, err := cons.Info(ctx)
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= uint64(total) {
			drained = time.Since(start)
			natsCPU = cpuSeconds(natsProc.Process.Pid) - natsCPU0
			svcCPU = cpuSeconds(svc.Process.Pid)
			drainRSS = peakRSS(svc.Process.Pid)
			break
		}
		if time.Now().After(end) {
			b.Fatalf("the service did not drain the backlog: %+v %v", info, err)
		}
		if exited(svc.Process.Pid) {
			raw, _ := os.ReadFile(logPath)
			b.Fatalf("the service exited while draining:\n%s", raw)
		}
	}
	<-profiled
	if profileDir != "" {
		// The heap after the drain.
		if addr := serviceHTTPAddr(logPath, time.Second); addr != "" {
			saveURL("http://"+addr+"/debug/pprof/heap", filepath.Join(profileDir, fmt.Sprintf("heap-%d-%s.pprof", files, filepath.Base(svcBin))))
		}
	}
	exportID := func() string {
		raw, err := readLatest()
		if err != nil {
			return ""
		}
		var m struct {
			ID             int64 `json:"id"`
			FileListLength int   `json:"file_list_length"`
		}
		if json.Unmarshal(raw, &m) != nil || m.FileListLength != files {
			return ""
		}
		return strconv.FormatInt(m.ID, 10)
	}
	var first string
	for end := time.Now().Add(10 * time.Minute); first == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			b.Fatal("no full export")
		}
		first = exportID()
	}
	firstExport := time.Since(start) - drained
	var firstRec struct {
		Watermark     uint64 `json:"watermark"`
		ContentSHA256 string `json:"content_sha256"`
	}
	if raw, err := readLatest(); err != nil || json.Unmarshal(raw, &firstRec) != nil {
		b.Fatalf("the first export's record: %v", err)
	}

	// One edit: a new version of one instance.
	editAt := time.Now()
	if _, err := js.Publish(ctx, "diffgram.events.bench.instance.edited", benchEvent("diffgram.instance.edited",
		`{"instance":{"id":2000000,"root_id":1000001,"previous_id":1000001,"version":2,"file_id":1,"soft_delete":false,"type":"box","label_file_id":1,"attribute_groups":null,"x_min":11,"y_min":21,"x_max":111,"y_max":121}}`, -1)); err != nil {
		b.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if id := exportID(); id != "" && id != first {
			break
		}
		if time.Now().After(end) {
			b.Fatal("no export after the edit")
		}
	}
	regen := time.Since(editAt)
	b.StopTimer()
	rss := peakRSS(svc.Process.Pid)
	if profileDir != "" {
		// Where the memory is after the exports: the process's mappings
		// and the Go runtime's own account.
		tag := fmt.Sprintf("%d-%s", files, filepath.Base(svcBin))
		if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", svc.Process.Pid)); err == nil {
			_ = os.WriteFile(filepath.Join(profileDir, "smaps-"+tag+".txt"), raw, 0o644)
		}
		if addr := serviceHTTPAddr(logPath, time.Second); addr != "" {
			for name, q := range map[string]string{"memstats-" + tag + ".txt": "?debug=1", "heap-export-" + tag + ".pprof": ""} {
				saveURL("http://"+addr+"/debug/pprof/heap"+q, filepath.Join(profileDir, name))
			}
		}
	}

	// Restarts: a clean stop, then a start on the same local state store
	// (it resumes from the revision it recorded), then one with the store
	// deleted (rebuilt from the state bucket): the time to "running".
	restart := func(name string) (time.Duration, float64) {
		if err := syscall.Kill(svc.Process.Pid, syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		_ = svc.Wait()
		if name == "rebuild" {
			if err := os.RemoveAll(filepath.Join(dir, "data", "state")); err != nil {
				b.Fatal(err)
			}
		}
		log := filepath.Join(dir, "service-"+name+".log")
		t0 := time.Now()
		svc = startProcess(b, log, svcBin, "run", "--config", cfgPath)
		if serviceHTTPAddr(log, 20*time.Minute) == "" {
			b.Fatalf("%s: the service did not start", name)
		}
		return time.Since(t0), peakRSS(svc.Process.Pid)
	}
	resumed, resumedRSS := restart("resume")
	var asOf time.Duration
	var asOfRSS float64
	if variant.asOf {
		addr := serviceHTTPAddr(filepath.Join(dir, "service-resume.log"), time.Second)
		// EXPORTSTREAM_BENCH_PROFILE=<dir>: CPU profiles of the service
		// and of the NATS server from the replay's start, for
		// variant.asOfProfileSecs.
		if profileDir != "" {
			secs := variant.asOfProfileSecs
			name := fmt.Sprintf("asof-%d-%s", files, filepath.Base(svcBin))
			go saveURL(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), filepath.Join(profileDir, name+".pprof"))
			go saveURL(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", natsProfPort, secs), filepath.Join(profileDir, name+"-nats.pprof"))
		}
		asOf, asOfRSS = measureAsOf(b, addr, svc.Process.Pid, firstRec.Watermark, firstRec.ContentSHA256)
	}
	rebuilt, rebuiltRSS := restart("rebuild")
	b.ReportMetric(float64(total)/bare.Seconds(), "bare-events/s")
	b.ReportMetric(float64(total)/drained.Seconds(), "service-events/s")
	b.ReportMetric(100*bare.Seconds()/drained.Seconds(), "%-of-bare")
	// CPU per wall second while draining (2.0 = both cores of this
	// machine): who is busy, the service or the server.
	b.ReportMetric(svcCPU/drained.Seconds(), "svc-cpu/s-drain")
	b.ReportMetric(natsCPU/drained.Seconds(), "nats-cpu/s-drain")
	b.ReportMetric(bareNATSCPU/bare.Seconds(), "nats-cpu/s-bare")
	b.ReportMetric(1e6*natsCPU/float64(total), "nats-cpu-µs/event")
	b.ReportMetric(1e6*bareNATSCPU/float64(total), "nats-cpu-µs/event-bare")
	b.ReportMetric(1e6*svcCPU/float64(total), "svc-cpu-µs/event")
	b.ReportMetric(float64(dirSize(filepath.Join(dir, "data", "state")))/1e6, "MB-state-on-disk")
	b.ReportMetric(firstExport.Seconds(), "s-first-export")
	b.ReportMetric(regen.Seconds(), "s-regen-after-edit(quiet-1s)")
	b.ReportMetric(rss, "MB-peak-RSS")
	b.ReportMetric(drainRSS, "MB-peak-RSS-drain")
	b.ReportMetric(resumed.Seconds(), "s-restart-ready")
	if variant.asOf {
		b.ReportMetric(asOf.Seconds(), "s-as-of-first-export")
		b.ReportMetric(asOfRSS, "MB-peak-RSS-as-of")
	}
	b.ReportMetric(resumedRSS, "MB-restart-RSS")
	b.ReportMetric(rebuilt.Seconds(), "s-rebuild-ready")
	b.ReportMetric(rebuiltRSS, "MB-rebuild-RSS")
	b.StartTimer()
}

// serviceHTTPAddr waits for the service's "exportstream running" log line
// (within wait) and returns its HTTP address.
func serviceHTTPAddr(logPath string, wait time.Duration) string {
	for end := time.Now().Add(wait); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		raw, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(raw), "\n") {
			if !strings.Contains(line, `"msg":"exportstream running"`) {
				continue
			}
			var l struct {
				HTTP string `json:"http"`
			}
			if json.Unmarshal([]byte(line), &l) == nil {
				return l.HTTP
			}
		}
	}
	return ""
}

// dirSize is the bytes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// measureAsOf asks the service at addr for the definition's export as of
// watermark, waits for it, and returns how long it took and the highest
// RSS (MB) of the process pid sampled meanwhile. The export must have
// the content hash want: the first full export's.
func measureAsOf(b *testing.B, addr string, pid int, watermark uint64, want string) (time.Duration, float64) {
	if addr == "" {
		b.Fatal("as of: the service's HTTP address is unknown")
	}
	stop := make(chan struct{})
	peak := make(chan float64)
	go func() {
		var top float64
		for {
			top = max(top, currentRSS(pid))
			select {
			case <-stop:
				peak <- top
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	resp, err := http.Post("http://"+addr+"/api/v1/exports", "application/json",
		strings.NewReader(fmt.Sprintf(`{"definition": "all", "as_of": %d, "wait": true}`, watermark)))
	took := time.Since(t0)
	close(stop)
	top := <-peak
	if err != nil {
		b.Fatalf("as of: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var rec struct {
		Status        string `json:"status"`
		ContentSHA256 string `json:"content_sha256"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &rec) != nil || rec.Status != "complete" {
		b.Fatalf("as of %d: %d %s", watermark, resp.StatusCode, raw)
	}
	if rec.ContentSHA256 != want {
		b.Errorf("as of %d: content_sha256 %s, want the first export's %s", watermark, rec.ContentSHA256, want)
	}
	return took, top
}

// saveURL writes what a GET of url answers (a profile from
// /debug/pprof) to path; it gives up quietly (a benchmark aid).
func saveURL(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	_ = os.WriteFile(path, raw, 0o644)
}

// currentRSS is the process's resident set now, in MB (-1 if unknown).
func currentRSS(pid int) float64 { return statusMB(pid, "VmRSS:") }
