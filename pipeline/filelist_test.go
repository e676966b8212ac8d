package pipeline

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestFileList checks that a fileList gives back every id in order: ids
// in order, out of order (a job's files), repeated, and at the ends of
// int64.
func TestFileList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]int64{
		"empty":     nil,
		"ascending": {1, 2, 3, 5, 8, 1000, 1001, 1 << 40},
		"extremes":  {math.MaxInt64, math.MinInt64, 0, -1, math.MaxInt64, 1},
		"repeated":  {7, 7, 7},
	}
	var random []int64
	for range 10000 {
		random = append(random, r.Int64N(1<<20)-1<<19)
	}
	cases["random"] = random
	for name, ids := range cases {
		var l fileList
		for _, id := range ids {
			l.add(id)
		}
		if l.Len() != len(ids) {
			t.Errorf("%s: Len %d, want %d", name, l.Len(), len(ids))
		}
		var got []int64
		for i, id := range l.All() {
			if i != len(got) {
				t.Fatalf("%s: index %d at position %d", name, i, len(got))
			}
			got = append(got, id)
		}
		if !slices.Equal(got, ids) {
			t.Errorf("%s: All gives %v, want %v", name, got[:min(len(got), 10)], ids[:min(len(ids), 10)])
		}
		// Stopping early stops.
		n := 0
		for range l.All() {
			if n++; n == 2 {
				break
			}
		}
		if want := min(2, len(ids)); n != want {
			t.Errorf("%s: a loop that breaks after 2 ran %d times", name, n)
		}
	}
	// Numbered in order, an id takes one byte.
	var l fileList
	for id := range int64(100_000) {
		l.add(id + 1)
	}
	if len(l.b) != 100_000 {
		t.Errorf("100,000 consecutive ids take %d bytes, want 100,000", len(l.b))
	}
}
