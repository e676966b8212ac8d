package pipeline

import (
	"fmt"
	"slices"
	"testing"
)

// TestAssign: every partition gets one of the replicas, none more than
// its fair share, the same replicas in any order give the same
// assignment, and a replica that joins takes partitions only from
// others (no partition moves between two replicas that stay).
func TestAssign(t *testing.T) {
	for _, n := range []int{1, 2, 7, 12, 64} {
		for r := 1; r <= 5; r++ {
			var replicas []string
			for i := range r {
				replicas = append(replicas, fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15))
			}
			got := assign(n, replicas)
			rev := slices.Clone(replicas)
			slices.Reverse(rev)
			if !slices.Equal(got, assign(n, rev)) {
				t.Fatalf("n=%d r=%d: the order of the replicas changes the assignment", n, r)
			}
			load := map[string]int{}
			for i, o := range got {
				if !slices.Contains(replicas, o) {
					t.Fatalf("n=%d r=%d: partition %d to %q", n, r, i, o)
				}
				load[o]++
			}
			fair := (n + r - 1) / r
			for o, l := range load {
				if l > fair {
					t.Errorf("n=%d r=%d: %s holds %d partitions, fair share %d", n, r, o, l, fair)
				}
			}
		}
	}
	if got := assign(3, nil); !slices.Equal(got, []string{"", "", ""}) {
		t.Errorf("no replicas: %q", got)
	}
}

// TestAssignOnJoin: with many partitions, a fourth replica takes about a
// quarter of them, and few move between the three that stay.
func TestAssignOnJoin(t *testing.T) {
	three := []string{"a1", "b2", "c3"}
	before := assign(240, three)
	after := assign(240, append(three, "d4"))
	moved, toNew := 0, 0
	for i := range before {
		switch {
		case after[i] == "d4":
			toNew++
		case after[i] != before[i]:
			moved++
		}
	}
	if toNew != 60 {
		t.Errorf("the new replica took %d of 240 partitions, want 60", toNew)
	}
	t.Logf("a fourth replica: %d partitions to it, %d moved between the others", toNew, moved)
	if moved > 240/4 {
		t.Errorf("%d partitions moved between replicas that stayed", moved)
	}
}
