package pipeline

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
)

// syntheticEvents makes a project with one directory, two labels and
// files × perFile box instances, as events in arrival order.
func syntheticEvents(files, perFile int) []line {
	const proj = "bench"
	env := func(typ, data string) line {
		ent := typ[len("diffgram."):]
		kind := ent[:len(ent)-len(ent[indexDot(ent):])]
		action := ent[indexDot(ent)+1:]
		return line{
			subject: "diffgram.events." + proj + "." + kind + "." + action,
			body: []byte(`{"specversion":"1.0","id":"` + fmt.Sprint(time.Now().UnixNano()) + `","source":"bench","type":"` + typ +
				`","time":"2026-11-28T10:00:00Z","datacontenttype":"application/json","diffgramproject":"` + proj + `","data":` + data + `}`),
		}
	}
	out := []line{
		env("diffgram.project.upserted", `{"project":{"string_id":"bench","name":"Bench","version":1}}`),
		env("diffgram.directory.upserted", `{"directory":{"id":1,"nickname":"all","created_time":"2026-01-01T00:00:00Z","version":1}}`),
		env("diffgram.label.upserted", `{"label_file":{"id":1,"label":{"id":1,"name":"car"},"colour":{"hex":"#ff0000"},"state":"added","version":1}}`),
		env("diffgram.label.upserted", `{"label_file":{"id":2,"label":{"id":2,"name":"person"},"colour":{"hex":"#00ff00"},"state":"added","version":1}}`),
	}
	inst := int64(1_000_000)
	for f := 1; f <= files; f++ {
		out = append(out, env("diffgram.file.uploaded", fmt.Sprintf(`{"file":{"id":%d,"type":"image","original_filename":"img_%d.jpg","created_time":"2026-02-01T00:00:00Z","state":"added","ann_is_complete":true,"directory_ids":[1],"parent_id":null,"blob_url":"https://media.example/%d","image":{"width":1920,"height":1080,"rotation_degrees":0,"image_signed_url":"https://media.example/%d","image_signed_expiry":1900000000},"version":1}}`, f, f, f, f)))
		for i := 0; i < perFile; i++ {
			inst++
			out = append(out, env("diffgram.instance.created", fmt.Sprintf(`{"instance":{"id":%d,"root_id":%d,"previous_id":null,"version":1,"file_id":%d,"soft_delete":false,"type":"box","label_file_id":%d,"attribute_groups":null,"x_min":%d,"y_min":20,"x_max":%d,"y_max":120}}`, inst, inst, f, 1+i%2, 10+i, 110+i)))
		}
	}
	return out
}

func indexDot(s string) int {
	for i := range s {
		if s[i] == '.' {
			return i
		}
	}
	return len(s)
}

func decodeAll(b testing.TB, lines []line) []*events.Event {
	evs := make([]*events.Event, 0, len(lines))
	for _, l := range lines {
		ev, err := events.Decode(l.subject, l.body, 1<<20)
		if err != nil {
			b.Fatalf("decode %s: %v", l.body, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// BenchmarkDecode measures decoding and validating one instance event.
func BenchmarkDecode(b *testing.B) {
	lines := syntheticEvents(1, 1)
	l := lines[len(lines)-1]
	b.SetBytes(int64(len(l.body)))
	for b.Loop() {
		if _, err := events.Decode(l.subject, l.body, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// renderSetup makes the state of files × 10 instances in one directory,
// a local bucket and a definition exporting that directory.
func renderSetup(b *testing.B, files int) (*State, *local.Bucket, *Definition) {
	s := NewState()
	for _, ev := range decodeAll(b, syntheticEvents(files, 10)) {
		if _, err := s.applyLocal(ev); err != nil {
			b.Fatal(err)
		}
	}
	bucket, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return s, bucket, &Definition{Name: "all", Project: "bench", Source: Source{Kind: SourceDirectory, Name: "all"},
		Completion: CompletionAll, Path: "exports/all/"}
}

// BenchmarkRenderLocal renders an export of files × 10 instances from
// state straight into the local bucket (temp file, fsync, link), as the
// exporter does. Sub-benchmarks by file count; reports MB/s and the heap
// in use after the state is loaded and at the end of the render.
func BenchmarkRenderLocal(b *testing.B) {
	for _, files := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			s, bucket, d := renderSetup(b, files)
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			stateHeap := ms.HeapInuse
			var size int64
			id := int64(0)
			for b.Loop() {
				id++
				pl := s.buildPlan(d)
				w, err := bucket.NewWriter(b.Context(), d.objectStem(id, "all", time.Now())+".json", connectors.WriteOptions{IfAbsent: true})
				if err != nil {
					b.Fatal(err)
				}
				res, err := pl.render(w, id, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				size = res.Bytes
			}
			runtime.ReadMemStats(&ms)
			b.SetBytes(size)
			b.ReportMetric(float64(size)/1e6, "MB/export")
			b.ReportMetric(float64(stateHeap)/1e6, "MB-heap-state")
			b.ReportMetric(float64(ms.HeapInuse)/1e6, "MB-heap-end")
		})
	}
}

// BenchmarkApplyMemory applies events in memory only (no NATS): the
// state's own cost per event.
func BenchmarkApplyMemory(b *testing.B) {
	evs := decodeAll(b, syntheticEvents(1000, 10))
	b.ResetTimer()
	n := 0
	for b.Loop() {
		s := NewState()
		for _, ev := range evs {
			if _, err := s.applyLocal(ev); err != nil {
				b.Fatal(err)
			}
		}
		n += len(evs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRenderPhases splits a warm render of 100k files × 10 instances
// (fragments already cached) into gathering the plan, rendering to
// io.Discard (with both hashes) and the whole export into the local bucket
// (temp file, fsync, link).
func BenchmarkRenderPhases(b *testing.B) {
	s, bucket, d := renderSetup(b, 100_000)
	if _, err := s.Render(io.Discard, d, 1, time.Now()); err != nil { // warm the fragment caches
		b.Fatal(err)
	}
	var planT, discardT, localT time.Duration
	id := int64(1)
	for b.Loop() {
		id++
		t0 := time.Now()
		pl := s.buildPlan(d)
		t1 := time.Now()
		if _, err := pl.render(io.Discard, id, time.Now()); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		w, err := bucket.NewWriter(b.Context(), d.objectStem(id, "all", time.Now())+".json", connectors.WriteOptions{IfAbsent: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.buildPlan(d).render(w, id, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		planT += t1.Sub(t0)
		discardT += t2.Sub(t1)
		localT += time.Since(t2)
	}
	n := float64(b.N)
	b.ReportMetric(planT.Seconds()*1000/n, "ms-plan")
	b.ReportMetric(discardT.Seconds()*1000/n, "ms-render-discard")
	b.ReportMetric(localT.Seconds()*1000/n, "ms-export-local")
}
