package events

import (
	"testing"
	"time"
)

// TestBackoffCapped: the pause after consecutive failed batches starts at
// 250 ms, doubles, and never exceeds the configured cap.
func TestBackoffCapped(t *testing.T) {
	for _, c := range []struct {
		n    int
		cap  time.Duration
		want time.Duration
	}{
		{1, 5 * time.Second, 250 * time.Millisecond},
		{2, 5 * time.Second, 500 * time.Millisecond},
		{5, 5 * time.Second, 4 * time.Second},
		{6, 5 * time.Second, 5 * time.Second},
		{60, 5 * time.Second, 5 * time.Second},
		{3, 300 * time.Millisecond, 300 * time.Millisecond},
		{60, 30 * time.Second, 30 * time.Second},
	} {
		if got := Backoff(c.n, 250*time.Millisecond, c.cap); got != c.want {
			t.Errorf("Backoff(%d, 250ms, %v) = %v, want %v", c.n, c.cap, got, c.want)
		}
	}
}
