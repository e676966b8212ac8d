package events_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// TestDeadLettersMissingStream: before the consumer made the dead-letter
// stream nothing was dead-lettered: an empty list, and nothing to redrive.
func TestDeadLettersMissingStream(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	dl := events.NewDeadLetters(js, "NOPE")
	count, entries, err := dl.List(t.Context(), 20)
	if err != nil || count != 0 || len(entries) != 0 {
		t.Errorf("List: %d, %v, %v; want 0, none, no error", count, entries, err)
	}
	res, err := dl.Redrive(t.Context(), []uint64{3, 4})
	if err != nil || len(res) != 2 {
		t.Fatalf("Redrive: %v, %v; want two results", res, err)
	}
	for i, r := range res {
		if r.Sequence != uint64(3+i) || !errors.Is(r.Err, events.ErrNoDeadLetter) {
			t.Errorf("Redrive result %d: %+v, want sequence %d with ErrNoDeadLetter", i, r, 3+i)
		}
	}
}

// TestDeadLetters lists and redrives what a real consumer dead-lettered:
// the entries newest first with the consumer's headers read back, read
// in bulk (no per-sequence get), past deleted sequences; a redriven
// event goes back to its subject as received, without the dead-letter
// headers, and, still bad, comes back as a new entry.
func TestDeadLetters(t *testing.T) {
	ns := eventstest.StartServer(t)
	nc, js := eventstest.Connect(t, ns)
	c, err := events.NewConsumer(t.Context(), js, testConsumerConfig(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	dl := events.NewDeadLetters(js, testDeadLetter)
	if dl.Stream() != testDeadLetter {
		t.Errorf("Stream() = %q", dl.Stream())
	}
	if count, entries, err := dl.List(t.Context(), 20); err != nil || count != 0 || len(entries) != 0 {
		t.Errorf("List of the empty stream: %d, %v, %v", count, entries, err)
	}

	// Every per-sequence get on any stream, counted.
	var gets atomic.Int64
	sub, err := nc.Subscribe("$JS.API.STREAM.MSG.GET.>", func(*nats.Msg) { gets.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	const n = 7
	bad := make([]*msg, n)
	for i := range bad {
		bad[i] = &msg{subject: subj("file.uploaded"), body: fmt.Appendf(nil, "not json %d", i), msgID: fmt.Sprintf("bad-%d", i)}
		publish(t, js, bad[i])
	}
	_, reason := events.Decode(bad[0].subject, bad[0].body, 4096)
	var b *events.BadInputError
	if !errors.As(reason, &b) {
		t.Fatalf("test input is not bad input: %v", reason)
	}
	var col collector
	runConsumer(t, c, col.handle)
	eventually(t, "the bad events are dead-lettered", func() bool { return streamMsgs(t, js, testDeadLetter) == n })
	eventually(t, "the main consumer has nothing pending or unacked", consumerIdle(t, c))

	// The consumer wrote them in order: entry i+1 is bad[i].
	list := func(limit int) (uint64, []uint64) {
		t.Helper()
		count, entries, err := dl.List(t.Context(), limit)
		if err != nil {
			t.Fatalf("List(%d): %v", limit, err)
		}
		var seqs []uint64
		for _, e := range entries {
			seqs = append(seqs, e.Sequence)
			m := bad[e.Sequence-1]
			if e.Reason != b.Reason || e.OriginalSubject != m.subject || e.OriginalStream != testStream ||
				e.OriginalSequence != strconv.FormatUint(m.seq, 10) || !bytes.Equal(e.Data, m.body) || e.Time.IsZero() {
				t.Errorf("entry %d: %+v; want reason %q, %s in %s at %d, body %q", e.Sequence, e, b.Reason, m.subject, testStream, m.seq, m.body)
			}
		}
		return count, seqs
	}
	wantList := func(limit int, wantCount uint64, want ...uint64) {
		t.Helper()
		count, seqs := list(limit)
		if count != wantCount || fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Errorf("List(%d): count %d, entries %v; want %d, %v", limit, count, seqs, wantCount, want)
		}
	}
	wantList(3, n, 7, 6, 5)
	wantList(100, n, 7, 6, 5, 4, 3, 2, 1)

	dlq, err := js.Stream(t.Context(), testDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{6, 4} {
		if err := dlq.DeleteMsg(t.Context(), seq); err != nil {
			t.Fatal(err)
		}
	}
	wantList(3, n-2, 7, 5, 3)
	wantList(4, n-2, 7, 5, 3, 2)
	wantList(100, n-2, 7, 5, 3, 2, 1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if g := gets.Load(); g != 0 {
		t.Errorf("List made %d per-sequence gets, want none", g)
	}
	// The count sees a get (else the check above proves nothing).
	if _, err := dlq.GetMsg(t.Context(), 7); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a get is counted", func() bool { return gets.Load() == 1 })
	info, err := dlq.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("List left %d consumers on the dead-letter stream", info.State.Consumers)
	}

	// An entry with no original subject cannot be redriven.
	orphan, err := js.Publish(t.Context(), events.DeadLetterSubject(testDeadLetter, "x"), []byte("orphan"))
	if err != nil {
		t.Fatal(err)
	}

	res, err := dl.Redrive(t.Context(), []uint64{5, 4, 999, orphan.Sequence})
	if err != nil || len(res) != 4 {
		t.Fatalf("Redrive: %+v, %v", res, err)
	}
	if r := res[0]; r.Sequence != 5 || r.Err != nil || r.Subject != bad[4].subject || r.StreamSequence == 0 {
		t.Errorf("redrive of 5: %+v, want it re-published on %s", r, bad[4].subject)
	}
	for _, r := range res[1:3] {
		if !errors.Is(r.Err, events.ErrNoDeadLetter) {
			t.Errorf("redrive of %d: %+v, want ErrNoDeadLetter", r.Sequence, r)
		}
	}
	if r := res[3]; r.Sequence != orphan.Sequence || r.Err == nil || r.Err.Error() != "no original subject recorded" {
		t.Errorf("redrive of the orphan: %+v, want no original subject recorded", r)
	}

	// Re-published as received: the body and the sender's headers, marked
	// with where it came from; no dead-letter header and no message id.
	ev, err := js.Stream(t.Context(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ev.GetMsg(t.Context(), res[0].StreamSequence)
	if err != nil {
		t.Fatal(err)
	}
	if again.Subject != bad[4].subject || !bytes.Equal(again.Data, bad[4].body) || again.Header.Get(traceHeader) != "abc" ||
		again.Header.Get(events.HeaderRedrivenFrom) != "5" {
		t.Errorf("re-published %s %q with %v; want %s %q with %s and %s: 5", again.Subject, again.Data, again.Header,
			bad[4].subject, bad[4].body, traceHeader, events.HeaderRedrivenFrom)
	}
	for _, h := range []string{events.HeaderReason, events.HeaderOriginalSubject, events.HeaderOriginalStream,
		events.HeaderOriginalSeq, events.HeaderOriginalMsgID, nats.MsgIdHdr} {
		if v := again.Header.Get(h); v != "" {
			t.Errorf("re-published with %s: %s", h, v)
		}
	}
	// Still bad: dead-lettered again as a new entry; 5 is gone (n-2
	// entries, the orphan, the new one).
	eventually(t, "the redriven event is dead-lettered again", func() bool { return streamMsgs(t, js, testDeadLetter) == n-1 })
	_, entries, err := dl.List(t.Context(), 2)
	if err != nil || len(entries) != 2 {
		t.Fatalf("List(2): %v, %v", entries, err)
	}
	if e := entries[0]; e.Sequence <= orphan.Sequence || !bytes.Equal(e.Data, bad[4].body) || e.Reason != b.Reason ||
		e.OriginalSequence != strconv.FormatUint(res[0].StreamSequence, 10) {
		t.Errorf("newest entry %+v, want the redriven event from %d", e, res[0].StreamSequence)
	}
	if entries[1].Sequence != orphan.Sequence {
		t.Errorf("second newest entry %d, want the orphan %d", entries[1].Sequence, orphan.Sequence)
	}
	if _, err := dlq.GetMsg(t.Context(), 5); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("entry 5 after its redrive: %v, want it removed", err)
	}
}
