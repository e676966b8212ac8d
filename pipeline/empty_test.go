package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
)

// TestEmptyReason: a source that matches no file says what was not found
// and what exists.
func TestEmptyReason(t *testing.T) {
	ordered, _ := orderedExample(t)
	s := NewState()
	applyAll(t, s, readLines(t, ordered))
	for _, tc := range []struct {
		def  Definition
		want []string // "" when the source has files
	}{
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceDirectory, Name: "Luckfril"}, Completion: CompletionAll},
			[]string{`no directory "Luckfril" in project street-scenes (directories: `, "Luckfrill (id 7)"}},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceDirectory, ID: 99}, Completion: CompletionAll},
			[]string{"no directory with id 99 in project street-scenes", "Luckfrill (id 7)"}},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceJob, Name: "Day Review"}, Completion: CompletionComplete},
			[]string{`no job "Day Review" in project street-scenes (jobs: Night Review (id 12))`}},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceTask, ID: 1}, Completion: CompletionAll},
			[]string{"no task 1 in project street-scenes (tasks: 9001, "}},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceTask, ID: 9004}, Completion: CompletionAll},
			[]string{"task 9004 in project street-scenes is archived"}},
		{Definition{Project: "elsewhere", Source: Source{Kind: SourceProject}, Completion: CompletionAll},
			[]string{`no project "elsewhere": no event has named it yet (projects: street-scenes)`}},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceDirectory, Name: "Luckfrill"}, Completion: CompletionAll}, nil},
		{Definition{Project: "street-scenes", Source: Source{Kind: SourceProject}, Completion: CompletionComplete}, nil},
	} {
		res, err := s.Render(&strings.Builder{}, &tc.def, 1, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if tc.want == nil {
			if res.Empty != "" || res.Files == 0 {
				t.Errorf("%+v: %d files, empty %q; want files", tc.def.Source, res.Files, res.Empty)
			}
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(res.Empty, w) {
				t.Errorf("%+v: reason %q, want it to contain %q", tc.def.Source, res.Empty, w)
			}
		}
	}
	// A known directory with nothing complete.
	s2 := NewState()
	for _, l := range readLines(t, ordered) {
		if !strings.Contains(l.subject, ".file.") && !strings.Contains(l.subject, ".instance.") {
			applyAll(t, s2, []line{l})
		}
	}
	res, _ := s2.Render(&strings.Builder{}, &Definition{Project: "street-scenes", Source: Source{Kind: SourceDirectory, Name: "Luckfrill"}, Completion: CompletionComplete}, 1, time.Unix(0, 0))
	if want := `directory "Luckfrill" in project street-scenes has no complete files (it has no files)`; res.Empty != want {
		t.Errorf("reason %q, want %q", res.Empty, want)
	}
}

// TestEmptySourceSkipped: a definition whose source matches no file writes
// nothing, not even at start; its attempt is recorded as skipped once
// (events that keep it empty add no records), and a manual request gets a
// skipped record with the reason.
func TestEmptySourceSkipped(t *testing.T) {
	bucket, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h, d, _ := luckfrill(t, bucket, func(d *Definition) {
		d.Name, d.Path = "typo", "exports/typo/"
		d.Source = Source{Kind: SourceDirectory, Name: "Luckfril"}
	})
	skipped := func() []Record {
		var out []Record
		keys, _ := h.p.records.kv.Keys(t.Context())
		for _, k := range keys {
			if !strings.HasPrefix(k, RecordKeyPrefix) {
				continue
			}
			e, err := h.p.records.kv.Get(t.Context(), k)
			var r Record
			if err == nil && json.Unmarshal(e.Value(), &r) == nil && r.Name == d.Name {
				if r.Status != StatusSkipped {
					t.Errorf("record %+v, want only skipped ones", r)
				}
				out = append(out, r)
			}
		}
		return out
	}
	waitFor(t, "a skipped attempt", 20*time.Second, func() bool { return len(skipped()) > 0 })
	// Every event of the stream applied and every export it asked for
	// done (an attempt at start, before the directories were applied,
	// may have been recorded with another reason: "directories: none");
	// then one more event that marks the definition (every label change
	// does) and keeps the source empty for the same reason: its attempt,
	// done once the mark is cleared, adds no record.
	settle(t, h, []*Definition{d})
	before := skipped()
	publishLines(t, h.js, []line{envelopes(d.Project, "empty-new-label")("label", "upserted",
		`{"label_file":{"id":1,"label":{"id":1,"name":"one more label"},"colour":{"hex":"#000000"},"state":"added","version":1}}`)})
	settle(t, h, []*Definition{d})
	recs := skipped()
	if len(recs) != len(before) || len(recs) > 2 {
		t.Fatalf("%d skipped records after the label change, %d before (want the same, at most 2): %+v", len(recs), len(before), recs)
	}
	last := recs[0]
	for _, r := range recs {
		if r.ID > last.ID {
			last = r
		}
	}
	if !strings.Contains(last.StatusText, `no directory "Luckfril"`) || !strings.Contains(last.StatusText, "Luckfrill") || last.Key != "" {
		t.Errorf("skipped record %+v", last)
	}
	if sk := h.p.SkippedRecord(d.Name); sk == nil || sk.ID != last.ID {
		t.Errorf("SkippedRecord = %+v, want record %d", sk, last.ID)
	}

	req, err := h.p.Generate(t.Context(), d.Name)
	if err != nil {
		t.Fatal(err)
	}
	done, err := h.p.WaitRecord(t.Context(), req.ID)
	if err != nil || done.Status != StatusSkipped || done.StatusText != last.StatusText {
		t.Errorf("manual request: %+v, %v; want skipped with the reason", done, err)
	}

	var keys []string
	if err := bucket.List(t.Context(), "", func(a connectors.Attributes) bool { keys = append(keys, a.Key); return true }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("the bucket holds %v, want nothing", keys)
	}
}

// opCounter counts the writers a bucket opens.
type opCounter struct {
	connectors.Bucket
	writers atomic.Int64
}

func (c *opCounter) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	c.writers.Add(1)
	return c.Bucket.NewWriter(ctx, key, opts)
}

// TestNoOpExportUploadsNothing: an export whose content is unchanged
// opens no writer at all: "unchanged" is decided by hashing before
// uploading.
func TestNoOpExportUploadsNothing(t *testing.T) {
	real, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := &opCounter{Bucket: real}
	h, d, exp := luckfrill(t, b)
	waitFor(t, "the export of every event", 30*time.Second, func() bool {
		m := latestRecord(t, real, d.Path)
		_, err := h.p.dirty.Get(t.Context(), d.Name)
		return m != nil && m.FileListLength == exp.Definitions[d.Name].FileListLength && errors.Is(err, jetstream.ErrKeyNotFound)
	})
	// Every event applied and its export done: no export still writing.
	settle(t, h, []*Definition{d})
	writers := b.writers.Load()
	skipped := testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name))
	for range 3 {
		h.p.kick(d.Name, TriggerEvent)
		waitFor(t, "the unchanged export", 10*time.Second, func() bool {
			return testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name)) > skipped
		})
		skipped = testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name))
	}
	if n := b.writers.Load() - writers; n != 0 {
		t.Errorf("%d writers opened by unchanged exports, want none", n)
	}
}
