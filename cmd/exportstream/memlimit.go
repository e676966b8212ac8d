package main

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The service's soft limit on the Go runtime's memory, unless GOMEMLIMIT
// is set. The local store's block cache and memtables are Go memory (the
// production build has no cgo), and at GOGC 50 the heap may grow by half
// again over them between collections: at 1 M files, with a drain's queued
// memtables live, that headroom took the peak to 179 MB RSS. The limit
// makes the collector run earlier when the heap nears it, and the
// scavenger give back what it holds above it, so that the Go memory stays
// near 100 MiB and the process (about 50 MB of it the binary's mapped
// pages) near the 150 MB budget. Below the limit (100k files peak at about
// 120 MB RSS) it changes nothing. docs/performance.md has the figures.
const memoryLimit = 100 << 20

// memoryLimitFor is the limit for a live heap of live bytes: memoryLimit,
// or, for a heap that has outgrown it (a project far beyond the budget's,
// whose file lists and YOLO stems are held while exporting), an eighth
// over the live heap plus 8 MiB for the runtime's own memory. A limit at
// or below the live heap would have the collector run back to back.
func memoryLimitFor(live uint64) int64 {
	return max(memoryLimit, int64(live+live/8+8<<20))
}

// keepMemoryLimit sets the soft memory limit to memoryLimit now, then,
// in a goroutine for the life of the process, keeps it at memoryLimitFor
// the live heap, looking again every interval.
func keepMemoryLimit(every time.Duration) {
	set := memoryLimitFor(0)
	debug.SetMemoryLimit(set)
	go func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			time.Sleep(every)
			metrics.Read(sample)
			var live uint64
			if sample[0].Value.Kind() == metrics.KindUint64 {
				live = sample[0].Value.Uint64()
			}
			if limit := memoryLimitFor(live); limit != set {
				debug.SetMemoryLimit(limit)
				set = limit
			}
		}
	}()
}
