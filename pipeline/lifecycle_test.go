package pipeline

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// stalled is a real bucket whose writers of keys under prefix wait for
// their context to end (then fail with its cause); started is closed at
// the first such writer.
type stalled struct {
	connectors.Bucket
	prefix   string
	once     sync.Once
	started  chan struct{}
	returned atomic.Bool // a held writer's context ended
}

func (s *stalled) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	if strings.HasPrefix(key, s.prefix) {
		s.once.Do(func() { close(s.started) })
		<-ctx.Done()
		s.returned.Store(true)
		return nil, context.Cause(ctx)
	}
	return s.Bucket.NewWriter(ctx, key, opts)
}

// handleExample applies the ordered example's events to p with Handle,
// as the consumer would (Run need not run).
func handleExample(t *testing.T, p *Pipeline) {
	t.Helper()
	scenario, _ := orderedExample(t)
	var batch []*events.Event
	for i, l := range readLines(t, scenario) {
		ev, err := events.Decode(l.subject, l.body, 1<<20)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		ev.Seq = uint64(i + 1)
		batch = append(batch, ev)
	}
	if err := p.Handle(t.Context(), batch); err != nil {
		t.Fatalf("Handle: %v", err)
	}
}

// TestAdhocBeforeRunStopsWithRun starts an ad-hoc export before Run,
// into a bucket that holds its writes until their context ends, then runs
// and stops the pipeline: the export's context ends with Run, so Run
// returns (it waits for the ad-hoc exports it has to stop).
func TestAdhocBeforeRunStopsWithRun(t *testing.T) {
	p, _ := stalledAdhoc(t, func(js jetstream.JetStream, opts Options) (*Pipeline, error) {
		return openTest(t, t.Context(), js, opts)
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	cancel()
	runReturned(t, done, "Run did not return after its context ended: the ad-hoc export started before it still runs")
}

// stalledAdhoc opens a pipeline with open (on a new server, the ordered
// example applied) and starts an ad-hoc export whose bucket writes stall
// until their context ends; it returns once the export is writing.
func stalledAdhoc(t *testing.T, open func(jetstream.JetStream, Options) (*Pipeline, error)) (*Pipeline, *stalled) {
	t.Helper()
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &stalled{Bucket: real, prefix: AdhocPath, started: make(chan struct{})}
	_, exp := orderedExample(t)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	p, err := open(js, Options{StatePrefix: "T", Owner: "test", Buckets: map[string]connectors.Bucket{"disk": b}})
	if err != nil {
		t.Fatal(err)
	}
	handleExample(t, p)
	if _, err := p.GenerateAdhoc(t.Context(), Definition{Project: exp.Project, Source: d.Source, Completion: "all", Connection: "disk"}); err != nil {
		t.Fatalf("GenerateAdhoc: %v", err)
	}
	select {
	case <-b.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the ad-hoc export never wrote")
	}
	return p, b
}

// runReturned waits for Run's result on done, which must be nil; after
// 20 s it fails with stuck.
func runReturned(t *testing.T, done <-chan error, stuck string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal(stuck)
	}
}

// TestAdhocStopsAtClose: an ad-hoc export of a pipeline that never ran
// ends at Close, which waits for it before closing the local store.
func TestAdhocStopsAtClose(t *testing.T) {
	p, b := stalledAdhoc(t, func(js jetstream.JetStream, opts Options) (*Pipeline, error) {
		opts.StateDir = t.TempDir()
		return Open(t.Context(), js, opts) // closed by the test
	})
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !b.returned.Load() {
		t.Error("Close returned while the ad-hoc export still writes (its context never ends)")
	}
}

// TestPartitionConsumersStopFirst: when Run's context ends, the consumers
// of the partitions it holds are stopped while the rest of the pipeline
// still runs (the batch in hand is applied and its exports can start),
// and Run returns after them.
func TestPartitionConsumersStopFirst(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	const n = 2
	started := make(chan struct{}, n)
	var mu sync.Mutex
	var restRan []bool // per stopped consumer: the rest still ran when it returned
	var p *Pipeline
	p, err := openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: "test", Partitions: n,
		RunPartition: func(ctx context.Context, _ int, _ events.Handler) error {
			started <- struct{}{}
			<-ctx.Done()
			mu.Lock()
			defer mu.Unlock()
			restRan = append(restRan, p.runCtx().Err() == nil)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range n {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("the partitions were not taken")
		}
	}
	cancel()
	runReturned(t, done, "Run did not return")
	mu.Lock()
	defer mu.Unlock()
	if len(restRan) != n || slices.Contains(restRan, false) {
		t.Errorf("the pipeline still ran when its partitions' consumers returned: %v, want %d × true", restRan, n)
	}
	if p.runCtx().Err() == nil {
		t.Error("Run returned and its context for callers' work still runs")
	}
}

// TestSweepAbandoned: a manual request taken by a replica that stopped
// before exporting it (its record pending) is marked failed by the sweep
// of a running replica, at start; a replica that still heartbeats keeps
// its unfinished records (an ad-hoc export held by its bucket), until it
// stops; a record of a version without owners is swept only while no
// other replica heartbeats.
func TestSweepAbandoned(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	const ttl = time.Second
	d, exp, real := diskDefinition(t)
	open := func(owner string, b connectors.Bucket) *Pipeline {
		p, err := openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: owner, LivenessTTL: ttl,
			Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": b}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(p *Pipeline) (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = p.Run(ctx) }()
		stop = func() {
			cancel()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
		}
		t.Cleanup(stop)
		return stop
	}

	// A replica that took a manual request and stopped before its
	// export: it never ran, so it never heartbeat.
	gone := open("gone", real)
	manual, err := gone.Generate(t.Context(), d.Name)
	if err != nil {
		t.Fatal(err)
	}
	// A live replica with an ad-hoc export its bucket holds.
	b := &stalled{Bucket: real, prefix: AdhocPath, started: make(chan struct{})}
	busy := open("busy", b)
	handleExample(t, busy)
	stopBusy := run(busy)
	held, err := busy.GenerateAdhoc(t.Context(), Definition{Project: exp.Project, Source: d.Source, Completion: "all", Connection: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	<-b.started

	sweeper := open("sweeper", real)
	run(sweeper)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := sweeper.WaitRecord(ctx, manual.ID)
	if err != nil {
		t.Fatalf("the pending record of the stopped replica: %v", err)
	}
	if r.Status != StatusFailed || !strings.Contains(r.StatusText, "abandoned") || !strings.Contains(r.StatusText, gone.Owner()) {
		t.Errorf("the pending record of the stopped replica: %s %q, want failed, abandoned by %s", r.Status, r.StatusText, gone.Owner())
	}

	// A record of a version without owners, while two replicas run.
	legacy := Record{ID: 1 << 40, Name: d.Name, Project: d.Project, Status: StatusPending, Trigger: TriggerManual,
		CreatedTime: time.Now().Add(-time.Hour).UTC()}
	if _, err := sweeper.records.kv.Put(ctx, RecordKey(legacy.ID), mustJSON(legacy)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sweeper's index holds the legacy record", 10*time.Second, func() bool {
		found, _, _ := sweeper.records.index.state(legacy.ID)
		return found
	})
	// A round now: the live replica's record and the legacy one stay.
	sweeper.sweepAbandoned(ctx)
	for _, id := range []int64{held.ID, legacy.ID} {
		r, err := sweeper.Record(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if Final(r.Status) {
			t.Errorf("record %d swept while its replica (or another one) heartbeats: %s %q", id, r.Status, r.StatusText)
		}
	}

	// The busy replica stops; its ad-hoc export's record could not be
	// finished (its bucket held it until the end).
	stopBusy()
	waitFor(t, "the stopped replica's records swept", 30*time.Second, func() bool {
		sweeper.sweepAbandoned(ctx)
		a, errA := sweeper.Record(ctx, held.ID)
		l, errL := sweeper.Record(ctx, legacy.ID)
		return errA == nil && errL == nil && Final(a.Status) && Final(l.Status)
	})
	if r, _ := sweeper.Record(ctx, legacy.ID); r.Status != StatusFailed || !strings.Contains(r.StatusText, "abandoned") {
		t.Errorf("legacy record: %s %q, want failed, abandoned", r.Status, r.StatusText)
	}
}

// diskDefinition returns the ordered example's luckfrill-complete
// definition writing to the connection "disk", the example, and a fresh
// local bucket for that connection.
func diskDefinition(t *testing.T) (*Definition, *pipelinetest.Expected, connectors.Bucket) {
	t.Helper()
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, exp := orderedExample(t)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection = "disk"
	return d, exp, bucket
}
