package events_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// TestPartitionOfMatchesNATS: PartitionOf agrees with the stream's own
// partition() transform, for many project names.
func TestPartitionOfMatchesNATS(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	pt, err := events.NewPartitioning("EV", []string{"diffgram.events.>"}, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EV", Subjects: []string{"diffgram.events.>"},
		SubjectTransform: pt.Transform()}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		project := strings.Repeat("p", i%5) + "project-" + string(rune('a'+i%26)) + strings.Repeat("x", i%11)
		ack, err := js.Publish(t.Context(), "diffgram.events."+project+".file.added", []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(t.Context(), ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		want := "partitioned.EV." + string(rune('0'+events.PartitionOf(project, 7))) + "." + project + ".file.added"
		if m.Subject != want {
			t.Fatalf("%s stored as %s, want %s", project, m.Subject, want)
		}
		if got := pt.Original(m.Subject); got != "diffgram.events."+project+".file.added" {
			t.Fatalf("Original(%s) = %s", m.Subject, got)
		}
	}
}

// TestConsumerPartitioned: a stream that held events before it was
// partitioned gets the transform; the shared consumer moves the events
// stored before into their partitions (each handled once, by its
// partition's consumer) and dead-letters bad input under its original
// subject; another number of partitions is refused.
func TestConsumerPartitioned(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	log := slog.New(slog.DiscardHandler)
	cfg := testConsumerConfig()
	if _, err := events.NewConsumer(t.Context(), js, cfg, log, nil); err != nil {
		t.Fatal(err)
	}
	good := goodMessages(t)
	before, after := good[:len(good)/2], good[len(good)/2:]
	for _, m := range before {
		publish(t, js, m)
	}
	cfg.Partitions = 4
	reg := prometheus.NewRegistry()
	shared, err := events.NewConsumer(t.Context(), js, cfg, log, reg)
	if err != nil {
		t.Fatalf("NewConsumer with partitions: %v", err)
	}
	for _, m := range after {
		publish(t, js, m)
	}
	bad := &msg{subject: subj("file.exploded"), body: ce("diffgram.file.exploded", goodFile, with("id", "bad-type")), msgID: "bad-type"}
	publish(t, js, bad)

	// Before any partition consumer exists, and once they all do (not
	// running yet): what waits in the partitions is what was published
	// after partitioning.
	infos, err := shared.PartitionsInfo(t.Context())
	if err != nil || len(infos) != 4 || slices.ContainsFunc(infos, func(i *jetstream.ConsumerInfo) bool { return i != nil }) {
		t.Fatalf("PartitionsInfo before the partitions' consumers exist: %v, %v; want 4 × nil", infos, err)
	}
	parts := make([]*events.Consumer, 4)
	for i := range parts {
		if parts[i], err = shared.Partition(t.Context(), i); err != nil {
			t.Fatal(err)
		}
	}
	if infos, err = shared.PartitionsInfo(t.Context()); err != nil {
		t.Fatal(err)
	}
	var pending uint64
	for i, info := range infos {
		if info == nil {
			t.Fatalf("partition %d: no consumer info", i)
		}
		pending += info.NumPending
	}
	if want := uint64(len(after) + 1); pending != want {
		t.Errorf("the partitions' consumers have %d events pending, want %d (published after partitioning)", pending, want)
	}

	var col collector
	runConsumer(t, shared, col.handle)
	for i := range parts {
		runConsumer(t, parts[i], col.handle)
	}
	eventually(t, "every good event handled", func() bool { return len(col.handledIDs()) >= len(good) })
	eventually(t, "the bad event dead-lettered", func() bool { return streamMsgs(t, js, testDeadLetter) == 1 })
	for _, c := range append([]*events.Consumer{shared}, parts...) {
		eventually(t, "consumers idle", consumerIdle(t, c))
	}
	seen := map[string]int{}
	for _, id := range col.handledIDs() {
		seen[id]++
	}
	for _, m := range good {
		if seen[m.msgID] != 1 {
			t.Errorf("event %s handled %d times, want once", m.msgID, seen[m.msgID])
		}
	}
	if len(seen) != len(good) {
		t.Errorf("handled %d distinct events, want %d", len(seen), len(good))
	}
	dlq, err := js.Stream(t.Context(), testDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := dlq.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := dm.Header.Get(events.HeaderOriginalSubject); got != bad.subject {
		t.Errorf("dead letter's original subject %q, want %q", got, bad.subject)
	}

	cfg.Partitions = 3
	if _, err := events.NewConsumer(t.Context(), js, cfg, log, nil); err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Errorf("another number of partitions: err %v, want a refusal", err)
	}
	cfg.Partitions, cfg.CreateStream, cfg.Stream = 4, false, "OTHER"
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg.Subjects = []string{"other.>"}
	if _, err := events.NewConsumer(t.Context(), js, cfg, log, nil); err == nil || !strings.Contains(err.Error(), "no subject transform") {
		t.Errorf("unpartitioned stream it may not change: err %v, want a refusal", err)
	}
}
