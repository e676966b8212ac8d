package connectorstest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
)

// BenchmarkUpload streams size bytes in 1 MiB writes into a fresh key of
// b per iteration, create-only, as an export does, and reports the
// throughput (MB/s) and the peak live Go heap above the baseline while
// uploading (peak-heap-MiB, sampled every 50 ms after a collection). The
// object is deleted after each iteration.
func BenchmarkUpload(bm *testing.B, b connectors.Bucket, size int64) {
	const chunk = 1 << 20
	buf := content(90, chunk)
	bm.SetBytes(size)
	var peakGrowth uint64
	for bm.Loop() {
		key := "bench/upload-" + time.Now().Format("150405.000000000") + ".json"
		heap := watchHeap(50 * time.Millisecond)
		w, err := b.NewWriter(bm.Context(), key, connectors.WriteOptions{IfAbsent: true})
		if err != nil {
			bm.Fatalf("NewWriter: %v", err)
		}
		if err := writeStamped(w, buf, size); err != nil {
			w.Abort()
			bm.Fatalf("Write: %v", err)
		}
		if err := w.Close(); err != nil {
			bm.Fatalf("Close: %v", err)
		}
		growth, _ := heap.Stop()
		peakGrowth = max(peakGrowth, growth)
		bm.StopTimer()
		if err := b.Delete(bm.Context(), key); err != nil {
			bm.Fatalf("Delete: %v", err)
		}
		bm.StartTimer()
	}
	bm.ReportMetric(float64(peakGrowth)/(1<<20), "peak-heap-MiB")
}

// RealCloudPrefix gives a test its own empty part of a shared, real
// bucket: a connectors.Prefixed view under
// "exportstream-conformance/<time>-<test>/", whose objects are deleted
// when the test ends; b is closed after that.
func RealCloudPrefix(t *testing.T, b connectors.Bucket) connectors.Bucket {
	prefix := fmt.Sprintf("exportstream-conformance/%d-%s/", time.Now().UnixNano(), strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()))
	t.Cleanup(func() {
		ctx := context.Background()
		var keys []string
		_ = b.List(ctx, prefix, func(a connectors.Attributes) bool { keys = append(keys, a.Key); return true })
		for _, k := range keys {
			if err := b.Delete(ctx, k); err != nil {
				t.Errorf("cleaning up %s: %v", k, err)
			}
		}
		_ = b.Close()
	})
	return connectors.Prefixed(keepOpen{b}, prefix)
}

// keepOpen leaves closing to RealCloudPrefix's cleanup, which still needs
// the bucket after the suite has closed its view.
type keepOpen struct{ connectors.Bucket }

func (keepOpen) Close() error { return nil }
