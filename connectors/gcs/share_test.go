package gcs

import "testing"

func TestShareChunk(t *testing.T) {
	for _, c := range []struct{ chunk, writers, want int }{
		{8 << 20, 0, 8 << 20},
		{8 << 20, 1, 8 << 20},
		{8 << 20, 4, 2 << 20},
		{8 << 20, 3, 2<<20 + 512<<10}, // 2.67 MiB, down to a multiple of 256 KiB
		{8 << 20, 64, 1 << 20},        // not below 1 MiB
		{512 << 10, 4, 512 << 10},     // nor above a chunk smaller than that
	} {
		got := shareChunk(c.chunk, c.writers)
		if got != c.want || got%ChunkSizeUnit != 0 {
			t.Errorf("shareChunk(%d, %d) = %d, want %d", c.chunk, c.writers, got, c.want)
		}
	}
}
