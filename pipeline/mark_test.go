package pipeline

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// A pending dirty mark never goes down: two replicas mark the same
// definition, and the one whose batch applied earlier (the lower state
// revision) may write its mark last. A blind write would leave the lower
// mark, the export would wait for that revision only, render without the
// other replica's change and clear the mark.
func TestDirtyMarkNeverGoesDown(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	ctx := t.Context()
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &Definition{Name: "d1", Project: "p", Connection: "disk"}
	open := func(owner string) *Pipeline {
		p, err := openTest(t, ctx, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": bucket}, StatePrefix: "T", Owner: owner, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := open("a"), open("b")
	stored := func() dirtyMark {
		t.Helper()
		e, err := a.dirty.Get(ctx, d.Name)
		if err != nil {
			t.Fatalf("read the mark: %v", err)
		}
		var m dirtyMark
		if err := json.Unmarshal(e.Value(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	mark := func(p *Pipeline, rev, watermark uint64) {
		t.Helper()
		if err := p.markDirty(ctx, []string{d.Name}, dirtyMark{StateRevision: rev, Watermark: watermark, Time: time.Now()}); err != nil {
			t.Fatalf("mark rev %d: %v", rev, err)
		}
	}
	want := func(rev, watermark uint64) {
		t.Helper()
		if m := stored(); m.StateRevision != rev || m.Watermark != watermark {
			t.Fatalf("stored mark: state revision %d watermark %d, want %d and %d", m.StateRevision, m.Watermark, rev, watermark)
		}
	}

	mark(a, 100, 50)
	mark(b, 90, 60) // lower revision, higher watermark: each keeps its higher
	want(100, 60)
	mark(a, 80, 10) // a's last known mark is stale (b wrote since)
	want(100, 60)
	mark(a, 120, 70)
	want(120, 70)

	// A cleared mark (the export covered it) is written afresh, whatever
	// its revision.
	if err := a.clearMark(ctx, d, a.lastMark(d.Name).rev); err != nil {
		t.Fatal(err)
	}
	mark(b, 10, 5)
	want(10, 5)

	// Concurrent marks from both replicas: the maximum stays.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var top, topW uint64
	for i, p := range []*Pipeline{a, b, a, b} {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range 40 {
				rev, w := 10+r.Uint64N(10000), r.Uint64N(10000)
				if err := p.markDirty(ctx, []string{d.Name}, dirtyMark{StateRevision: rev, Watermark: w, Time: time.Now()}); err != nil {
					t.Error(fmt.Errorf("concurrent mark: %w", err))
					return
				}
				mu.Lock()
				top, topW = max(top, rev), max(topW, w)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	want(top, topW)
}

// A retry keeps its export id and key only while no newer export of the
// definition completed: when another replica wrote one between this
// replica's attempts, the retry would render the newest state under an
// id that latest.json never points at again, and clear the mark (the
// fault suite's full-bucket run lost its last changes that way).
func TestRetrySupersededByNewerExport(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	ctx := t.Context()
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &Definition{Name: "d1", Project: "p", Connection: "disk"}
	p, err := openTest(t, ctx, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": bucket},
		StatePrefix: "T", Owner: "a", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.records.kv.Put(ctx, definitionKey(d.Name), []byte(`{"last_id": 5}`)); err != nil {
		t.Fatal(err)
	}
	older := &Record{ID: 3, Name: d.Name, Status: StatusGenerating}
	if err := p.records.put(ctx, older); err != nil {
		t.Fatal(err)
	}
	if got := p.dropSuperseded(ctx, d, older); got != nil {
		t.Fatalf("a retry of export 3 after export 5 was written: kept %+v, want it dropped", got)
	}
	if r, err := p.Record(ctx, 3); err != nil || r.Status != StatusFailed || !strings.Contains(r.StatusText, "export 5") {
		t.Errorf("the dropped attempt's record: %+v, %v; want failed, naming export 5", r, err)
	}
	newer := &Record{ID: 6, Name: d.Name, Status: StatusGenerating}
	if got := p.dropSuperseded(ctx, d, newer); got != newer {
		t.Errorf("a retry of export 6 (newer than 5) was dropped")
	}
	committed := &Record{ID: 4, Name: d.Name, Status: StatusUploading}
	if got := p.dropSuperseded(ctx, d, committed); got != committed {
		t.Errorf("a committed export 4 was dropped: it is finished, not rendered again")
	}
}
