package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/pipeline"
)

// TestExportsGenerateAsOf: exports generate --as-of reproduces a
// definition's export at its watermark (the same content hash and, with
// --return data, the same document apart from export id and time); the
// list shows the point in its note; a value that is neither a sequence
// nor a time is a usage error (exit 2) without a request; a point past
// the stream is the server's refusal (exit 1) naming the last sequence.
func TestExportsGenerateAsOf(t *testing.T) {
	w := startExportsWorld(t)
	live := w.newest(t, w.fast)
	if live.Status != pipeline.StatusComplete || live.Watermark == 0 {
		t.Fatalf("newest export of %s: %+v", w.fast, live)
	}
	seq := strconv.FormatUint(live.Watermark, 10)

	var rec pipeline.Record
	raw := w.mustCLI(t, "generate", "--definition", w.fast, "--as-of", seq, "--wait", "--output", "json")
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if rec.Status != pipeline.StatusComplete || rec.ContentHash != live.ContentHash || rec.AsOf != seq ||
		rec.Watermark != live.Watermark || rec.Definition != w.fast {
		t.Errorf("generate --as-of %s: %+v; want complete with content %s", seq, rec, live.ContentHash)
	}

	out := filepath.Join(t.TempDir(), "asof.json")
	w.mustCLI(t, "generate", "--definition", w.fast, "--as-of", seq, "--wait", "--return", "data", "--out", out)
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := blankInfo(doc), blankInfo(w.bucketObject(t, live.Key)); got != want {
		t.Errorf("generate --as-of %s --return data: the document differs from export %d apart from id and time", seq, live.ID)
	}

	table := w.mustCLI(t, "list", "--definition", pipeline.AdhocName)
	if !strings.Contains(table, "as of "+seq+" (sequence "+seq+")") {
		t.Errorf("list: no note with the point in time:\n%s", table)
	}

	for _, bad := range []string{"yesterday", "0", "-1", "2026-03-01"} {
		code, stdout, errOut := w.cli(t, "generate", "--definition", w.fast, "--as-of", bad)
		if code != 2 || stdout != "" || !strings.Contains(errOut, "--as-of") {
			t.Errorf("--as-of %q: exit %d, %q, %q; want 2 and a message about --as-of", bad, code, stdout, errOut)
		}
	}
	code, _, errOut := w.cli(t, "generate", "--definition", w.fast, "--as-of", "999999999")
	if code != 1 || !strings.Contains(errOut, "last sequence of stream") {
		t.Errorf("--as-of past the stream: exit %d, %q; want 1 naming the stream's last sequence", code, errOut)
	}
}

// blankInfo returns an export document with export_info's id and
// created_time blanked.
func blankInfo(doc []byte) string {
	s := string(doc)
	i := strings.Index(s, `"export_info":{"id":`)
	if i < 0 {
		return s
	}
	j := i + len(`"export_info":{"id":`)
	k := j + strings.IndexByte(s[j:], ',')
	s = s[:j] + "0" + s[k:]
	c := strings.Index(s[i:], `"created_time":"`) + i + len(`"created_time":"`)
	e := c + strings.IndexByte(s[c:], '"')
	return s[:c] + s[e:]
}
