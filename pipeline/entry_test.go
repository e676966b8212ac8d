package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

// instanceEvent is a box instance of file 1 in project p (lineage id,
// version v); pad adds that many points' worth of bytes as a polygon.
func instanceEvent(t *testing.T, id, v int64, points int) *events.Event {
	t.Helper()
	geometry := `"type":"box","x_min":1,"y_min":2,"x_max":30,"y_max":40`
	if points > 0 {
		var b strings.Builder
		for i := range points {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"x":%d,"y":%d,"figure_id":null}`, 1000+i, 2000+i)
		}
		geometry = `"type":"polygon","points":[` + b.String() + `]`
	}
	body := fmt.Sprintf(`{"specversion":"1.0","id":"i%d-%d","source":"t","type":"diffgram.instance.created","diffgramproject":"p","data":{"instance":{"id":%d,"root_id":%d,"previous_id":null,"version":%d,"file_id":1,"soft_delete":false,"label_file_id":7,"attribute_groups":null,%s}}}`,
		id, v, id, id, v, geometry)
	ev, err := events.Decode("diffgram.events.p.instance.created", []byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func openTestStore(t *testing.T, js jetstream.JetStream, bucket string) *Store {
	t.Helper()
	s, err := OpenStore(t.Context(), js, bucket, 1, openDisk(t, t.TempDir()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.watch.Stop(); s.state.Close() })
	return s
}

// versionIn returns the version of the entity in the store (0: none).
func versionIn(t *testing.T, s *Store, k events.Kind, id int64) int64 {
	t.Helper()
	sn, err := s.state.Current("p", k, id)
	if err != nil {
		t.Fatal(err)
	}
	if sn == nil {
		return 0
	}
	return sn.version
}

// A batch's events land in one state entry per chunk of 16 ids: 41 events
// are 4 writes. An edit rewrites its chunk whole, and a replica that loads
// the bucket, or follows it, holds every entity at its version.
func TestStoreChunkEntries(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	a := openTestStore(t, js, "CH_STATE")
	evs := []*events.Event{fileEvent(t, 1, 1, "one")}
	for id := int64(100); id < 140; id++ { // chunks 6, 7 and 8
		evs = append(evs, instanceEvent(t, id, 1, 0))
	}
	res, err := a.Apply(t.Context(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.changes) != 41 {
		t.Errorf("%d changes, want 41", len(res.changes))
	}
	if got := streamState(t, js, "KV_CH_STATE").LastSeq; got != 4 {
		t.Errorf("the batch wrote %d state entries, want 4 (one file chunk, three instance chunks)", got)
	}
	b := openTestStore(t, js, "CH_STATE")
	if b.loaded != 4 {
		t.Errorf("a new replica loaded %d entries, want 4", b.loaded)
	}
	for id := int64(100); id < 140; id++ {
		if v := versionIn(t, b, events.KindInstance, id); v != 1 {
			t.Fatalf("instance %d: version %d in the new replica, want 1", id, v)
		}
	}
	if v := versionIn(t, b, events.KindFile, 1); v != 1 {
		t.Errorf("file 1: version %d, want 1", v)
	}

	// One edit: one write, of its whole chunk.
	if _, err := a.Apply(t.Context(), []*events.Event{instanceEvent(t, 105, 2, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := streamState(t, js, "KV_CH_STATE").LastSeq; got != 5 {
		t.Errorf("the edit wrote %d entries, want 1", got-4)
	}
	key := entryOf("p", events.KindInstance, 105, 0)
	e, err := a.kv.Get(t.Context(), key.String())
	if err != nil {
		t.Fatal(err)
	}
	raws, err := entryMembers(key, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	if len(raws) != 12 { // 100-111
		t.Errorf("chunk %s holds %d instances, want 12", key, len(raws))
	}
	if sn := entryHolds(t, a, "p", events.KindInstance, 105); sn == nil || sn.version != 2 {
		t.Errorf("chunk %s holds %+v for instance 105, want version 2", key, sn)
	}
	watchUntil(t, b, 5)
	for id := int64(100); id < 140; id++ {
		want := int64(1)
		if id == 105 {
			want = 2
		}
		if v := versionIn(t, b, events.KindInstance, id); v != want {
			t.Errorf("instance %d: version %d in the following replica, want %d", id, v, want)
		}
	}
}

// Two replicas that do not follow each other write entities of one chunk:
// each write replaces the whole chunk, so a replica that wrote without
// knowing the other's members must conflict, load them, and keep them.
func TestStoreChunkConflictKeepsTheOthers(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	a := openTestStore(t, js, "CC_STATE")
	b := openTestStore(t, js, "CC_STATE")
	if _, err := a.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 1, "one")}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(t.Context(), []*events.Event{fileEvent(t, 2, 1, "two")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(t.Context(), []*events.Event{fileEvent(t, 3, 1, "three")}); err != nil {
		t.Fatal(err)
	}
	for id := int64(1); id <= 3; id++ {
		if sn := entryHolds(t, a, "p", events.KindFile, id); sn == nil || sn.version != 1 {
			t.Errorf("the chunk lost file %d: %+v", id, sn)
		}
	}
	c := openTestStore(t, js, "CC_STATE")
	for id := int64(1); id <= 3; id++ {
		if v := versionIn(t, c, events.KindFile, id); v != 1 {
			t.Errorf("file %d: version %d in a new replica, want 1", id, v)
		}
	}
}

// A snapshot too large to share a chunk is an entry of its own; when it
// shrinks it goes back to its chunk, and the newer version wins wherever
// it is.
func TestStoreLargeSnapshotHasItsOwnEntry(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	a := openTestStore(t, js, "LS_STATE")
	big := instanceEvent(t, 33, 1, 2000)
	if len(big.Raw) <= chunkMemberMax {
		t.Fatalf("the large instance is %d bytes, not above %d", len(big.Raw), chunkMemberMax)
	}
	if _, err := a.Apply(t.Context(), []*events.Event{big, instanceEvent(t, 34, 1, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Get(t.Context(), "p.instance.33"); err != nil {
		t.Errorf("the large instance's own entry: %v", err)
	}
	if sn := entryHolds(t, a, "p", events.KindInstance, 34); sn == nil {
		t.Error("instance 34 is not in its chunk")
	}
	chunk, err := a.kv.Get(t.Context(), entryOf("p", events.KindInstance, 33, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	if len(chunk.Value()) > chunkMemberMax {
		t.Errorf("the chunk holds the large instance (%d bytes)", len(chunk.Value()))
	}
	if v := versionIn(t, openTestStore(t, js, "LS_STATE"), events.KindInstance, 33); v != 1 {
		t.Errorf("large instance: version %d in a new replica, want 1", v)
	}
	if _, err := a.Apply(t.Context(), []*events.Event{instanceEvent(t, 33, 2, 0)}); err != nil {
		t.Fatal(err)
	}
	if sn := entryHolds(t, a, "p", events.KindInstance, 33); sn == nil || sn.version != 2 {
		t.Errorf("the shrunk instance in its chunk: %+v, want version 2", sn)
	}
	c := openTestStore(t, js, "LS_STATE")
	if v := versionIn(t, c, events.KindInstance, 33); v != 2 {
		t.Errorf("shrunk instance: version %d in a new replica, want 2 (its own entry still holds 1)", v)
	}
	if v := versionIn(t, c, events.KindInstance, 34); v != 1 {
		t.Errorf("instance 34: version %d, want 1", v)
	}
}

// A bucket written by an earlier version (one entry per entity) is read
// as it is; an entity in two entries is taken at its higher version, and
// the next write of it goes to its chunk.
func TestStoreReadsTheEarlierLayout(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "EL_STATE"})
	if err != nil {
		t.Fatal(err)
	}
	raw := func(ev *events.Event) []byte { return compact(ev.Raw) }
	put := func(key string, value []byte) {
		if _, err := kv.Put(context.Background(), key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("p.file.3", raw(fileEvent(t, 3, 2, "three v2")))
	put("p.file.5", raw(fileEvent(t, 5, 1, "five")))
	put("p.file.c0", []byte("["+string(raw(fileEvent(t, 3, 1, "three v1")))+","+string(raw(fileEvent(t, 4, 1, "four")))+"]"))
	a := openTestStore(t, js, "EL_STATE")
	for id, want := range map[int64]int64{3: 2, 4: 1, 5: 1} {
		if v := versionIn(t, a, events.KindFile, id); v != want {
			t.Errorf("file %d: version %d, want %d", id, v, want)
		}
	}
	if _, err := a.Apply(t.Context(), []*events.Event{fileEvent(t, 3, 3, "three v3")}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int64]int64{3: 3, 4: 1, 5: 1} {
		if sn := entryHolds(t, a, "p", events.KindFile, id); sn == nil || sn.version != want {
			t.Errorf("chunk 0 holds %+v for file %d, want version %d", sn, id, want)
		}
	}
	b := openTestStore(t, js, "EL_STATE")
	if v := versionIn(t, b, events.KindFile, 3); v != 3 {
		t.Errorf("file 3: version %d in a new replica, want 3", v)
	}
}

func TestEntryKeys(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want entryKey
		ok   bool
	}{
		{"p.file.c0", entryKey{"p", events.KindFile, 0, true}, true},
		{"p.instance.c-1", entryKey{"p", events.KindInstance, -1, true}, true},
		{"p.instance.17", entryKey{"p", events.KindInstance, 17, false}, true},
		{"p.project._", entryKey{"p", events.KindProject, 0, false}, true},
		{"p.project.c1", entryKey{}, false},
		{"p.file.cx", entryKey{}, false},
		{"p.file", entryKey{}, false},
		{".file.1", entryKey{}, false},
	} {
		got, ok := parseEntryKey(tc.key)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseEntryKey(%q) = %+v, %v; want %+v, %v", tc.key, got, ok, tc.want, tc.ok)
		}
		if ok && got.String() != tc.key {
			t.Errorf("%q reads back as %q", tc.key, got.String())
		}
	}
	if chunkOf(-1) != -1 || chunkOf(15) != 0 || chunkOf(16) != 1 {
		t.Error("chunkOf is not floor division by 16")
	}
}
