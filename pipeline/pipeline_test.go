package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// outage wraps a real bucket and refuses writes while down, as a bucket
// that cannot be reached would.
type outage struct {
	connectors.Bucket
	down   atomic.Bool
	writes atomic.Int64 // data objects committed
}

var errDown = errors.New("bucket unreachable (test outage)")

func (o *outage) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	if o.down.Load() {
		return nil, errDown
	}
	w, err := o.Bucket.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	return &outageWriter{Writer: w, o: o, data: !strings.HasSuffix(key, "latest.json") && !strings.HasSuffix(key, ".manifest.json")}, nil
}

func (o *outage) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	if o.down.Load() {
		return connectors.Attributes{}, errDown
	}
	return o.Bucket.Attributes(ctx, key)
}

type outageWriter struct {
	connectors.Writer
	o    *outage
	data bool
}

func (w *outageWriter) Close() error {
	if w.o.down.Load() {
		_ = w.Writer.Abort()
		return errDown
	}
	err := w.Writer.Close()
	if err == nil && w.data {
		w.o.writes.Add(1)
	}
	return err
}

// harness runs a consumer and a pipeline on a real in-process server.
type harness struct {
	t      *testing.T
	js     jetstream.JetStream
	p      *Pipeline
	cancel context.CancelFunc
	done   chan struct{}
}

func startHarness(t *testing.T, js jetstream.JetStream, defs []*Definition, buckets map[string]connectors.Bucket) *harness {
	t.Helper()
	return startHarnessWith(t, js, Options{Definitions: defs, Buckets: buckets}, nil)
}

// startHarnessWith is startHarness with more options (StatePrefix "T",
// Owner "test" and a logger unless set); prep, when not nil, is called on
// the pipeline before it runs.
func startHarnessWith(t *testing.T, js jetstream.JetStream, opts Options, prep func(*Pipeline)) *harness {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.StatePrefix == "" {
		opts.StatePrefix = "T"
	}
	if opts.Owner == "" {
		opts.Owner = "test"
	}
	if opts.Logger == nil {
		opts.Logger = log
	}
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := events.NewConsumer(ctx, js, events.ConsumerConfig{
		Stream: "EV", Subjects: []string{"diffgram.events.>"}, CreateStream: true,
		Consumer: "c", DeadLetter: "EV_DLQ", MaxEventBytes: 1 << 20, AckWait: 10 * time.Second,
	}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := openTest(t, ctx, js, opts)
	if err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(p)
	}
	h := &harness{t: t, js: js, p: p, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	wg.Go(func() { _ = cons.Run(ctx, p.Handle) })
	go func() { wg.Wait(); close(h.done) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		h.t.Error("pipeline did not stop")
	}
}

func publishLines(t *testing.T, js jetstream.JetStream, lines []line) {
	t.Helper()
	for _, l := range lines {
		m := nats.NewMsg(l.subject)
		m.Data = l.body
		var probe struct{ ID string }
		_ = json.Unmarshal(l.body, &probe)
		if _, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(probe.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func latestRecord(t *testing.T, b connectors.Bucket, prefix string) *manifest {
	var m manifest
	if err := readJSON(t.Context(), b, prefix+"latest.json", &m); err != nil {
		return nil
	}
	return &m
}

// TestOpenMetricsTaken: Open on a registry that already has one of the
// pipeline's metrics fails with the registry's error instead of running
// with a metric nobody can scrape.
func TestOpenMetricsTaken(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "exportstream_exports_total", Help: "Exports written, by definition.",
	}, []string{"definition"}))
	_, err = openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: "test",
		Buckets: map[string]connectors.Bucket{"disk": b}, Registerer: reg})
	if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
		t.Errorf("Open with exportstream_exports_total taken: %v, want a prometheus.AlreadyRegisteredError", err)
	}
}

// TestBucketOutage: while the bucket is down events are still applied and
// acked, nothing is written, and nothing is lost; when it is back the
// definition catches up with one export of the newest state, and the
// retries wrote the same key.
func TestBucketOutage(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &outage{Bucket: real}
	b.down.Store(true)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 50*time.Millisecond, time.Second
	h := startHarness(t, js, []*Definition{d}, map[string]connectors.Bucket{"disk": b})

	publishLines(t, js, readLines(t, scenario))
	cons, err := js.Consumer(t.Context(), "EV", "c")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event acked during the outage", 20*time.Second, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	var failedKey string
	waitFor(t, "a failed export attempt", 20*time.Second, func() bool {
		keys, _ := h.p.records.kv.Keys(t.Context())
		for _, k := range keys {
			if strings.HasPrefix(k, RecordKeyPrefix) {
				e, err := h.p.records.kv.Get(t.Context(), k)
				var r Record
				if err == nil && json.Unmarshal(e.Value(), &r) == nil && r.Status == StatusFailed {
					failedKey = r.Key
					return true
				}
			}
		}
		return false
	})
	if n := b.writes.Load(); n != 0 {
		t.Fatalf("%d data objects written while the bucket was down", n)
	}
	if _, err := h.p.dirty.Get(t.Context(), d.Name); err != nil {
		t.Fatalf("dirty mark gone during the outage: %v", err)
	}

	b.down.Store(false)
	waitFor(t, "the export after the outage", 30*time.Second, func() bool {
		m := latestRecord(t, real, d.Path)
		return m != nil && m.FileListLength == exp.Definitions[d.Name].FileListLength
	})
	m := latestRecord(t, real, d.Path)
	if m.Key != failedKey {
		t.Errorf("the retry wrote %s, the failed attempt had %s: a retry must write the same key", m.Key, failedKey)
	}
	doc, err := io.ReadAll(must(real.NewReader(t.Context(), m.Key)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pipelinetest.Check(doc, exp, exp.Definitions[d.Name]) {
		t.Error(p)
	}
	waitFor(t, "dirty mark cleared", 10*time.Second, func() bool {
		_, err := h.p.dirty.Get(t.Context(), d.Name)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	if n := b.writes.Load(); n != 1 {
		t.Errorf("%d data objects written after the outage, want 1 (one export of the newest state)", n)
	}
}

func must(r io.ReadCloser, err error) io.ReadCloser {
	if err != nil {
		panic(err)
	}
	return r
}

// TestRestartExportsDirty: a definition marked dirty while no exporter
// ran is exported on the next start (trigger startup), and an unchanged
// definition is not written again.
func TestRestartExportsDirty(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := definitionFor(t, "night-review-all", exp.Project, exp.Definitions["night-review-all"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 50*time.Millisecond, time.Second
	buckets := map[string]connectors.Bucket{"disk": bucket}

	// First run: everything exported.
	h := startHarness(t, js, []*Definition{d}, buckets)
	publishLines(t, js, readLines(t, scenario))
	waitFor(t, "first export", 20*time.Second, func() bool {
		m := latestRecord(t, bucket, d.Path)
		return m != nil && m.FileListLength == 3
	})
	waitFor(t, "dirty mark cleared", 10*time.Second, func() bool {
		_, err := h.p.dirty.Get(t.Context(), d.Name)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	h.stop()
	// The newest export of the first run (an earlier one may have had the
	// three files before all their instances).
	first := latestRecord(t, bucket, d.Path)

	// While stopped: a change lands in state with its dirty mark (as the
	// consumer of a replica that died before exporting would leave it).
	p2, err := openTest(t, t.Context(), js, Options{Definitions: []*Definition{d}, Buckets: buckets, StatePrefix: "T", Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"specversion":"1.0","id":"late-task","source":"t","type":"diffgram.task.status_changed","diffgramproject":"street-scenes","data":{"task":{"id":9002,"job_id":12,"file_id":5003,"status":"archived","created_time":"2026-03-01T00:00:02Z","version":9}}}`
	ev, err := events.Decode("diffgram.events.street-scenes.task.status_changed", []byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Handle(t.Context(), []*events.Event{ev}); err != nil {
		t.Fatal(err)
	}

	// Restart: the mark is exported.
	h = startHarness(t, js, []*Definition{d}, buckets)
	waitFor(t, "startup export", 20*time.Second, func() bool {
		m := latestRecord(t, bucket, d.Path)
		return m != nil && m.ID > first.ID
	})
	m := latestRecord(t, bucket, d.Path)
	if m.Trigger != TriggerStartup || m.FileListLength != 2 {
		t.Errorf("after restart: trigger %q, %d files; want startup, 2 (task 9002 archived)", m.Trigger, m.FileListLength)
	}
	waitFor(t, "dirty mark cleared", 10*time.Second, func() bool {
		_, err := h.p.dirty.Get(t.Context(), d.Name)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	h.stop()

	// Another start with nothing changed asks for no export. A start
	// exports for the dirty marks it finds and for what startupKicks
	// kicks: there is no mark, and on a pipeline opened as a restart
	// opens it the start-up check kicks nothing.
	if _, err := h.p.dirty.Get(t.Context(), d.Name); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("dirty mark after the startup export: %v, want none", err)
	}
	p3, err := openTest(t, t.Context(), js, Options{Definitions: []*Definition{d}, Buckets: buckets, StatePrefix: "T", Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p3.startupKicks(t.Context())
	select {
	case trig := <-p3.kicks[d.Name]:
		t.Errorf("unchanged definition kicked at start (%s)", trig)
	default:
	}
}

// TestKeepLast: with keep_last 2 only the two newest exports' data objects
// and manifests stay; older ones are deleted and their records say so;
// other objects under the same path (even ones named like exports) are
// never touched, and latest.json stays.
func TestKeepLast(t *testing.T) {
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var foreign []string
	h, d, _ := luckfrill(t, b, func(d *Definition) {
		d.KeepLast = 2
		stem := d.Path + "999_diffgram_annotations__source_directory_Luckfrill_datetime_2020-01-01T00-00-00.000000"
		foreign = []string{d.Path + "README.txt", stem + ".json", stem + ".manifest.json", d.Path + "old/manifest.json"}
		for _, k := range foreign {
			if err := putBytes(t.Context(), b, k, []byte("not ours"), connectors.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})

	var ids []int64
	var keys []string
	for i := range 5 {
		waitFor(t, fmt.Sprintf("export %d", i+1), 30*time.Second, func() bool {
			m := latestRecord(t, b, d.Path)
			return m != nil && (len(ids) == 0 || m.ID > ids[len(ids)-1])
		})
		m := latestRecord(t, b, d.Path)
		ids = append(ids, m.ID)
		keys = append(keys, m.Key, m.ManifestKey)
		h.p.kick(d.Name, TriggerManual) // same content, exported again on demand
	}

	want := append(slices.Clone(foreign), d.Path+"latest.json")
	want = append(want, keys[len(keys)-4:]...)
	slices.Sort(want)
	waitFor(t, "old exports deleted", 10*time.Second, func() bool {
		var got []string
		_ = b.List(t.Context(), "", func(a connectors.Attributes) bool { got = append(got, a.Key); return true })
		return slices.Equal(got, want)
	})
	// The objects go first, then each record gets its deleted_time: wait
	// for the records of the deleted exports, then check them all.
	deletedAsWanted := func(report bool) bool {
		ok := true
		for i, id := range ids {
			r, err := h.p.Record(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if deleted := r.DeletedTime != nil; deleted != (i < len(ids)-2) {
				ok = false
				if report {
					t.Errorf("export %d: deleted_time %v, want deleted %t", id, r.DeletedTime, i < len(ids)-2)
				}
			}
		}
		return ok
	}
	for deadline := time.Now().Add(10 * time.Second); !deletedAsWanted(false) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	deletedAsWanted(true)
}

// lostAck wraps a real bucket; the first data-object Close does what
// `commit` says and then reports a failure, as a write whose answer was
// lost on the way back would.
type lostAck struct {
	connectors.Bucket
	commit func(w connectors.Writer, b connectors.Bucket, key string) error
	once   atomic.Bool
	first  atomic.Value // string: the key of the first attempt
}

func (l *lostAck) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	w, err := l.Bucket.NewWriter(ctx, key, opts)
	if err != nil || strings.HasSuffix(key, "latest.json") || strings.HasSuffix(key, ".manifest.json") || !l.once.CompareAndSwap(false, true) {
		return w, err
	}
	l.first.Store(key)
	return &lostAckWriter{Writer: w, l: l, key: key}, nil
}

type lostAckWriter struct {
	connectors.Writer
	l   *lostAck
	key string
}

func (w *lostAckWriter) Close() error {
	if err := w.l.commit(w.Writer, w.l.Bucket, w.key); err != nil {
		return err
	}
	return errors.New("connection reset by peer (test: the answer to a committed write was lost)")
}

// luckfrill runs the ordered example through a pipeline with one
// definition, luckfrill-complete, on connection "disk" = b (quiet 20 ms);
// before start adjust may change the definition and prepare the bucket.
func luckfrill(t *testing.T, b connectors.Bucket, adjust ...func(*Definition)) (*harness, *Definition, *pipelinetest.Expected) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
	for _, f := range adjust {
		f(d)
	}
	h := startHarness(t, js, []*Definition{d}, map[string]connectors.Bucket{"disk": b})
	publishLines(t, js, readLines(t, scenario))
	return h, d, exp
}

// A retry that finds its own object already committed under its key (the
// same SHA-256) counts as done: the export completes with that key.
func TestRetryFindsItsOwnObject(t *testing.T) {
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &lostAck{Bucket: real, commit: func(w connectors.Writer, _ connectors.Bucket, _ string) error { return w.Close() }}
	// The first attempt must render the whole example: a retry that
	// renders newer state finds a different object under its key and
	// rightly makes a new export (the example is published in well under
	// the quiet period).
	_, d, exp := luckfrill(t, b, func(d *Definition) { d.Quiet, d.MaxDelay = 500*time.Millisecond, 10*time.Second })
	waitFor(t, "the export", 30*time.Second, func() bool {
		m := latestRecord(t, real, d.Path)
		return m != nil && m.FileListLength == exp.Definitions[d.Name].FileListLength
	})
	m := latestRecord(t, real, d.Path)
	if first, _ := b.first.Load().(string); m.Key != first {
		t.Errorf("latest export is %s, want the first attempt's key %s (its object was committed)", m.Key, first)
	}
	var data []string
	_ = real.List(t.Context(), d.Path, func(a connectors.Attributes) bool {
		if !strings.HasSuffix(a.Key, "latest.json") && !strings.HasSuffix(a.Key, ".manifest.json") {
			data = append(data, a.Key)
		}
		return true
	})
	if len(data) != 1 {
		t.Errorf("data objects %q, want exactly one", data)
	}
}

// A different object under the export's key is never overwritten: that
// attempt fails with a reason, and the next one is a new export.
func TestForeignObjectUnderKeyIsKept(t *testing.T) {
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign := []byte(`{"written by": "someone else"}`)
	b := &lostAck{Bucket: real, commit: func(w connectors.Writer, b connectors.Bucket, key string) error {
		_ = w.Abort()
		return putBytes(context.Background(), b, key, foreign, connectors.WriteOptions{IfAbsent: true})
	}}
	h, d, exp := luckfrill(t, b)
	waitFor(t, "the export", 30*time.Second, func() bool {
		m := latestRecord(t, real, d.Path)
		return m != nil && m.FileListLength == exp.Definitions[d.Name].FileListLength
	})
	first, _ := b.first.Load().(string)
	m := latestRecord(t, real, d.Path)
	if m.Key == first {
		t.Fatalf("latest export reuses the key %s that holds another object", first)
	}
	got, err := io.ReadAll(must(real.NewReader(t.Context(), first)))
	if err != nil || !bytes.Equal(got, foreign) {
		t.Errorf("the foreign object under %s was changed: %q, %v", first, got, err)
	}
	var reason string
	keys, _ := h.p.records.kv.Keys(t.Context())
	for _, k := range keys {
		if e, err := h.p.records.kv.Get(t.Context(), k); err == nil && strings.HasPrefix(k, RecordKeyPrefix) {
			var r Record
			if json.Unmarshal(e.Value(), &r) == nil && r.Key == first {
				reason = r.StatusText
			}
		}
	}
	if !strings.Contains(reason, "already exists with different content; not overwritten") {
		t.Errorf("the first attempt's record says %q, want the reason", reason)
	}
}

// openTest opens a pipeline with its local state store in a temporary
// folder of the test, closed when the test ends (after the cleanups
// registered later, which stop it).
func openTest(t testing.TB, ctx context.Context, js jetstream.JetStream, opts Options) (*Pipeline, error) {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	p, err := Open(ctx, js, opts)
	if err == nil {
		t.Cleanup(func() {
			if err := p.Close(); err != nil {
				t.Errorf("close the local state store: %v", err)
			}
		})
	}
	return p, err
}
