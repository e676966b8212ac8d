package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	a, err := OpenStore(t.Context(), js, "CAS_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenStore(t.Context(), js, "CAS_STATE", 1, openDisk(t, t.TempDir()), log)
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
	sn := entryHolds(t, a, "p", events.KindFile, 1)
	if sn == nil || sn.version != 5 {
		t.Errorf("bucket holds version %d, want 5", sn.version)
	}
	// A stale write from b after all that changes nothing.
	if res, err = b.Apply(t.Context(), []*events.Event{fileEvent(t, 1, 4, "v4 again")}); err != nil || len(res.changes) != 0 {
		t.Errorf("b's repeated v4: %d changes, %v", len(res.changes), err)
	}
	if cur, err := b.state.Current("p", events.KindFile, 1); err != nil || cur == nil || cur.version < 4 {
		t.Errorf("b's state: %+v", cur)
	}
}

// storeEvents are n file events of project p, versions v: files from
// to from+n-1 of sparse ids (see sparse), one state entry each.
func storeEvents(t *testing.T, from, n int, v int64) []*events.Event {
	var evs []*events.Event
	for i := from; i < from+n; i++ {
		evs = append(evs, fileEvent(t, sparse(int64(i)), v, fmt.Sprint("f", i)))
	}
	return evs
}

// sparse is the id of the i-th file of storeEvents: one per chunk, so
// that each is a state entry of its own and the tests can count revisions.
func sparse(i int64) int64 { return i * chunkIDs }

// entryHolds returns the snapshot of the entity in the state entry that
// holds it in the bucket (nil when none does).
func entryHolds(t *testing.T, s *Store, project string, k events.Kind, id int64) *snap {
	t.Helper()
	key := entryOf(project, k, id, 0)
	e, err := s.kv.Get(t.Context(), key.String())
	if err != nil {
		t.Fatalf("state entry %s: %v", key, err)
	}
	raws, err := entryMembers(key, e.Value())
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range raws {
		sn, err := decodeSnap(project, k, raw)
		if err != nil {
			t.Fatal(err)
		}
		if sn.id == id {
			return sn
		}
	}
	return nil
}

// watchUntil runs the store's watch until its disk store reflects rev,
// then stops it.
func watchUntil(t *testing.T, s *Store, rev uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	wait, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	ok := s.state.WaitRev(rev, wait.Done())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("the store did not reach revision %d (at %d)", rev, s.state.Rev())
	}
}

// The revision the store records is the watch's: a replica's own writes
// never carry it past another replica's write it has not seen, so that a
// restart never resumes after it and an export that waits for a revision
// has everything up to it.
func TestStoreRevisionFollowsTheWatch(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	d := openDisk(t, dir)
	a, err := OpenStore(t.Context(), js, "RF_STATE", 1, d, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenStore(t.Context(), js, "RF_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.watch.Stop()
	// b writes revisions 1-3, then a writes 4-5 without its watch running.
	if _, err := b.Apply(t.Context(), storeEvents(t, 1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	res, err := a.Apply(t.Context(), storeEvents(t, 10, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.rev != 5 {
		t.Fatalf("a wrote up to revision %d, want 5", res.rev)
	}
	if d.Rev() != 0 {
		t.Fatalf("a's store claims revision %d before its watch passed b's writes", d.Rev())
	}
	// Restarted now, a would load b's writes.
	watchUntil(t, a, 5)
	for id, want := range map[int64]int64{1: 1, 3: 1, 10: 1, 11: 1} {
		if got := fileVersion(t, d, id); got != want {
			t.Errorf("file %d: version %d, want %d", id, got, want)
		}
	}
	// The revision the watch passed is recorded, also when the last
	// entries were a's own (no transaction wrote them).
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openDisk(t, dir)
	defer d.Close()
	if d.Rev() != 5 {
		t.Errorf("reopened at revision %d, want 5", d.Rev())
	}
}

// fileVersion returns the version of storeEvents' file i in the store
// (0: none).
func fileVersion(t *testing.T, d *DiskState, i int64) int64 {
	t.Helper()
	sn, err := d.Current("p", events.KindFile, sparse(i))
	if err != nil {
		t.Fatal(err)
	}
	if sn == nil {
		return 0
	}
	return sn.version
}

// A store that survives a restart resumes the watch after the revision it
// recorded, and still gets what other replicas wrote meanwhile; a store
// of another bucket (deleted and made again) is emptied and loaded from
// the start.
func TestStoreResumesFromItsRevision(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	d := openDisk(t, dir)
	a, err := OpenStore(t.Context(), js, "RS_STATE", 1, d, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(t.Context(), storeEvents(t, 1, 50, 1)); err != nil {
		t.Fatal(err)
	}
	watchUntil(t, a, 50)
	rev := d.Rev()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Meanwhile another replica writes 10 new files and edits 5.
	other, err := OpenStore(t.Context(), js, "RS_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Apply(t.Context(), append(storeEvents(t, 51, 10, 1), storeEvents(t, 1, 5, 2)...)); err != nil {
		t.Fatal(err)
	}
	d = openDisk(t, dir)
	defer d.Close()
	if d.Rev() != rev {
		t.Fatalf("reopened at revision %d, want %d", d.Rev(), rev)
	}
	b, err := OpenStore(t.Context(), js, "RS_STATE", 1, d, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.watch.Stop()
	if b.loaded != 15 {
		t.Errorf("restart loaded %d entries, want the 15 written after revision %d", b.loaded, rev)
	}
	if d.Rev() != 65 {
		t.Errorf("store at revision %d, want 65", d.Rev())
	}
	for id, want := range map[int64]int64{1: 2, 5: 2, 6: 1, 50: 1, 51: 1, 60: 1} {
		if got := fileVersion(t, d, id); got != want {
			t.Errorf("file %d: version %d, want %d", id, got, want)
		}
	}

	// The bucket is deleted and made again with other content: the
	// store's revision may even be within the new bucket's, but it
	// reflects another bucket, so it is emptied.
	b.watch.Stop()
	if err := js.DeleteKeyValue(t.Context(), "RS_STATE"); err != nil {
		t.Fatal(err)
	}
	c, err := OpenStore(t.Context(), js, "RS_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(t.Context(), storeEvents(t, 100, 70, 1)); err != nil {
		t.Fatal(err)
	}
	c.watch.Stop()
	b, err = OpenStore(t.Context(), js, "RS_STATE", 1, d, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.watch.Stop()
	if b.loaded != 70 || d.Rev() != 70 {
		t.Errorf("after the bucket was made again: loaded %d, revision %d; want 70, 70", b.loaded, d.Rev())
	}
	if v := fileVersion(t, d, 1); v != 0 {
		t.Errorf("file 1 of the deleted bucket is still in the store (version %d)", v)
	}
	if v := fileVersion(t, d, 169); v != 1 {
		t.Errorf("file 169: version %d, want 1", v)
	}
}

// OpenStateDir empties a damaged store (to be loaded again), and refuses
// a folder that holds other files, or a store another process has open.
func TestOpenStateDir(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("damaged", func(t *testing.T) {
		dir := t.TempDir()
		d, err := OpenStateDir(dir, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.NoteRev(7); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
		if len(manifests) == 0 {
			t.Fatal("no MANIFEST in the store")
		}
		for _, m := range manifests {
			if err := os.WriteFile(m, []byte("not a manifest"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := OpenDiskState(dir); err == nil {
			t.Fatal("the damaged store opened")
		}
		d, err = OpenStateDir(dir, log)
		if err != nil {
			t.Fatalf("damaged store not emptied: %v", err)
		}
		defer d.Close()
		if d.Rev() != 0 {
			t.Errorf("emptied store at revision %d", d.Rev())
		}
	})
	t.Run("another layout", func(t *testing.T) {
		d, err := OpenStateDir(otherLayoutStore(t), log)
		if err != nil {
			t.Fatalf("store of another layout not emptied: %v", err)
		}
		d.Close()
	})
	t.Run("foreign files", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := OpenStateDir(dir, log)
		if err == nil || !strings.Contains(err.Error(), "not a state store") {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "CURRENT")); string(b) != "mine" {
			t.Error("a foreign file was changed")
		}
	})
	t.Run("in use", func(t *testing.T) {
		dir := t.TempDir()
		d, err := OpenStateDir(dir, log)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = OpenStateDir(dir, log)
		if err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("err = %v", err)
		}
		if err := d.NoteRev(3); err != nil {
			t.Errorf("the store in use was harmed: %v", err)
		}
	})
}

// silentWatch is a key-value watch whose consumer is gone without the
// client noticing (its NATS node stopped): it delivers nothing.
type silentWatch struct{ updates chan jetstream.KeyValueEntry }

func (w silentWatch) Updates() <-chan jetstream.KeyValueEntry { return w.updates }
func (w silentWatch) Stop() error                             { return nil }

// A state watch that delivers nothing while the store is below a revision
// known to exist (another replica's write a dirty mark names, or this
// replica's own acknowledged write) is opened again from the store's
// revision: exports wait for the store, and nats.go notices a consumer
// lost with its node only after 10-20 s.
func TestStoreReopensASilentWatch(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	log := slog.New(slog.DiscardHandler)
	a, err := OpenStore(t.Context(), js, "SILENT_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenStore(t.Context(), js, "SILENT_STATE", 1, openDisk(t, t.TempDir()), log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.watch.Stop()
	_ = a.watch.Stop()
	a.watch = silentWatch{make(chan jetstream.KeyValueEntry)}
	// b writes revisions 1-3, a's own write is 4: a knows 4 exists.
	if _, err := b.Apply(t.Context(), storeEvents(t, 1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	res, err := a.Apply(t.Context(), storeEvents(t, 10, 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.rev != 4 {
		t.Fatalf("a wrote revision %d, want 4", res.rev)
	}
	watchUntil(t, a, 4)
	for id, want := range map[int64]int64{1: 1, 3: 1, 10: 1} {
		if got := fileVersion(t, a.state, id); got != want {
			t.Errorf("file %d: version %d, want %d", id, got, want)
		}
	}
	// A revision named by a dirty mark counts as known as well.
	if _, err := b.Apply(t.Context(), storeEvents(t, 20, 1, 1)); err != nil {
		t.Fatal(err)
	}
	_ = a.watch.Stop()
	a.watch = silentWatch{make(chan jetstream.KeyValueEntry)}
	a.Expect(5)
	watchUntil(t, a, 5)
	if got := fileVersion(t, a.state, 20); got != 1 {
		t.Errorf("file 20: version %d, want 1", got)
	}
}
