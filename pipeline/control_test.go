package pipeline

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors/local"
)

// TestGenerate: an export asked for by name is written under the id its
// request returned, even with unchanged content; an ad-hoc source is exported under the ad-hoc
// path with a manifest and no latest.json; the records list pages newest
// first and filters.
func TestGenerate(t *testing.T) {
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h, d, exp := luckfrill(t, b)
	// The first export of the whole example (an earlier one may show
	// every file before every instance arrived).
	waitFor(t, "the first export", 30*time.Second, func() bool {
		m := latestRecord(t, b, d.Path)
		want := exp.Definitions[d.Name]
		return m != nil && m.FileListLength == want.FileListLength && m.InstanceCount == want.InstanceCount
	})
	first := latestRecord(t, b, d.Path)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r1, err := h.p.Generate(ctx, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Status != StatusPending || r1.Trigger != TriggerManual || r1.ID <= first.ID {
		t.Errorf("Generate returned %+v, want a new pending manual record", r1)
	}
	done, err := h.p.WaitRecord(ctx, r1.ID)
	if err != nil {
		t.Fatalf("WaitRecord(%d): %v", r1.ID, err)
	}
	if done.Status != StatusComplete || done.FileListLength != first.FileListLength || done.ContentHash != first.ContentHash {
		t.Errorf("manual export %+v, want complete with the same content as export %d", done, first.ID)
	}
	if m := latestRecord(t, b, d.Path); m.ID != r1.ID {
		t.Errorf("latest.json names export %d, want the manual one %d", m.ID, r1.ID)
	}

	if _, err := h.p.Generate(ctx, "no-such"); err == nil {
		t.Error("Generate of an unknown definition succeeded")
	}

	ad, err := h.p.GenerateAdhoc(ctx, Definition{Project: exp.Project, Source: d.Source, Completion: "all", Connection: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	adDone, err := h.p.WaitRecord(ctx, ad.ID)
	if err != nil {
		t.Fatal(err)
	}
	if adDone.Status != StatusComplete || adDone.Name != AdhocName || !strings.HasPrefix(adDone.Key, AdhocPath) {
		t.Fatalf("ad-hoc export %+v", adDone)
	}
	if _, err := b.Attributes(ctx, adDone.ManifestKey); err != nil {
		t.Errorf("ad-hoc manifest: %v", err)
	}
	if _, err := b.Attributes(ctx, AdhocPath+"latest.json"); err == nil {
		t.Error("an ad-hoc export wrote latest.json")
	}
	data, err := io.ReadAll(must(b.NewReader(ctx, adDone.Key)))
	if err != nil || int64(len(data)) != adDone.Bytes {
		t.Errorf("ad-hoc data: %d bytes, %v; record says %d", len(data), err, adDone.Bytes)
	}
	if _, err := h.p.GenerateAdhoc(ctx, Definition{Project: exp.Project, Source: d.Source, Connection: "nowhere"}); err == nil {
		t.Error("ad-hoc export to an unknown connection accepted")
	}

	pg := h.p.Records(RecordFilter{})
	all, total := pg.Records, pg.Total
	if total < 3 || len(all) != total {
		t.Fatalf("Records: %d of %d", len(all), total)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatalf("Records not newest first: %d then %d", all[i-1].ID, all[i].ID)
		}
	}
	page := h.p.Records(RecordFilter{Limit: 1, Before: all[0].ID}).Records
	if len(page) != 1 || page[0].ID != all[1].ID {
		t.Errorf("second page of one: %+v, want export %d", page, all[1].ID)
	}
	if pg.More || !h.p.Records(RecordFilter{Limit: 1}).More || h.p.Records(RecordFilter{Limit: 1, Before: all[len(all)-1].ID + 1}).More {
		t.Errorf("More is wrong: it must say whether older matching records are left")
	}
	adhocPage := h.p.Records(RecordFilter{Definition: AdhocName})
	adhocs, n := adhocPage.Records, adhocPage.Total
	if n != 1 || adhocs[0].ID != ad.ID {
		t.Errorf("filter by definition: %d records", n)
	}
	if got := h.p.LatestRecord(d.Name); got == nil || got.ID != r1.ID {
		t.Errorf("LatestRecord = %+v, want export %d", got, r1.ID)
	}
}

// A long export reports its progress as it renders: file counts that
// only grow, ending at the total.
func TestRenderProgress(t *testing.T) {
	s := NewState()
	if bad := applyAll(t, s, syntheticEvents(3000, 5)); bad != 0 {
		t.Fatalf("%d bad events", bad)
	}
	d := &Definition{Name: "all", Project: "bench", Source: Source{Kind: SourceProject}, Completion: "all"}
	pl := s.buildPlan(d)
	var calls [][2]int
	pl.progress = func(done, total int) { calls = append(calls, [2]int{done, total}) }
	res, err := pl.render(io.Discard, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 3000 || res.Bytes < 1<<20 {
		t.Fatalf("rendered %d files, %d bytes; want 3000 files and over 1 MiB", res.Files, res.Bytes)
	}
	if len(calls) < 4 {
		t.Fatalf("progress reported %d times for a %d-byte document, want one per 256 KiB written", len(calls), res.Bytes)
	}
	for i, c := range calls {
		if c[1] != 3000 || i > 0 && c[0] <= calls[i-1][0] {
			t.Fatalf("progress calls %v: not growing, or the wrong total", calls)
		}
	}
	if last := calls[len(calls)-1]; last[0] != 3000 {
		t.Errorf("last progress %v, want 3000 of 3000", last)
	}
}
