package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// BenchmarkAsOfReplay measures a point-in-time export of a large stream:
// EXPORTSTREAM_BENCH_ASOF_FILES image files (default 10,000) with 10 box
// instances each, 11 events a file, all in stream EV; one op is one
// export as of the stream's last sequence: the replay into a scratch
// store, the plan and the render into a local bucket. It reports the
// replay rate, the peak Go heap in use during the export and the peak
// resident size of the test process sampled during it (which also holds
// the in-process NATS server).
//
//	EXPORTSTREAM_BENCH_ASOF_FILES=100000 go test -run '^$' -bench AsOfReplay -benchtime 1x ./pipeline/
func BenchmarkAsOfReplay(b *testing.B) {
	files := 10_000
	if v := os.Getenv("EXPORTSTREAM_BENCH_ASOF_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("EXPORTSTREAM_BENCH_ASOF_FILES=%q", v)
		}
		files = n
	}
	ns := eventstest.StartServer(b)
	_, js := eventstest.Connect(b, ns)
	ctx := b.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EV", Subjects: []string{"diffgram.events.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	bucket, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p, err := openTest(b, ctx, js, Options{
		Buckets: map[string]connectors.Bucket{"disk": bucket}, StatePrefix: "BENCH", Owner: "bench",
		EventsStream: "EV", EventLimits: events.Limits{MaxBytes: 1 << 20},
	})
	if err != nil {
		b.Fatal(err)
	}
	lines := syntheticEvents(files, 10)
	for i, l := range lines {
		m := nats.NewMsg(l.subject)
		m.Data = l.body
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprint("m", i)), jetstream.WithStallWait(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Minute):
		b.Fatal("publishing took too long")
	}
	n := len(lines)
	lines = nil
	runtime.GC()
	d := Definition{Project: "bench", Source: Source{Kind: SourceDirectory, Name: "all"}, Completion: CompletionAll, Connection: "disk"}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, baseRSS := ms.HeapInuse, rssMB()
	var peakHeap uint64
	var peakRSS float64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			peakRSS = max(peakRSS, rssMB())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	b.ResetTimer()
	for range b.N {
		r, err := p.GenerateAsOf(ctx, d, AsOf{Seq: uint64(n)})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		done, err := p.WaitRecord(wctx, r.ID)
		cancel()
		if err != nil || done.Status != StatusComplete || done.FileListLength != files || done.InstanceCount != files*10 {
			b.Fatalf("export: %v, %+v", err, done)
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(baseHeap)/1e6, "MB-heap-before")
	b.ReportMetric(float64(peakHeap)/1e6, "MB-heap-peak")
	b.ReportMetric(baseRSS, "MB-rss-before")
	b.ReportMetric(peakRSS, "MB-rss-peak")
}

// rssMB is the process's resident size (VmRSS) in MB.
func rssMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(fs[1], 64)
			return kb / 1024
		}
	}
	return 0
}
