package pipeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events/eventstest"
)

// The state feed delivers what a key-value watch does at its start: the
// newest entry of every key (deletions left out), or from a revision
// everything stored from it on, then a nil entry; then it ends.
func TestStateFeed(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	ctx := t.Context()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "F"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(t *testing.T, f *stateFeed) jetstream.KeyValueEntry {
		t.Helper()
		select {
		case e, ok := <-f.Updates():
			if !ok {
				t.Fatal("the feed ended")
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("nothing from the feed in 10 s")
			return nil
		}
	}
	want := func(t *testing.T, e jetstream.KeyValueEntry, key, value string, rev uint64) {
		t.Helper()
		if e == nil || e.Key() != key || string(e.Value()) != value || e.Revision() != rev {
			t.Fatalf("entry %v, want %s=%s at revision %d", e, key, value, rev)
		}
	}

	ended := func(t *testing.T, f *stateFeed) {
		t.Helper()
		select {
		case e, ok := <-f.Updates():
			if ok {
				t.Fatalf("after the nil mark %v, want the end", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the feed did not end after its nil mark")
		}
	}
	// An empty bucket: the mark at once.
	f, err := loadState(ctx, js, "F", 0)
	if err != nil {
		t.Fatal(err)
	}
	if e := next(t, f); e != nil {
		t.Fatalf("first entry of an empty bucket %v, want the nil mark", e)
	}
	ended(t, f)
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}

	// a=1 (1), b=1 (2), a=2 (3), c=1 (4), c deleted (5), d=1 (6).
	for _, w := range []string{"b=1", "a=2", "c=1", "-c", "d=1"} {
		if w[0] == '-' {
			err = kv.Delete(ctx, w[1:])
		} else {
			_, err = kv.Put(ctx, w[:1], []byte(w[2:]))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err = loadState(ctx, js, "F", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	var got []string
	for e := next(t, f); e != nil; e = next(t, f) {
		got = append(got, fmt.Sprintf("%s=%s@%d", e.Key(), e.Value(), e.Revision()))
	}
	if fmt.Sprint(got) != "[b=1@2 a=2@3 d=1@6]" {
		t.Fatalf("start %v, want the newest of each key, without the deleted one", got)
	}
	ended(t, f)
	if _, err := kv.Put(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}

	// From a revision: everything stored from it on (the bucket keeps
	// one entry per key: c=1 gave way to its deletion), then the mark.
	r, err := loadState(ctx, js, "F", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	want(t, next(t, r), "a", "2", 3)
	want(t, next(t, r), "d", "1", 6)
	want(t, next(t, r), "b", "2", 7)
	if e := next(t, r); e != nil {
		t.Fatalf("after the stored entries %v, want the nil mark", e)
	}
	ended(t, r)
	// From past the end: the mark at once.
	p, err := loadState(ctx, js, "F", 8)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if e := next(t, p); e != nil {
		t.Fatalf("from past the end %v, want the nil mark", e)
	}
	ended(t, p)
}
