package pipeline

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// TestHandOverManual: a manual request waiting on a replica that gives its
// partition up is asked again of the replica that holds the partition,
// which exports it, and the request's record on the first replica is
// marked failed, naming the export that served it. With nobody to take
// it, the record says so instead of staying pending.
func TestHandOverManual(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	d, exp, bucket := diskDefinition(t)
	open := func(owner string) *Pipeline {
		p, err := openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: owner, Partitions: 2, LivenessTTL: time.Second,
			Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": bucket},
			RunPartition: func(ctx context.Context, _ int, _ events.Handler) error { <-ctx.Done(); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A replica that gave the partition up while a manual request of
	// its waited (it does not run: the request is put in its hands).
	giver := open("giver")
	waiting := func() *Record {
		r, err := giver.requests.manual(d.Name, func() (*Record, error) { return giver.newRequest(t.Context(), d) }, func() {})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	handedOver := func(r *Record) *Record {
		t.Helper()
		giver.handOver(giver.parts.of(exp.Project))
		done := make(chan struct{})
		go func() { giver.requests.wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatal("the hand-over did not end")
		}
		if giver.requests.takeManual(d.Name) != nil {
			t.Error("the request still waits on the replica that gave its partition up")
		}
		got, err := giver.Record(t.Context(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// Nobody holds the partition: after the hand-over time, the record
	// says the request was not exported.
	defer func(timeout time.Duration) { handOverTimeout = timeout }(handOverTimeout)
	handOverTimeout = 2 * time.Second
	alone := handedOver(waiting())
	if alone.Status != StatusFailed || !strings.Contains(alone.StatusText, "not exported") || !strings.Contains(alone.StatusText, "ask again") {
		t.Errorf("a request nobody took: %s %q, want failed, not exported, ask again", alone.Status, alone.StatusText)
	}

	// Another replica holds the partition now: it serves the request.
	handOverTimeout = time.Minute
	taker := open("taker")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan struct{})
	go func() { defer close(ran); _ = taker.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	waitFor(t, "the taker holds the partition", 30*time.Second, func() bool { return taker.holds(exp.Project) })
	r := waiting()
	got := handedOver(r)
	const prefix = "where export "
	i := strings.Index(got.StatusText, prefix)
	if got.Status != StatusFailed || i < 0 {
		t.Fatalf("the handed-over request: %s %q, want failed, naming the export that serves it", got.Status, got.StatusText)
	}
	id, err := strconv.ParseInt(strings.Fields(got.StatusText[i+len(prefix):])[0], 10, 64)
	if err != nil {
		t.Fatalf("status text %q: %v", got.StatusText, err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	served, err := taker.WaitRecord(wctx, id)
	if err != nil {
		t.Fatalf("export %d: %v", id, err)
	}
	if served.Trigger != TriggerManual || served.Name != d.Name || !Final(served.Status) || served.Status == StatusFailed {
		t.Errorf("export %d: %s %s of %q (%q), want a finished manual export of %q", id, served.Status, served.Trigger, served.Name, served.StatusText, d.Name)
	}
}
