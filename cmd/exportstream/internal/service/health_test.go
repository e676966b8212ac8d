package service

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/api"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// metricValue reads one series ("name{labels}" as /metrics prints it)
// from the service's /metrics; ok false when it is not there.
func metricValue(t *testing.T, svc *Service, series string) (float64, bool) {
	t.Helper()
	_, body := get(t, "http://"+svc.HTTPAddr()+"/metrics")
	for line := range strings.SplitSeq(body, "\n") {
		if v, found := strings.CutPrefix(line, series+" "); found {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// eventually polls cond every 100 ms until it holds, failing t with what
// after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after %v: %s", timeout, what)
		}
	}
}

// status reads GET /api/v1/status.
func (c apiClient) status() (out struct {
	Ready       *bool
	Checks      []api.Check
	Connections []api.Check
}) {
	c.t.Helper()
	c.json("GET", "/api/v1/status", nil, http.StatusOK, &out)
	return out
}

// chaosExample is the scenario the API tests run, and what it exports.
func chaosExample(t *testing.T) (string, *pipelinetest.Expected) {
	dir := apiScenario(t)
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, exp
}

// TestNATSPasswordNeverShown: the service runs against a NATS server
// that asks for a user and password, given inside nats.url. Its logs
// (written as they are, without the output filter the binary adds),
// /readyz and the API's answers never show the password, also while the
// server restarts (disconnect and reconnect are logged, /readyz says
// NATS is not connected, the API answers errors).
func TestNATSPasswordNeverShown(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS and waits for the reconnect, left out by -short")
	}
	const user, password = "exporter", "Pw-5ecret-4-nats"
	storeDir := t.TempDir()
	startNATS := func(port int) *server.Server {
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
			NoLog: true, NoSigs: true, MaxPayload: 8 << 20, Username: user, Password: password,
		})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server did not start")
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		return ns
	}
	ns := startNATS(-1)
	port := ns.Addr().(*net.TCPAddr).Port

	dir, exp := chaosExample(t)
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	cfg.HTTP.Token = testToken
	cfg.NATS.URL = fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", user, password, port)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logw := io.Writer(&logs)
	if testing.Verbose() {
		logw = io.MultiWriter(&logs, os.Stderr)
	}
	svc := startServiceLogging(t, cfg, logw)
	nc, err := nats.Connect(cfg.NATS.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	publishScenario(t, js, dir)
	waitConverged(t, svc.Bucket("disk"), exp)

	c := apiClient{t: t, base: "http://" + svc.HTTPAddr(), token: testToken}
	answers := map[string]string{}
	// all: every kind of answer; else those that report NATS's state
	// (the others only wait for it to time out).
	collect := func(when string, all bool) {
		for _, path := range []string{"/readyz", "/readyz?verbose"} {
			_, body := get(t, c.base+path)
			answers[when+" GET "+path] = body
		}
		paths := []string{"/api/v1/status"}
		if all {
			paths = append(paths, "/api/v1/definitions", "/api/v1/exports?limit=5", "/api/v1/deadletters", "/api/v1/exports/999999")
		}
		for _, path := range paths {
			_, _, body := c.do("GET", path, nil)
			answers[when+" GET "+path] = string(body)
		}
		if all {
			_, _, body := c.do("POST", "/api/v1/exports", map[string]any{"project": exp.Project, "source": map[string]any{"project": true},
				"connection": "disk", "wait": true})
			answers[when+" POST ad-hoc"] = string(body)
		}
	}
	collect("running", true)

	ns.Shutdown()
	ns.WaitForShutdown()
	eventually(t, 10*time.Second, "/readyz does not say NATS is down", func() bool {
		status, body := get(t, c.base+"/readyz")
		return status == http.StatusServiceUnavailable && strings.Contains(body, "nats: not connected")
	})
	collect("NATS down", false)
	startNATS(port)
	eventually(t, 20*time.Second, "/readyz not ready again after the restart", func() bool {
		status, _ := get(t, c.base+"/readyz")
		return status == http.StatusOK
	})
	collect("NATS back", true)

	for what, body := range answers {
		if strings.Contains(body, password) {
			t.Errorf("%s shows the NATS password:\n%s", what, body)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "exportstream running") || !strings.Contains(out, "127.0.0.1:"+strconv.Itoa(port)) ||
		!strings.Contains(out, "NATS reconnected") {
		t.Errorf("the logs lack the start line with the NATS address, or the reconnect:\n%s", out)
	}
	if strings.Contains(out, password) {
		t.Errorf("the logs show the NATS password:\n%s", out)
	}
}

// TestFailedBucketWritesShow: a local bucket whose writes fail (a file
// stands where the exports folder must be: that holds for root too).
// The failures are counted (exportstream_bucket_errors_total,
// exportstream_bucket_last_write_ok 0) and the connection is reported
// unhealthy (/readyz?verbose, GET /api/v1/status), but the replica stays
// ready: it can do its other work. Once the folder can be written, the
// exports converge and the connection is healthy again.
func TestFailedBucketWritesShow(t *testing.T) {
	dir, exp := chaosExample(t)
	bucketDir := t.TempDir()
	blocker := filepath.Join(bucketDir, "exports")
	if err := os.WriteFile(blocker, []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: bucketDir}})
	svc := startService(t, cfg)
	c := apiClient{t: t, base: "http://" + svc.HTTPAddr()}
	publishScenario(t, streamJS(t, svc), dir)

	eventually(t, 30*time.Second, "no failed write counted", func() bool {
		n, _ := metricValue(t, svc, `exportstream_bucket_errors_total{connection="disk",op="write"}`)
		return n > 0
	})
	if ok, found := metricValue(t, svc, `exportstream_bucket_last_write_ok{connection="disk"}`); !found || ok != 0 {
		t.Errorf("exportstream_bucket_last_write_ok{connection=disk} = %v (found %t), want 0", ok, found)
	}
	status, body := get(t, c.base+"/readyz")
	if status != http.StatusOK || strings.Contains(body, "connection") {
		t.Errorf("/readyz with a failing bucket: %d %q, want 200 (the replica can work) without the connections", status, body)
	}
	status, body = get(t, c.base+"/readyz?verbose")
	if status != http.StatusOK || !strings.Contains(body, "connection disk: unhealthy: last write at") ||
		!strings.Contains(body, "not a directory") {
		t.Errorf("/readyz?verbose with a failing bucket: %d %q, want 200 and the connection unhealthy with why", status, body)
	}
	st := c.status()
	if st.Ready == nil || !*st.Ready || len(st.Connections) != 1 || st.Connections[0].Name != "disk" || st.Connections[0].OK ||
		!strings.Contains(st.Connections[0].Error, "last write at") {
		t.Errorf("GET /api/v1/status with a failing bucket: ready %v, connections %+v", st.Ready, st.Connections)
	}

	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	bucket, err := local.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, bucket, exp)
	eventually(t, 10*time.Second, "the connection is not healthy again", func() bool {
		_, body := get(t, c.base+"/readyz?verbose")
		ok, _ := metricValue(t, svc, `exportstream_bucket_last_write_ok{connection="disk"}`)
		return strings.Contains(body, "connection disk: ok") && ok == 1
	})
	if st := c.status(); len(st.Connections) != 1 || !st.Connections[0].OK {
		t.Errorf("GET /api/v1/status after the bucket healed: connections %+v", st.Connections)
	}
}

// TestNATSStoreFull: the state bucket can take no more (its max_bytes is
// what it holds, as when the NATS store is full). A new event's state
// write fails: /readyz answers 503 saying so, and so does GET
// /api/v1/status; nothing is lost. With room again, the redelivered event
// is applied, the replica is ready again and the export follows.
func TestNATSStoreFull(t *testing.T) {
	dir, exp := chaosExample(t)
	ns := eventstest.StartServer(t)
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	cfg.NATS.URL = ns.ClientURL()
	svc := startService(t, cfg)
	_, js := eventstest.Connect(t, ns)
	publishScenario(t, js, dir)
	waitConverged(t, svc.Bucket("disk"), exp)
	c := apiClient{t: t, base: "http://" + svc.HTTPAddr()}
	if status, body := get(t, c.base+"/readyz"); status != http.StatusOK || !strings.Contains(body, "state: ok") {
		t.Fatalf("/readyz before the store is full: %d %q", status, body)
	}

	stateStream := "KV_" + cfg.NATS.StatePrefix + "_STATE"
	setMaxBytes := func(full bool) {
		s, err := js.Stream(t.Context(), stateStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		sc := info.Config
		sc.MaxBytes = -1
		if full {
			sc.MaxBytes = int64(info.State.Bytes)
		}
		if _, err := js.UpdateStream(t.Context(), sc); err != nil {
			t.Fatal(err)
		}
	}
	setMaxBytes(true)
	seq := publishLabelChange(t, js, 1)

	var body string
	eventually(t, 20*time.Second, "/readyz stays ready with the state bucket full", func() bool {
		var status int
		status, body = get(t, c.base+"/readyz")
		return status == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "state: state writes fail, the JetStream store is full") || !strings.Contains(body, "maximum bytes exceeded") ||
		!strings.Contains(body, "nats: ok") {
		t.Errorf("/readyz with the store full: %q, want the state check to say the store is full and why", body)
	}
	st := c.status()
	stateOK := true
	for _, ch := range st.Checks {
		if ch.Name == "state" {
			stateOK = ch.OK
		}
	}
	if st.Ready == nil || *st.Ready || stateOK {
		raw, _ := json.Marshal(st)
		t.Errorf("GET /api/v1/status with the store full: %s, want ready false and the state check failing", raw)
	}

	setMaxBytes(false)
	eventually(t, 30*time.Second, "/readyz not ready again once the store has room", func() bool {
		status, _ := get(t, c.base+"/readyz")
		return status == http.StatusOK
	})
	eventually(t, 30*time.Second, "the event written while the store was full is not applied", func() bool {
		return svc.Pipeline().LastApplied().Seq >= seq
	})
}

// TestConsumerDeletedNotReady: the durable consumer is deleted behind
// the service's back: the replica no longer receives events, and
// /readyz says so (503, the consumer check) within the 5 s it reads the
// consumer's state.
func TestConsumerDeletedNotReady(t *testing.T) {
	_, exp := chaosExample(t)
	ns := eventstest.StartServer(t)
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	cfg.NATS.URL = ns.ClientURL()
	svc := startService(t, cfg)
	_, js := eventstest.Connect(t, ns)
	base := "http://" + svc.HTTPAddr()
	if status, body := get(t, base+"/readyz"); status != http.StatusOK || !strings.Contains(body, "consumer: ok") {
		t.Fatalf("/readyz before: %d %q", status, body)
	}
	if err := js.DeleteConsumer(t.Context(), cfg.NATS.Stream, cfg.NATS.Consumer); err != nil {
		t.Fatal(err)
	}
	var body string
	eventually(t, 20*time.Second, "/readyz stays ready without the consumer", func() bool {
		var status int
		status, body = get(t, base+"/readyz")
		return status == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "consumer: not bound: durable consumer "+cfg.NATS.Consumer) || !strings.Contains(body, "nats: ok") {
		t.Errorf("/readyz without the consumer: %q", body)
	}
}
