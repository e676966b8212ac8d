package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// logRecorder is a slog.Handler that keeps every record, at every level.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

// records returns the records logged so far whose level is at least
// level and whose message starts with msg.
func (r *logRecorder) records(level slog.Level, msg string) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.recs {
		if rec.Level >= level && strings.HasPrefix(rec.Message, msg) {
			out = append(out, rec)
		}
	}
	return out
}

// attr returns the value of the record's attribute key.
func attr(rec slog.Record, key string) slog.Value {
	var v slog.Value
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// writeSpy wraps a real bucket: it holds every data-object write open for
// hold before committing it, and records the most data-object writes of
// one definition (one folder) in progress at once.
type writeSpy struct {
	connectors.Bucket
	hold time.Duration
	mu   sync.Mutex
	open map[string]int
	most int
}

func dataKey(key string) bool {
	return !strings.HasSuffix(key, "latest.json") && !strings.HasSuffix(key, ".manifest.json")
}

func (s *writeSpy) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	w, err := s.Bucket.NewWriter(ctx, key, opts)
	if err != nil || !dataKey(key) {
		return w, err
	}
	dir := path.Dir(key)
	s.mu.Lock()
	s.open[dir]++
	s.most = max(s.most, s.open[dir])
	s.mu.Unlock()
	return &spyWriter{Writer: w, s: s, ctx: ctx, dir: dir}, nil
}

type spyWriter struct {
	connectors.Writer
	s    *writeSpy
	ctx  context.Context
	dir  string
	once sync.Once
}

func (w *spyWriter) done() {
	w.once.Do(func() {
		w.s.mu.Lock()
		w.s.open[w.dir]--
		w.s.mu.Unlock()
	})
}

func (w *spyWriter) Close() error {
	defer w.done()
	select {
	case <-time.After(w.s.hold):
	case <-w.ctx.Done():
	}
	return w.Writer.Close()
}

func (w *spyWriter) Abort() error {
	defer w.done()
	return w.Writer.Abort()
}

// TestLeaseOneWriterPerDefinition: two replicas named alike (as two
// containers sharing a host name, both pid 1) on a 3-node NATS cluster
// with replicated buckets, asked for exports of the same definitions at
// the same moments, never write one definition at once; both do export;
// losing a lease race is "busy": no failed attempt is counted and no
// ERROR is logged.
func TestLeaseOneWriterPerDefinition(t *testing.T) {
	nodes := eventstest.StartCluster(t, 3)
	scenario, exp := orderedExample(t)
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spy := &writeSpy{Bucket: real, hold: 150 * time.Millisecond, open: map[string]int{}}
	names := []string{"luckfrill-complete", "night-review-all"}
	type replica struct {
		h   *harness
		log *logRecorder
	}
	var reps []replica
	for i := range 2 {
		js := clusterJS(t, nodes[i])
		var defs []*Definition
		for _, name := range names {
			d := definitionFor(t, name, exp.Project, exp.Definitions[name])
			d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
			defs = append(defs, d)
		}
		rec := &logRecorder{}
		h := startHarnessWith(t, js, Options{Definitions: defs, Buckets: map[string]connectors.Bucket{"disk": spy},
			Owner: "box/1", Replicas: 3, Logger: slog.New(rec)}, nil)
		reps = append(reps, replica{h, rec})
	}
	a, b := reps[0].h.p.Owner(), reps[1].h.p.Owner()
	if a == b || !strings.HasPrefix(a, "box/1/") || !strings.HasPrefix(b, "box/1/") {
		t.Errorf("lease owners %q and %q: want two different identities, each box/1/<random>", a, b)
	}

	js := clusterJS(t, nodes[2])
	publishLines(t, js, readLines(t, scenario))
	for _, name := range names {
		waitFor(t, name+" exported", 60*time.Second, func() bool {
			m := latestRecord(t, real, "exports/"+name+"/")
			return m != nil && m.FileListLength == exp.Definitions[name].FileListLength
		})
	}

	// Both replicas are asked for an export of every definition at once,
	// a few times: each replica serves its requests, one writer at a time.
	// (Followed in the logs, not in the records: a record read from a
	// clustered bucket may come from one of its replicas a little behind.)
	manual := func(r replica) int {
		n := 0
		for _, rec := range r.log.records(slog.LevelInfo, "export written") {
			if attr(rec, "trigger").String() == string(TriggerManual) {
				n++
			}
		}
		return n
	}
	// Counted from here: a clustered bucket just created may answer "no
	// responders" for a moment, a real failure that is not this test's.
	failed := func(r replica, name string) float64 {
		return testutil.ToFloat64(r.h.p.m.failures.WithLabelValues(name))
	}
	var failedBefore [2][]float64
	var errorsBefore [2]int
	for i, r := range reps {
		for _, name := range names {
			failedBefore[i] = append(failedBefore[i], failed(r, name))
		}
		errorsBefore[i] = len(r.log.records(slog.LevelError, ""))
	}
	const rounds = 3
	for round := range rounds {
		for _, name := range names {
			for _, r := range reps {
				if _, err := r.h.p.Generate(t.Context(), name); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i, r := range reps {
			want := (round + 1) * len(names)
			waitFor(t, fmt.Sprintf("round %d: replica %d's requested exports", round+1, i+1), 60*time.Second, func() bool {
				return manual(r) >= want
			})
		}
	}
	spy.mu.Lock()
	most := spy.most
	spy.mu.Unlock()
	if most != 1 {
		t.Errorf("%d exports of one definition were written at once, want 1 (one writer per definition)", most)
	}
	for i, r := range reps {
		for j, name := range names {
			if n := failed(r, name) - failedBefore[i][j]; n != 0 {
				t.Errorf("replica %d: export_failures_total{definition=%q} rose by %v, want 0", i+1, name, n)
			}
		}
		for _, rec := range r.log.records(slog.LevelError, "")[errorsBefore[i]:] {
			t.Errorf("replica %d logged an ERROR: %s (err %v)", i+1, rec.Message, attr(rec, "err"))
		}
	}
}

// clusterJS connects to a node of an in-process cluster, with JetStream
// calls given 20 s (not 5): on a busy machine, three servers under the
// race detector can take longer than 5 s to agree on a bucket update.
func clusterJS(t *testing.T, node *server.Server) jetstream.JetStream {
	nc, _ := eventstest.Connect(t, node)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// replicatedKV creates the bucket cfg names, or finds it when another
// contender created it, asking again while the cluster does not answer.
func replicatedKV(t *testing.T, js jetstream.JetStream, cfg jetstream.KeyValueConfig) jetstream.KeyValue {
	t.Helper()
	var kv jetstream.KeyValue
	var last error
	waitFor(t, "the replicated bucket "+cfg.Bucket, 90*time.Second, func() bool {
		kv, last = js.CreateOrUpdateKeyValue(t.Context(), cfg)
		if last != nil {
			t.Logf("creating %s: %v", cfg.Bucket, last)
		}
		return last == nil
	})
	return kv
}

// stallBucket wraps a real bucket and holds every data-object write in
// Close until the writer's context is done: an export that stays in
// progress, holding its lease, until its replica dies.
type stallBucket struct {
	connectors.Bucket
	entered chan string // a data-object write reached Close
}

func (s *stallBucket) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	w, err := s.Bucket.NewWriter(ctx, key, opts)
	if err != nil || !dataKey(key) {
		return w, err
	}
	return &stallWriter{Writer: w, s: s, ctx: ctx, key: key}, nil
}

type stallWriter struct {
	connectors.Writer
	s   *stallBucket
	ctx context.Context
	key string
}

func (w *stallWriter) Close() error {
	select {
	case w.s.entered <- w.key:
	default:
	}
	<-w.ctx.Done()
	_ = w.Writer.Abort()
	return context.Cause(w.ctx)
}

// TestLeaseTakeoverAfterKill: a replica dies (its NATS connection cut, as
// a SIGKILL does) in the middle of an export, holding the definition's
// lease. The other replica, named alike, is kept out while it lives, and
// takes the lease over once the dead one's heartbeat has expired: long
// before the lease itself would have, and says from whom.
func TestLeaseTakeoverAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a real heartbeat expiry, left out by -short")
	}
	ns := eventstest.StartServer(t)
	scenario, exp := orderedExample(t)
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const name = "luckfrill-complete"
	def := func() *Definition {
		d := definitionFor(t, name, exp.Project, exp.Definitions[name])
		d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
		return d
	}
	const liveness = 4 * time.Second

	ncA, jsA := eventstest.Connect(t, ns)
	stall := &stallBucket{Bucket: real, entered: make(chan string, 1)}
	a := startHarnessWith(t, jsA, Options{Definitions: []*Definition{def()}, Buckets: map[string]connectors.Bucket{"disk": stall},
		Owner: "box/1", LivenessTTL: liveness}, nil)
	_, js := eventstest.Connect(t, ns)
	publishLines(t, js, readLines(t, scenario))
	select {
	case <-stall.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first replica did not start writing the export")
	}
	leases, err := js.KeyValue(t.Context(), "T_LEASES")
	if err != nil {
		t.Fatal(err)
	}
	e, err := leases.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	var held leaseValue
	if err := json.Unmarshal(e.Value(), &held); err != nil || held.Owner != a.p.Owner() {
		t.Fatalf("lease while the first replica writes: %s (%v), want owner %s", e.Value(), err, a.p.Owner())
	}

	// The second replica, named alike, is kept out while the first lives.
	logB := &logRecorder{}
	_, jsB := eventstest.Connect(t, ns)
	startHarnessWith(t, jsB, Options{Definitions: []*Definition{def()}, Buckets: map[string]connectors.Bucket{"disk": real},
		Owner: "box/1", LivenessTTL: liveness, Logger: slog.New(logB)}, nil)
	waitFor(t, "the second replica finding the definition busy", 30*time.Second, func() bool {
		return len(logB.records(slog.LevelDebug, "definition busy on another replica")) >= 2
	})
	if m := latestRecord(t, real, "exports/"+name+"/"); m != nil {
		t.Fatalf("exported by the second replica while the first held the lease: %+v", m)
	}

	// Killed: no more heartbeats, nothing released.
	ncA.Close()
	a.stop()
	waitFor(t, "the second replica's export", 25*time.Second, func() bool {
		m := latestRecord(t, real, "exports/"+name+"/")
		return m != nil && m.FileListLength == exp.Definitions[name].FileListLength
	})
	took := logB.records(slog.LevelInfo, "lease taken over from a replica whose heartbeat stopped")
	if len(took) == 0 {
		t.Fatal("the second replica did not log taking the lease over")
	}
	if from := attr(took[0], "from").String(); from != a.p.Owner() {
		t.Errorf("lease taken over from %q, want the killed replica %q", from, a.p.Owner())
	}
	if !took[0].Time.Before(held.Expires) {
		t.Errorf("lease taken over at %s, not before the killed replica's lease expired (%s): "+
			"the takeover waited for the lease TTL, not the heartbeat", took[0].Time.Format(time.RFC3339Nano), held.Expires.Format(time.RFC3339Nano))
	}
	if e, err := leases.Get(t.Context(), name); err == nil {
		var now leaseValue
		if json.Unmarshal(e.Value(), &now) == nil && now.Owner == a.p.Owner() {
			t.Errorf("the lease still names the killed replica")
		}
	}
}

// TestLeaseRaceIsBusy: replicas creating the same deleted lease key at
// once on a replicated bucket (where a loser's error is the raw "wrong
// last sequence", code 10164): at most one gets the lease, the others are
// told busy, never an error. (All of them may be told busy, when their
// reads of the key, served by a follower, were behind: they try again a
// second later.)
func TestLeaseRaceIsBusy(t *testing.T) {
	const contenders, rounds = 4, 50
	nodes := eventstest.StartCluster(t, 3)
	var leases, replicas [contenders]jetstream.KeyValue
	// Each contender creates both buckets, or finds them created, through
	// its own node. On a loaded machine a replicated bucket's creation can
	// outlast one request's timeout while its replicas elect a leader: it
	// is asked again until it answers, as a replica at start would.
	for i := range contenders {
		js := clusterJS(t, nodes[i%len(nodes)])
		leases[i] = replicatedKV(t, js, jetstream.KeyValueConfig{Bucket: "RACE_LEASES", History: 1, Replicas: 3})
		replicas[i] = replicatedKV(t, js, jetstream.KeyValueConfig{Bucket: "RACE_REPLICAS", History: 1, Replicas: 3, TTL: time.Minute})
	}
	var selves [contenders]*liveness
	for i := range selves {
		lv, err := newLiveness(replicas[i], "box/1", time.Minute, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		// A bucket just created answers once its replicas have a leader.
		waitFor(t, "a heartbeat", 20*time.Second, func() bool { return lv.beat(t.Context()) == nil })
		selves[i] = lv
	}
	const key = "def"
	// Through every contender's node: each answers once it knows the
	// bucket's leader.
	for i := range contenders {
		waitFor(t, "the leases bucket", 20*time.Second, func() bool {
			_, err := leases[i].Put(t.Context(), key, []byte("{}"))
			return err == nil
		})
	}
	raced, won := 0, 0
	for round := range rounds {
		// The key exists and is deleted, as after an export.
		if _, err := leases[0].Put(t.Context(), key, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if err := leases[0].Delete(t.Context(), key); err != nil {
			t.Fatal(err)
		}

		start := make(chan struct{})
		var got [contenders]*lease
		var errs [contenders]error
		var wg sync.WaitGroup
		for i := range contenders {
			wg.Go(func() {
				<-start
				got[i], errs[i] = acquire(t.Context(), leases[i], key, selves[i])
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range contenders {
			switch {
			case errs[i] == nil:
				winners++
				got[i].release(t.Context())
			case errors.Is(errs[i], errBusy):
				raced++
			default:
				t.Errorf("round %d: contender %d: %v; want the lease or errBusy", round, i+1, errs[i])
			}
		}
		if winners > 1 {
			t.Errorf("round %d: %d contenders got the lease, want at most 1", round, winners)
		}
		won += winners
	}
	t.Logf("%d rounds won, %d attempts in %d rounds told busy", won, raced, rounds)
	if won < rounds/2 {
		t.Errorf("only %d of %d rounds had a winner", won, rounds)
	}
}
