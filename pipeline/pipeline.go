// Package pipeline turns applied events into exports: it keeps the state
// (newest snapshot per entity, durable in JetStream key-value buckets),
// works out which export definitions a change touches and marks them
// dirty durably, coalesces per definition, renders the Diffgram export
// document straight from state into the bucket, then writes the manifest,
// latest.json (never rolled back), the export record and the completion
// event.
//
// Guarantees: an event's batch is reported durable (Handle returns nil)
// only once its state and the dirty marks of the definitions it touches
// are stored; a dirty mark is cleared only by an export that covers it.
// So a crash at any point loses nothing: on restart the marks still there
// are exported. One replica at a time exports a definition (a lease).
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
)

// Options configure a Pipeline.
type Options struct {
	Definitions []*Definition
	// Buckets by connection name; every definition's connection is here.
	Buckets map[string]connectors.Bucket
	// StatePrefix names the key-value buckets: <prefix>_STATE, _DIRTY,
	// _EXPORTS, _LEASES and _REPLICAS.
	StatePrefix string
	Replicas    int
	// ExportsStream, when not empty, is created (if missing) to keep the
	// completion events published on diffgram.exports.>.
	ExportsStream string
	// Deployment names this deployment in the completion events' source,
	// "exportstream/<Deployment>"; empty: the host name.
	Deployment string
	// Owner names this replica in leases, for humans (for example host
	// name and process id; empty: those). Open appends a random id, so
	// that two replicas never share an identity (see Pipeline.Owner),
	// whatever their host names and process ids.
	Owner string
	// LivenessTTL is how long this replica's heartbeat key lives in the
	// <prefix>_REPLICAS bucket after each heartbeat (every LivenessTTL/4):
	// a replica that stops heartbeating (killed, cut off from NATS) has
	// its leases taken over that long after its last heartbeat, instead
	// of after the lease TTL. 0: DefaultLivenessTTL. All replicas must
	// use the same value (it is the bucket's TTL).
	LivenessTTL time.Duration
	// MaxBackoff caps the wait between a definition's failed export
	// attempts (0.5 s doubling up to it). 0: DefaultMaxBackoff. A retry
	// also starts at once when the NATS connection comes back, or when the
	// definition's bucket answers again after failing.
	MaxBackoff time.Duration
	// UploadsPerConnection bounds concurrent exports per connection
	// (default 2); Uploads overrides it per connection name. Each
	// connection has its own slots, so a slow or unreachable bucket
	// holds up only its own definitions.
	UploadsPerConnection int
	Uploads              map[string]int
	Logger               *slog.Logger
	Registerer           prometheus.Registerer

	// RecordsKeepLast, when > 0, keeps each definition's newest
	// RecordsKeepLast export records in the records bucket (ad-hoc exports
	// count as one definition, AdhocName) and deletes older ones;
	// RecordsMaxAge, when > 0, deletes records that ended (completed_time,
	// else created_time) longer ago. Neither deletes a record that is not
	// final, nor a definition's newest complete or newest skipped record.
	// Both 0: records are kept forever.
	RecordsKeepLast int
	RecordsMaxAge   time.Duration

	// StateDir is the folder of the local state store (DiskState, a cache
	// of the state bucket: see OpenStateDir). Empty: a temporary folder,
	// removed by Close.
	StateDir string

	// MaxAdhoc bounds the ad-hoc exports running at once on this replica
	// (GenerateAdhoc; default DefaultMaxAdhoc). Identical requests share
	// one export and count once.
	MaxAdhoc int

	// Partitions > 1: the event stream is partitioned by project
	// (events.Partitioning) and this replica holds, applies and exports
	// only the projects of the partitions it leases (partition.go).
	// RunPartition then runs partition i's consumer, handing its batches
	// to handle, until ctx is done.
	Partitions   int
	RunPartition func(ctx context.Context, i int, handle events.Handler) error

	// EventsStream is the stream of annotation events the consumer reads,
	// and EventLimits the consumer's decoding limits: point-in-time
	// exports (GenerateAsOf, asof.go) replay that stream and drop the
	// bad input the consumer dead-letters. Empty: they are refused.
	EventsStream string
	EventLimits  events.Limits
}

// Pipeline is the state plus the exporter. Create it with Open, feed it
// with Handle (the event consumer's handler) and run it with Run.
type Pipeline struct {
	js      jetstream.JetStream
	opts    Options
	log     *slog.Logger
	state   *DiskState
	tmpDir  string // StateDir when it is temporary
	store   *Store
	dirty   jetstream.KeyValue
	marksMu sync.Mutex
	marks   map[string]knownMark // definition → its dirty mark as this replica last wrote or read it
	records *records             // the export records, their index and retention (records.go)
	leases  jetstream.KeyValue
	live    *liveness // this replica's heartbeat and lease identity (liveness.go)
	defs    []*Definition
	byName  map[string]*Definition
	kicks   map[string]chan Trigger
	slots   map[string]chan struct{}

	// requests are the manual and ad-hoc requests waiting or running
	// (requests.go).
	requests *requests
	// life is the context of the work Run's callers start (ad-hoc exports,
	// forwarded requests, record reads): cancelled as soon as Run's
	// context ends (or one of its parts fails), or by Close when Run never
	// ran.
	life    context.Context
	endLife context.CancelCauseFunc

	fresh freshness // what LastApplied and Freshness report (freshness.go)

	health    writeHealth   // what WriteHealth reports (health.go)
	replaying chan struct{} // holds one token while a point-in-time export replays (asof.go)
	// viewMu orders a plan's view with this replica's applied batches
	// (Handle holds it shared), so that the view's watermark is exact:
	// appliedSeq, the highest stream sequence of the batches applied.
	viewMu     sync.RWMutex
	appliedSeq atomic.Uint64

	wakeMu sync.Mutex
	wake   chan struct{} // closed (and replaced) to end every retry wait at once: see retryNow
	// reconn ends (and is replaced) when the NATS connection comes back:
	// see untilReconnect.
	reconn       context.Context
	reconnCancel context.CancelFunc

	parts *partitions // nil: not partitioned (partition.go)

	m metrics
}

type metrics struct {
	exports      *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	empty        *prometheus.CounterVec
	pruned       *prometheus.CounterVec
	failures     *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	lastGood     *prometheus.GaugeVec
	stale        *prometheus.CounterVec
	applied      *prometheus.CounterVec
	files        *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	stateChanges prometheus.Counter
	partitions   prometheus.Gauge
	abandoned    prometheus.Counter
}

// Open creates (or binds to) the key-value buckets, loads the state and
// returns a Pipeline ready to Run. If Options.Registerer refuses one of
// the pipeline's metrics (already registered), Open returns that error.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Pipeline, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.UploadsPerConnection <= 0 {
		opts.UploadsPerConnection = 2
	}
	if opts.StatePrefix == "" {
		opts.StatePrefix = "EXPORTSTREAM"
	}
	if opts.Deployment == "" {
		opts.Deployment, _ = os.Hostname()
	}
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = host + "/" + strconv.Itoa(os.Getpid())
	}
	if opts.LivenessTTL <= 0 {
		opts.LivenessTTL = DefaultLivenessTTL
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	p := &Pipeline{js: js, opts: opts, log: opts.Logger,
		byName: map[string]*Definition{}, kicks: map[string]chan Trigger{}, slots: map[string]chan struct{}{},
		requests: newRequests(opts.MaxAdhoc), wake: make(chan struct{})}
	p.reconn, p.reconnCancel = context.WithCancel(context.Background())
	p.life, p.endLife = context.WithCancelCause(context.Background())
	p.replaying = make(chan struct{}, 1)
	for _, d := range opts.Definitions {
		if _, ok := opts.Buckets[d.Connection]; !ok {
			return nil, fmt.Errorf("export %s: no bucket for connection %q", d.Name, d.Connection)
		}
		if err := checkMedia(d, opts.Buckets); err != nil {
			return nil, err
		}
		p.defs = append(p.defs, d)
		p.byName[d.Name] = d
		p.kicks[d.Name] = make(chan Trigger, 1)
	}
	for name := range opts.Buckets {
		n := opts.UploadsPerConnection
		if v := opts.Uploads[name]; v > 0 {
			n = v
		}
		p.slots[name] = make(chan struct{}, n)
	}
	kv := func(suffix, desc string, history uint8) (jetstream.KeyValue, error) {
		b, err := createKV(ctx, js, jetstream.KeyValueConfig{
			Bucket: BucketName(opts.StatePrefix, suffix), Description: desc, History: history,
			Storage: jetstream.FileStorage, Replicas: max(opts.Replicas, 1),
		})
		if err != nil {
			return nil, fmt.Errorf("key-value bucket %s: %w", BucketName(opts.StatePrefix, suffix), err)
		}
		return b, nil
	}
	var err error
	if p.dirty, err = kv(BucketDirty, "exportstream: definitions whose export is stale", 1); err != nil {
		return nil, err
	}
	recs, err := kv(BucketExports, "exportstream: export records, per-definition state, id counter", 1)
	if err != nil {
		return nil, err
	}
	if p.leases, err = kv(BucketLeases, "exportstream: one exporting replica per definition", 1); err != nil {
		return nil, err
	}
	replicas, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketName(opts.StatePrefix, BucketReplicas), Description: "exportstream: live replicas (heartbeats; leases name them)",
		History: 1, TTL: opts.LivenessTTL, Storage: jetstream.FileStorage, Replicas: max(opts.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", BucketName(opts.StatePrefix, BucketReplicas), err)
	}
	if p.live, err = newLiveness(replicas, opts.Owner, opts.LivenessTTL, p.log); err != nil {
		return nil, err
	}
	p.records = &records{kv: recs, js: js, bucket: BucketName(opts.StatePrefix, BucketExports), index: newRecordIndex(), owner: p.live.owner,
		keepLast: opts.RecordsKeepLast, maxAge: opts.RecordsMaxAge, maxBackoff: opts.MaxBackoff,
		log: p.log, health: &p.health, runCtx: p.runCtx}
	if opts.ExportsStream != "" {
		err := events.AskAgain(ctx, func() error {
			_, err := js.Stream(ctx, opts.ExportsStream)
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				return err
			}
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name: opts.ExportsStream, Description: "exportstream: one event per completed export",
				Subjects: []string{"diffgram.exports.>"}, Storage: jetstream.FileStorage,
				Replicas: max(opts.Replicas, 1),
			})
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return nil
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("exports stream %s: %w", opts.ExportsStream, err)
		}
	}
	if err := p.initMetrics(); err != nil {
		return nil, err
	}
	dir := opts.StateDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "exportstream-state-"); err != nil {
			return nil, fmt.Errorf("local state store: %w", err)
		}
		p.tmpDir = dir
	}
	if p.state, err = OpenStateDir(dir, p.log); err != nil {
		p.removeTemp()
		return nil, err
	}
	p.sweepScratch() // asof.go
	var accept func(string) bool
	if opts.Partitions > 1 {
		if opts.RunPartition == nil {
			_ = p.Close()
			return nil, errors.New("partitions: Options.RunPartition is not set")
		}
		p.parts = newPartitions(opts.Partitions)
		accept = p.accepts
	}
	if p.store, err = openStore(ctx, js, BucketName(opts.StatePrefix, BucketState), opts.Replicas, p.state, p.log, accept); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// Close stops the ad-hoc exports still running (started when Run did not
// run) and waits for them, then closes the local state store (synced
// first). Call it after Run has returned; the Pipeline must not be used
// after.
func (p *Pipeline) Close() error {
	p.endLife(errClosed)
	p.requests.wait()
	if p.state == nil {
		return nil
	}
	err := p.state.Close()
	p.state = nil
	p.removeTemp()
	return err
}

func (p *Pipeline) removeTemp() {
	if p.tmpDir != "" {
		_ = os.RemoveAll(p.tmpDir)
		p.tmpDir = ""
	}
}

// initMetrics creates the metrics and registers them with
// Options.Registerer (if set); a collector that cannot be registered (a
// name already taken) is an error.
func (p *Pipeline) initMetrics() error {
	p.m = metrics{
		exports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_exports_total", Help: "Exports written, by definition.",
		}, []string{"definition"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_exports_skipped_total", Help: "Exports not written because the content was unchanged, by definition.",
		}, []string{"definition"}),
		empty: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_exports_empty_total", Help: "Export attempts that wrote nothing because the source matched no file (recorded as skipped), by definition.",
		}, []string{"definition"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_exports_deleted_total", Help: "Old exports deleted by retention (keep_last), by definition.",
		}, []string{"definition"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_export_failures_total", Help: "Export attempts that failed (retried), by definition.",
		}, []string{"definition"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_export_bytes_total", Help: "Bytes of export documents written, by definition.",
		}, []string{"definition"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "exportstream_export_duration_seconds", Help: "Time to render and upload one export, by definition.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"definition"}),
		lastGood: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exportstream_last_export_timestamp_seconds", Help: "Time of the last good export, by definition.",
		}, []string{"definition"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_events_stale_total", Help: "Good events that changed nothing (not newer than the stored snapshot), by type.",
		}, []string{"type"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_events_applied_total", Help: "Good events applied to the state (stored, or found stale), by type; applied - stale changed the state.",
		}, []string{"type"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_export_files_total", Help: "Files in the exports written, by definition.",
		}, []string{"definition"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exportstream_event_to_export_seconds",
			Help:    "From the newest event an export covers being applied to that export being visible (latest.json), by definition.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, []string{"definition"}),
		stateChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exportstream_state_changes_total", Help: "Entity snapshots stored.",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exportstream_partitions_held", Help: "Partitions of the event stream this replica holds (nats.partitions > 1).",
		}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exportstream_export_records_abandoned_total", Help: "Unfinished export records of replicas that stopped (requests or exports they never finished) that this replica marked failed.",
		}),
	}
	if r := p.opts.Registerer; r != nil {
		for _, c := range []prometheus.Collector{p.m.exports, p.m.skipped, p.m.empty, p.m.pruned, p.m.failures, p.m.bytes,
			p.m.duration, p.m.lastGood, p.m.stale, p.m.applied, p.m.files, p.m.latency, p.m.stateChanges, p.m.partitions, p.m.abandoned} {
			if err := r.Register(c); err != nil {
				return fmt.Errorf("metrics: %w", err)
			}
		}
		if err := r.Register(mediaCollector{p}); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Handle is the event consumer's handler: it stores the batch's snapshots
// and the dirty marks of the definitions they touch, durably, and returns
// nil only then.
func (p *Pipeline) Handle(ctx context.Context, batch []*events.Event) error {
	for again := false; ; again = true {
		rctx, stop := p.untilReconnect(ctx)
		err := p.handle(rctx, batch, again)
		stop()
		if err == nil || again || ctx.Err() != nil || !errors.Is(context.Cause(rctx), errReconnected) {
			return err
		}
		// Writes sent before the drop may be stored or lost: write the
		// batch again at once instead of after their timeout (the
		// compare-and-swap sorts out which).
		p.log.Info("the NATS connection came back while a batch was written; writing it again", "events", len(batch), "err", err)
	}
}

// handle is one attempt of Handle. again: an earlier attempt failed after
// some of its state writes may have been stored (their events would be
// found stale now): every project of the batch is marked, as for a
// redelivered event, at the highest state revision this replica knows.
func (p *Pipeline) handle(ctx context.Context, batch []*events.Event, again bool) (err error) {
	wrote := false // a batch of stale events writes nothing, and proves nothing
	defer func() {
		if err == nil {
			p.fresh.applied(batch)
		}
		if wrote || err != nil && ctx.Err() == nil {
			p.health.noteState(err)
		}
	}()
	// An event may come again after an attempt that stored its state but
	// died before its dirty marks. It is then redelivered, or, when the
	// embedded server died with the process before it saved the
	// consumer's delivery count, delivered as new while its exact version
	// is already stored. Either way, mark its project's definitions again
	// (an export whose content is unchanged is skipped). Both cases are
	// rare, so this costs little.
	p.viewMu.RLock() // a plan's view is taken between batches (see Pipeline.plan)
	res, err := p.store.Apply(ctx, batch)
	if err == nil {
		p.noteApplied(batch) // asof.go
	}
	p.viewMu.RUnlock()
	if err != nil {
		return err
	}
	wrote = len(res.changes) > 0
	changes, rev, replayed := res.changes, res.rev, res.again
	for _, ev := range batch {
		if ev.Redelivered || again {
			if replayed == nil {
				replayed = map[string]bool{}
			}
			replayed[ev.Project] = true
		}
	}
	p.m.stateChanges.Add(float64(len(changes)))
	for _, ev := range batch {
		p.m.applied.WithLabelValues(ev.Type).Inc()
	}
	for typ, n := range res.stale {
		p.m.stale.WithLabelValues(typ).Add(float64(n))
	}
	if len(changes) == 0 && len(replayed) == 0 {
		return nil
	}
	if len(replayed) > 0 {
		rev = max(rev, p.state.Rev())
	}
	if again {
		rev = max(rev, p.store.known.Load())
	}
	var watermark uint64
	for _, ev := range batch {
		watermark = max(watermark, ev.Seq)
	}
	touched := p.touched(changes, replayed)
	if len(touched) == 0 {
		return nil
	}
	if err := p.markDirty(ctx, touched, dirtyMark{StateRevision: rev, Watermark: watermark, Time: time.Now().UTC()}); err != nil {
		return err
	}
	p.fresh.mark(p.byName, touched, changes, rev)
	// This replica knows its own marks: no need to wait for the watch
	// (which serves the other replicas' marks and start-up).
	for _, name := range touched {
		p.kick(name, TriggerEvent)
	}
	return nil
}

// markDirty marks the definitions stale as of mark. A mark never goes
// down while it is pending: two replicas mark the same definition, and a
// blind write of the lower state revision after the higher one would let
// the export wait for the lower only, render without the other change,
// and clear the mark. So each write is a compare-and-swap on the mark it
// replaces, and it keeps the higher revision and watermark of the two
// (a pending mark at or above this one already covers it).
//
// The first try is one asynchronous write per definition over the mark
// this replica last wrote or read (its revision and content known):
// alone, that is all it takes. A conflict (another replica's mark, or an
// export cleared it) reads the mark and tries again.
func (p *Pipeline) markDirty(ctx context.Context, names []string, mark dirtyMark) error {
	futs := make([]jetstream.PubAckFuture, len(names))
	sent := make([]dirtyMark, len(names))
	for i, name := range names {
		last := p.lastMark(name)
		sent[i] = last.mark.merge(mark)
		msg := &nats.Msg{Subject: KVSubject(BucketName(p.opts.StatePrefix, BucketDirty), name), Data: mustJSON(sent[i]),
			Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(last.rev, 10)}}}
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("dirty mark %s: %w", name, err)
		}
		futs[i] = f
	}
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			p.noteMark(names[i], ack.Sequence, sent[i])
		case err := <-f.Err():
			if !conflict(err) {
				return fmt.Errorf("dirty mark %s: %w", names[i], err)
			}
			if err := p.mergeMark(ctx, names[i], mark); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// merge is the mark that covers both m and o: the higher state revision
// and watermark, o's time.
func (m dirtyMark) merge(o dirtyMark) dirtyMark {
	return dirtyMark{StateRevision: max(m.StateRevision, o.StateRevision), Watermark: max(m.Watermark, o.Watermark), Time: o.Time}
}

// mergeMark writes mark over the definition's pending mark, keeping the
// higher of each, or leaves a pending mark that already covers it.
func (p *Pipeline) mergeMark(ctx context.Context, name string, mark dirtyMark) error {
	for attempt := 0; ; attempt++ {
		if attempt == 50 {
			return fmt.Errorf("dirty mark %s: kept conflicting with other writers", name)
		}
		if attempt > 0 {
			// Replicas marking the same definition at once: let one win.
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		e, err := p.dirty.Get(ctx, name)
		var rev uint64
		var cur dirtyMark
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Absent or cleared: Create takes over a deletion itself.
			cur = mark
			rev, err = p.dirty.Create(ctx, name, mustJSON(cur))
		case err != nil:
			return fmt.Errorf("dirty mark %s: %w", name, err)
		default:
			if json.Unmarshal(e.Value(), &cur) != nil {
				cur = dirtyMark{}
			}
			if cur.StateRevision >= mark.StateRevision && cur.Watermark >= mark.Watermark {
				p.noteMark(name, e.Revision(), cur)
				return nil
			}
			cur = cur.merge(mark)
			rev, err = p.dirty.Update(ctx, name, mustJSON(cur), e.Revision())
		}
		if err == nil {
			p.noteMark(name, rev, cur)
			return nil
		}
		if !conflict(err) {
			return fmt.Errorf("dirty mark %s: %w", name, err)
		}
	}
}

// knownMark is a definition's dirty mark as this replica last wrote or
// read it: its key-value revision (0: none known) and content.
type knownMark struct {
	rev  uint64
	mark dirtyMark
}

func (p *Pipeline) lastMark(name string) knownMark {
	p.marksMu.Lock()
	defer p.marksMu.Unlock()
	return p.marks[name]
}

func (p *Pipeline) noteMark(name string, rev uint64, m dirtyMark) {
	p.marksMu.Lock()
	defer p.marksMu.Unlock()
	if p.marks == nil {
		p.marks = map[string]knownMark{}
	}
	p.marks[name] = knownMark{rev, m}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// touched returns the names of the definitions the changes touch, and of
// every definition of the projects in all.
func (p *Pipeline) touched(changes []change, all map[string]bool) []string {
	set := map[string]bool{}
	for _, d := range p.defs {
		if all[d.Project] {
			set[d.Name] = true
		}
	}
	err := p.state.Read(func(v View) {
		for _, c := range changes {
			pv := v.Project(c.project)
			if pv == nil {
				continue
			}
			for _, d := range p.defs {
				if !set[d.Name] && d.touches(pv, c) {
					set[d.Name] = true
				}
			}
		}
	})
	if err != nil {
		// The view missed entities: mark every definition of the changed
		// projects (an unchanged export is skipped).
		p.log.Error("local state store read failed; marking every definition of the changed projects", "err", err)
		for _, c := range changes {
			for _, d := range p.defs {
				if d.Project == c.project {
					set[d.Name] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Run runs the state watch, the dirty-mark watch and one export loop per
// definition until ctx is done. At start, every definition with a dirty
// mark, no export yet, or changed settings is exported (trigger startup).
// Partitioned, it runs the consumers of the partitions it holds, and when
// ctx ends stops them first (each finishing its batch), then the rest:
// the running exports end or are aborted, and Run returns once they
// have.
// This replica's liveness heartbeat runs from before the first export
// until after the last one; it is deleted when Run returns.
func (p *Pipeline) Run(ctx context.Context) error {
	p.live.beatLogged(ctx)
	hbCtx, hbStop := context.WithCancel(context.WithoutCancel(ctx))
	var hb sync.WaitGroup
	hb.Go(func() { p.live.run(hbCtx) })
	defer func() {
		hbStop()
		hb.Wait()
		p.live.remove(context.WithoutCancel(ctx))
	}()

	// Partitioned, the partitions' consumers stop first, each finishing
	// its batch (balance gives every partition up when its context ends),
	// while the rest still runs; then the rest stops: the exports end or
	// are aborted.
	rest, stopRest := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopRest(nil)
	g, gctx := errgroup.WithContext(rest)
	// What Run's callers started, before Run or while it runs, stops with
	// it.
	stopLife := context.AfterFunc(gctx, func() { p.endLife(context.Cause(gctx)) })
	defer stopLife()
	g.Go(func() error { return p.store.Run(gctx) })
	g.Go(func() error { return p.watchDirty(gctx) })
	g.Go(func() error { p.rescanMarks(gctx); return nil }) // rescan.go
	g.Go(func() error { return p.records.run(gctx, p.sweepRecords) })
	g.Go(func() error { p.retryOnReconnect(gctx); return nil })
	g.Go(func() error { p.askAgainOnElection(gctx); return nil })
	for _, d := range p.defs {
		g.Go(func() error { return p.runDefinition(gctx, d) })
		g.Go(func() error { return p.refreshLinks(gctx, d) }) // media.go
	}
	var balErr error
	if p.parts != nil {
		// A part that fails stops consuming too.
		bctx, stopBal := context.WithCancelCause(ctx)
		stopOnFail := context.AfterFunc(gctx, func() { stopBal(context.Cause(gctx)) })
		balErr = p.balance(bctx)
		stopOnFail()
		stopBal(nil)
	} else {
		select {
		case <-ctx.Done():
		case <-gctx.Done():
		}
	}
	cause := context.Cause(ctx)
	if cause == nil {
		cause = balErr
	}
	stopRest(cause)
	err := g.Wait()
	if balErr != nil && err == nil {
		err = balErr
	}
	p.endLife(context.Cause(gctx))
	p.requests.wait()
	return err
}

// errClosed ends the work still running when the Pipeline is closed.
var errClosed = errors.New("the pipeline is closed")

// Owner is this replica's identity in leases: Options.Owner (host name
// and process id by default) and a random id drawn by Open.
func (p *Pipeline) Owner() string { return p.live.owner }

// runCtx is the context of work Run's callers start, such as ad-hoc
// exports, that must stop with Run (started before Run, too): it ends
// when Run's context does, or at Close.
func (p *Pipeline) runCtx() context.Context { return p.life }

func (p *Pipeline) kick(name string, trigger Trigger) {
	ch := p.kicks[name]
	if ch == nil || !p.holds(p.byName[name].Project) {
		return // another replica holds the definition's project
	}
	select {
	case ch <- trigger:
	default:
	}
}

// watchDirty turns dirty marks (written by any replica) into kicks. If
// the watch ends on its own, it is opened again: its replay of the
// current marks only kicks definitions that need an export anyway.
func (p *Pipeline) watchDirty(ctx context.Context) error {
	initial, first := true, true
	failures := 0
	for {
		w, err := p.dirty.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			// Right after a NATS restart the server may not answer yet:
			// never fatal, try again, backing off up to MaxBackoff.
			if !waitToReopen(ctx, p.log, "dirty-mark", &failures, p.opts.MaxBackoff, err) {
				return nil
			}
			continue
		}
		failures = 0
		if err := p.followDirty(ctx, w, &initial, first); err != nil || ctx.Err() != nil {
			w.Stop()
			return err
		}
		w.Stop()
		first = false
		p.log.Warn("dirty-mark watch ended; watching again")
	}
}

// followDirty kicks for each mark until the watch ends (nil) or ctx is
// done. The first watch's initial marks are start-up exports.
func (p *Pipeline) followDirty(ctx context.Context, w jetstream.KeyWatcher, initial *bool, first bool) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				if *initial && first {
					p.startupKicks(ctx)
				}
				*initial = false
				continue
			}
			trig := TriggerEvent
			if *initial {
				trig = TriggerStartup
			}
			p.kick(e.Key(), trig)
		}
	}
}

// createKV creates or updates a key-value bucket, asking again (up to
// three times) when the server does not answer in time: a bucket of
// several replicas answers once its stream has a leader, which a busy or
// just-started cluster may take longer to elect than one request waits.
// Creating is idempotent, so an attempt that did succeed unseen is
// harmless.
func createKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = events.AskAgain(ctx, func() error {
		kv, err = js.CreateOrUpdateKeyValue(ctx, cfg)
		return err
	})
	return kv, err
}

// waitToReopen logs a watch that could not be opened and waits before the
// next attempt (backing off up to maxWait); it reports false when ctx
// ended.
func waitToReopen(ctx context.Context, log *slog.Logger, what string, failures *int, maxWait time.Duration, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	*failures++
	wait := backoffDelay(*failures, maxWait)
	log.Warn("opening the "+what+" watch failed; trying again", "attempt", *failures, "retry_in", wait, "err", err)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(wait):
		return true
	}
}

// startupKicks exports the definitions that have no export yet or whose
// settings changed since their last export.
func (p *Pipeline) startupKicks(ctx context.Context) {
	for _, d := range p.defs {
		st, err := p.records.definitionState(ctx, d.Name)
		if ctx.Err() != nil {
			return // stopping: nothing to start, and nothing to warn about
		}
		if err != nil {
			p.log.Warn("reading definition state", "definition", d.Name, "err", err)
			p.kick(d.Name, TriggerStartup)
			continue
		}
		if st == nil || st.Fingerprint != d.fingerprint() {
			p.kick(d.Name, TriggerStartup)
		}
	}
}

func (d *Definition) fingerprint() string {
	fp := fmt.Sprintf("%s|%s|%s|%d|%s|%t|%s|%s|%s", d.Project, d.Source.Kind, d.Source.Name, d.Source.ID,
		d.Completion, d.IncludeRemovedInstances, d.Connection, d.Path, FormatVersion)
	// Formats beside the Diffgram one (a Diffgram-only definition keeps
	// the fingerprint it had before formats existed).
	if f := NormalizeFormats(d.Formats); len(f) > 1 {
		fp += "|" + strings.Join(f, ",")
	}
	return fp
}

// runDefinition is one definition's loop: wait for a kick, coalesce
// (quiet period, max delay), export, retry with back-off until it
// succeeds.
func (p *Pipeline) runDefinition(ctx context.Context, d *Definition) error {
	kicks := p.kicks[d.Name]
	var resume *Record
	for {
		trig, ok := coalesce(ctx, kicks, d.Quiet, d.MaxDelay)
		if !ok {
			return nil
		}
		failures := 0
		for p.holds(d.Project) {
			var err error
			resume, err = p.exportOnce(ctx, d, trig, resume)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, errReconnected) {
				// Not a failure: asked again at once, of the server now.
				p.log.Info("the NATS connection came back during the export; exporting again", "definition", d.Name, "err", err)
			} else if errors.Is(err, errBusy) {
				p.log.Debug("definition busy on another replica", "definition", d.Name)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			} else {
				failures++
				wait := backoffDelay(failures, p.opts.MaxBackoff)
				p.m.failures.WithLabelValues(d.Name).Inc()
				p.log.Error("export failed; retrying", "definition", d.Name, "attempt", failures, "retry_in", wait, "err", err)
				if why := p.waitRetry(ctx, d, wait); why != "" {
					// What failed is back: start the back-off over.
					p.log.Info("retrying the export now: "+why, "definition", d.Name)
					failures = 0
				}
				if ctx.Err() != nil {
					return nil
				}
			}
			// Kicks that arrived meanwhile are covered by the retry.
			select {
			case t := <-kicks:
				trig = strongerTrigger(trig, t)
			default:
			}
		}
	}
}

// coalesce waits for a first kick, then until no kick has come for quiet,
// but no longer than maxDelay after the first. It returns the strongest
// trigger seen, or ok false when ctx is done.
func coalesce(ctx context.Context, kicks <-chan Trigger, quiet, maxDelay time.Duration) (trigger Trigger, ok bool) {
	select {
	case <-ctx.Done():
		return "", false
	case trigger = <-kicks:
	}
	deadline := time.Now().Add(maxDelay)
	timer := time.NewTimer(min(quiet, maxDelay))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", false
		case t := <-kicks:
			trigger = strongerTrigger(trigger, t)
			timer.Reset(max(0, min(quiet, time.Until(deadline))))
		case <-timer.C:
			return trigger, true
		}
	}
}

// strongerTrigger keeps manual over event over startup.
func strongerTrigger(a, b Trigger) Trigger {
	rank := map[Trigger]int{TriggerStartup: 0, TriggerEvent: 1, TriggerManual: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// DefaultMaxBackoff is Options.MaxBackoff when it is not set.
const DefaultMaxBackoff = 5 * time.Second

// backoffDelay is the wait after the n-th failed attempt in a row: 0.5 s
// doubling, at most maxWait.
func backoffDelay(n int, maxWait time.Duration) time.Duration {
	return events.Backoff(n, 500*time.Millisecond, maxWait)
}

// Record returns the export record with the given id. If there is none,
// an error wrapping jetstream.ErrKeyNotFound is returned.
func (p *Pipeline) Record(ctx context.Context, id int64) (*Record, error) {
	return p.records.get(ctx, id)
}
