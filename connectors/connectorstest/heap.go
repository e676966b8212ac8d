package connectorstest

import (
	"encoding/binary"
	"io"
	"runtime"
	"sync"
	"time"
)

// heapWatch samples the live Go heap from a baseline until Stop. It
// collects before each reading, so the reading is the live heap (buffers
// in flight), not garbage waiting for the collector.
type heapWatch struct {
	base runtime.MemStats
	peak uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

// watchHeap takes the baseline (after a collection) and samples every
// interval.
func watchHeap(every time.Duration) *heapWatch {
	h := &heapWatch{stop: make(chan struct{})}
	runtime.GC()
	runtime.ReadMemStats(&h.base)
	h.peak = h.base.HeapAlloc
	h.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapAlloc)
		}
	})
	return h
}

// Stop ends the sampling and returns the most the live heap grew above
// the baseline, and the bytes allocated since the baseline.
func (h *heapWatch) Stop() (growth, allocated uint64) {
	close(h.stop)
	h.wg.Wait()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	return h.peak - min(h.peak, h.base.HeapAlloc), end.TotalAlloc - h.base.TotalAlloc
}

// writeStamped writes size bytes to w in writes of len(buf), each chunk
// buf stamped with its offset, so that the source holds one buffer
// whatever the size and no two chunks are alike.
func writeStamped(w io.Writer, buf []byte, size int64) error {
	chunk := int64(len(buf))
	for off := int64(0); off < size; off += chunk {
		binary.LittleEndian.PutUint64(buf, uint64(off))
		if _, err := w.Write(buf[:min(chunk, size-off)]); err != nil {
			return err
		}
	}
	return nil
}
