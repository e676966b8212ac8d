package azure

import "testing"

func TestShareBlock(t *testing.T) {
	for _, c := range []struct {
		size    int64
		writers int
		want    int64
	}{
		{8 << 20, 0, 8 << 20},
		{8 << 20, 1, 8 << 20},
		{8 << 20, 4, 2 << 20},
		{8 << 20, 64, MinBlockSize},
		{MinBlockSize / 2, 4, MinBlockSize / 2},
	} {
		if got := shareBlock(c.size, c.writers); got != c.want {
			t.Errorf("shareBlock(%d, %d) = %d, want %d", c.size, c.writers, got, c.want)
		}
	}
}
