package events_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

const (
	testStream     = "EV"
	testDeadLetter = "EV_DLQ"
	traceHeader    = "X-Trace"
	// waitFor bounds every wait for the consumer to catch up.
	waitFor = 10 * time.Second
)

func testConsumerConfig() events.ConsumerConfig {
	return events.ConsumerConfig{
		Stream:        testStream,
		Subjects:      []string{"diffgram.events.>"},
		CreateStream:  true,
		Consumer:      "c",
		DeadLetter:    testDeadLetter,
		MaxEventBytes: 4096,
		AckWait:       2 * time.Second,
	}
}

// newTestConsumer starts a server and makes a consumer on it.
func newTestConsumer(t *testing.T) (jetstream.JetStream, *events.Consumer, *prometheus.Registry) {
	t.Helper()
	return newLoggingConsumer(t, slog.DiscardHandler)
}

// newLoggingConsumer is newTestConsumer with its log going to h.
func newLoggingConsumer(t *testing.T, h slog.Handler) (jetstream.JetStream, *events.Consumer, *prometheus.Registry) {
	t.Helper()
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	reg := prometheus.NewRegistry()
	c, err := events.NewConsumer(t.Context(), js, testConsumerConfig(), slog.New(h), reg)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	return js, c, reg
}

// runConsumer runs c.Run in a goroutine until the returned stop is called
// or the test ends. stop cancels Run and returns its result, failing the
// test if Run does not return within waitFor.
func runConsumer(t *testing.T, c *events.Consumer, h events.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(waitFor):
				err = fmt.Errorf("Run did not return within %v of its context's end", waitFor)
				t.Error(err)
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", waitFor, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collector is a handler that records the events of the batches it
// accepts; fail, if set, decides per call (1-based) whether to fail.
type collector struct {
	fail func(call int) bool

	mu      sync.Mutex
	calls   int
	handled []*events.Event
	failed  []*events.Event
}

func (c *collector) handle(_ context.Context, batch []*events.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail != nil && c.fail(c.calls) {
		c.failed = append(c.failed, batch...)
		return errors.New("transient failure")
	}
	c.handled = append(c.handled, batch...)
	return nil
}

func (c *collector) handledIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, len(c.handled))
	for _, ev := range c.handled {
		ids = append(ids, ev.ID)
	}
	return ids
}

// msg is one message the test publishes.
type msg struct {
	subject string
	body    []byte
	msgID   string
	header  nats.Header // extra headers
	seq     uint64      // stream sequence, once published
}

func publish(t *testing.T, js jetstream.JetStream, m *msg) {
	t.Helper()
	nm := nats.NewMsg(m.subject)
	nm.Data = m.body
	nm.Header.Set(traceHeader, "abc")
	nm.Header.Set(nats.MsgIdHdr, m.msgID)
	for k, v := range m.header {
		nm.Header[k] = v
	}
	ack, err := js.PublishMsg(t.Context(), nm)
	if err != nil {
		t.Fatalf("publish %s: %v", m.msgID, err)
	}
	if ack.Duplicate {
		t.Fatalf("publish %s: a duplicate", m.msgID)
	}
	m.seq = ack.Sequence
}

// goodMessages returns the first event of each kind in the ordered example.
func goodMessages(t *testing.T) []*msg {
	t.Helper()
	var out []*msg
	seen := map[events.Kind]bool{}
	for _, l := range readExample(t, "street-scenes-ordered") {
		ev, err := events.Decode(l.subject, l.body, 4096)
		if err != nil {
			t.Fatalf("ordered example line %d: %v", l.line, err)
		}
		if !seen[ev.Kind] {
			seen[ev.Kind] = true
			out = append(out, &msg{subject: l.subject, body: l.body, msgID: ev.ID})
		}
	}
	return out
}

// oversized returns a good event's body grown past 4096 bytes by an
// extension attribute, with a new id.
func oversized(t *testing.T, body []byte, id string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m["id"] = id
	m["diffgrampadding"] = strings.Repeat("p", 4096)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// consumerIdle reports whether the consumer has nothing pending or unacked.
func consumerIdle(t *testing.T, c *events.Consumer) func() bool {
	return func() bool {
		info, err := c.Info(t.Context())
		if err != nil {
			t.Logf("consumer info: %v", err)
			return false
		}
		return info.NumAckPending == 0 && info.NumPending == 0
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// counter sums a counter family from reg over all its labels.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestConsumerGoodAndBad publishes good events mixed with bad input: the
// handler gets exactly the good ones, the dead-letter stream exactly the
// bad ones with their bytes, headers and reason, and the main consumer
// ends with nothing pending.
func TestConsumerGoodAndBad(t *testing.T) {
	js, c, reg := newTestConsumer(t)
	good := goodMessages(t)
	bad := []*msg{
		{subject: subj("file.uploaded"), body: []byte("this is not json"), msgID: "bad-not-json"},
		{subject: subj("file.exploded"), body: ce("diffgram.file.exploded", goodFile, with("id", "bad-unknown-type")), msgID: "bad-unknown-type"},
		{subject: good[0].subject, body: oversized(t, good[0].body, "bad-oversized"), msgID: "bad-oversized"},
	}
	// Interleave: a bad message after every third good one.
	var all []*msg
	for i, m := range good {
		all = append(all, m)
		if i%3 == 2 && i/3 < len(bad) {
			all = append(all, bad[i/3])
		}
	}
	if len(all) != len(good)+len(bad) {
		t.Fatalf("interleaving lost messages: %d of %d", len(all), len(good)+len(bad))
	}
	for _, m := range all {
		publish(t, js, m)
	}

	var col collector
	runConsumer(t, c, col.handle)
	eventually(t, "the handler saw every good event", func() bool { return len(col.handledIDs()) >= len(good) })
	eventually(t, "the bad events are dead-lettered", func() bool { return streamMsgs(t, js, testDeadLetter) >= uint64(len(bad)) })
	eventually(t, "the main consumer has nothing pending or unacked", consumerIdle(t, c))

	// The handler saw exactly the good events, each once, with its sequence.
	col.mu.Lock()
	handled := slices.Clone(col.handled)
	col.mu.Unlock()
	wantSeq := map[string]uint64{}
	for _, m := range good {
		wantSeq[m.msgID] = m.seq
	}
	gotSeq := map[string]uint64{}
	for _, ev := range handled {
		if _, dup := gotSeq[ev.ID]; dup {
			t.Errorf("event %s handled twice", ev.ID)
		}
		gotSeq[ev.ID] = ev.Seq
	}
	if diff := cmp.Diff(wantSeq, gotSeq); diff != "" {
		t.Errorf("handled events, id → stream sequence (-want +got):\n%s", diff)
	}

	// The dead-letter stream holds exactly the bad events, as they came.
	if n := streamMsgs(t, js, testDeadLetter); n != uint64(len(bad)) {
		t.Fatalf("dead-letter stream holds %d messages, want %d", n, len(bad))
	}
	dlq, err := js.Stream(t.Context(), testDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	byMsgID := map[string]*msg{}
	for _, m := range bad {
		byMsgID[m.msgID] = m
	}
	for seq := uint64(1); seq <= uint64(len(bad)); seq++ {
		sm, err := dlq.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("dead-letter message %d: %v", seq, err)
		}
		origID := sm.Header.Get(events.HeaderOriginalMsgID)
		m, ok := byMsgID[origID]
		if !ok {
			t.Errorf("dead-letter message %d has %s %q, not one of the bad events", seq, events.HeaderOriginalMsgID, origID)
			continue
		}
		delete(byMsgID, origID)
		_, decodeErr := events.Decode(m.subject, m.body, 4096)
		var b *events.BadInputError
		if !errors.As(decodeErr, &b) {
			t.Fatalf("test input %s is not bad input: %v", m.msgID, decodeErr)
		}
		if want := events.DeadLetterSubject(testDeadLetter, m.subject); sm.Subject != want {
			t.Errorf("%s: dead-letter subject %q, want %q", m.msgID, sm.Subject, want)
		}
		if !bytes.Equal(sm.Data, m.body) {
			t.Errorf("%s: dead-letter body %q, want the original bytes %q", m.msgID, sm.Data, m.body)
		}
		for _, h := range []struct{ key, want string }{
			{traceHeader, "abc"},
			{events.HeaderReason, b.Reason},
			{events.HeaderOriginalSubject, m.subject},
			{events.HeaderOriginalStream, testStream},
			{events.HeaderOriginalSeq, strconv.FormatUint(m.seq, 10)},
		} {
			if got := sm.Header.Get(h.key); got != h.want {
				t.Errorf("%s: header %s = %q, want %q", m.msgID, h.key, got, h.want)
			}
		}
		if sm.Header.Get(events.HeaderReason) == "" {
			t.Errorf("%s: no %s", m.msgID, events.HeaderReason)
		}
		if got := sm.Header.Get(nats.MsgIdHdr); got == m.msgID {
			t.Errorf("%s: the dead-letter copy kept the original %s", m.msgID, nats.MsgIdHdr)
		}
	}
	if len(byMsgID) != 0 {
		t.Errorf("bad events missing from the dead-letter stream: %v", byMsgID)
	}

	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || info.NumRedelivered != 0 {
		t.Errorf("consumer: %d ack pending, %d pending, %d redelivered; want 0, 0, 0",
			info.NumAckPending, info.NumPending, info.NumRedelivered)
	}
	for _, m := range []struct {
		name string
		want int
	}{
		{"exportstream_events_consumed_total", len(good) + len(bad)},
		{"exportstream_events_acked_total", len(good)},
		{"exportstream_events_dead_lettered_total", len(bad)},
		{"exportstream_event_batch_failures_total", 0},
	} {
		if got := counter(t, reg, m.name); got != float64(m.want) {
			t.Errorf("%s = %v, want %d", m.name, got, m.want)
		}
	}
	// Dead letters count by the type their subject names; "invalid" only
	// when the subject names no known type.
	first, err := events.Decode(good[0].subject, good[0].body, 4096)
	if err != nil {
		t.Fatal(err)
	}
	wantDead := map[string]float64{"invalid": 1} // file.exploded
	wantDead["diffgram.file.uploaded"]++         // not JSON
	wantDead[first.Type]++                       // oversized
	if diff := cmp.Diff(wantDead, counterByLabel(t, reg, "exportstream_events_dead_lettered_total", "type")); diff != "" {
		t.Errorf("exportstream_events_dead_lettered_total by type (-want +got):\n%s", diff)
	}
}

// counterByLabel sums the counter name of reg by the value of label.
func counterByLabel(t *testing.T, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestConsumerDeadLetterWithPublishHeaders checks a bad event published
// with JetStream's publish-control headers (here Nats-Expected-Stream,
// which held for the original publish) still reaches the dead-letter
// stream: the headers are kept, but must not steer the copy's publish.
func TestConsumerDeadLetterWithPublishHeaders(t *testing.T) {
	js, c, _ := newTestConsumer(t)
	m := &msg{
		subject: subj("file.uploaded"), body: []byte("{not json"), msgID: "bad-expected-stream",
		header: nats.Header{"Nats-Expected-Stream": []string{testStream}},
	}
	publish(t, js, m)
	var col collector
	runConsumer(t, c, col.handle)
	eventually(t, "the bad event is dead-lettered", func() bool { return streamMsgs(t, js, testDeadLetter) == 1 })
	eventually(t, "the main consumer has nothing pending or unacked", consumerIdle(t, c))
	dlq, err := js.Stream(t.Context(), testDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := dlq.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sm.Data, m.body) || sm.Header.Get(events.HeaderOriginalMsgID) != m.msgID || sm.Header.Get(traceHeader) != "abc" {
		t.Errorf("dead-letter copy %q with headers %v, want the original", sm.Data, sm.Header)
	}
	if got := sm.Header.Get("Exportstream-Original-Expected-Stream"); got != testStream {
		t.Errorf("Exportstream-Original-Expected-Stream = %q, want %q (headers %v)", got, testStream, sm.Header)
	}
}

// TestConsumerRedeliversAfterHandlerFailure: a handler that fails twice
// and then succeeds gets every event in the end; nothing is lost and
// nothing dead-lettered.
func TestConsumerRedeliversAfterHandlerFailure(t *testing.T) {
	js, c, reg := newTestConsumer(t)
	good := goodMessages(t)[:3]
	for _, m := range good {
		publish(t, js, m)
	}
	col := collector{fail: func(call int) bool { return call <= 2 }}
	runConsumer(t, c, col.handle)
	// Two nak delays of 2s and back-offs: allow twice the usual wait.
	deadline := time.Now().Add(2 * waitFor)
	for len(col.handledIDs()) < len(good) || !consumerIdle(t, c)() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: handled %v of %d events", 2*waitFor, col.handledIDs(), len(good))
		}
		time.Sleep(20 * time.Millisecond)
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	if col.calls < 3 {
		t.Errorf("handler called %d times, want at least 3", col.calls)
	}
	handled := map[string]int{}
	for _, ev := range col.handled {
		handled[ev.ID]++
	}
	for _, m := range good {
		if handled[m.msgID] != 1 {
			t.Errorf("event %s handled %d times after the failures, want once", m.msgID, handled[m.msgID])
		}
	}
	if len(col.failed) == 0 {
		t.Error("no batch failed: the test did not exercise redelivery")
	}
	for _, ev := range col.failed {
		if handled[ev.ID] == 0 {
			t.Errorf("event %s failed and was never redelivered", ev.ID)
		}
	}
	if n := streamMsgs(t, js, testDeadLetter); n != 0 {
		t.Errorf("%d messages dead-lettered, want none", n)
	}
	if got := counter(t, reg, "exportstream_event_batch_failures_total"); got != 2 {
		t.Errorf("batch failures = %v, want 2", got)
	}
	if got := counter(t, reg, "exportstream_events_dead_lettered_total"); got != 0 {
		t.Errorf("dead-lettered = %v, want 0", got)
	}
}

// TestNewConsumerStream checks NewConsumer with CreateStream false: a
// missing stream is an error wrapping jetstream.ErrStreamNotFound (and is
// not created); an existing one is bound to.
func TestNewConsumerStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		exists  bool
		wantErr error
	}{
		{"missing stream", false, jetstream.ErrStreamNotFound},
		{"existing stream", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, js := eventstest.Connect(t, eventstest.StartServer(t))
			cfg := testConsumerConfig()
			cfg.CreateStream = false
			if tc.exists {
				if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: cfg.Stream, Subjects: cfg.Subjects}); err != nil {
					t.Fatal(err)
				}
			}
			c, err := events.NewConsumer(t.Context(), js, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("NewConsumer = %v, want an error wrapping %v", err, tc.wantErr)
				}
				if c != nil {
					t.Error("NewConsumer returned a consumer with its error")
				}
				if _, err := js.Stream(t.Context(), cfg.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Errorf("after the failure, stream %s: %v; want it still missing", cfg.Stream, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewConsumer: %v", err)
			}
			if _, err := js.Stream(t.Context(), cfg.DeadLetter); err != nil {
				t.Errorf("dead-letter stream: %v", err)
			}
			if _, err := c.Info(t.Context()); err != nil {
				t.Errorf("consumer info: %v", err)
			}
		})
	}
}

// TestConsumerRunStopsOnCancel checks Run returns nil promptly once its
// context ends, idle or in the middle of a batch, and that the batch in
// hand is not lost: another Run gets it.
func TestConsumerRunStopsOnCancel(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		_, c, _ := newTestConsumer(t)
		var col collector
		stop := runConsumer(t, c, col.handle)
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run took %v to return", d)
		}
	})
	t.Run("during a batch", func(t *testing.T) {
		// The batch in hand is handed back, quietly: a stop is not a
		// failure (nothing above INFO, no batch failure counted).
		var logs records
		js, c, reg := newLoggingConsumer(t, &logs)
		m := goodMessages(t)[0]
		publish(t, js, m)
		started := make(chan struct{})
		var once sync.Once
		stop := runConsumer(t, c, func(ctx context.Context, _ []*events.Event) error {
			once.Do(func() { close(started) })
			<-ctx.Done()
			return ctx.Err()
		})
		select {
		case <-started:
		case <-time.After(waitFor):
			t.Fatal("the handler was never called")
		}
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Run took %v to return", d)
		}
		logs.mu.Lock()
		for _, r := range logs.all {
			if r.Level > slog.LevelInfo {
				t.Errorf("stopping during a batch logged %s %q", r.Level, r.Message)
			}
		}
		logs.mu.Unlock()
		if n := counter(t, reg, "exportstream_event_batch_failures_total"); n != 0 {
			t.Errorf("stopping during a batch counted %v batch failures, want 0", n)
		}

		var col collector
		runConsumer(t, c, col.handle)
		eventually(t, "the interrupted event is redelivered to the next Run", func() bool {
			return slices.Contains(col.handledIDs(), m.msgID)
		})
		eventually(t, "the consumer has nothing pending or unacked", consumerIdle(t, c))
	})
}

// inConsumeCallback returns the states ("chan send", "select"...) of the
// goroutines running Run's callback for the JetStream client, read from
// the runtime's stack dump, as goleak does.
func inConsumeCallback() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var states []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "events.(*Consumer).Run.func") || !strings.Contains(g, "jetstream.(*pullConsumer).Consume") {
			continue
		}
		header, _, _ := strings.Cut(g, "\n") // goroutine 7 [chan send]:
		_, state, _ := strings.Cut(header, "[")
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",") // "select, 2 minutes"
		states = append(states, state)
	}
	return states
}

// blockedCallback runs a consumer whose handler holds its batch until Run
// stops, with more events than a full pull (2048) in that batch plus a
// full buffer (2048), and returns once the client's delivery callback is
// blocked on the full buffer; the result stops Run.
func blockedCallback(t *testing.T) (stop func() error) {
	t.Helper()
	js, c, _ := newTestConsumer(t)
	m := goodMessages(t)[0]
	const n = 2*2048 + 100
	for range n {
		if _, err := js.PublishAsync(m.subject, m.body, jetstream.WithStallWait(waitFor)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(waitFor):
		t.Fatal("publishing did not complete")
	}
	stop = runConsumer(t, c, func(ctx context.Context, _ []*events.Event) error {
		<-ctx.Done()
		return ctx.Err()
	})
	eventually(t, "the consume callback blocks on a full buffer", func() bool {
		states := inConsumeCallback()
		return len(states) > 0 && (states[0] == "chan send" || states[0] == "select")
	})
	return stop
}

// TestConsumerRunLeavesNoGoroutine fills Run's buffer while the handler
// holds a batch, so the client's delivery callback blocks, then stops Run:
// the callback must return, not stay blocked for ever.
func TestConsumerRunLeavesNoGoroutine(t *testing.T) {
	stop := blockedCallback(t)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	eventually(t, "the consume callback returns after Run", func() bool { return len(inConsumeCallback()) == 0 })
}

// TestConsumerRunWaitsForClosed stops Run while the client's delivery
// callback is blocked on a full buffer: Run returns only once the client
// no longer calls it (the consume context's Closed), so no callback of
// Run's is left when it returns, and the message the callback held is
// handed back, not left unacked until AckWait.
func TestConsumerRunWaitsForClosed(t *testing.T) {
	stop := blockedCallback(t)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if states := inConsumeCallback(); len(states) > 0 {
		t.Fatalf("Run returned while its consume callback still runs (%v)", states)
	}
}

// records is a slog.Handler that keeps every record.
type records struct {
	mu  sync.Mutex
	all []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, rec.Clone())
	return nil
}

// withSeq returns the records that carry the attribute seq=seq.
func (r *records) withSeq(seq uint64) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.all {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "seq" && a.Value.Resolve().String() == strconv.FormatUint(seq, 10) {
				out = append(out, rec)
				return false
			}
			return true
		})
	}
	return out
}

// TestConsumerLogsBadEventOnce checks a dead-lettered event is logged
// once, with its stream sequence and reason (EVENTS.md, "Bad input").
func TestConsumerLogsBadEventOnce(t *testing.T) {
	var logs records
	js, c, _ := newLoggingConsumer(t, &logs)
	good := goodMessages(t)[0]
	bad := &msg{subject: subj("file.uploaded"), body: []byte("not json"), msgID: "bad-1"}
	publish(t, js, good)
	publish(t, js, bad)
	var col collector
	runConsumer(t, c, col.handle)
	eventually(t, "the bad event is dead-lettered", func() bool { return streamMsgs(t, js, testDeadLetter) == 1 })
	eventually(t, "the consumer has nothing pending or unacked", consumerIdle(t, c))

	recs := logs.withSeq(bad.seq)
	if len(recs) != 1 {
		t.Fatalf("%d log records with seq=%d, want 1: %v", len(recs), bad.seq, recs)
	}
	reason := ""
	recs[0].Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			reason = a.Value.String()
		}
		return true
	})
	if reason == "" {
		t.Errorf("the record %q has no reason", recs[0].Message)
	}
	if n := len(logs.withSeq(good.seq)); n != 0 {
		t.Errorf("%d log records for the good event, want none", n)
	}
}
