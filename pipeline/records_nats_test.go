package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events/eventstest"
)

// TestRecordWaitOnClusterFollower: on a 3-node cluster, a replica
// connected to a follower of the records bucket's stream writes an
// export record through to its final status and waits for it: WaitRecord
// returns the final record, never the older version a lagging replica
// may still serve to a direct get. The records waited for are final but
// not held in full by the index (failed ones, and complete ones older
// than the definition's newest complete), so WaitRecord reads them from
// the bucket.
func TestRecordWaitOnClusterFollower(t *testing.T) {
	nodes := eventstest.StartCluster(t, 3)
	opts := Options{StatePrefix: "T", Owner: "test", Replicas: 3, Logger: slog.New(slog.DiscardHandler)}
	ctx := t.Context()
	// Create the buckets (R3) through node 0.
	if _, err := openTest(t, ctx, clusterJS(t, nodes[0]), opts); err != nil {
		t.Fatal(err)
	}
	leader := -1
	waitFor(t, "a leader of the records stream", 20*time.Second, func() bool {
		for i, ns := range nodes {
			if ns.JetStreamIsStreamLeader("$G", "KV_T_EXPORTS") {
				leader = i
				return true
			}
		}
		return false
	})
	// The replica under test talks to a follower: direct gets are answered
	// by the follower's own replica of the stream first.
	p, err := openTest(t, ctx, clusterJS(t, nodes[(leader+1)%len(nodes)]), opts)
	if err != nil {
		t.Fatal(err)
	}
	newest := rec(1_000_000, "d", StatusComplete, 0)
	waitFor(t, "the records bucket", 20*time.Second, func() bool { return p.records.put(ctx, newest) == nil })

	for i := range 30 {
		id := int64(1000 + i)
		final := StatusFailed
		if i%2 == 1 {
			final = StatusComplete
		}
		for _, status := range []Status{StatusPending, StatusGenerating, StatusUploading, final} {
			r := rec(id, "d", status, 0)
			r.StatusText = "attempt " + strconv.Itoa(i) + ": " + string(status)
			if err := p.records.put(ctx, r); err != nil {
				t.Fatalf("put record %d (%s): %v", id, status, err)
			}
		}
		if held := p.records.index.held(id); held != nil {
			t.Fatalf("record %d (%s) is held in full by the index; the test needs it read from the bucket", id, final)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := p.WaitRecord(wctx, id)
		cancel()
		if err != nil {
			t.Fatalf("WaitRecord(%d), %s: %v (record as known: %+v)", id, final, err, got)
		}
		if got.Status != final || got.ID != id {
			t.Fatalf("WaitRecord(%d) = record %d %s, want %s", id, got.ID, got.Status, final)
		}
	}
}

// TestRecordsWatchSurvivesNATSRestart: the records watch cannot be opened
// while NATS is down and while it is coming back; records.follow logs a
// WARN per failed attempt and keeps trying (it does not end, with or
// without an error) until the watch opens, then feeds the index again.
func TestRecordsWatchSurvivesNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS and waits for the reconnect, left out by -short")
	}
	dir := t.TempDir()
	ns := eventstest.StartServerAt(t, dir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	nc, _ := eventstest.Connect(t, ns)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecorder{}
	p, err := openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: "test",
		MaxBackoff: 200 * time.Millisecond, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}

	ns.Shutdown()
	ns.WaitForShutdown()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	loaded := make(chan struct{})
	ended := make(chan error, 1)
	go func() { ended <- p.records.follow(ctx, loaded) }()
	// The dirty-mark watch takes the same way back.
	dirtyEnded := make(chan error, 1)
	go func() { dirtyEnded <- p.watchDirty(ctx) }()

	// The first attempts fail while the server is down.
	waitFor(t, "failed watch attempts logged", 30*time.Second, func() bool {
		select {
		case err := <-ended:
			t.Fatalf("records.follow ended while NATS was down: %v", err)
		case err := <-dirtyEnded:
			t.Fatalf("watchDirty ended while NATS was down: %v", err)
		default:
		}
		return len(logs.records(slog.LevelWarn, "opening the export records watch failed")) >= 2 &&
			len(logs.records(slog.LevelWarn, "opening the dirty-mark watch failed")) >= 2
	})
	eventstest.StartServerAt(t, dir, port)

	select {
	case <-loaded:
	case err := <-ended:
		t.Fatalf("records.follow ended after NATS came back: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the records watch did not deliver the records after NATS came back")
	}
	// Written by another replica after the restart: the watch feeds it in.
	r := rec(7, "d", StatusComplete, 0)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a record written after the restart", 30*time.Second, func() bool {
		_, err := p.records.kv.Put(t.Context(), RecordKey(7), b)
		return err == nil
	})
	waitFor(t, "the index to get the record through the watch", 30*time.Second, func() bool {
		found, final, _ := p.records.index.state(7)
		return found && final
	})
	for _, w := range logs.records(slog.LevelWarn, "opening the export records watch failed") {
		if e := attr(w, "err"); e.Any() == nil {
			t.Errorf("WARN %q has no err attribute", w.Message)
		}
	}
	select {
	case err := <-dirtyEnded:
		t.Fatalf("watchDirty ended after NATS came back: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-ended:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("records.follow returned %v after its context ended, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("records.follow did not return after its context ended")
	}
	select {
	case err := <-dirtyEnded:
		if err != nil {
			t.Errorf("watchDirty returned %v after its context ended, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("watchDirty did not return after its context ended")
	}
}
