package gcs

import "testing"

func TestShareChunk(t *testing.T) {
	for _, c := range []struct{ chunk, writers, want int }{
		{8 << 20, 0, 8 << 20},
		{8 << 20, 1, 8 << 20},
		{8 << 20, 2, 0},
		{8 << 20, 4, 0},
	} {
		if got := shareChunk(c.chunk, c.writers); got != c.want {
			t.Errorf("shareChunk(%d, %d) = %d, want %d", c.chunk, c.writers, got, c.want)
		}
	}
}
