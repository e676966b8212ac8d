package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service/servicetest"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

func TestMain(m *testing.M) {
	code := s3test.Main(m)
	for _, shutdown := range []func() error{azuritetest.Shutdown, gcstest.Shutdown} {
		if err := shutdown(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

// testConfig: see servicetest.Config.
func testConfig(t *testing.T, exp *pipelinetest.Expected, conn config.Connection) *config.Config {
	return servicetest.Config(t, exp, conn)
}

// startService runs the service until the test ends.
func startService(t *testing.T, cfg *config.Config) *Service {
	logw := io.Discard
	if testing.Verbose() {
		logw = os.Stderr
	}
	return startServiceLogging(t, cfg, logw)
}

// startServiceLogging runs the service until the test ends, logging to
// logw (JSON, level info).
func startServiceLogging(t *testing.T, cfg *config.Config, logw io.Writer) *Service {
	svc := New(cfg, slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("service did not stop")
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("service failed to start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("service not ready after 30s")
	}
	return svc
}

// publishScenario publishes the scenario's events as the examples say:
// each body on its subject, Nats-Msg-Id = the body's id.
func publishScenario(t *testing.T, js jetstream.JetStream, path string) int {
	f, err := os.Open(pipelinetest.EventsFile(path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	err = events.ReadStream(f, func(subject string, body []byte, msgID string) error {
		m := nats.NewMsg(subject)
		m.Data = body
		var opts []jetstream.PublishOpt
		if msgID != "" {
			opts = append(opts, jetstream.WithMsgID(msgID))
		}
		n++
		_, err := js.PublishMsg(t.Context(), m, opts...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// latestDocument follows latest.json to the data object and checks its
// sha256 against the manifest copy.
func latestDocument(ctx context.Context, b connectors.Bucket, prefix string) ([]byte, error) {
	var latest struct {
		Key    string `json:"key"`
		SHA256 string `json:"sha256"`
	}
	r, err := b.NewReader(ctx, prefix+"latest.json")
	if err != nil {
		return nil, err
	}
	err = json.NewDecoder(r).Decode(&latest)
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("latest.json: %w", err)
	}
	r, err = b.NewReader(ctx, latest.Key)
	if err != nil {
		return nil, fmt.Errorf("latest.json names %s: %w", latest.Key, err)
	}
	defer r.Close()
	return io.ReadAll(r)
}

// exportProblems checks every expected definition's newest export in
// the bucket and returns the differences.
func exportProblems(ctx context.Context, bucket connectors.Bucket, exp *pipelinetest.Expected) []string {
	var problems []string
	for name, d := range exp.Definitions {
		if d.NoExport {
			// Nothing at all under the definition's path: no data object,
			// no manifest, no latest.json.
			if keys, err := listKeys(ctx, bucket, "exports/"+name+"/"); err != nil || len(keys) > 0 {
				problems = append(problems, fmt.Sprintf("%s: the source matches no file, but the bucket holds %v (%v)", name, keys, err))
			}
			continue
		}
		doc, err := latestDocument(ctx, bucket, "exports/"+name+"/")
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, p := range pipelinetest.Check(doc, exp, d) {
			problems = append(problems, name+": "+p)
		}
	}
	return problems
}

// listKeys lists the keys under prefix.
func listKeys(ctx context.Context, b connectors.Bucket, prefix string) ([]string, error) {
	var keys []string
	err := b.List(ctx, prefix, func(a connectors.Attributes) bool {
		keys = append(keys, a.Key)
		return true
	})
	return keys, err
}

// waitConverged waits up to a minute for every expected export to be in
// the bucket, and fails the test with the differences otherwise.
func waitConverged(t *testing.T, bucket connectors.Bucket, exp *pipelinetest.Expected) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		problems := exportProblems(t.Context(), bucket, exp)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after 60s: %v", problems)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runScenario runs a contract example through the real service and
// checks every expected export in the bucket, and the dead-letter count.
func runScenario(t *testing.T, dir string, conn config.Connection) {
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, exp, conn)
	// Every other definition writes every format beside the Diffgram
	// document, so that each connection type carries them (checked below).
	formats := map[string][]string{}
	for i := range cfg.Exports {
		formats[cfg.Exports[i].Name] = []string{"diffgram"}
		if i%2 == 0 {
			cfg.Exports[i].Formats = []string{"coco", "yolo", "jsonl"}
			formats[cfg.Exports[i].Name] = []string{"diffgram", "coco", "yolo", "jsonl"}
		}
	}
	svc := startService(t, cfg)
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	buckets, err := OpenBuckets(t.Context(), cfg.Connections, "")
	if err != nil {
		t.Fatal(err)
	}
	bucket := buckets[conn.Name]
	defer bucket.Close()

	start := time.Now()
	publishScenario(t, js, dir)
	deadline := time.Now().Add(60 * time.Second)
	for {
		problems := exportProblems(t.Context(), bucket, exp)
		dlq := -1
		if s, err := js.Stream(t.Context(), cfg.NATS.DeadLetterStream); err == nil {
			if info, err := s.Info(t.Context()); err == nil {
				dlq = int(info.State.Msgs)
			}
		}
		if dlq != exp.Poison {
			problems = append(problems, fmt.Sprintf("dead-letter stream holds %d, want %d", dlq, exp.Poison))
		}
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Error(p)
			}
			t.FailNow()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s: converged %v after publishing", filepath.Base(dir), time.Since(start).Round(time.Millisecond))

	// latest.json names every format of its definition; each object is in
	// the bucket with the SHA-256 and size it gives, and passes its reader.
	for name, d := range exp.Definitions {
		if d.NoExport {
			continue
		}
		if _, ps := pipelinetest.CheckLatestFormats(t.Context(), bucket, "exports/"+name+"/", formats[name]); len(ps) > 0 {
			t.Errorf("%s (%s):\n%s", name, conn.Type, strings.Join(ps, "\n"))
		}
	}

	// Each definition's newest export was announced on NATS with its record.
	exportsStream, err := js.Stream(t.Context(), cfg.NATS.ExportsStream)
	if err != nil {
		t.Fatal(err)
	}
	announced := func(name string) error {
		subject := "diffgram.exports." + exp.Project + "." + name + ".completed"
		msg, err := exportsStream.GetLastMsgForSubject(t.Context(), subject)
		if err != nil {
			return fmt.Errorf("no %s event: %v", subject, err)
		}
		// A CloudEvents 1.0 structured event whose data is the record.
		var ev struct {
			SpecVersion     string `json:"specversion"`
			ID              string `json:"id"`
			Source          string `json:"source"`
			Type            string `json:"type"`
			Subject         string `json:"subject"`
			Time            string `json:"time"`
			DataContentType string `json:"datacontenttype"`
			DiffgramProject string `json:"diffgramproject"`
			Data            struct {
				ID                int64
				Name, Status, Key string
				FileListLength    int `json:"file_list_length"`
				InstanceCount     int `json:"instance_count"`
			} `json:"data"`
		}
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			return err
		}
		rec, want := ev.Data, exp.Definitions[name]
		if rec.Name != name || rec.Status != "complete" || rec.FileListLength != want.FileListLength || rec.InstanceCount != want.InstanceCount {
			return fmt.Errorf("%s: completion event data %+v", subject, rec)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil || ev.SpecVersion != "1.0" ||
			ev.ID != fmt.Sprintf("export-%d", rec.ID) || ev.Source != "exportstream/"+cfg.Deployment ||
			ev.Type != "diffgram.export.completed" || ev.Subject != name || ev.DataContentType != "application/json" ||
			ev.DiffgramProject != exp.Project || msg.Header.Get("Nats-Msg-Id") != ev.ID {
			return fmt.Errorf("%s: not the CloudEvent EVENTS.md asks for: %+v, headers %v", subject, ev, msg.Header)
		}
		return nil
	}
	for name, d := range exp.Definitions {
		if d.NoExport {
			if _, err := exportsStream.GetLastMsgForSubject(t.Context(), "diffgram.exports."+exp.Project+"."+name+".completed"); err == nil {
				t.Errorf("%s: a completion event for a source that matches no file", name)
			}
			continue
		}
		// The event follows latest.json closely; allow it a moment.
		var err error
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if err = announced(name); err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			t.Error(err)
		}
	}

	// Each newest export can be downloaded by its signed URL, without
	// credentials, byte for byte.
	for name, d := range exp.Definitions {
		if d.NoExport {
			continue
		}
		var latest struct {
			Key string `json:"data_key"`
		}
		r, err := bucket.NewReader(t.Context(), "exports/"+name+"/latest.json")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(r).Decode(&latest)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		u, err := svc.Bucket(conn.Name).SignedURL(t.Context(), latest.Key, time.Minute)
		if err != nil {
			t.Fatalf("signed URL of %s: %v", latest.Key, err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET signed URL of %s: %s, %v", latest.Key, resp.Status, err)
		}
		r, err = bucket.NewReader(t.Context(), latest.Key)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(r)
		r.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("signed URL of %s served %d bytes that differ from the bucket's %d", latest.Key, len(got), len(want))
		}
	}

	// The dead-lettered copies carry their reasons.
	if exp.Poison > 0 {
		cons, err := js.OrderedConsumer(t.Context(), cfg.NATS.DeadLetterStream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(exp.Poison, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n, utf8Reasons := 0, 0
		for m := range batch.Messages() {
			n++
			reason := m.Headers().Get(events.HeaderReason)
			if reason == "" || m.Headers().Get(events.HeaderOriginalSubject) == "" {
				t.Errorf("dead letter %q lacks reason or subject headers: %v", m.Subject(), m.Headers())
			}
			if strings.Contains(reason, "not valid UTF-8") && strings.Contains(reason, "offset") {
				utf8Reasons++
			}
		}
		if utf8Reasons != 1 {
			t.Errorf("%d dead letters say the body is not valid UTF-8 (with the offset), want 1", utf8Reasons)
		}
		if n != exp.Poison {
			t.Errorf("read %d dead letters, want %d", n, exp.Poison)
		}
	}
}

// runScenarios runs every contract example through the real service,
// each on a fresh connection made by conn.
func runScenarios(t *testing.T, conn func(t *testing.T) config.Connection) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range scenarios {
		t.Run(filepath.Base(dir), func(t *testing.T) { runScenario(t, dir, conn(t)) })
	}
}

func TestExamplesLocal(t *testing.T) {
	runScenarios(t, func(t *testing.T) config.Connection {
		return config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}}
	})
}

func TestExamplesS3(t *testing.T) {
	runScenarios(t, func(t *testing.T) config.Connection {
		o := s3test.NewBucket(t)
		return config.Connection{Name: "s3", Type: "s3", S3: &config.S3{
			Bucket: o.Bucket, Region: o.Region, Endpoint: o.Endpoint, PathStyle: true,
			AccessKeyID: o.AccessKeyID, SecretAccessKey: config.Secret(o.SecretAccessKey), PartSize: 5 << 20,
		}}
	})
}

func TestExamplesGCS(t *testing.T) {
	runScenarios(t, func(t *testing.T) config.Connection {
		o := gcstest.NewBucket(t)
		return config.Connection{Name: "gcs", Type: "gcs", GCS: &config.GCS{
			Bucket: o.Bucket, Endpoint: o.Endpoint, CredentialsFile: o.CredentialsFile,
		}}
	})
}

func TestExamplesAzure(t *testing.T) {
	runScenarios(t, func(t *testing.T) config.Connection {
		o := azuritetest.NewBucket(t)
		return config.Connection{Name: "az", Type: "azure", Azure: &config.Azure{
			Container: o.Container, ConnectionString: config.Secret(o.ConnectionString),
		}}
	})
}

// TestConnectionOutage: a real Azure server (Azurite) goes down before
// the events arrive. The local connection keeps exporting, every event is
// applied and acked, and the Azure definitions keep their dirty marks.
// When the server is back, each Azure definition catches up with exactly
// one export of the newest state.
func TestConnectionOutage(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	dir := scenarios[len(scenarios)-1]
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		t.Skip("Azurite, a cloud emulator, left out by -short")
	}
	srv, err := azuritetest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ao := srv.NewBucket(t)

	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	cfg.Connections = append(cfg.Connections, config.Connection{Name: "az", Type: "azure", Azure: &config.Azure{
		Container: ao.Container, ConnectionString: config.Secret(ao.ConnectionString)}})
	for _, e := range slices.Clone(cfg.Exports) {
		e.Name, e.Connection = e.Name+"-az", "az" // same path, other bucket
		cfg.Exports = append(cfg.Exports, e)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, cfg)
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	publishScenario(t, js, dir)

	// The local connection is not held up by the other one.
	waitConverged(t, svc.Bucket("disk"), exp)
	cons, err := js.Consumer(t.Context(), cfg.NATS.Stream, cfg.NATS.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		info, err := cons.Info(t.Context())
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("events not all acked during the outage: %+v, %v", info, err)
		}
	}
	dirty, err := js.KeyValue(t.Context(), cfg.NATS.StatePrefix+"_DIRTY")
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range exp.Definitions {
		if d.NoExport {
			continue // nothing to write, so nothing waits for the bucket
		}
		if _, err := dirty.Get(t.Context(), name+"-az"); err != nil {
			t.Errorf("%s-az: dirty mark missing during the outage: %v", name, err)
		}
	}

	// The Azure definitions did try, and failed.
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if failures(t, svc, "-az") > 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no failed export attempt on the stopped connection")
		}
	}
	// From one scrape: the -az definitions keep failing meanwhile.
	for name, n := range failuresByDefinition(t, svc) {
		if n > 0 && !strings.HasSuffix(name, "-az") {
			t.Errorf("export failures outside the stopped connection: %s %v", name, n)
		}
	}
	// Still ready (the other connection, the API and the downloads
	// work): the stopped connection is reported unhealthy on its own.
	status, body := get(t, "http://"+svc.HTTPAddr()+"/readyz?verbose")
	if status != http.StatusOK || !strings.Contains(body, "connection az: unhealthy: last write at") ||
		!strings.Contains(body, "connection disk: ok") || !strings.Contains(body, "state: ok") {
		t.Errorf("/readyz?verbose during the outage: %d %q", status, body)
	}
	if status, body := get(t, "http://"+svc.HTTPAddr()+"/readyz"); status != http.StatusOK || strings.Contains(body, "connection") {
		t.Errorf("/readyz during the outage: %d %q, want 200 without the connections", status, body)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitConverged(t, svc.Bucket("az"), exp)
	t.Logf("caught up %v after the server came back", time.Since(back).Round(time.Millisecond))
	if status, body := get(t, "http://"+svc.HTTPAddr()+"/readyz?verbose"); status != http.StatusOK || !strings.Contains(body, "connection az: ok") {
		t.Errorf("/readyz?verbose after the outage: %d %q", status, body)
	}
	for name, d := range exp.Definitions {
		want := 1
		if d.NoExport {
			want = 0
		}
		var data []string
		err := svc.Bucket("az").List(t.Context(), "exports/"+name+"/", func(a connectors.Attributes) bool {
			if !strings.HasSuffix(a.Key, "/latest.json") && !strings.HasSuffix(a.Key, ".manifest.json") {
				data = append(data, a.Key)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != want {
			t.Errorf("%s-az: %d data objects after the outage (%q), want %d: one export of the newest state, none of an empty source", name, len(data), data, want)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestConsumerGaugesTaken: the consumer gauges on a registry that
// already has them are an error (Run returns it) rather than gauges
// nobody can scrape.
func TestConsumerGaugesTaken(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newConsumerGauges(reg); err != nil {
		t.Fatal(err)
	}
	_, err := newConsumerGauges(reg)
	if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
		t.Errorf("newConsumerGauges on a registry that has them: %v, want a prometheus.AlreadyRegisteredError", err)
	}
}

// TestMetrics: after the chaos example, /metrics has every family ops
// watch, with the labels they filter on.
func TestMetrics(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	exp, err := pipelinetest.LoadExpected(scenarios[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	svc := startService(t, cfg)
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	publishScenario(t, js, scenarios[0])
	waitConverged(t, svc.Bucket("disk"), exp)
	var name string
	for n, d := range exp.Definitions {
		if !d.NoExport { // one that exports, so that its export metrics exist
			name = n
			break
		}
	}
	want := []string{
		`exportstream_events_consumed_total{type="`,
		`exportstream_events_applied_total{type="`,
		`exportstream_events_stale_total{type="`,
		`exportstream_events_dead_lettered_total{type="`,
		`exportstream_consumer_pending `,
		`exportstream_consumer_ack_pending `,
		`exportstream_exports_total{definition="` + name + `"}`,
		`exportstream_export_bytes_total{definition="` + name + `"}`,
		`exportstream_export_files_total{definition="` + name + `"}`,
		`exportstream_export_duration_seconds_bucket{definition="` + name + `"`,
		`exportstream_event_to_export_seconds_bucket{definition="` + name + `"`,
		`exportstream_last_export_timestamp_seconds{definition="` + name + `"}`,
		`exportstream_bucket_operations_total{connection="disk",op="write"}`,
		`exportstream_bucket_last_write_ok{connection="disk"} 1`,
		`process_resident_memory_bytes `,
	}
	var body string
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, body = get(t, "http://"+svc.HTTPAddr()+"/metrics")
		missing := 0
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(end) {
			for _, w := range want {
				if !strings.Contains(body, w) {
					t.Errorf("/metrics lacks %s", w)
				}
			}
			return
		}
	}
	if status, body := get(t, "http://"+svc.HTTPAddr()+"/readyz?verbose"); status != http.StatusOK ||
		!strings.Contains(body, "nats: ok") || !strings.Contains(body, "consumer: ok") || !strings.Contains(body, "state: ok") ||
		!strings.Contains(body, "connection disk: ok") {
		t.Errorf("/readyz: %d %q", status, body)
	}
}

// failures sums exportstream_export_failures_total over the definitions
// whose name ends in suffix, from the service's /metrics.
func failures(t *testing.T, svc *Service, suffix string) float64 {
	var sum float64
	for name, v := range failuresByDefinition(t, svc) {
		if strings.HasSuffix(name, suffix) {
			sum += v
		}
	}
	return sum
}

// failuresByDefinition reads exportstream_export_failures_total from one
// scrape of the service's metrics, by definition.
func failuresByDefinition(t *testing.T, svc *Service) map[string]float64 {
	resp, err := http.Get("http://" + svc.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `exportstream_export_failures_total{definition="`)
		if !ok {
			continue
		}
		name, value, _ := strings.Cut(rest, `"} `)
		var v float64
		fmt.Sscan(value, &v)
		out[name] += v
	}
	return out
}

// exampleScenario returns the contract example's folder and expected
// exports.
func exampleScenario(t *testing.T, name string) (string, *pipelinetest.Expected) {
	t.Helper()
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scenarios {
		if filepath.Base(s) == name {
			exp, err := pipelinetest.LoadExpected(s)
			if err != nil {
				t.Fatal(err)
			}
			return s, exp
		}
	}
	t.Fatalf("no contract example %s", name)
	return "", nil
}

// TestTwoReplicas runs two services on one (non-embedded) NATS server,
// sharing the consumer, the state and the export ids: the chaos example
// converges to the expected exports, each bad event is dead-lettered once,
// and export ids are unique.
func TestTwoReplicas(t *testing.T) {
	dir, exp := exampleScenario(t, "street-scenes-chaos")
	ns := eventstest.StartServer(t)
	bucketDir := t.TempDir()
	conn := config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: bucketDir}}
	for range 2 {
		cfg := testConfig(t, exp, conn)
		cfg.NATS.URL = ns.ClientURL()
		startService(t, cfg)
	}
	_, js := eventstest.Connect(t, ns)
	publishScenario(t, js, dir)
	bucket, err := local.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, bucket, exp)
	dlq, err := js.Stream(t.Context(), "DIFFGRAM_EVENTS_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != exp.Poison {
		t.Errorf("dead-letter stream holds %d, want %d", info.State.Msgs, exp.Poison)
	}
	// Every data object has its own id.
	seen := map[string]string{}
	err = bucket.List(t.Context(), "exports/", func(a connectors.Attributes) bool {
		base := filepath.Base(a.Key)
		if strings.HasSuffix(base, ".manifest.json") || base == "latest.json" {
			return true
		}
		id, _, _ := strings.Cut(base, "_")
		if other, dup := seen[id]; dup {
			t.Errorf("export id %s used twice: %s and %s", id, other, a.Key)
		}
		seen[id] = a.Key
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNATSRestart: the (non-embedded) NATS server restarts mid-stream;
// the service reconnects, its consumer and watches resume, and the
// exports converge with nothing lost.
func TestNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS and waits for the reconnect, left out by -short")
	}
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	dir := scenarios[len(scenarios)-1] // street-scenes-ordered
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	storeDir := t.TempDir()
	ns := eventstest.StartServerAt(t, storeDir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	bucketDir := t.TempDir()
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: bucketDir}})
	cfg.NATS.URL = ns.ClientURL()
	svc := startService(t, cfg)

	lines, err := os.ReadFile(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Split(strings.TrimSpace(string(lines)), "\n")
	half := filepath.Join(t.TempDir(), "first.jsonl")
	rest := filepath.Join(t.TempDir(), "rest.jsonl")
	os.WriteFile(half, []byte(strings.Join(all[:len(all)/2], "\n")), 0o644)
	os.WriteFile(rest, []byte(strings.Join(all[len(all)/2:], "\n")), 0o644)

	_, js := eventstest.Connect(t, ns)
	publishScenario(t, js, half)
	ns.Shutdown()
	ns.WaitForShutdown()
	// The service notices the drop before the server is back.
	eventually(t, 10*time.Second, "/readyz does not say NATS is down", func() bool {
		status, body := get(t, "http://"+svc.HTTPAddr()+"/readyz")
		return status == http.StatusServiceUnavailable && strings.Contains(body, "nats: not connected")
	})
	ns2 := eventstest.StartServerAt(t, storeDir, port)
	_, js2 := eventstest.Connect(t, ns2)
	publishScenario(t, js2, rest)

	bucket, err := local.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, bucket, exp)
}
