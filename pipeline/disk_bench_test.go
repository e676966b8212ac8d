package pipeline

import (
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// heapInuse is the Go heap in use after a collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// dirSize is the size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkDiskState loads 100,000 files × 10 box instances into the
// disk state (in batches of 1,000 events, one Pebble batch each) and into
// the in-memory state, and reports for each: the Go heap in use with the
// state loaded (after a GC, the events dropped), the apply rate, the
// time of a full export of the project (buildPlan, which counts and
// hashes, the file selection alone as ms-select, then render into io.Discard, so without the bucket): the first,
// the next ones (both states have their rendered entries kept by then: on
// the instances in memory, per file in the store on disk) and the plan
// alone, and the heap in use while that export is rendered. The
// disk store's own memory (64 MB block cache, memtables included) is
// allocated by cgo, outside the Go heap; MB-disk is its size on disk.
func BenchmarkDiskState(b *testing.B) {
	const files = 100_000

	d := &Definition{Name: "all", Project: "bench", Source: Source{Kind: SourceProject}, Completion: CompletionAll}
	measure := func(b *testing.B, read func(func(View)) error, report func()) {
		var plHeap uint64
		var size int64
		var first, rest, plans, selects time.Duration
		n := 0
		for b.Loop() {
			var took, plan time.Duration
			err := read(func(v View) {
				t0 := time.Now()
				pl := selectFiles(v, d)
				selects += time.Since(t0)
				pl.measure()
				plan = time.Since(t0)
				if n == 0 {
					plHeap = heapInuse()
				}
				res, err := pl.render(io.Discard, 1, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				took = time.Since(t0)
				size = res.Bytes
			})
			if err != nil {
				b.Fatal(err)
			}
			plans += plan
			if n == 0 {
				first = took
			} else {
				rest += took
			}
			n++
		}
		// The first render fills the in-memory state's fragment caches;
		// from disk every render is a first one.
		b.ReportMetric(float64(first.Milliseconds()), "ms-render-first")
		if n > 1 {
			b.ReportMetric(float64(rest.Milliseconds())/float64(n-1), "ms-render-next")
		}
		report()
		b.ReportMetric(float64(plans.Milliseconds())/float64(n), "ms-plan")
		b.ReportMetric(float64(selects.Milliseconds())/float64(n), "ms-select")
		b.ReportMetric(float64(plHeap)/1e6, "MB-heap-plan")
		b.ReportMetric(float64(size)/1e6, "MB/export")
	}
	b.Run("store=disk", func(b *testing.B) {
		base := heapInuse()
		dir := b.TempDir()
		ds, err := OpenDiskState(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer ds.Close()
		evs := decodeAll(b, syntheticEvents(files, 10))
		start := time.Now()
		for i := 0; i < len(evs); i += 1000 {
			err := ds.Update(func(tx *DiskTx) error {
				for _, ev := range evs[i:min(i+1000, len(evs))] {
					if err := txApply(tx, ev); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		rate := float64(len(evs)) / time.Since(start).Seconds()
		evs = nil
		if err := ds.Sync(); err != nil {
			b.Fatal(err)
		}
		// Let the compactions the load started finish: they would run
		// beside the renders on two cores.
		quiet := time.Now()
		if err := ds.db.Flush(); err != nil {
			b.Fatal(err)
		}
		for ds.db.Metrics().Compact.NumInProgress > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		settle := time.Since(quiet)
		heap := heapInuse()
		measure(b, ds.Read, func() {
			b.ReportMetric(rate, "events/s")
			b.ReportMetric((float64(heap)-float64(base))/1e6, "MB-heap-state")
			b.ReportMetric(settle.Seconds(), "s-settle")
			b.ReportMetric(float64(dirSize(dir))/1e6, "MB-disk")
		})
	})
	b.Run("store=memory", func(b *testing.B) {
		base := heapInuse()
		s := NewState()
		evs := decodeAll(b, syntheticEvents(files, 10))
		start := time.Now()
		for _, ev := range evs {
			if _, err := s.applyLocal(ev); err != nil {
				b.Fatal(err)
			}
		}
		rate := float64(len(evs)) / time.Since(start).Seconds()
		evs = nil
		heap := heapInuse()
		measure(b, memRead(s), func() {
			b.ReportMetric(rate, "events/s")
			b.ReportMetric((float64(heap)-float64(base))/1e6, "MB-heap-state")
		})
	})
}
