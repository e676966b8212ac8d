package pipeline

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// TestFreshness: LastApplied follows the newest event applied; a
// definition is current once its export covers every applied change,
// and counts the changes that wait for it otherwise (a stale event adds
// none); a definition that is never exported keeps counting.
func TestFreshness(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lf := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	lf.Connection, lf.Quiet, lf.MaxDelay = "disk", 20*time.Millisecond, time.Second
	// Never exported while the test runs: its changes keep waiting.
	slow := definitionFor(t, "whole-project", exp.Project, exp.Definitions["whole-project"])
	slow.Connection, slow.Quiet, slow.MaxDelay = "disk", time.Hour, time.Hour
	h := startHarness(t, js, []*Definition{lf, slow}, map[string]connectors.Bucket{"disk": bucket})
	if a := h.p.LastApplied(); a.Seq != 0 || !a.Time.IsZero() {
		t.Errorf("before any event: LastApplied %+v", a)
	}
	lines := readLines(t, scenario)
	publishLines(t, js, lines)

	stream, err := js.Stream(t.Context(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	if int(last) != len(lines) {
		t.Fatalf("stream holds %d events, published %d", last, len(lines))
	}
	waitFor(t, "the last event applied", 20*time.Second, func() bool { return h.p.LastApplied().Seq == last })
	waitFor(t, "luckfrill-complete exported and current", 20*time.Second, func() bool {
		f, err := h.p.Freshness(t.Context(), lf.Name)
		return err == nil && f.Current && h.p.LatestRecord(lf.Name) != nil
	})
	a := h.p.LastApplied()
	if a.Events < last || time.Since(a.Time) > time.Minute || a.Time.After(time.Now()) {
		t.Errorf("LastApplied %+v: want at least %d events, applied just now", a, last)
	}
	f, err := h.p.Freshness(t.Context(), lf.Name)
	if err != nil || !f.Current || f.PendingEvents != 0 || f.NewestEvent != 0 {
		t.Errorf("luckfrill-complete: %+v, %v; want current", f, err)
	}
	before, err := h.p.Freshness(t.Context(), slow.Name)
	if err != nil {
		t.Fatal(err)
	}
	if before.Current || before.PendingEvents < 1 || before.PendingEvents > len(lines) ||
		before.NewestEvent < 1 || before.NewestEvent > last || time.Since(before.MarkedTime) > time.Minute {
		t.Errorf("whole-project (never exported): %+v; want 1..%d events pending, the newest at most %d", before, len(lines), last)
	}

	// One new instance on file 5001 (in both definitions): one change.
	body := `{"specversion":"1.0","id":"fresh-1","source":"t","type":"diffgram.instance.created","diffgramproject":"street-scenes",` +
		`"data":{"instance":{"id":990001,"root_id":990001,"previous_id":null,"version":1,"file_id":5001,"soft_delete":false,` +
		`"type":"box","label_file_id":101,"attribute_groups":null,"x_min":1,"y_min":2,"x_max":3,"y_max":4}}}`
	publish := func(id string) uint64 {
		t.Helper()
		m := nats.NewMsg("diffgram.events.street-scenes.instance.created")
		m.Data = []byte(body)
		ack, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(id))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	seq := publish("fresh-1")
	waitFor(t, "the new event applied", 20*time.Second, func() bool { return h.p.LastApplied().Seq == seq })
	after, err := h.p.Freshness(t.Context(), slow.Name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Current || after.PendingEvents != before.PendingEvents+1 || after.NewestEvent != seq || after.MarkedTime.Before(before.MarkedTime) {
		t.Errorf("whole-project after one more change: %+v; want %d events pending, the newest %d", after, before.PendingEvents+1, seq)
	}
	waitFor(t, "luckfrill-complete exported again", 20*time.Second, func() bool {
		r := h.p.LatestRecord(lf.Name)
		return r != nil && r.Watermark == seq
	})
	waitFor(t, "luckfrill-complete current again", 10*time.Second, func() bool {
		f, err := h.p.Freshness(t.Context(), lf.Name)
		return err == nil && f.Current
	})
	if n := h.p.fresh.pending(lf.Name); n != 0 {
		t.Errorf("luckfrill-complete is current and still counts %d changes", n)
	}

	// The same event again (another message id): applied, it changes
	// nothing, so it adds no change to count (its exact version marks the
	// project's definitions again, in case an earlier attempt died
	// before its marks).
	again := publish("fresh-1-again")
	waitFor(t, "the repeated event applied", 20*time.Second, func() bool { return h.p.LastApplied().Seq == again })
	if f, err := h.p.Freshness(t.Context(), slow.Name); err != nil || f.PendingEvents != after.PendingEvents || f.NewestEvent != again {
		t.Errorf("whole-project after a repeated event: %+v, %v; want still %d pending, the newest %d", f, err, after.PendingEvents, again)
	}

	if _, err := h.p.Freshness(t.Context(), "nope"); !errors.Is(err, ErrUnknownDefinition) {
		t.Errorf("Freshness of an unknown definition: %v", err)
	}
}

// TestFreshnessBounded: the changes kept per definition stay bounded;
// merged ones still count until their newer revision is covered.
func TestFreshnessBounded(t *testing.T) {
	var f freshness
	d := &Definition{Name: "d", Project: "p"}
	defs := map[string]*Definition{"d": d}
	total := 0
	for rev := uint64(1); rev <= 3*maxMarked; rev++ {
		changes := make([]change, rev%3+1)
		for i := range changes {
			changes[i].project = "p"
		}
		// Another project's changes do not count.
		changes = append(changes, change{project: "q"})
		f.mark(defs, []string{"d"}, changes, rev)
		total += int(rev%3 + 1)
	}
	if n := len(f.marked["d"]); n > maxMarked {
		t.Errorf("%d entries kept, want at most %d", n, maxMarked)
	}
	if n := f.pending("d"); n != total {
		t.Errorf("pending %d, want %d", n, total)
	}
	f.covered("d", 3*maxMarked-1)
	if n := f.pending("d"); n != int((3*maxMarked)%3+1) {
		t.Errorf("after covering all but the last revision: pending %d, want %d", n, (3*maxMarked)%3+1)
	}
	f.covered("d", 3*maxMarked)
	if n := f.pending("d"); n != 0 || f.marked["d"] != nil {
		t.Errorf("after covering everything: pending %d, entries %v", n, f.marked["d"])
	}
}
