package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// BenchmarkConsumeApply measures the durable apply rate end to end on an
// in-process JetStream server: events already in the stream are pulled by
// the durable consumer, decoded, written to the state bucket (async
// compare-and-swap publishes), dirty marks stored, then acked. One op is
// one event.
func BenchmarkConsumeApply(b *testing.B) {
	ns := eventstest.StartServer(b)
	_, js := eventstest.Connect(b, ns)
	ctx := b.Context()
	cons, err := events.NewConsumer(ctx, js, events.ConsumerConfig{
		Stream: "EV", Subjects: []string{"diffgram.events.>"}, CreateStream: true,
		Consumer: "bench", DeadLetter: "EV_DLQ", MaxEventBytes: 1 << 20, MaxAckPending: 20000, AckWait: 30 * time.Second,
	}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	bucket, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p, err := openTest(b, ctx, js, Options{
		Definitions: []*Definition{{Name: "all", Project: "bench", Source: Source{Kind: SourceDirectory, Name: "all"},
			Completion: CompletionAll, Connection: "disk", Quiet: time.Second, MaxDelay: 5 * time.Second}},
		Buckets: map[string]connectors.Bucket{"disk": bucket}, StatePrefix: "BENCH", Owner: "bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	// Distinct entities, so that every event is a state write.
	perFile := 10
	files := max(b.N/(perFile+1), 1)
	lines := syntheticEvents(files, perFile)
	for i, l := range lines {
		m := nats.NewMsg(l.subject)
		m.Data = l.body
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprint("m", i)), jetstream.WithStallWait(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishing took too long")
	}
	var done atomic.Int64
	total := int64(len(lines))
	runCtx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() {
		_ = cons.Run(runCtx, func(ctx context.Context, batch []*events.Event) error {
			if err := p.Handle(ctx, batch); err != nil {
				return err
			}
			if done.Add(int64(len(batch))) >= total {
				close(finished)
			}
			return nil
		})
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Minute):
		b.Fatalf("applied %d of %d", done.Load(), total)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
}
