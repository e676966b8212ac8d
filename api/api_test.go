package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/api"
	"github.com/exportstream/exportstream/api/apitest"
	"github.com/exportstream/exportstream/api/client"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline"
)

const token = "s3cret-t0ken"

// created is the created_time of every test record.
var created = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func rec(id int64, name string, status pipeline.Status) pipeline.Record {
	return pipeline.Record{ID: id, Name: name, Project: "proj", Source: "project", Completion: pipeline.CompletionComplete,
		Status: status, CreatedTime: created.Add(time.Duration(id) * time.Minute), Connection: "disk",
		Key: fmt.Sprintf("exports/%s/%d.json", name, id), Trigger: pipeline.TriggerEvent, FormatVersion: "1"}
}

// server serves the API of p and dl, with the token, adjusted by adjust.
type server struct {
	t   *testing.T
	url string
}

func newServer(t *testing.T, p api.Pipeline, dl api.DeadLetters, adjust ...func(*api.Options)) server {
	t.Helper()
	o := api.Options{Pipeline: p, DeadLetters: dl, Token: token}
	for _, f := range adjust {
		f(&o)
	}
	mux := http.NewServeMux()
	api.New(o).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return server{t: t, url: srv.URL}
}

// do sends a request with the bearer token (auth, when not "", is the
// whole Authorization header instead) and returns the answer.
func (s server) do(method, path, body string, auth ...string) (*http.Response, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if len(auth) > 0 {
		req.Header.Del("Authorization")
		if auth[0] != "" {
			req.Header.Set("Authorization", auth[0])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp, b
}

// json calls the API and decodes its answer into v, failing unless the
// status is want.
func (s server) json(method, path, body string, want int, v any) *http.Response {
	s.t.Helper()
	resp, b := s.do(method, path, body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp
}

// wantError checks an error answer: status, code and message.
func (s server) wantError(method, path, body string, status int, code, msg string) *http.Response {
	s.t.Helper()
	resp, b := s.do(method, path, body)
	var e client.ErrorBody
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != status || e.Error.Code != code ||
		e.Error.Message != msg || resp.Header.Get("Content-Type") != "application/json" {
		s.t.Errorf("%s %s %s:\n got %d %s\nwant %d %s: %q", method, path, body, resp.StatusCode, b, status, code, msg)
	}
	return resp
}

func TestAuth(t *testing.T) {
	s := newServer(t, &apitest.Pipeline{}, &apitest.DeadLetters{Name: "DLQ"})
	const wantBody = "{\n  \"error\": {\n    \"code\": \"unauthorized\",\n" +
		"    \"message\": \"missing or wrong bearer token (Authorization: Bearer \\u003chttp.token\\u003e)\"\n  }\n}\n"
	for _, auth := range []string{"", "Basic " + token, "Bearer wrong", "Bearer", "Bearer ", "Bearer" + token, token} {
		resp, b := s.do("GET", "/api/v1/exports", "", auth)
		if resp.StatusCode != http.StatusUnauthorized || string(b) != wantBody ||
			resp.Header.Get("WWW-Authenticate") != `Bearer realm="exportstream"` {
			t.Errorf("Authorization %q: %d %q %v, want 401 %q", auth, resp.StatusCode, b, resp.Header, wantBody)
		}
	}
	// The scheme in any case, one or more spaces before the token.
	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER " + token, "bEaReR " + token, "Bearer   " + token} {
		if resp, b := s.do("GET", "/api/v1/exports", "", auth); resp.StatusCode != http.StatusOK {
			t.Errorf("Authorization %q: %d %s, want 200", auth, resp.StatusCode, b)
		}
	}
	// The page is public: it asks for the token.
	if resp, _ := s.do("GET", "/", "", ""); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET / without a token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Without a token configured, none is needed.
	open := newServer(t, &apitest.Pipeline{}, &apitest.DeadLetters{}, func(o *api.Options) { o.Token = "" })
	if resp, b := open.do("GET", "/api/v1/exports", "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("no token configured: %d %s", resp.StatusCode, b)
	}
}

func TestUnknownRoute(t *testing.T) {
	s := newServer(t, &apitest.Pipeline{}, &apitest.DeadLetters{})
	s.wantError("GET", "/api/v1/nope", "", http.StatusNotFound, "not_found", "no such API route: GET /api/v1/nope")
	s.wantError("DELETE", "/api/v1/exports/1", "", http.StatusNotFound, "not_found", "no such API route: DELETE /api/v1/exports/1")
}

func TestList(t *testing.T) {
	p := &apitest.Pipeline{}
	s := newServer(t, p, &apitest.DeadLetters{})

	// No record: the envelope, byte for byte.
	resp, b := s.do("GET", "/api/v1/exports", "")
	if want := "{\n  \"exports\": [],\n  \"total\": 0\n}\n"; resp.StatusCode != http.StatusOK || string(b) != want ||
		resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("empty list: %d %q, want %q", resp.StatusCode, b, want)
	}

	deleted := created.Add(time.Hour)
	for i, st := range []pipeline.Status{pipeline.StatusComplete, pipeline.StatusFailed, pipeline.StatusComplete,
		pipeline.StatusSkipped, pipeline.StatusComplete, pipeline.StatusComplete} {
		name := "a"
		if i%2 == 1 {
			name = "b"
		}
		r := rec(int64(i+1), name, st)
		if i < 3 && st == pipeline.StatusComplete {
			r.DeletedTime = &deleted // 1 and 3
		}
		p.Recs = append(p.Recs, r)
	}
	ids := func(path string) (got []int64, total int, next int64) {
		t.Helper()
		var page client.ListPage[pipeline.Record]
		s.json("GET", path, "", http.StatusOK, &page)
		for _, r := range page.Exports {
			got = append(got, r.ID)
		}
		return got, page.Total, page.NextBefore
	}
	for _, tc := range []struct {
		path  string
		want  []int64
		total int
		next  int64
	}{
		{"/api/v1/exports", []int64{6, 5, 4, 3, 2, 1}, 6, 0},
		{"/api/v1/exports?limit=2", []int64{6, 5}, 6, 5},
		{"/api/v1/exports?limit=2&before=5", []int64{4, 3}, 6, 3},
		{"/api/v1/exports?limit=2&before=3", []int64{2, 1}, 6, 0},
		{"/api/v1/exports?definition=b", []int64{6, 4, 2}, 3, 0},
		{"/api/v1/exports?status=failed", []int64{2}, 1, 0},
		{"/api/v1/exports?project=other", nil, 0, 0},
		// What retention did: complete and deleted, or still there.
		{"/api/v1/exports?status=deleted", []int64{3, 1}, 2, 0},
		{"/api/v1/exports?status=existing", []int64{6, 5}, 2, 0},
		{"/api/v1/exports?status=existing&limit=1", []int64{6}, 2, 6},
		{"/api/v1/exports?status=deleted&definition=a&before=3", []int64{1}, 2, 0},
	} {
		got, total, next := ids(tc.path)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || total != tc.total || next != tc.next {
			t.Errorf("%s: ids %v, total %d, next_before %d; want %v, %d, %d", tc.path, got, total, next, tc.want, tc.total, tc.next)
		}
	}

	for _, tc := range []struct{ query, msg string }{
		{"limit=0", `limit="0" is not in 1..1000`},
		{"limit=1001", `limit="1001" is not in 1..1000`},
		{"limit=x", `limit="x" is not in 1..1000`},
		{"before=-1", `before="-1" is not an export id`},
		{"before=x", `before="x" is not an export id`},
		{"status=done", `status="done" is not one of pending, generating, uploading, complete, failed, skipped, deleted, existing`},
	} {
		s.wantError("GET", "/api/v1/exports?"+tc.query, "", http.StatusBadRequest, "bad_request", tc.msg)
	}
}

func TestGet(t *testing.T) {
	p := &apitest.Pipeline{Recs: []pipeline.Record{rec(3, "a", pipeline.StatusComplete)}}
	s := newServer(t, p, &apitest.DeadLetters{})
	var got pipeline.Record
	s.json("GET", "/api/v1/exports/3", "", http.StatusOK, &got)
	if diff := cmp.Diff(p.Recs[0], got); diff != "" {
		t.Errorf("record 3 (-want +got):\n%s", diff)
	}
	s.wantError("GET", "/api/v1/exports/abc", "", http.StatusBadRequest, "bad_request", `"abc" is not an export id`)
	s.wantError("GET", "/api/v1/exports/0", "", http.StatusBadRequest, "bad_request", `"0" is not an export id`)
	// An error answer, byte for byte.
	resp, b := s.do("GET", "/api/v1/exports/99", "")
	if want := "{\n  \"error\": {\n    \"code\": \"not_found\",\n    \"message\": \"no export 99\"\n  }\n}\n"; resp.StatusCode != http.StatusNotFound || string(b) != want {
		t.Errorf("missing record: %d %q, want 404 %q", resp.StatusCode, b, want)
	}
}

// TestDataAndURL: a complete export's data from its bucket and its
// signed URL; the answers for one that cannot be downloaded; the secret
// filter on everything but the signed URL.
func TestDataAndURL(t *testing.T) {
	b, err := local.NewWithOptions(t.TempDir(), local.Options{BaseURL: "http://files.test/disk", SignKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const data = `{"exported": true}`
	done := rec(1, "a", pipeline.StatusComplete)
	done.Bytes, done.SHA256, done.StatusText = int64(len(data)), "abc123", "uploaded with hunter2"
	w, err := b.NewWriter(t.Context(), done.Key, connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	at := created
	pending, failed, skipped, gone, lost := rec(2, "a", pipeline.StatusGenerating), rec(3, "a", pipeline.StatusFailed),
		rec(4, "a", pipeline.StatusSkipped), rec(5, "a", pipeline.StatusComplete), rec(6, "a", pipeline.StatusComplete)
	pending.PercentComplete, failed.StatusText, skipped.StatusText, gone.DeletedTime = 40, "bucket down", "no files", &at
	p := &apitest.Pipeline{Recs: []pipeline.Record{done, pending, failed, skipped, gone, lost},
		Buckets: map[string]connectors.Bucket{"disk": b}}
	s := newServer(t, p, &apitest.DeadLetters{}, func(o *api.Options) {
		o.Redact = func(s string) string { return strings.ReplaceAll(s, "hunter2", "<secret>") }
		o.SignedURLExpiry = map[string]time.Duration{"disk": 10 * time.Minute}
	})

	resp, body := s.do("GET", "/api/v1/exports/1/data", "")
	if resp.StatusCode != http.StatusOK || string(body) != data || resp.Header.Get("X-Export-Id") != "1" ||
		resp.Header.Get("X-Export-Sha256") != "abc123" || resp.Header.Get("Content-Disposition") != `attachment; filename="1.json"` {
		t.Errorf("data: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	var u client.SignedURL
	before := time.Now()
	s.json("GET", "/api/v1/exports/1/url", "", http.StatusOK, &u)
	if u.ExportID != 1 || !strings.HasPrefix(u.URL, "http://files.test/disk/exports/a/1.json") ||
		u.ExpiresAt.Before(before.Add(10*time.Minute-time.Second)) || u.ExpiresAt.After(time.Now().Add(10*time.Minute)) {
		t.Errorf("url: %+v", u)
	}
	var got pipeline.Record
	s.json("GET", "/api/v1/exports/1", "", http.StatusOK, &got)
	if got.StatusText != "uploaded with <secret>" {
		t.Errorf("the record's status_text %q went out unfiltered", got.StatusText)
	}

	for _, what := range []string{"data", "url"} {
		s.wantError("GET", "/api/v1/exports/2/"+what, "", http.StatusConflict, "not_ready", "export not ready yet: export 2 is generating (40%)")
		s.wantError("GET", "/api/v1/exports/3/"+what, "", http.StatusConflict, "export_failed", "export 3 failed: bucket down")
		s.wantError("GET", "/api/v1/exports/4/"+what, "", http.StatusConflict, "empty_source", "export 4 wrote nothing: no files")
		s.wantError("GET", "/api/v1/exports/5/"+what, "", http.StatusGone, "deleted",
			"export 5 was deleted from the bucket by retention (keep_last) at 2024-05-01T10:00:00Z")
	}
	s.wantError("GET", "/api/v1/exports/6/data", "", http.StatusNotFound, "not_found", "export 6: exports/a/6.json is not in the bucket")
}

func TestGenerate(t *testing.T) {
	defA := &pipeline.Definition{Name: "a", Project: "proj", Source: pipeline.Source{Kind: pipeline.SourceProject},
		Completion: pipeline.CompletionAll, Connection: "disk"}
	pendingRec := rec(7, "a", pipeline.StatusPending)
	fresh := func() *apitest.Pipeline {
		return &apitest.Pipeline{Defs: []*pipeline.Definition{defA}, Generated: &pendingRec}
	}

	t.Run("definition", func(t *testing.T) {
		p := fresh()
		s := newServer(t, p, &apitest.DeadLetters{})
		var got pipeline.Record
		resp := s.json("POST", "/api/v1/exports", `{"definition": "a"}`, http.StatusAccepted, &got)
		if got.ID != 7 || resp.Header.Get("Location") != "/api/v1/exports/7" {
			t.Errorf("answer %+v, Location %q", got, resp.Header.Get("Location"))
		}
		if diff := cmp.Diff([]apitest.Call{{Method: "Generate", Name: "a"}}, p.Calls()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		p.GenerateErr = fmt.Errorf("%w: %q", pipeline.ErrUnknownDefinition, "zz")
		s.wantError("POST", "/api/v1/exports", `{"definition": "zz"}`, http.StatusNotFound, "not_found", `no such export definition: "zz"`)
	})

	t.Run("ad hoc", func(t *testing.T) {
		p := fresh()
		s := newServer(t, p, &apitest.DeadLetters{})
		s.json("POST", "/api/v1/exports", `{"project": "proj", "source": {"job_id": 12}, "connection": "disk", "formats": ["coco"]}`,
			http.StatusAccepted, nil)
		s.json("POST", "/api/v1/exports", `{"project": "proj", "source": {"directory": "Train"}, "connection": "disk",
			"completion": "incomplete", "include_removed_instances": true}`, http.StatusAccepted, nil)
		want := []apitest.Call{
			{Method: "GenerateAdhoc", Definition: pipeline.Definition{Project: "proj", Source: pipeline.Source{Kind: pipeline.SourceJob, ID: 12},
				Completion: pipeline.CompletionComplete, Connection: "disk", Formats: pipeline.NormalizeFormats([]string{"coco"})}},
			{Method: "GenerateAdhoc", Definition: pipeline.Definition{Project: "proj", Source: pipeline.Source{Kind: pipeline.SourceDirectory, Name: "Train"},
				Completion: pipeline.CompletionIncomplete, IncludeRemovedInstances: true, Connection: "disk", Formats: pipeline.NormalizeFormats(nil)}},
		}
		if diff := cmp.Diff(want, p.Calls()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		p := fresh()
		s := newServer(t, p, &apitest.DeadLetters{})
		badProject := config.CheckProject("no spaces please")
		badFormats := config.CheckFormats([]string{"tiff"})
		_, badAsOf := pipeline.ParseAsOf("yesterday")
		if badProject == nil || badFormats == nil || badAsOf == nil {
			t.Fatalf("the test's bad values are good: %v, %v, %v", badProject, badFormats, badAsOf)
		}
		const adhoc = `"project": "proj", "source": {"project": true}, "connection": "disk"`
		for _, tc := range []struct{ body, msg string }{
			{`{"definition": "a", "project": "proj"}`, "give either a definition or an ad-hoc project, source and connection, not both"},
			{`{"definition": "a", "formats": ["coco"], "as_of": 5}`, "give either a definition or an ad-hoc project, source and connection, not both"},
			{`{}`, `give "definition", or an ad-hoc "project", "source" and "connection"`},
			{`{"project": "proj", "source": {"project": true}}`, `give "definition", or an ad-hoc "project", "source" and "connection"`},
			{`{"project": "proj", "source": {}, "connection": "disk"}`,
				"source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found 0)"},
			{`{"project": "proj", "source": {"job": "x", "task_id": 3}, "connection": "disk"}`,
				"source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found 2)"},
			{`{` + adhoc + `, "completion": "done"}`, `completion "done" is not complete, all or incomplete`},
			{`{"project": "no spaces please", "source": {"project": true}, "connection": "disk"}`, "project: " + badProject.Error()},
			{`{` + adhoc + `, "formats": ["tiff"]}`, "formats: " + badFormats.Error()},
			{`{"definition": "a", "return_type": "zip"}`, `return_type "zip" is not data or url`},
			{`{"definition": "a", "as_of": "yesterday"}`, "as_of: " + badAsOf.Error()},
			{`{"definition": "a", "bogus": 1}`, `request body: json: unknown field "bogus"`},
			{`{"definition": "a", "wait": "yes"}`, "request body: json: cannot unmarshal string into Go struct field createRequest.wait of type bool"},
			{`{"definition": `, "request body: unexpected EOF"},
		} {
			s.wantError("POST", "/api/v1/exports", tc.body, http.StatusBadRequest, "bad_request", tc.msg)
		}
		if calls := p.Calls(); len(calls) != 0 {
			t.Errorf("bad requests started exports: %+v", calls)
		}
	})

	t.Run("refused", func(t *testing.T) {
		const adhoc = `{"project": "proj", "source": {"project": true}, "connection": "disk"}`
		empty := rec(8, pipeline.AdhocName, pipeline.StatusSkipped)
		empty.StatusText = "project proj has no complete files"
		for _, tc := range []struct {
			err               error
			status            int
			code, msg, header string
		}{
			{fmt.Errorf("%w (4 of 4)", pipeline.ErrTooManyAdhoc), http.StatusTooManyRequests, "too_many_requests",
				"too many ad-hoc exports running (4 of 4) (http.max_adhoc_exports); ask again in 5 s", "5"},
			{fmt.Errorf("%w: %q", pipeline.ErrUnknownConnection, "disk"), http.StatusBadRequest, "bad_request", `no such connection: "disk"`, ""},
			{&pipeline.EmptySourceError{Record: &empty}, http.StatusUnprocessableEntity, "empty_source",
				"export 8 skipped: project proj has no complete files", ""},
			{fmt.Errorf("%w: %q is in partition 3 of 12", pipeline.ErrNotHeld, "proj"), http.StatusServiceUnavailable, "not_held",
				`another replica holds this project: "proj" is in partition 3 of 12; ask again`, "1"},
			{errors.New("kv down"), http.StatusInternalServerError, "internal", "kv down", ""},
			{fmt.Errorf("kv: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, "unavailable", "kv: context deadline exceeded", ""},
		} {
			p := fresh()
			p.GenerateErr = tc.err
			s := newServer(t, p, &apitest.DeadLetters{})
			resp := s.wantError("POST", "/api/v1/exports", adhoc, tc.status, tc.code, tc.msg)
			if got := resp.Header.Get("Retry-After"); got != tc.header {
				t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.header)
			}
		}
	})

	t.Run("as of", func(t *testing.T) {
		p := fresh()
		s := newServer(t, p, &apitest.DeadLetters{})
		s.json("POST", "/api/v1/exports", `{"definition": "a", "as_of": 42}`, http.StatusAccepted, nil)
		s.json("POST", "/api/v1/exports", `{"project": "proj", "source": {"task_id": 5}, "connection": "disk", "as_of": "2024-05-01T10:00:00Z"}`,
			http.StatusAccepted, nil)
		at42, _ := pipeline.ParseAsOf("42")
		atTime, _ := pipeline.ParseAsOf("2024-05-01T10:00:00Z")
		want := []apitest.Call{
			{Method: "GenerateAsOf", Definition: *defA, At: at42},
			{Method: "GenerateAsOf", Definition: pipeline.Definition{Project: "proj", Source: pipeline.Source{Kind: pipeline.SourceTask, ID: 5},
				Completion: pipeline.CompletionComplete, Connection: "disk", Formats: pipeline.NormalizeFormats(nil)}, At: atTime},
		}
		if diff := cmp.Diff(want, p.Calls()); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		s.wantError("POST", "/api/v1/exports", `{"definition": "zz", "as_of": 42}`, http.StatusNotFound, "not_found", `no such export definition: "zz"`)
		for _, tc := range []struct {
			err    error
			status int
			code   string
		}{
			{pipeline.ErrAsOfUnavailable, http.StatusUnprocessableEntity, "as_of_unavailable"},
			{pipeline.ErrAsOfBeyond, http.StatusUnprocessableEntity, "as_of_out_of_range"},
			{pipeline.ErrAsOfNotConfigured, http.StatusNotImplemented, "not_supported"},
		} {
			p.GenerateErr = tc.err
			s.wantError("POST", "/api/v1/exports", `{"definition": "a", "as_of": 42}`, tc.status, tc.code, tc.err.Error())
		}
	})

	t.Run("wait", func(t *testing.T) {
		p := fresh()
		done := rec(7, "a", pipeline.StatusComplete)
		p.Waited = &done
		s := newServer(t, p, &apitest.DeadLetters{})
		var got pipeline.Record
		s.json("POST", "/api/v1/exports", `{"definition": "a", "wait": true}`, http.StatusOK, &got)
		if got.Status != pipeline.StatusComplete {
			t.Errorf("waited for %+v", got)
		}
		failed := rec(7, "a", pipeline.StatusFailed)
		failed.StatusText = "bucket down"
		p.Waited = &failed
		s.wantError("POST", "/api/v1/exports", `{"definition": "a", "wait": true}`, http.StatusInternalServerError, "export_failed", "export 7 failed: bucket down")
		p.Waited, p.WaitErr = nil, context.DeadlineExceeded
		s.wantError("POST", "/api/v1/exports", `{"definition": "a", "wait": true}`, http.StatusGatewayTimeout, "timeout",
			"export 7 did not finish in time (context deadline exceeded); poll GET /api/v1/exports/7")
	})
}

func TestDeadLetters(t *testing.T) {
	long := strings.Repeat("x", 5000)
	east := time.FixedZone("east", 2*3600)
	dl := &apitest.DeadLetters{Name: "DLQ", Entries: []events.DeadLetter{
		{Sequence: 1, Time: created.In(east), Reason: "not JSON", OriginalSubject: "diffgram.events.file.uploaded",
			OriginalStream: "EV", OriginalSequence: "10", Data: []byte("bad\xffbody")},
		{Sequence: 2, Time: created, Reason: "too large", OriginalSubject: "diffgram.events.file.updated",
			OriginalStream: "EV", OriginalSequence: "11", Data: []byte(long)},
		{Sequence: 4, Time: created, Reason: "unknown type", OriginalSubject: "diffgram.events.file.exploded",
			OriginalStream: "EV", OriginalSequence: "13", Data: []byte("{}")},
	}}
	s := newServer(t, &apitest.Pipeline{}, dl)

	type entry struct {
		Sequence         uint64    `json:"sequence"`
		Time             time.Time `json:"time"`
		Reason           string    `json:"reason"`
		OriginalSubject  string    `json:"original_subject"`
		OriginalStream   string    `json:"original_stream"`
		OriginalSequence string    `json:"original_sequence"`
		Bytes            int       `json:"bytes"`
		Body             string    `json:"body"`
		BodyTruncated    bool      `json:"body_truncated"`
	}
	var got struct {
		Stream  string  `json:"stream"`
		Count   uint64  `json:"count"`
		Entries []entry `json:"entries"`
	}
	_, raw := s.do("GET", "/api/v1/deadletters", "")
	s.json("GET", "/api/v1/deadletters", "", http.StatusOK, &got)
	want := []entry{
		{4, created, "unknown type", "diffgram.events.file.exploded", "EV", "13", 2, "{}", false},
		{2, created, "too large", "diffgram.events.file.updated", "EV", "11", 5000, long[:4096], true},
		{1, created, "not JSON", "diffgram.events.file.uploaded", "EV", "10", 8, "bad\uFFFDbody", false},
	}
	if got.Stream != "DLQ" || got.Count != 3 {
		t.Errorf("stream %q, count %d; want DLQ, 3", got.Stream, got.Count)
	}
	if diff := cmp.Diff(want, got.Entries); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(raw), `"time": "2024-05-01T10:00:00Z"`) || strings.Count(string(raw), `"body_truncated"`) != 1 {
		t.Errorf("times not in UTC, or body_truncated not omitted when false:\n%s", raw)
	}
	s.json("GET", "/api/v1/deadletters?limit=2", "", http.StatusOK, &got)
	if len(got.Entries) != 2 || got.Count != 3 {
		t.Errorf("limit=2: %d entries of %d", len(got.Entries), got.Count)
	}
	if limits := dl.Limits(); fmt.Sprint(limits) != "[20 20 2]" {
		t.Errorf("List limits %v, want the default 20 twice, then 2", limits)
	}
	for _, v := range []string{"0", "201", "x"} {
		s.wantError("GET", "/api/v1/deadletters?limit="+v, "", http.StatusBadRequest, "bad_request", fmt.Sprintf("limit=%q is not in 1..200", v))
	}

	// Redrive.
	var out struct {
		Redriven []struct {
			Sequence       uint64 `json:"sequence"`
			Subject        string `json:"subject"`
			StreamSequence uint64 `json:"stream_sequence"`
		} `json:"redriven"`
		Failed []struct {
			Sequence uint64 `json:"sequence"`
			Error    string `json:"error"`
		} `json:"failed"`
	}
	s.json("POST", "/api/v1/deadletters/redrive", `{"sequences": [2, 9]}`, http.StatusOK, &out)
	if len(out.Redriven) != 1 || out.Redriven[0].Sequence != 2 || out.Redriven[0].Subject != "diffgram.events.file.updated" ||
		out.Redriven[0].StreamSequence != 1002 || len(out.Failed) != 1 || out.Failed[0].Sequence != 9 ||
		out.Failed[0].Error != "no dead letter with sequence 9; list them with GET /api/v1/deadletters" {
		t.Errorf("redrive of 2 and 9: %+v", out)
	}
	_, raw = s.do("POST", "/api/v1/deadletters/redrive", `{"sequences": [4]}`)
	if want := "{\n  \"redriven\": [\n    {\n      \"sequence\": 4,\n      \"subject\": \"diffgram.events.file.exploded\",\n" +
		"      \"stream_sequence\": 1004\n    }\n  ],\n  \"failed\": []\n}\n"; string(raw) != want {
		t.Errorf("redrive answer %q, want %q", raw, want)
	}
	s.wantError("POST", "/api/v1/deadletters/redrive", `{"sequences": [2]}`, http.StatusNotFound, "not_found",
		"no dead letter with sequence 2; list them with GET /api/v1/deadletters")
	s.wantError("POST", "/api/v1/deadletters/redrive", `{"sequences": [9, 10, 9]}`, http.StatusNotFound, "not_found",
		"no dead letters with sequences 9, 10; list them with GET /api/v1/deadletters")
	s.wantError("POST", "/api/v1/deadletters/redrive", `{"sequences": []}`, http.StatusBadRequest, "bad_request",
		`give 1..1000 dead-letter sequences: {"sequences": [12, 13]}`)
	s.wantError("POST", "/api/v1/deadletters/redrive", `{"seqs": [1]}`, http.StatusBadRequest, "bad_request",
		`request body: json: unknown field "seqs"`)

	// The stream cannot be reached.
	dl.Err = fmt.Errorf("dead-letter stream DLQ: %w", context.DeadlineExceeded)
	s.wantError("GET", "/api/v1/deadletters", "", http.StatusServiceUnavailable, "unavailable", "dead-letter stream DLQ: context deadline exceeded")
	dl.Err = errors.New("dead-letter stream DLQ: nats: connection closed")
	s.wantError("POST", "/api/v1/deadletters/redrive", `{"sequences": [1]}`, http.StatusInternalServerError, "internal",
		"dead-letter stream DLQ: nats: connection closed")
}

func TestStatus(t *testing.T) {
	applied := created.Add(time.Hour)
	marked := created.Add(2 * time.Hour).In(time.FixedZone("east", 3600))
	p := &apitest.Pipeline{
		Defs:    []*pipeline.Definition{{Name: "b"}, {Name: "a"}},
		Applied: pipeline.Applied{Seq: 42, Time: applied, Events: 7},
		Fresh: map[string]pipeline.Freshness{"a": {Current: true},
			"b": {PendingEvents: 4, NewestEvent: 41, MarkedTime: marked}},
	}
	consumerErr := error(nil)
	s := newServer(t, p, &apitest.DeadLetters{}, func(o *api.Options) {
		o.Consumer = func(context.Context) (*jetstream.ConsumerInfo, error) {
			if consumerErr != nil {
				return nil, consumerErr
			}
			return &jetstream.ConsumerInfo{Stream: "EV", Name: "c", NumPending: 3, NumAckPending: 2,
				AckFloor: jetstream.SequenceInfo{Stream: 40}}, nil
		}
		o.Health = func() api.Health {
			return api.Health{Ready: true, Checks: []api.Check{{Name: "nats", OK: true}},
				Connections: []api.Check{{Name: "disk", OK: false, Error: "disk full"}}}
		}
		o.Redact = func(s string) string { return strings.ReplaceAll(s, "hunter2", "<secret>") }
	})
	_, raw := s.do("GET", "/api/v1/status", "")
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"events": map[string]any{"stream": "EV", "consumer": "c", "last_applied_sequence": 42.0, "last_applied_time": "2024-05-01T11:00:00Z",
			"applied_since_start": 7.0, "acked_through": 40.0, "backlog": 5.0, "waiting": 3.0, "in_flight": 2.0},
		"definitions": []any{
			map[string]any{"name": "a", "up_to_date": true, "pending_events": 0.0},
			map[string]any{"name": "b", "up_to_date": false, "pending_events": 4.0, "newest_event": 41.0, "marked_time": "2024-05-01T12:00:00Z"},
		},
		"ready":       true,
		"checks":      []any{map[string]any{"name": "nats", "ok": true}},
		"connections": []any{map[string]any{"name": "disk", "ok": false, "error": "disk full"}},
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["time"])); err != nil {
		t.Errorf("time %v: %v", got["time"], err)
	}
	delete(got, "time")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s\n%s", diff, raw)
	}

	// The consumer cannot be asked: why, filtered, and no backlog.
	consumerErr = errors.New("nats://admin:hunter2@nats:4222: timeout")
	var st struct {
		Events struct {
			Backlog       *uint64 `json:"backlog"`
			ConsumerError string  `json:"consumer_error"`
		} `json:"events"`
	}
	s.json("GET", "/api/v1/status", "", http.StatusOK, &st)
	if st.Events.Backlog != nil || st.Events.ConsumerError != "nats://admin:<secret>@nats:4222: timeout" {
		t.Errorf("consumer error: %+v", st.Events)
	}

	p.FreshnessErr = errors.New("state store closed")
	s.wantError("GET", "/api/v1/status", "", http.StatusInternalServerError, "internal", "state store closed")
}
