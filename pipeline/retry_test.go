package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// breakFolder puts a symbolic link to itself in the place of a local
// bucket's folder: every read and write of the bucket fails ("too many
// levels of symbolic links"), as with a bucket that cannot be reached.
// The returned func (also called at cleanup) puts the folder back.
func breakFolder(t *testing.T, dir string) (restore func()) {
	t.Helper()
	away := dir + ".away"
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, dir); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if err := os.Remove(dir); err != nil {
				t.Error(err)
			}
			if err := os.Rename(away, dir); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// readSpy wraps a real bucket and counts the Attributes calls that failed
// (not found is not a failure).
type readSpy struct {
	connectors.Bucket
	failed atomic.Int64
}

func (s *readSpy) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	a, err := s.Bucket.Attributes(ctx, key)
	if err != nil && !errors.Is(err, connectors.ErrNotFound) {
		s.failed.Add(1)
	}
	return a, err
}

// outageRun runs the ordered example's luckfrill-complete through a
// pipeline (MaxBackoff maxBackoff) whose local bucket is broken from the
// start, and returns the bucket's folder, the spy around it, the
// pipeline's log and the function that ends the outage.
func outageRun(t *testing.T, maxBackoff time.Duration) (*local.Bucket, *readSpy, *Definition, *logRecorder, func()) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	dir := filepath.Join(t.TempDir(), "bucket")
	real, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	spy := &readSpy{Bucket: real}
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
	restore := breakFolder(t, dir)
	rec := &logRecorder{}
	startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": spy},
		MaxBackoff: maxBackoff, Logger: slog.New(rec)}, nil)
	publishLines(t, js, readLines(t, scenario))
	return real, spy, d, rec, restore
}

// exported waits for d's export of the whole example and returns the log
// record saying it was written.
func exported(t *testing.T, b connectors.Bucket, d *Definition, rec *logRecorder, within time.Duration) slog.Record {
	t.Helper()
	_, exp := orderedExample(t)
	waitFor(t, "the export after the outage", within, func() bool {
		m := latestRecord(t, b, d.Path)
		return m != nil && m.FileListLength == exp.Definitions[d.Name].FileListLength
	})
	var written []slog.Record
	waitFor(t, "its log line", 5*time.Second, func() bool {
		written = rec.records(slog.LevelInfo, "export written")
		return len(written) > 0
	})
	return written[0]
}

// TestRetryBackoffCapped: while the bucket fails, a definition's retries
// back off from 0.5 s but never wait longer than MaxBackoff, however long
// the outage lasts; once the bucket is back, the export comes within
// MaxBackoff (plus the time to write it).
func TestRetryBackoffCapped(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out real back-offs through an outage, left out by -short")
	}
	const maxBackoff = time.Second
	real, _, d, rec, restore := outageRun(t, maxBackoff)
	// Uncapped, waits of 0.5, 1, 2, 4 and 8 s would have passed by now.
	waitFor(t, "six failed attempts", 60*time.Second, func() bool {
		return len(rec.records(slog.LevelError, "export failed; retrying")) >= 6
	})
	restore()
	back := time.Now()
	written := exported(t, real, d, rec, 30*time.Second)

	fails := rec.records(slog.LevelError, "export failed; retrying")
	for _, f := range fails {
		if wait := attr(f, "retry_in").Duration(); wait > maxBackoff || wait <= 0 {
			t.Errorf("attempt %v: retry in %v, want at most MaxBackoff %v", attr(f, "attempt"), wait, maxBackoff)
		}
	}
	// The time to write the export, with room for a slow machine.
	const margin = 3 * time.Second
	if after := written.Time.Sub(back); after > maxBackoff+margin {
		t.Errorf("exported %v after the bucket was back, want within MaxBackoff %v (+%v)", after.Round(time.Millisecond), maxBackoff, margin)
	}
	t.Logf("%d failed attempts; exported %v after the bucket was back", len(fails), written.Time.Sub(back).Round(time.Millisecond))
}

// longBackoff waits for a failed attempt whose back-off is at least 8 s
// (the fifth) and returns when its retry is scheduled.
func longBackoff(t *testing.T, rec *logRecorder) time.Time {
	t.Helper()
	var long slog.Record
	waitFor(t, "a failed attempt with a long back-off", 60*time.Second, func() bool {
		for _, f := range rec.records(slog.LevelError, "export failed; retrying") {
			if attr(f, "retry_in").Duration() >= 8*time.Second {
				long = f
				return true
			}
		}
		return false
	})
	return long.Time.Add(attr(long, "retry_in").Duration())
}

// TestRetryWhenBucketAnswers: a definition waiting a long back-off after
// failures retries as soon as its bucket answers again (a read probe that
// had failed succeeds), before the retry it had scheduled.
func TestRetryWhenBucketAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out real back-offs through an outage, left out by -short")
	}
	real, spy, d, rec, restore := outageRun(t, time.Minute)
	scheduled := longBackoff(t, rec)
	// The bucket is still down when the waiting definition probes it.
	probed := spy.failed.Load()
	waitFor(t, "a failed probe", 10*time.Second, func() bool { return spy.failed.Load() > probed })
	restore()
	written := exported(t, real, d, rec, 30*time.Second)
	if !written.Time.Before(scheduled) {
		t.Errorf("exported at %s, not before the retry scheduled for %s: the bucket answering again did not end the wait",
			written.Time.Format(time.RFC3339Nano), scheduled.Format(time.RFC3339Nano))
	}
	if len(rec.records(slog.LevelInfo, "retrying the export now: its bucket answers again")) == 0 {
		t.Error("no log line saying the retry started because the bucket answers again")
	}
}

// writeRefusal wraps a real bucket and refuses every write while down;
// reads keep working (a full disk, or a bucket that turned read-only).
type writeRefusal struct {
	connectors.Bucket
	down atomic.Bool
}

func (w *writeRefusal) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	if w.down.Load() {
		return nil, errors.New("no space left on device (test)")
	}
	return w.Bucket.NewWriter(ctx, key, opts)
}

// TestRetryWhenNATSReconnects: a definition waiting a long back-off
// retries as soon as the NATS connection comes back after a server
// restart, before the retry it had scheduled.
func TestRetryWhenNATSReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS and waits for the reconnect, left out by -short")
	}
	storeDir := t.TempDir()
	ns := eventstest.StartServerAt(t, storeDir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &writeRefusal{Bucket: real}
	b.down.Store(true)
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 20*time.Millisecond, time.Second
	rec := &logRecorder{}
	startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": b},
		MaxBackoff: time.Minute, Logger: slog.New(rec)}, nil)
	publishLines(t, js, readLines(t, scenario))

	scheduled := longBackoff(t, rec)
	// The bucket takes writes again, unseen (its reads never failed);
	// then NATS restarts.
	b.down.Store(false)
	ns.Shutdown()
	ns.WaitForShutdown()
	eventstest.StartServerAt(t, storeDir, port)

	written := exported(t, real, d, rec, 30*time.Second)
	if !written.Time.Before(scheduled) {
		t.Errorf("exported at %s, not before the retry scheduled for %s: the NATS connection coming back did not end the wait",
			written.Time.Format(time.RFC3339Nano), scheduled.Format(time.RFC3339Nano))
	}
	if len(rec.records(slog.LevelInfo, "retrying the export now: the NATS connection is back")) == 0 {
		t.Error("no log line saying the retry started because the NATS connection is back")
	}
}

// When a stream elects a new leader (its NATS node stopped), what waits
// for an answer is asked again: the contexts untilReconnect gave end with
// errReconnected; one already released does not.
func TestElectionAsksAgain(t *testing.T) {
	c := eventstest.NewCluster(t, 3, nil)
	c.WaitLeader(30 * time.Second)
	nc, js := eventstest.ConnectURL(t, c.URLs())
	// An R3 stream answers once its own group has a leader: under the
	// race detector on a busy machine that took longer than the client's
	// default 5 s.
	cctx, ccancel := context.WithTimeout(t.Context(), time.Minute)
	defer ccancel()
	for _, name := range []string{"ELECT", "OTHER"} {
		if _, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name)}, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
	}
	// ELECT is the pipeline's events stream; OTHER another application's.
	p := &Pipeline{js: js, log: slog.New(slog.DiscardHandler), opts: Options{EventsStream: "ELECT", StatePrefix: "T"}}
	p.reconn, p.reconnCancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); p.askAgainOnElection(ctx) }()
	defer func() { cancel(); <-done }()

	released, release := p.untilReconnect(t.Context())
	release()
	asked, stop := p.untilReconnect(t.Context())
	defer stop()
	// Another application's stream electing leaders asks nothing again.
	for range 3 {
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.OTHER", nil, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-asked.Done():
			t.Fatalf("another application's stream elected a leader, and the context ended: %v", context.Cause(asked))
		case <-time.After(500 * time.Millisecond):
		}
	}
	// Step the leader down until an election's advisory arrives (the
	// first may come before the subscription is in place).
	for n := 0; asked.Err() == nil; n++ {
		if n == 20 {
			t.Fatal("20 elections, and the context did not end")
		}
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.ELECT", nil, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-asked.Done():
		case <-time.After(time.Second):
		}
	}
	if cause := context.Cause(asked); !errors.Is(cause, errReconnected) {
		t.Errorf("cause %v, want errReconnected", cause)
	}
	if cause := context.Cause(released); errors.Is(cause, errReconnected) {
		t.Errorf("a released context ended with %v", cause)
	}
	// A context taken after the election waits for the next one.
	after, stopAfter := p.untilReconnect(t.Context())
	defer stopAfter()
	if after.Err() != nil {
		t.Errorf("a context taken after the election ended: %v", context.Cause(after))
	}
}
