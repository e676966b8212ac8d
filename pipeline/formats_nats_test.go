package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	publishLines(t, h.js, []line{envelopes(exp.Project, "new-label")("label", "upserted",
		`{"label_file":{"id":1,"label":{"id":1,"name":"aaa first by id"},"colour":{"hex":"#000000"},"state":"added","version":1}}`)})
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

// formatFault wraps a real bucket: while failing is set, every write to
// an object whose key ends in suffix fails. It counts the writers opened
// and ended (closed or aborted), and the most open at once.
type formatFault struct {
	connectors.Bucket
	suffix  string
	failing atomic.Bool
	failed  atomic.Int64 // writes refused

	mu                        sync.Mutex
	open, maxOpen, opened     int
	aborted, closed, rejected int
}

var errFormatFault = errors.New("disk full (test)")

func (f *formatFault) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	w, err := f.Bucket.NewWriter(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened++
	f.open++
	f.maxOpen = max(f.maxOpen, f.open)
	return &faultWriter{Writer: w, f: f, fail: strings.HasSuffix(key, f.suffix)}, nil
}

type faultWriter struct {
	connectors.Writer
	f     *formatFault
	fail  bool
	ended bool
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if w.fail && w.f.failing.Load() {
		w.f.failed.Add(1)
		return 0, errFormatFault
	}
	return w.Writer.Write(p)
}

func (w *faultWriter) end(counter *int) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if !w.ended {
		w.ended = true
		w.f.open--
		*counter++
	}
}

func (w *faultWriter) Close() error {
	err := w.Writer.Close()
	if err == nil {
		w.end(&w.f.closed)
	} else {
		w.end(&w.f.rejected)
	}
	return err
}

func (w *faultWriter) Abort() error {
	err := w.Writer.Abort()
	w.end(&w.f.aborted)
	return err
}

// TestFormatsOnePassUpload: an export with every format streams each
// format into a writer of its own, all open at once (one pass feeds
// them); when one format's object cannot be written, every writer of the
// attempt is aborted, no object of the export becomes visible, the record
// says which object failed, and the retry writes every format.
func TestFormatsOnePassUpload(t *testing.T) {
	dir := t.TempDir()
	real, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{FormatDiffgram, FormatCOCO, FormatYOLO, FormatJSONL}
	b := &formatFault{Bucket: real, suffix: ".yolo.tar"}
	b.failing.Store(true)
	h, d, exp := luckfrill(t, b, func(d *Definition) { d.Formats = all })

	waitFor(t, "a failed attempt", 30*time.Second, func() bool { return b.failed.Load() > 0 })
	var reason string
	waitFor(t, "the failed attempt's record", 10*time.Second, func() bool {
		keys, _ := h.p.records.kv.Keys(t.Context())
		for _, k := range keys {
			var r Record
			if e, err := h.p.records.kv.Get(t.Context(), k); err == nil && strings.HasPrefix(k, "export.") &&
				json.Unmarshal(e.Value(), &r) == nil && r.Status == StatusFailed {
				reason = r.StatusText
				return true
			}
		}
		return false
	})
	if !strings.Contains(reason, ".yolo.tar") || !strings.Contains(reason, errFormatFault.Error()) {
		t.Errorf("the failed attempt's record says %q, want the YOLO object and the cause", reason)
	}
	var visible []string
	_ = real.List(t.Context(), "", func(a connectors.Attributes) bool { visible = append(visible, a.Key); return true })
	if len(visible) != 0 {
		t.Errorf("objects visible after a failed attempt: %q, want none", visible)
	}

	b.failing.Store(false)
	want := exp.Definitions[d.Name].FileListLength
	waitFor(t, "the export after the failure", 30*time.Second, func() bool {
		m := latestRecord(t, real, d.Path)
		return m != nil && m.FileListLength == want
	})
	if _, ps := pipelinetest.CheckLatestFormats(t.Context(), real, d.Path, all); len(ps) > 0 {
		t.Fatalf("latest.json:\n%s", ps)
	}
	h.stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.maxOpen < len(all) {
		t.Errorf("at most %d writers open at once, want the %d formats' together", b.maxOpen, len(all))
	}
	// Every failed attempt aborted all its writers (the manifest and
	// latest.json are written, and closed, after the data objects).
	if b.open != 0 || b.rejected != 0 || b.aborted < len(all) || b.closed+b.aborted != b.opened {
		t.Errorf("writers: %d opened, %d closed, %d aborted, %d refused at close, %d still open; want every one of a failed attempt aborted",
			b.opened, b.closed, b.aborted, b.rejected, b.open)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, ".tmp")); slices.ContainsFunc(left, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), "w-") }) {
		t.Errorf("temporary files left behind: %v", left)
	}
}
