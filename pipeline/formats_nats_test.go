package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// TestFormatsExport runs a definition with every format through the
// pipeline (NATS, records bucket, local bucket): latest.json names every
// format, each object holds the SHA-256 and size the manifest gives and
// passes its reader; an unchanged export writes nothing in any format;
// retention deletes every format's object of an old export; the YOLO class
// map is kept in the records bucket and, after a restart, a new label is
// appended to it (its id is lower than the others': a map sorted by id
// would move every class).
func TestFormatsExport(t *testing.T) {
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &opCounter{Bucket: real}
	all := []string{FormatDiffgram, FormatCOCO, FormatYOLO, FormatJSONL}
	h, d, exp := luckfrill(t, b, func(d *Definition) {
		d.Formats = NormalizeFormats([]string{"jsonl", "yolo", "coco"})
		d.KeepLast = 1
	})
	want := exp.Definitions[d.Name].FileListLength
	settled := func(after int64) func() bool {
		return func() bool {
			m := latestRecord(t, real, d.Path)
			_, err := h.p.dirty.Get(t.Context(), d.Name)
			return m != nil && m.ID > after && m.FileListLength == want && errors.Is(err, jetstream.ErrKeyNotFound)
		}
	}
	waitFor(t, "the export of every event", 30*time.Second, settled(0))
	first := latestRecord(t, real, d.Path)
	if _, ps := pipelinetest.CheckLatestFormats(t.Context(), real, d.Path, all); len(ps) > 0 {
		t.Fatalf("latest.json:\n%s", ps)
	}
	for _, f := range all {
		if first.Formats[f].Key != formatKey(first.ManifestKey[:len(first.ManifestKey)-len(".manifest.json")], f) {
			t.Errorf("%s key %q", f, first.Formats[f].Key)
		}
	}
	rec, err := h.p.Record(t.Context(), first.ID)
	if err != nil || len(rec.Formats) != len(all) || rec.Formats[FormatCOCO].SHA256 != first.Formats[FormatCOCO].SHA256 {
		t.Errorf("the export record's formats %v (%v), want the manifest's %v", rec.Formats, err, first.Formats)
	}
	classes := storedClasses(t, h.p, d)
	if len(classes) != len(exp.LabelMap) {
		t.Errorf("class map %v, want the %d labels", classes, len(exp.LabelMap))
	}

	// Unchanged: nothing written in any format (once every event is
	// applied and its export done: no export still writing).
	settle(t, h, []*Definition{d})
	writers := b.writers.Load()
	skipped := testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name))
	h.p.kick(d.Name, TriggerEvent)
	waitFor(t, "the unchanged export", 10*time.Second, func() bool {
		return testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name)) > skipped
	})
	if n := b.writers.Load() - writers; n != 0 {
		t.Errorf("%d writers opened by an unchanged export, want none", n)
	}

	// Restart, then a new label with the lowest id: appended to the map.
	h.stop()
	h = startHarness(t, h.js, []*Definition{d}, map[string]connectors.Bucket{"disk": b})
	publishLines(t, h.js, []line{{
		subject: "diffgram.events." + exp.Project + ".label.upserted",
		body: []byte(`{"specversion":"1.0","id":"new-label","source":"t","type":"diffgram.label.upserted","diffgramproject":"` + exp.Project +
			`","data":{"label_file":{"id":1,"label":{"id":1,"name":"aaa first by id"},"colour":{"hex":"#000000"},"state":"added","version":1}}}`),
	}})
	waitFor(t, "the export with the new label", 30*time.Second, settled(first.ID))
	second := latestRecord(t, real, d.Path)
	got, ps := pipelinetest.CheckLatestFormats(t.Context(), real, d.Path, all)
	if len(ps) > 0 {
		t.Fatalf("latest.json:\n%s", ps)
	}
	if after := storedClasses(t, h.p, d); !slices.Equal(after, append(slices.Clone(classes), 1)) {
		t.Errorf("class map after the new label %v, want %v then 1", after, classes)
	}
	yolo, err := readAllTest(t, real, got[FormatYOLO].Key)
	if err != nil {
		t.Fatal(err)
	}
	y, ps := pipelinetest.ReadYOLO(yolo)
	if len(ps) > 0 || len(y.Names) != len(classes)+1 || y.Names[len(classes)] != "aaa first by id" {
		t.Errorf("data.yaml names %q (%v): want the new label last", y.Names, ps)
	}

	// keep_last 1: only the newest export's objects are left.
	wantKeys := []string{d.Path + "latest.json", second.ManifestKey}
	for _, f := range all {
		wantKeys = append(wantKeys, second.Formats[f].Key)
	}
	slices.Sort(wantKeys)
	waitFor(t, "the old export's objects deleted", 10*time.Second, func() bool {
		var keys []string
		_ = real.List(t.Context(), "", func(a connectors.Attributes) bool { keys = append(keys, a.Key); return true })
		return slices.Equal(keys, wantKeys)
	})
}

// storedClasses reads the definition's YOLO class map from the records
// bucket.
func storedClasses(t *testing.T, p *Pipeline, d *Definition) []int64 {
	t.Helper()
	e, err := p.records.kv.Get(t.Context(), classesKey(d))
	if err != nil {
		t.Fatalf("class map: %v", err)
	}
	var out []int64
	if err := json.Unmarshal(e.Value(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func readAllTest(t *testing.T, b connectors.Bucket, key string) ([]byte, error) {
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	defer r.Close()
	return io.ReadAll(r)
}
