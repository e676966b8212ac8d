package service

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

const testToken = "t0ken-for-tests"

// apiClient calls the service's API as a script would.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

func (c apiClient) do(method, path string, body any) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, data
}

// json calls the API and decodes the answer, failing unless the status is
// want.
func (c apiClient) json(method, path string, body any, want int, v any) {
	c.t.Helper()
	status, _, data := c.do(method, path, body)
	if status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, data)
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// wantError checks an error answer: its status and JSON error code.
func (c apiClient) wantError(method, path string, body any, status int, code string) string {
	c.t.Helper()
	got, h, data := c.do(method, path, body)
	var e struct {
		Error struct{ Code, Message string }
	}
	if got != status || json.Unmarshal(data, &e) != nil || e.Error.Code != code || e.Error.Message == "" ||
		h.Get("Content-Type") != "application/json" {
		c.t.Errorf("%s %s: %d %s, want %d with error code %q", method, path, got, data, status, code)
	}
	return e.Error.Message
}

func startAPIService(t *testing.T, adjust ...func(*config.Config)) (*Service, apiClient, *pipelinetest.Expected, *config.Config) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	dir := scenarios[0] // street-scenes-chaos: it has dead letters
	if filepath.Base(dir) != "street-scenes-chaos" {
		t.Fatalf("scenario %s, want street-scenes-chaos first", dir)
	}
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: t.TempDir()}})
	cfg.HTTP.Token = testToken
	for _, f := range adjust {
		f(cfg)
	}
	svc := startService(t, cfg)
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	publishScenario(t, js, dir)
	waitConverged(t, svc.Bucket("disk"), exp)
	return svc, apiClient{t: t, base: "http://" + svc.HTTPAddr(), token: testToken}, exp, cfg
}

func bucketBytes(t *testing.T, svc *Service, key string) []byte {
	r, err := svc.Bucket("disk").NewReader(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return b
}

// TestAPIRead: auth, definitions with their latest export, the records
// list (newest first, filters, pages), one record, its data and its
// signed URL, and the JSON errors.
func TestAPIRead(t *testing.T) {
	svc, c, exp, _ := startAPIService(t)

	anon := apiClient{t: t, base: c.base}
	anon.wantError("GET", "/api/v1/exports", nil, http.StatusUnauthorized, "unauthorized")
	wrong := apiClient{t: t, base: c.base, token: "wrong"}
	wrong.wantError("GET", "/api/v1/definitions", nil, http.StatusUnauthorized, "unauthorized")
	if status, _, _ := anon.do("GET", "/healthz", nil); status != http.StatusOK {
		t.Errorf("/healthz asks for the token: %d", status)
	}
	anon.wantError("GET", "/debug/pprof/", nil, http.StatusUnauthorized, "unauthorized")
	if status, _, _ := c.do("GET", "/debug/pprof/", nil); status != http.StatusOK {
		t.Errorf("/debug/pprof/ with the token: %d", status)
	}

	var defs struct {
		Definitions []struct {
			Name    string
			Latest  *pipeline.Record
			Skipped *pipeline.Record
		}
	}
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	if len(defs.Definitions) != len(exp.Definitions) {
		t.Fatalf("%d definitions, want %d", len(defs.Definitions), len(exp.Definitions))
	}
	for _, d := range defs.Definitions {
		want := exp.Definitions[d.Name]
		if want.NoExport {
			// Nothing written; the definition says why.
			if d.Latest != nil || d.Skipped == nil || d.Skipped.Status != pipeline.StatusSkipped ||
				!strings.Contains(d.Skipped.StatusText, `no directory "Luckfril"`) || !strings.Contains(d.Skipped.StatusText, "Luckfrill") {
				t.Errorf("definition %s: latest %+v, skipped %+v; want no export and the skipped reason", d.Name, d.Latest, d.Skipped)
			}
			continue
		}
		if d.Skipped != nil {
			t.Errorf("definition %s: skipped %+v", d.Name, d.Skipped)
		}
		if d.Latest == nil || d.Latest.Status != pipeline.StatusComplete || d.Latest.FileListLength != want.FileListLength {
			t.Errorf("definition %s: latest %+v, want complete with %d files", d.Name, d.Latest, want.FileListLength)
		}
	}

	var page struct {
		Exports    []pipeline.Record
		Total      int
		NextBefore int64 `json:"next_before"`
	}
	c.json("GET", "/api/v1/exports", nil, http.StatusOK, &page)
	if page.Total < len(exp.Definitions) || len(page.Exports) != page.Total {
		t.Fatalf("list: %d of %d records", len(page.Exports), page.Total)
	}
	for i := 1; i < len(page.Exports); i++ {
		if page.Exports[i].ID >= page.Exports[i-1].ID {
			t.Errorf("list not newest first at %d", i)
		}
	}
	all := page.Exports
	var one struct {
		Exports    []pipeline.Record
		NextBefore int64 `json:"next_before"`
	}
	c.json("GET", "/api/v1/exports?limit=1", nil, http.StatusOK, &one)
	if len(one.Exports) != 1 || one.Exports[0].ID != all[0].ID || one.NextBefore != all[0].ID {
		t.Errorf("first page of one: %+v", one)
	}
	c.json("GET", "/api/v1/exports?limit=1&before="+strconv.FormatInt(one.NextBefore, 10), nil, http.StatusOK, &one)
	if len(one.Exports) != 1 || one.Exports[0].ID != all[1].ID {
		t.Errorf("second page of one: %+v, want export %d", one.Exports, all[1].ID)
	}
	name := defs.Definitions[0].Name
	c.json("GET", "/api/v1/exports?status=complete&definition="+name, nil, http.StatusOK, &page)
	for _, r := range page.Exports {
		if r.Name != name || r.Status != pipeline.StatusComplete {
			t.Errorf("filtered list holds %s/%s", r.Name, r.Status)
		}
	}
	c.wantError("GET", "/api/v1/exports?status=done", nil, http.StatusBadRequest, "bad_request")
	c.wantError("GET", "/api/v1/exports?limit=0", nil, http.StatusBadRequest, "bad_request")

	latest := defs.Definitions[0].Latest
	var rec pipeline.Record
	c.json("GET", "/api/v1/exports/"+strconv.FormatInt(latest.ID, 10), nil, http.StatusOK, &rec)
	if rec.ID != latest.ID || rec.Key != latest.Key || rec.SHA256 != latest.SHA256 {
		t.Errorf("get: %+v, want %+v", rec, latest)
	}
	c.wantError("GET", "/api/v1/exports/99999999", nil, http.StatusNotFound, "not_found")
	c.wantError("GET", "/api/v1/exports/abc", nil, http.StatusBadRequest, "bad_request")
	c.wantError("GET", "/api/v1/nothing", nil, http.StatusNotFound, "not_found")

	want := bucketBytes(t, svc, latest.Key)
	status, h, data := c.do("GET", "/api/v1/exports/"+strconv.FormatInt(latest.ID, 10)+"/data", nil)
	if status != http.StatusOK || !bytes.Equal(data, want) || h.Get("X-Export-Id") != strconv.FormatInt(latest.ID, 10) {
		t.Errorf("data: %d, %d bytes, want 200 and the bucket's %d bytes", status, len(data), len(want))
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != latest.SHA256 {
		t.Errorf("data sha256 differs from the record's")
	}

	var u struct {
		URL       string
		ExpiresAt time.Time `json:"expires_at"`
	}
	c.json("GET", "/api/v1/exports/"+strconv.FormatInt(latest.ID, 10)+"/url", nil, http.StatusOK, &u)
	if time.Until(u.ExpiresAt) < 50*time.Minute || time.Until(u.ExpiresAt) > 61*time.Minute {
		t.Errorf("url expires at %v, want in about an hour", u.ExpiresAt)
	}
	resp, err := http.Get(u.URL) // no token: the link carries its own signature
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		t.Errorf("signed URL: %s, %d bytes", resp.Status, len(got))
	}
	if !strings.HasPrefix(u.URL, c.base+"/files/disk/") {
		t.Errorf("local signed URL %s is not served by the service", u.URL)
	}
}

// TestAPIGenerate: exports on demand for a definition and for an ad-hoc
// source, waiting for the data or a URL, or returning at once and polling;
// 409 for the data of an export that is not ready; bad requests.
func TestAPIGenerate(t *testing.T) {
	// The second definition waits 2 s after a request before it exports,
	// so that an export can be seen before it is ready.
	svc, c, exp, cfg := startAPIService(t, func(cfg *config.Config) { cfg.Exports[1].Coalesce.Quiet = 2 * time.Second })
	name, slow := cfg.Exports[0].Name, cfg.Exports[1].Name

	status, h, data := c.do("POST", "/api/v1/exports", map[string]any{"definition": name, "wait": true, "return_type": "data"})
	if status != http.StatusOK {
		t.Fatalf("generate with data: %d %s", status, data)
	}
	for _, p := range pipelinetest.Check(data, exp, exp.Definitions[name]) {
		t.Errorf("generated data: %s", p)
	}
	id := h.Get("X-Export-Id")
	var rec pipeline.Record
	c.json("GET", "/api/v1/exports/"+id, nil, http.StatusOK, &rec)
	if rec.Trigger != pipeline.TriggerManual || rec.Status != pipeline.StatusComplete {
		t.Errorf("generated record %+v", rec)
	}

	var withURL struct {
		URL    string
		Export pipeline.Record
	}
	c.json("POST", "/api/v1/exports", map[string]any{"definition": name, "wait": true, "return_type": "url"}, http.StatusOK, &withURL)
	resp, err := http.Get(withURL.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, bucketBytes(t, svc, withURL.Export.Key)) {
		t.Errorf("generate with url: the link serves %d bytes that differ from %s", len(got), withURL.Export.Key)
	}

	// At once, then poll: the data is not ready until the export is done.
	var pending pipeline.Record
	c.json("POST", "/api/v1/exports", map[string]any{"definition": slow}, http.StatusAccepted, &pending)
	if pending.Status != pipeline.StatusPending || pending.Name != slow {
		t.Errorf("generate without wait: %+v", pending)
	}
	path := "/api/v1/exports/" + strconv.FormatInt(pending.ID, 10)
	msg := c.wantError("GET", path+"/data", nil, http.StatusConflict, "not_ready")
	if !strings.Contains(msg, "export not ready yet") || !strings.Contains(msg, "pending") {
		t.Errorf("data of a pending export: %q, want it to say not ready yet and the status", msg)
	}
	c.wantError("GET", path+"/url", nil, http.StatusConflict, "not_ready")
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c.json("GET", path, nil, http.StatusOK, &rec)
		if rec.Status == pipeline.StatusComplete {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("polled export never completed: %+v", rec)
		}
	}
	if status, _, _ := c.do("GET", path+"/data", nil); status != http.StatusOK {
		t.Errorf("data after completion: %d", status)
	}

	// An ad-hoc source: the whole project, every file.
	var adhoc pipeline.Record
	c.json("POST", "/api/v1/exports", map[string]any{"project": exp.Project, "source": map[string]any{"project": true},
		"completion": "all", "connection": "disk", "wait": true}, http.StatusOK, &adhoc)
	if adhoc.Name != pipeline.AdhocName || adhoc.Status != pipeline.StatusComplete || adhoc.FileListLength == 0 {
		t.Errorf("ad-hoc export %+v", adhoc)
	}

	// An ad-hoc source that matches no file: nothing is written, the
	// answer is a 422 that says what was not found and what exists, and
	// the attempt is recorded as skipped.
	for _, tc := range []struct {
		body map[string]any
		want []string
	}{
		{map[string]any{"project": exp.Project, "source": map[string]any{"directory": "Luckfril"}, "connection": "disk", "wait": true},
			[]string{`no directory "Luckfril" in project street-scenes`, "Luckfrill (id 7)"}},
		{map[string]any{"project": exp.Project, "source": map[string]any{"job_id": 404}, "connection": "disk"},
			[]string{"no job with id 404 in project street-scenes", "Night Review (id 12)"}},
		{map[string]any{"project": "no-such-project", "source": map[string]any{"project": true}, "connection": "disk"},
			[]string{`no project "no-such-project"`, "projects: street-scenes"}},
	} {
		msg := c.wantError("POST", "/api/v1/exports", tc.body, http.StatusUnprocessableEntity, "empty_source")
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("empty ad-hoc source %v: %q, want it to say %q", tc.body["source"], msg, w)
			}
		}
	}
	var skipped struct{ Exports []pipeline.Record }
	c.json("GET", "/api/v1/exports?status=skipped", nil, http.StatusOK, &skipped)
	if n := len(skipped.Exports); n < 3 || skipped.Exports[0].Key != "" || skipped.Exports[0].StatusText == "" {
		t.Errorf("skipped records: %+v, want the 3 ad-hoc attempts with their reasons and no key", skipped.Exports)
	}

	for _, bad := range []struct {
		body   any
		status int
		code   string
	}{
		{map[string]any{}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"definition": "nope"}, http.StatusNotFound, "not_found"},
		{map[string]any{"definition": name, "return_type": "zip"}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"definition": name, "colour": "red"}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"definition": name, "project": "x"}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"project": "p", "source": map[string]any{"job": "a", "task_id": 3}, "connection": "disk"}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"project": "p", "source": map[string]any{"project": true}, "connection": "nowhere"}, http.StatusBadRequest, "bad_request"},
		{map[string]any{"project": "p", "source": map[string]any{"project": true}, "connection": "disk", "completion": "done"}, http.StatusBadRequest, "bad_request"},
	} {
		c.wantError("POST", "/api/v1/exports", bad.body, bad.status, bad.code)
	}
}

// TestAPIDeadLetters: the count and newest entries with their reasons,
// and a redrive that re-publishes an entry (still bad, it comes back
// with a new sequence) and removes it.
func TestAPIDeadLetters(t *testing.T) {
	_, c, exp, _ := startAPIService(t)
	type entry struct {
		Sequence        uint64
		Reason          string
		OriginalSubject string `json:"original_subject"`
		Body            string
	}
	var dl struct {
		Count   int
		Entries []entry
	}
	c.json("GET", "/api/v1/deadletters", nil, http.StatusOK, &dl)
	if dl.Count != exp.Poison || len(dl.Entries) != exp.Poison {
		t.Fatalf("dead letters: count %d, %d entries; want %d", dl.Count, len(dl.Entries), exp.Poison)
	}
	for i, e := range dl.Entries {
		if e.Reason == "" || !strings.HasPrefix(e.OriginalSubject, "diffgram.events.") {
			t.Errorf("entry %+v lacks its reason or subject", e)
		}
		if i > 0 && e.Sequence >= dl.Entries[i-1].Sequence {
			t.Errorf("entries not newest first")
		}
	}
	c.json("GET", "/api/v1/deadletters?limit=3", nil, http.StatusOK, &dl)
	if len(dl.Entries) != 3 {
		t.Errorf("limit=3: %d entries", len(dl.Entries))
	}
	oldest := dl.Entries[2]

	var out struct {
		Redriven []struct{ Sequence uint64 }
		Failed   []struct {
			Sequence uint64
			Error    string
		}
	}
	c.json("POST", "/api/v1/deadletters/redrive", map[string]any{"sequences": []uint64{oldest.Sequence, 999999}}, http.StatusOK, &out)
	if len(out.Redriven) != 1 || out.Redriven[0].Sequence != oldest.Sequence || len(out.Failed) != 1 {
		t.Fatalf("redrive: %+v", out)
	}
	// Still bad: dead-lettered again, with the same reason, a new sequence.
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c.json("GET", "/api/v1/deadletters?limit=200", nil, http.StatusOK, &dl)
		back := false
		for _, e := range dl.Entries {
			if e.Sequence == oldest.Sequence {
				t.Fatalf("entry %d still there after the redrive", oldest.Sequence)
			}
			back = back || e.Body == oldest.Body && e.Reason == oldest.Reason
		}
		if back && dl.Count == exp.Poison {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the redriven event did not come back: %+v", dl)
		}
	}
	c.wantError("POST", "/api/v1/deadletters/redrive", map[string]any{"sequences": []uint64{}}, http.StatusBadRequest, "bad_request")
}
