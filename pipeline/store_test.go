package pipeline

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
)

func fileEvent(t *testing.T, id, version int64, name string) *events.Event {
	t.Helper()
	body := fmt.Sprintf(`{"specversion":"1.0","id":"f%d-%d","source":"t","type":"diffgram.file.updated","diffgramproject":"p","data":{"file":{"id":%d,"type":"image","original_filename":%q,"state":"added","ann_is_complete":true,"directory_ids":[1],"parent_id":null,"version":%d}}}`,
		id, version, id, name, version)
	ev, err := events.Decode("diffgram.events.p.file.updated", []byte(body), 0)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Two replicas whose in-memory states lag each other race on one entity:
// the compare-and-swap makes the highest version win in the bucket and in
// both states, whatever order the writes come in.
func TestStoreHighestVersionWinsAcrossReplicas(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	log := slog.New(slog.DiscardHandler)
	a, err := OpenStore(t.Context(), js, "CAS_STATE", 1, NewState(), log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenStore(t.Context(), js, "CAS_STATE", 1, NewState(), log)
	if err != nil {
		t.Fatal(err)
	}
	// Neither store runs its watch: each sees the other's writes only
	// through conflicts, the worst case.
	if _, err := a.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 1, "v1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 3, "v3")}); err != nil {
		t.Fatal(err)
	}
	// b has never seen the key: it expects it absent, conflicts, loads v3,
	// and drops its older v2.
	res, err := b.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 2, "v2")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.changes) != 0 {
		t.Errorf("b stored a stale version: %d changes", len(res.changes))
	}
	// b writes v4 over v3 (after the conflict it knows v3's revision).
	if res, err = b.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 4, "v4")}); err != nil || len(res.changes) != 1 {
		t.Fatalf("b's newer version: %d changes, %v", len(res.changes), err)
	}
	// a still believes v3 is stored: its v5 conflicts, reloads v4, wins.
	if res, err = a.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 5, "v5")}); err != nil || len(res.changes) != 1 {
		t.Fatalf("a's newest version: %d changes, %v", len(res.changes), err)
	}
	e, err := a.kv.Get(t.Context(), "p.file.1")
	if err != nil {
		t.Fatal(err)
	}
	sn, err := decodeSnap("p", events.KindFile, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	if sn.version != 5 {
		t.Errorf("bucket holds version %d, want 5", sn.version)
	}
	// A stale write from b after all that changes nothing.
	if res, err = b.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 4, "v4 again")}); err != nil || len(res.changes) != 0 {
		t.Errorf("b's repeated v4: %d changes, %v", len(res.changes), err)
	}
	if cur := b.state.current("p", events.KindFile, 1); cur == nil || cur.version < 4 {
		t.Errorf("b's state: %+v", cur)
	}
}
