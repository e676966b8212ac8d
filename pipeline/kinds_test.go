package pipeline

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/exportstream/exportstream/events"
)

// TestKindTable checks the pipeline's kind table against events': a row
// for every kind and none other, and local store keys that no two kinds
// (or two uses of one kind) share.
func TestKindTable(t *testing.T) {
	want := events.Kinds()
	got := slices.Collect(maps.Keys(kindInfos))
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("kindInfos has rows for %v, events.Kinds() is %v", got, want)
	}

	// One snapshot of each kind, every id 1 (the project's own id is its
	// string id): any two keys the same are two things stored at one place.
	p := projectPrefix(1)
	seen := map[string]string{}
	add := func(key []byte, what string) {
		if prev, ok := seen[string(key)]; ok {
			t.Errorf("%s and %s have the same key %x", prev, what, key)
		}
		seen[string(key)] = what
	}
	for _, k := range events.Kinds() {
		raw := []byte(`{"id":1,"string_id":"p","version":1,"file_id":1,"job_id":1,"parent_id":1}`)
		sn, err := decodeSnap("p", k, raw)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if k != events.KindProject && sn.id != 1 {
			t.Errorf("%s: id %d, want 1", k, sn.id)
		}
		add(snapKey(p, sn), fmt.Sprintf("%s (the snapshot)", k))
		for i, ix := range indexKeys(p, sn) {
			add(ix.key, fmt.Sprintf("%s (index key %d)", k, i))
		}
		if info := kindInfos[k]; (info.owner == nil) != (info.locator == 0) {
			t.Errorf("%s: an owner needs a locator and a locator an owner", k)
		}
	}
}
