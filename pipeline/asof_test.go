package pipeline

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

func TestParseAsOf(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want AsOf
		bad  string // a part of the error, "" when it parses
	}{
		{in: "1", want: AsOf{Seq: 1}},
		{in: "1234", want: AsOf{Seq: 1234}},
		{in: "2026-03-01T12:00:00Z", want: AsOf{Time: at}},
		{in: "2026-03-01T13:00:00+01:00", want: AsOf{Time: at}},
		{in: "2026-03-01T12:00:00.5Z", want: AsOf{Time: at.Add(500 * time.Millisecond)}},
		{in: "", bad: "empty"},
		{in: "0", bad: "start at 1"},
		{in: "-3", bad: "neither a stream sequence"},
		{in: "12abc", bad: "neither a stream sequence"},
		{in: "2026-03-01", bad: "nor an RFC 3339 time"},
		{in: "yesterday", bad: "nor an RFC 3339 time"},
		{in: "99999999999999999999999", bad: "too large"},
	} {
		got, err := ParseAsOf(tc.in)
		if tc.bad != "" {
			if !errors.Is(err, ErrBadAsOf) || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("ParseAsOf(%q) = %v, %v; want an ErrBadAsOf saying %q", tc.in, got, err, tc.bad)
			}
			continue
		}
		if err != nil || got.Seq != tc.want.Seq || !got.Time.Equal(tc.want.Time) {
			t.Errorf("ParseAsOf(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if again, err := ParseAsOf(got.String()); err != nil || again.Seq != got.Seq || !again.Time.Equal(got.Time) {
			t.Errorf("ParseAsOf(%q).String() = %q does not read back (%+v, %v)", tc.in, got.String(), again, err)
		}
	}
}

// asOfDefs are the definitions the point-in-time tests export: the whole
// project, a directory with removed instances, and a job.
var asOfDefs = []string{"whole-project", "luckfrill-complete-with-removed", "night-review-all"}

// asOfWorld is a running pipeline with the ordered example's
// whole-project definition on a local bucket, for the as_of tests.
type asOfWorld struct {
	js       jetstream.JetStream
	scenario string
	d        *Definition
	stateDir string
	h        *harness
}

func wholeProjectAsOf(t *testing.T) asOfWorld {
	t.Helper()
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := definitionFor(t, "whole-project", exp.Project, exp.Definitions["whole-project"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 50*time.Millisecond, time.Second
	stateDir := t.TempDir()
	return asOfWorld{js, scenario, d, stateDir, asOfHarness(t, js, []*Definition{d}, b, stateDir)}
}

// asOfHarness runs the pipeline with point-in-time exports on (stream EV)
// over a local bucket, its state store in stateDir.
func asOfHarness(t *testing.T, js jetstream.JetStream, defs []*Definition, bucket connectors.Bucket, stateDir string) *harness {
	t.Helper()
	return startHarnessWith(t, js, Options{
		Definitions: defs, Buckets: map[string]connectors.Bucket{"disk": bucket}, StateDir: stateDir,
		EventsStream: "EV", EventLimits: events.Limits{MaxBytes: 1 << 20},
	}, nil)
}

// settle waits until every event of stream EV is applied and acked and
// every definition's export of the newest state is done (its dirty mark
// cleared).
func settle(t *testing.T, h *harness, defs []*Definition) {
	t.Helper()
	cons, err := h.js.Consumer(t.Context(), "EV", "c")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event acked", 30*time.Second, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	waitFor(t, "every definition exported", 30*time.Second, func() bool {
		for _, d := range defs {
			if _, err := h.p.dirty.Get(t.Context(), d.Name); !errors.Is(err, jetstream.ErrKeyNotFound) {
				return false
			}
		}
		return true
	})
}

// liveExport is what the live service left for a definition at a point:
// its newest complete export (nil when none), or the reason its newest
// attempt was skipped.
type liveExport struct {
	rec     *Record
	skipped *Record
}

func liveExports(h *harness, defs []*Definition) map[string]liveExport {
	out := map[string]liveExport{}
	for _, d := range defs {
		var le liveExport
		if r := h.p.SkippedRecord(d.Name); r != nil {
			le.skipped = r
		} else {
			le.rec = h.p.LatestRecord(d.Name)
		}
		out[d.Name] = le
	}
	return out
}

var (
	infoID      = regexp.MustCompile(`"export_info":\{"id":[0-9]+,`)
	infoCreated = regexp.MustCompile(`"created_time":"[^"]*"`)
)

// canonical returns doc with export_info's id and created_time blanked:
// two exports of the same content are then the same bytes.
func canonical(t *testing.T, doc []byte) []byte {
	t.Helper()
	loc := infoID.FindIndex(doc)
	if loc == nil {
		t.Fatalf("no export_info id in %.200s", doc)
	}
	out := append(bytes.Clone(doc[:loc[0]]), `"export_info":{"id":0,`...)
	rest := doc[loc[1]:]
	ct := infoCreated.FindIndex(rest)
	if ct == nil {
		t.Fatal("no export_info created_time")
	}
	out = append(out, rest[:ct[0]]...)
	out = append(out, `"created_time":""`...)
	return append(out, rest[ct[1]:]...)
}

var cocoInfo = regexp.MustCompile(`"date_created":"[^"]*","diffgram_export_id":[0-9]+,`)

// canonicalFormat returns the object of format name with what differs
// between two exports of the same content taken out: COCO's export id
// and time in its info, a YOLO tar's modification times (the tar is read
// back as its files' names and contents, in order). JSONL holds neither.
func canonicalFormat(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	switch name {
	case FormatCOCO:
		if !cocoInfo.Match(data) {
			t.Fatalf("no COCO info id and time in %.300s", data)
		}
		return cocoInfo.ReplaceAll(data, []byte(`"date_created":"","diffgram_export_id":0,`))
	case FormatYOLO:
		var out []byte
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatalf("YOLO tar: %v", err)
			}
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("YOLO tar %s: %v", h.Name, err)
			}
			out = fmt.Appendf(out, "== %s (%d bytes)\n%s", h.Name, h.Size, body)
		}
	}
	return data
}

func readObject(t *testing.T, b connectors.Bucket, key string) []byte {
	t.Helper()
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// asOfExport runs a point-in-time export of d at seq and waits for its
// final record.
func asOfExport(t *testing.T, p *Pipeline, d *Definition, at AsOf) *Record {
	t.Helper()
	r, err := p.GenerateAsOf(t.Context(), *d, at)
	if err != nil {
		t.Fatalf("%s as of %s: %v", d.Name, at, err)
	}
	if r.Status != StatusPending || r.Name != AdhocName || r.AsOf != at.String() {
		t.Errorf("%s as of %s: pending record %+v", d.Name, at, r)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	done, err := p.WaitRecord(ctx, r.ID)
	if err != nil {
		t.Fatalf("%s as of %s: %v", d.Name, at, err)
	}
	return done
}

// checkReproduces checks that the point-in-time export of d at the live
// export's watermark reproduces it: the same content hash, and the same
// bytes apart from the export id and time.
func checkReproduces(t *testing.T, h *harness, b connectors.Bucket, d *Definition, live liveExport) {
	t.Helper()
	if live.skipped != nil {
		// The live attempt wrote nothing (its source matched no file
		// yet): so does the point-in-time one, for the same reason.
		got := asOfExport(t, h.p, d, AsOf{Seq: live.skipped.Watermark})
		if got.Status != StatusSkipped || got.StatusText != live.skipped.StatusText || got.Key != "" {
			t.Errorf("%s as of %d: status %s %q, key %q; the live attempt was skipped: %q", d.Name, live.skipped.Watermark,
				got.Status, got.StatusText, got.Key, live.skipped.StatusText)
		}
		return
	}
	if live.rec == nil {
		t.Fatalf("%s: no live export", d.Name)
	}
	got := asOfExport(t, h.p, d, AsOf{Seq: live.rec.Watermark})
	if got.Status != StatusComplete {
		t.Fatalf("%s as of %d: status %s (%s)", d.Name, live.rec.Watermark, got.Status, got.StatusText)
	}
	if got.ContentHash != live.rec.ContentHash {
		t.Errorf("%s as of %d: content_sha256 %s, the live export %d has %s", d.Name, live.rec.Watermark, got.ContentHash, live.rec.ID, live.rec.ContentHash)
	}
	if got.Watermark != live.rec.Watermark || got.Definition != d.Name || got.Name != AdhocName || got.StateRevision != 0 {
		t.Errorf("%s as of %d: record watermark %d, definition %q, name %q, state_revision %d", d.Name, live.rec.Watermark,
			got.Watermark, got.Definition, got.Name, got.StateRevision)
	}
	if !strings.HasPrefix(got.Key, AdhocPath) || got.ID == live.rec.ID {
		t.Errorf("%s as of %d: key %s, id %d (live: %d)", d.Name, live.rec.Watermark, got.Key, got.ID, live.rec.ID)
	}
	if got.FileListLength != live.rec.FileListLength || got.InstanceCount != live.rec.InstanceCount {
		t.Errorf("%s as of %d: %d files, %d instances; live %d, %d", d.Name, live.rec.Watermark,
			got.FileListLength, got.InstanceCount, live.rec.FileListLength, live.rec.InstanceCount)
	}
	want, doc := canonical(t, readObject(t, b, live.rec.Key)), canonical(t, readObject(t, b, got.Key))
	if !bytes.Equal(doc, want) {
		t.Errorf("%s as of %d: the document differs from live export %d apart from id and time:\n got %.400s\nwant %.400s",
			d.Name, live.rec.Watermark, live.rec.ID, doc, want)
	}
	if sum, err := contentHashOf(readObject(t, b, got.Key)); err != nil || sum != got.ContentHash {
		t.Errorf("%s as of %d: the document's content hash %s (%v), the record's %s", d.Name, live.rec.Watermark, sum, err, got.ContentHash)
	}
	for name, lo := range live.rec.Formats {
		if name == FormatDiffgram {
			continue
		}
		o, ok := got.Formats[name]
		if !ok {
			t.Errorf("%s as of %d: no %s object; the live export %d has %s", d.Name, live.rec.Watermark, name, live.rec.ID, lo.Key)
			continue
		}
		want, doc := canonicalFormat(t, name, readObject(t, b, lo.Key)), canonicalFormat(t, name, readObject(t, b, o.Key))
		if !bytes.Equal(doc, want) {
			t.Errorf("%s as of %d: the %s object differs from live export %d's apart from id and time:\n got %.600s\nwant %.600s",
				d.Name, live.rec.Watermark, name, live.rec.ID, doc, want)
		}
		if !maps.Equal(o.SkippedInstances, lo.SkippedInstances) {
			t.Errorf("%s as of %d: %s skipped_instances %v, live %v", d.Name, live.rec.Watermark, name, o.SkippedInstances, lo.SkippedInstances)
		}
	}
	if len(got.Formats) != len(live.rec.Formats) {
		t.Errorf("%s as of %d: formats %v, live %v", d.Name, live.rec.Watermark, slices.Collect(maps.Keys(got.Formats)), slices.Collect(maps.Keys(live.rec.Formats)))
	}
	var m manifest
	if err := readJSON(t.Context(), b, got.ManifestKey, &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.AsOf != got.AsOf || m.Watermark != got.Watermark || m.ContentHash != got.ContentHash {
		t.Errorf("manifest as_of %q watermark %d content %s; record %q %d %s", m.AsOf, m.Watermark, m.ContentHash, got.AsOf, got.Watermark, got.ContentHash)
	}
}

// scratchGone waits until no scratch store is left under stateDir.
func scratchGone(t *testing.T, stateDir string) {
	t.Helper()
	root := filepath.Join(stateDir, scratchDirName)
	waitFor(t, "the scratch stores removed", 10*time.Second, func() bool {
		entries, err := os.ReadDir(root)
		return errors.Is(err, os.ErrNotExist) || err == nil && len(entries) == 0
	})
}

// TestAsOfReproducesLiveExports is the point-in-time property, on both
// contract examples: the live service writes exports at watermarks A < B
// (the first half of the events, then all of them); afterwards as_of A
// and as_of B reproduce those exports' content hashes and bytes (apart
// from id and time), from the stream alone, and latest.json stays at B.
func TestAsOfReproducesLiveExports(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	if len(scenarios) < 2 {
		t.Fatalf("%d contract examples, want both", len(scenarios))
	}
	for _, dir := range scenarios {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			exp, err := pipelinetest.LoadExpected(dir)
			if err != nil {
				t.Fatal(err)
			}
			ns := eventstest.StartServer(t)
			_, js := eventstest.Connect(t, ns)
			b, err := local.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var defs []*Definition
			for _, name := range asOfDefs {
				d := definitionFor(t, name, exp.Project, exp.Definitions[name])
				d.Connection, d.Quiet, d.MaxDelay = "disk", 50*time.Millisecond, time.Second
				d.Formats = NormalizeFormats([]string{FormatCOCO, FormatYOLO, FormatJSONL})
				defs = append(defs, d)
			}
			stateDir := t.TempDir()
			h := asOfHarness(t, js, defs, b, stateDir)

			lines := readLines(t, dir)
			half := len(lines) / 2
			publishLines(t, js, lines[:half])
			settle(t, h, defs)
			atA := liveExports(h, defs)
			// A label added after A: YOLO appends it to every
			// definition's class map, which as_of A must not name.
			publishLines(t, js, []line{envelopes(exp.Project, "after-a-")("label", "upserted",
				`{"label_file":{"id":990,"label":{"id":99,"name":"added-after-a"},"colour":{"hex":"#123456"},"state":"added","version":1}}`)})
			settle(t, h, defs)
			publishLines(t, js, lines[half:])
			settle(t, h, defs)
			atB := liveExports(h, defs)

			reproduced := 0
			for _, d := range defs {
				a, b2 := atA[d.Name], atB[d.Name]
				if b2.rec == nil {
					t.Fatalf("%s: no live export after every event (skipped: %+v)", d.Name, b2.skipped)
				}
				if a.rec == nil {
					if a.skipped == nil {
						t.Fatalf("%s: neither an export nor a skipped attempt at A", d.Name)
					}
					t.Run(d.Name+"/A-skipped", func(t *testing.T) { checkReproduces(t, h, b, d, a) })
					t.Run(d.Name+"/B", func(t *testing.T) { checkReproduces(t, h, b, d, b2) })
					continue
				}
				reproduced++
				if a.rec.Watermark >= b2.rec.Watermark || a.rec.ContentHash == b2.rec.ContentHash {
					t.Fatalf("%s: live exports A (watermark %d, %s) and B (%d, %s) are not two points", d.Name,
						a.rec.Watermark, a.rec.ContentHash, b2.rec.Watermark, b2.rec.ContentHash)
				}
				t.Run(d.Name+"/A", func(t *testing.T) { checkReproduces(t, h, b, d, a) })
				t.Run(d.Name+"/B", func(t *testing.T) { checkReproduces(t, h, b, d, b2) })
				if m := latestRecord(t, b, d.Path); m == nil || m.ID != b2.rec.ID {
					t.Errorf("%s: latest.json moved off the live export %d: %+v", d.Name, b2.rec.ID, m)
				}
			}
			if reproduced < 2 {
				t.Errorf("only %d definitions had a live export at A: the split proves too little", reproduced)
			}
			// A point-in-time export reads class maps and never writes
			// one: an ad-hoc one with YOLO leaves the project's ad-hoc
			// map uncreated.
			adhoc := *defs[0]
			adhoc.Name = ""
			if r := asOfExport(t, h.p, &adhoc, AsOf{Seq: atB[defs[0].Name].rec.Watermark}); r.Status != StatusComplete || r.Formats[FormatYOLO].Key == "" {
				t.Errorf("ad hoc as of B: %+v", r)
			}
			adhoc.Name = AdhocName
			if m, rev, err := h.p.records.classMap(t.Context(), &adhoc); err != nil || rev != 0 {
				t.Errorf("ad hoc as of B stored a YOLO class map: %v at revision %d (%v)", m, rev, err)
			}
			scratchGone(t, stateDir)
		})
	}
}

// streamState returns the state of stream name.
func streamState(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State
}

// TestAsOfByTime: a time stands for the last sequence stored at or before
// it; a time before the first event gives the empty state (the export is
// skipped: no project yet), a time in the future is refused. Replays never
// write to the state bucket.
func TestAsOfByTime(t *testing.T) {
	w := wholeProjectAsOf(t)
	js, scenario, d, stateDir, h := w.js, w.scenario, w.d, w.stateDir, w.h

	lines := readLines(t, scenario)
	before := time.Now()
	time.Sleep(10 * time.Millisecond)
	publishLines(t, js, lines[:40])
	seqA := streamState(t, js, "EV").LastSeq
	time.Sleep(10 * time.Millisecond)
	between := time.Now()
	time.Sleep(10 * time.Millisecond)
	publishLines(t, js, lines[40:])
	settle(t, h, []*Definition{d})
	if last := streamState(t, js, "EV").LastSeq; last <= seqA {
		t.Fatalf("stream last sequence %d, %d after the first part", last, seqA)
	}
	stateBefore := streamState(t, js, "KV_T_STATE")

	byTime := asOfExport(t, h.p, d, AsOf{Time: between})
	bySeq := asOfExport(t, h.p, d, AsOf{Seq: seqA})
	if byTime.Status != StatusComplete || bySeq.Status != StatusComplete {
		t.Fatalf("as of %s: %s %q; as of %d: %s %q", between, byTime.Status, byTime.StatusText, seqA, bySeq.Status, bySeq.StatusText)
	}
	if byTime.Watermark != seqA || byTime.AsOf != (AsOf{Time: between}).String() {
		t.Errorf("as of %s: watermark %d, as_of %q; want %d (the last sequence before it)", between, byTime.Watermark, byTime.AsOf, seqA)
	}
	if byTime.ContentHash != bySeq.ContentHash {
		t.Errorf("as of %s: content %s; as of its sequence %d: %s", between, byTime.ContentHash, seqA, bySeq.ContentHash)
	}
	if live := h.p.LatestRecord(d.Name); live == nil || live.ContentHash == byTime.ContentHash {
		t.Errorf("the newest live export %+v has the content of the first part: the test proves nothing", live)
	}

	empty := asOfExport(t, h.p, d, AsOf{Time: before})
	if empty.Status != StatusSkipped || empty.Watermark != 0 || !strings.Contains(empty.StatusText, d.Project) {
		t.Errorf("as of a time before every event: status %s %q, watermark %d; want skipped at 0", empty.Status, empty.StatusText, empty.Watermark)
	}
	future := AsOf{Time: time.Now().Add(time.Hour)}
	if _, err := h.p.GenerateAsOf(t.Context(), *d, future); !errors.Is(err, ErrAsOfBeyond) || !strings.Contains(err.Error(), "future") {
		t.Errorf("as of %s: %v; want ErrAsOfBeyond (in the future)", future, err)
	}
	if after := streamState(t, js, "KV_T_STATE"); after.LastSeq != stateBefore.LastSeq {
		t.Errorf("the state bucket went from revision %d to %d during point-in-time exports", stateBefore.LastSeq, after.LastSeq)
	}
	scratchGone(t, stateDir)
}

// TestAsOfStreamLostEvents: once the stream's limits have removed its
// oldest events, every point fails with the first sequence it still
// holds; a point past its last sequence fails; an event deleted inside
// the stream fails the exports that need it (status_text names it) and
// not those before it. No scratch store is left.
func TestAsOfStreamLostEvents(t *testing.T) {
	w := wholeProjectAsOf(t)
	js, scenario, d, stateDir, h := w.js, w.scenario, w.d, w.stateDir, w.h
	publishLines(t, js, readLines(t, scenario))
	settle(t, h, []*Definition{d})
	last := streamState(t, js, "EV").LastSeq

	// Beyond the last sequence.
	if _, err := h.p.GenerateAsOf(t.Context(), *d, AsOf{Seq: last + 1}); !errors.Is(err, ErrAsOfBeyond) ||
		!strings.Contains(err.Error(), fmt.Sprintf("last sequence of stream EV, %d", last)) {
		t.Errorf("as of %d (last %d): %v; want ErrAsOfBeyond naming the last sequence", last+1, last, err)
	}

	// An event deleted inside the stream.
	s, err := js.Stream(t.Context(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	lost := asOfExport(t, h.p, d, AsOf{Seq: 20})
	if lost.Status != StatusFailed || !strings.Contains(lost.StatusText, "sequences 10 to 10 are gone") {
		t.Errorf("as of 20 with sequence 10 deleted: %s %q; want failed naming sequence 10", lost.Status, lost.StatusText)
	}
	if ok := asOfExport(t, h.p, d, AsOf{Seq: 9}); ok.Status == StatusFailed {
		t.Errorf("as of 9 (before the deleted sequence 10): failed: %s", ok.StatusText)
	}
	scratchGone(t, stateDir)

	// The stream's limits remove the oldest events.
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs = 20
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	first := streamState(t, js, "EV").FirstSeq
	if first <= 1 {
		t.Fatalf("first sequence %d after the limit", first)
	}
	for _, at := range []AsOf{{Seq: first + 1}, {Seq: last}, {Seq: 3}, {Time: time.Now()}} {
		_, err := h.p.GenerateAsOf(t.Context(), *d, at)
		if !errors.Is(err, ErrAsOfUnavailable) || !strings.Contains(err.Error(), fmt.Sprintf("first sequence stream EV still holds is %d", first)) {
			t.Errorf("as of %s, stream from %d: %v; want ErrAsOfUnavailable naming %d", at, first, err, first)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(stateDir, scratchDirName)); len(entries) != 0 {
		t.Errorf("scratch stores left: %v", entries)
	}
}

// TestAsOfSweepsScratchAtOpen: scratch stores a crash left in the state
// folder are removed when the pipeline opens, and the state store opens
// beside them.
func TestAsOfSweepsScratchAtOpen(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	stateDir := t.TempDir()
	// A state store with something in it, then a leftover scratch store
	// (a real one, as a replay that crashed leaves it).
	p, err := Open(t.Context(), js, Options{StatePrefix: "T", Owner: "test", StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	scenario, _ := orderedExample(t)
	first := readLines(t, scenario)[0] // the project
	ev, err := events.Decode(first.subject, first.body, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Handle(t.Context(), []*events.Event{ev}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(stateDir, scratchDirName, "export-7-123")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := OpenDiskState(left)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	p, err = openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: "test", StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, scratchDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the leftover scratch folder is still there after Open (%v)", err)
	}
	sn, err := p.state.Current("street-scenes", events.KindProject, 0)
	if err != nil || sn == nil {
		t.Errorf("the state store lost its project after the sweep: %v, %v", sn, err)
	}
}
