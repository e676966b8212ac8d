package service

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/pipeline"
)

// TestAPIAsOf: POST /api/v1/exports with as_of, for a definition and for
// an ad-hoc source: the export at the latest export's watermark has its
// content hash and the same bytes apart from id and time, is recorded as
// an ad-hoc export with as_of, definition and watermark, and leaves
// latest.json alone; as_of values that are not a sequence or a time are
// a 400 that says what is accepted, points the stream cannot give a 422
// that names its last sequence, or, once older events are purged, the
// first sequence it still holds.
func TestAPIAsOf(t *testing.T) {
	svc, c, exp, cfg := startAPIService(t)
	name := cfg.Exports[0].Name
	var defs struct {
		Definitions []struct {
			Name   string
			Latest *pipeline.Record
		}
	}
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	var live *pipeline.Record
	for _, d := range defs.Definitions {
		if d.Name == name {
			live = d.Latest
		}
	}
	if live == nil || live.Watermark == 0 {
		t.Fatalf("definition %s: latest export %+v, want one with a watermark", name, live)
	}

	for _, asOf := range []any{live.Watermark, strconv.FormatUint(live.Watermark, 10)} {
		var rec pipeline.Record
		c.json("POST", "/api/v1/exports", map[string]any{"definition": name, "as_of": asOf, "wait": true}, http.StatusOK, &rec)
		if rec.Status != pipeline.StatusComplete || rec.ContentHash != live.ContentHash || rec.Watermark != live.Watermark ||
			rec.AsOf != strconv.FormatUint(live.Watermark, 10) || rec.Definition != name || rec.Name != pipeline.AdhocName ||
			!strings.HasPrefix(rec.Key, pipeline.AdhocPath) {
			t.Errorf("as_of %v (%T): %+v; want complete, content %s, watermark %d, definition %s under %s",
				asOf, asOf, rec, live.ContentHash, live.Watermark, name, pipeline.AdhocPath)
		}
		got, want := bucketBytes(t, svc, rec.Key), bucketBytes(t, svc, live.Key)
		if blank(got, rec) != blank(want, *live) {
			t.Errorf("as_of %v: the document differs from live export %d apart from id and time", asOf, live.ID)
		}
	}

	// An ad-hoc source, as of a time (now: the stream's last sequence).
	var adhoc pipeline.Record
	c.json("POST", "/api/v1/exports", map[string]any{"project": exp.Project, "source": map[string]any{"project": true},
		"completion": "all", "connection": "disk", "as_of": time.Now().UTC().Format(time.RFC3339Nano), "wait": true}, http.StatusOK, &adhoc)
	if adhoc.Status != pipeline.StatusComplete || adhoc.Name != pipeline.AdhocName || adhoc.Definition != "" ||
		adhoc.Watermark < live.Watermark || adhoc.FileListLength == 0 {
		t.Errorf("ad-hoc as of now: %+v", adhoc)
	}

	// latest.json stays at the live export.
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	for _, d := range defs.Definitions {
		if d.Name == name && (d.Latest == nil || d.Latest.ID != live.ID) {
			t.Errorf("the definition's latest export moved from %d to %+v", live.ID, d.Latest)
		}
	}
	m := bucketBytes(t, svc, "exports/"+name+"/latest.json")
	if !strings.Contains(string(m), `"id": `+strconv.FormatInt(live.ID, 10)+",") {
		t.Errorf("latest.json no longer names export %d: %.200s", live.ID, m)
	}

	for _, bad := range []struct {
		asOf any
		want string
	}{
		{"yesterday", "neither a stream sequence"},
		{"2026-03-01", "RFC 3339"},
		{0, "start at 1"},
		{-4, "neither a stream sequence"},
		{1.5, "neither a stream sequence"},
		{"", "empty"},
		{true, "neither a stream sequence"},
		{map[string]any{"seq": 3}, "neither a stream sequence"},
	} {
		msg := c.wantError("POST", "/api/v1/exports", map[string]any{"definition": name, "as_of": bad.asOf}, http.StatusBadRequest, "bad_request")
		if !strings.Contains(msg, "as_of") || !strings.Contains(msg, bad.want) {
			t.Errorf("as_of %v: %q, want it to say %q", bad.asOf, msg, bad.want)
		}
	}
	msg := c.wantError("POST", "/api/v1/exports", map[string]any{"definition": name, "as_of": 1 << 40}, http.StatusUnprocessableEntity, "as_of_out_of_range")
	if !strings.Contains(msg, "last sequence of stream "+cfg.NATS.Stream) {
		t.Errorf("as_of past the stream: %q, want it to name the stream's last sequence", msg)
	}
	c.wantError("POST", "/api/v1/exports", map[string]any{"definition": name, "as_of": time.Now().Add(time.Hour).Format(time.RFC3339)},
		http.StatusUnprocessableEntity, "as_of_out_of_range")
	c.wantError("POST", "/api/v1/exports", map[string]any{"definition": "nope", "as_of": 3}, http.StatusNotFound, "not_found")
	c.wantError("POST", "/api/v1/exports", map[string]any{"definition": name, "project": "x", "as_of": 3}, http.StatusBadRequest, "bad_request")

	// Events the stream no longer holds (purged below sequence 5): every
	// point is refused, naming the first sequence it still holds.
	js := streamJS(t, svc)
	stream, err := js.Stream(t.Context(), cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(t.Context(), jetstream.WithPurgeSequence(5)); err != nil {
		t.Fatal(err)
	}
	for _, asOf := range []any{live.Watermark, 7} {
		msg = c.wantError("POST", "/api/v1/exports", map[string]any{"definition": name, "as_of": asOf}, http.StatusUnprocessableEntity, "as_of_unavailable")
		if !strings.Contains(msg, "first sequence stream "+cfg.NATS.Stream+" still holds is 5") {
			t.Errorf("as_of %v after a purge below 5: %q, want it to name sequence 5", asOf, msg)
		}
	}

	// The replays left no scratch store (each is removed just after its
	// record is final).
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		entries, err := os.ReadDir(filepath.Join(cfg.State.Dir, "asof-scratch"))
		if err != nil || len(entries) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("scratch stores left in state.dir: %v", entries)
		}
	}
}

// blank returns doc with r's export id and created time blanked out of
// export_info.
func blank(doc []byte, r pipeline.Record) string {
	s := strings.Replace(string(doc), `"export_info":{"id":`+strconv.FormatInt(r.ID, 10)+",", `"export_info":{"id":0,`, 1)
	return strings.Replace(s, r.CreatedTime.UTC().Format("2006-01-02T15:04:05.000000Z"), "", 1)
}
