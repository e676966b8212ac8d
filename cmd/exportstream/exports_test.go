package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/cmd/exportstream/internal/service"
	"github.com/exportstream/exportstream/cmd/exportstream/internal/service/servicetest"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

const exportsToken = "cli-t0ken-for-exports-tests"

// exportsWorld is a running service with a contract example's exports in
// its local bucket, and the CLI pointed at it.
type exportsWorld struct {
	svc       *service.Service
	server    string
	exp       *pipelinetest.Expected
	bucketDir string
	fast      string // a definition that exports 100ms after a request
	slow      string // a definition that waits 2s after a request before it exports
	kept      string // a definition whose bucket keeps its newest export only (keep_last 1)
}

// startExportsWorld runs the service in-process (embedded NATS, a local
// bucket, the API with a token) with one definition per expected export
// of street-scenes-ordered, publishes the example with `exportstream
// publish`, and waits until the API serves every expected export.
func startExportsWorld(t *testing.T) *exportsWorld {
	t.Helper()
	dir := filepath.Join(pipelinetest.ExamplesDir(), "street-scenes-ordered")
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := &exportsWorld{exp: exp, bucketDir: filepath.Join(t.TempDir(), "bucket")}
	cfg := servicetest.Config(t, exp, config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: w.bucketDir}})
	cfg.HTTP.Token = exportsToken
	cfg.Exports[1].Coalesce = config.Coalesce{Quiet: 2 * time.Second, MaxDelay: 5 * time.Second}
	w.fast, w.slow = cfg.Exports[0].Name, cfg.Exports[1].Name
	for i := 2; i < len(cfg.Exports); i++ {
		if !exp.Definitions[cfg.Exports[i].Name].NoExport {
			cfg.Exports[i].KeepLast = 1
			w.kept = cfg.Exports[i].Name
			break
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}

	// The service's log goes to a file, shown when a test fails.
	logPath := filepath.Join(t.TempDir(), "service.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	w.svc = service.New(cfg, slog.New(slog.NewJSONHandler(logFile, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("service did not stop")
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("service log (last 8 KiB):\n%s", b[max(0, len(b)-8<<10):])
			}
		}
	})
	select {
	case <-w.svc.Ready():
	case err := <-done:
		t.Fatalf("service failed to start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("service not ready after 30s")
	}
	w.server = "http://" + w.svc.HTTPAddr()

	var out, errOut bytes.Buffer
	if code := run([]string{"publish", "--nats", w.svc.NATSURL(), pipelinetest.EventsFile(dir)}, &out, &errOut); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, errOut.String())
	}
	w.waitConverged(t)
	return w
}

// apiGet calls the API directly (not through the CLI) and returns the
// answer's body, failing unless it is 200.
func (w *exportsWorld) apiGet(t *testing.T, path string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", w.server+path, nil)
	req.Header.Set("Authorization", "Bearer "+exportsToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s %v", path, resp.Status, b, err)
	}
	return b
}

// waitConverged polls the API until every definition's latest export is
// complete and its data is what expected.json says.
func (w *exportsWorld) waitConverged(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var defs struct {
			Definitions []struct {
				Name    string
				Latest  *pipeline.Record
				Skipped *pipeline.Record
			}
		}
		if err := json.Unmarshal(w.apiGet(t, "/api/v1/definitions"), &defs); err != nil {
			t.Fatal(err)
		}
		var problems []string
		for _, d := range defs.Definitions {
			if w.exp.Definitions[d.Name].NoExport {
				if d.Latest != nil || d.Skipped == nil {
					problems = append(problems, d.Name+": want no export and a skipped attempt")
				}
				continue
			}
			if d.Latest == nil || d.Latest.Status != pipeline.StatusComplete {
				problems = append(problems, d.Name+": no complete export yet")
				continue
			}
			data := w.apiGet(t, "/api/v1/exports/"+strconv.FormatInt(d.Latest.ID, 10)+"/data")
			for _, p := range pipelinetest.Check(data, w.exp, w.exp.Definitions[d.Name]) {
				problems = append(problems, d.Name+": "+p)
			}
		}
		if len(defs.Definitions) != len(w.exp.Definitions) {
			problems = append(problems, "the API lists "+strconv.Itoa(len(defs.Definitions))+" definitions")
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after 60s: %v", problems)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cli runs `exportstream exports SUB --server ... --token ... ARGS...` and
// checks that the token shows in neither output.
func (w *exportsWorld) cli(t *testing.T, sub string, args ...string) (int, string, string) {
	t.Helper()
	return cliRun(t, append([]string{"exports", sub, "--server", w.server, "--token", exportsToken}, args...)...)
}

func cliRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	if strings.Contains(out.String()+errOut.String(), exportsToken) {
		t.Errorf("exportstream %s shows the token:\n%s\n%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

// mustCLI is cli, failing unless the exit status is 0.
func (w *exportsWorld) mustCLI(t *testing.T, sub string, args ...string) string {
	t.Helper()
	code, out, errOut := w.cli(t, sub, args...)
	if code != 0 {
		t.Fatalf("exports %s %s: exit %d: %s", sub, strings.Join(args, " "), code, errOut)
	}
	return out
}

// record gets an export record through the CLI's JSON output.
func (w *exportsWorld) record(t *testing.T, id int64) pipeline.Record {
	t.Helper()
	var r pipeline.Record
	if err := json.Unmarshal([]byte(w.mustCLI(t, "get", strconv.FormatInt(id, 10), "--output", "json")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// newest is the newest record of a definition, through the CLI.
func (w *exportsWorld) newest(t *testing.T, definition string) pipeline.Record {
	t.Helper()
	var page struct{ Exports []pipeline.Record }
	if err := json.Unmarshal([]byte(w.mustCLI(t, "list", "--definition", definition, "--limit", "1", "--output", "json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Exports) != 1 {
		t.Fatalf("no export of %s", definition)
	}
	return page.Exports[0]
}

func (w *exportsWorld) bucketObject(t *testing.T, key string) []byte {
	t.Helper()
	r, err := w.svc.Bucket("disk").NewReader(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fetch GETs a signed URL without the token.
func fetch(t *testing.T, u string) []byte {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	return b
}

// noPartials fails if a download left a temporary file in dir.
func noPartials(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("a temporary file is left behind: %s", e.Name())
		}
	}
}

type listJSON struct {
	Exports    []pipeline.Record `json:"exports"`
	Total      int               `json:"total"`
	NextBefore int64             `json:"next_before"`
}

// TestExportsCLI runs `exportstream exports` against the real service:
// list (table, JSON, filters, pages), get, generate (waiting for the
// record, the data or a URL; or not, then data --wait), url, ad-hoc
// exports, a failed export, and the API's errors.
func TestExportsCLI(t *testing.T) {
	w := startExportsWorld(t)

	var all listJSON
	t.Run("list", func(t *testing.T) {
		raw := w.mustCLI(t, "list", "--output", "json")
		if err := json.Unmarshal([]byte(raw), &all); err != nil {
			t.Fatal(err)
		}
		if all.Total < len(w.exp.Definitions) || len(all.Exports) != all.Total || all.NextBefore != 0 {
			t.Fatalf("list --output json: %d of %d records, next_before %d", len(all.Exports), all.Total, all.NextBefore)
		}
		// As the API sends it.
		if api := w.apiGet(t, "/api/v1/exports"); raw != string(api) {
			t.Errorf("list --output json differs from the API's answer:\n%s\n%s", raw, api)
		}

		table := w.mustCLI(t, "list")
		lines := strings.Split(strings.TrimSpace(table), "\n")
		if got := strings.Fields(lines[0]); !slices.Equal(got, []string{"ID", "DEFINITION", "STATUS", "%", "FILES", "INSTANCES", "BYTES", "CREATED", "NOTE"}) {
			t.Errorf("table header %q", lines[0])
		}
		if len(lines)-1 != all.Total {
			t.Fatalf("table has %d rows, want %d:\n%s", len(lines)-1, all.Total, table)
		}
		// The object keys are long: the table leaves them to get and
		// --output json, and the columns before the note stay narrow.
		if at := strings.Index(lines[0], "NOTE"); at > 100 {
			t.Errorf("the note starts at column %d:\n%s", at, table)
		}
		for i, r := range all.Exports {
			if r.Key != "" && strings.Contains(lines[i+1], r.Key) {
				t.Errorf("row %d shows the object key %s", i, r.Key)
			}
			f := strings.Fields(lines[i+1])
			last := []string{"-"} // a skipped (or failed) attempt shows its reason
			if r.Status == pipeline.StatusSkipped || r.Status == pipeline.StatusFailed {
				last = strings.Fields(r.StatusText)
			}
			want := append([]string{strconv.FormatInt(r.ID, 10), r.Name, string(r.Status), strconv.Itoa(r.PercentComplete),
				strconv.Itoa(r.FileListLength), strconv.Itoa(r.InstanceCount), strconv.FormatInt(r.Bytes, 10),
				r.CreatedTime.UTC().Format(time.RFC3339)}, last...)
			if !slices.Equal(f, want) {
				t.Errorf("row %d: %q, want %q", i, f, want)
			}
		}

		// Filters.
		name := w.slow
		var filtered listJSON
		json.Unmarshal([]byte(w.mustCLI(t, "list", "--definition", name, "--status", "complete", "--project", w.exp.Project, "--output", "json")), &filtered)
		if len(filtered.Exports) == 0 {
			t.Fatalf("no complete exports of %s", name)
		}
		for _, r := range filtered.Exports {
			if r.Name != name || r.Status != pipeline.StatusComplete {
				t.Errorf("filtered list holds %s/%s", r.Name, r.Status)
			}
		}
		table = w.mustCLI(t, "list", "--definition", name)
		if rows := strings.Count(table, "\n") - 1; rows != filtered.Total {
			t.Errorf("filtered table: %d rows, want %d:\n%s", rows, filtered.Total, table)
		}
		code, out, errOut := w.cli(t, "list", "--project", "no-such-project")
		if code != 0 || out != "" || !strings.Contains(errOut, "no exports") {
			t.Errorf("empty list: exit %d, %q, %q", code, out, errOut)
		}
	})

	t.Run("pages", func(t *testing.T) {
		// One page of one: the newest, and how to go on.
		code, out, errOut := w.cli(t, "list", "--limit", "1")
		if code != 0 || strings.Count(out, "\n") != 2 || !strings.HasPrefix(strings.Split(out, "\n")[1], strconv.FormatInt(all.Exports[0].ID, 10)+" ") {
			t.Errorf("--limit 1: exit %d:\n%s", code, out)
		}
		if !strings.Contains(errOut, "more with --before "+strconv.FormatInt(all.Exports[0].ID, 10)) {
			t.Errorf("--limit 1 does not say how to go on: %q", errOut)
		}
		var second listJSON
		json.Unmarshal([]byte(w.mustCLI(t, "list", "--limit", "1", "--before", strconv.FormatInt(all.Exports[0].ID, 10), "--output", "json")), &second)
		if len(second.Exports) != 1 || second.Exports[0].ID != all.Exports[1].ID {
			t.Errorf("--before: %+v, want export %d", second.Exports, all.Exports[1].ID)
		}

		// --all follows the pages.
		var paged listJSON
		if err := json.Unmarshal([]byte(w.mustCLI(t, "list", "--limit", "1", "--all", "--output", "json")), &paged); err != nil {
			t.Fatal(err)
		}
		if paged.Total != all.Total || !slices.EqualFunc(paged.Exports, all.Exports, func(a, b pipeline.Record) bool { return a.ID == b.ID }) {
			t.Errorf("--limit 1 --all: %d records (total %d), want the %d of one page", len(paged.Exports), paged.Total, all.Total)
		}
		table := w.mustCLI(t, "list", "--limit", "2", "--all")
		if rows := strings.Count(table, "\n") - 1; rows != all.Total {
			t.Errorf("--limit 2 --all table: %d rows, want %d", rows, all.Total)
		}
	})

	t.Run("get", func(t *testing.T) {
		rec := all.Exports[0]
		id := strconv.FormatInt(rec.ID, 10)
		raw := w.mustCLI(t, "get", id, "--output", "json")
		if api := w.apiGet(t, "/api/v1/exports/"+id); raw != string(api) {
			t.Errorf("get --output json differs from the API's answer")
		}
		var fields map[string]any
		json.Unmarshal([]byte(raw), &fields)
		table := w.mustCLI(t, "get", id)
		lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
		if len(lines) != len(fields) {
			t.Errorf("get: %d lines for %d fields:\n%s", len(lines), len(fields), table)
		}
		if !strings.HasPrefix(lines[0], "id:") {
			t.Errorf("get: the first line is %q, want the id", lines[0])
		}
		for k := range fields {
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, k+":") }) {
				t.Errorf("get: no line for %s:\n%s", k, table)
			}
		}
		for _, want := range []string{"status", "complete", "key", rec.Key, "sha256", rec.SHA256} {
			if !strings.Contains(table, want) {
				t.Errorf("get: %q missing:\n%s", want, table)
			}
		}
		// Flags may come before the id too.
		if out := w.mustCLI(t, "get", "--output", "json", id); out != raw {
			t.Errorf("get --output json ID differs from get ID --output json")
		}
	})

	t.Run("generate-data", func(t *testing.T) {
		name := w.fast
		dir := t.TempDir()
		file := filepath.Join(dir, "export.json")
		os.WriteFile(file, []byte("the previous download"), 0o600)
		code, out, errOut := w.cli(t, "generate", "--definition", name, "--wait", "--return", "data", "--out", file)
		if code != 0 || out != "" {
			t.Fatalf("generate --return data --out: exit %d, stdout %q: %s", code, out, errOut)
		}
		rec := w.newest(t, name)
		if rec.Trigger != pipeline.TriggerManual || rec.Status != pipeline.StatusComplete {
			t.Errorf("the generated export: %+v", rec)
		}
		got, _ := os.ReadFile(file)
		if want := w.bucketObject(t, rec.Key); !bytes.Equal(got, want) {
			t.Errorf("--out %s: %d bytes that differ from the bucket's %s (%d bytes)", file, len(got), rec.Key, len(want))
		}
		for _, p := range pipelinetest.Check(got, w.exp, w.exp.Definitions[name]) {
			t.Errorf("generated data: %s", p)
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
			t.Errorf("--out replaced the file's mode: %v", fi.Mode())
		}
		if !strings.Contains(errOut, strconv.FormatInt(rec.ID, 10)) || !strings.Contains(errOut, file) {
			t.Errorf("the note on stderr: %q", errOut)
		}
		noPartials(t, dir)

		// To stdout.
		out = w.mustCLI(t, "generate", "--definition", name, "--wait", "--return", "data")
		rec = w.newest(t, name)
		if !bytes.Equal([]byte(out), w.bucketObject(t, rec.Key)) {
			t.Errorf("generate --return data to stdout differs from %s", rec.Key)
		}
	})

	t.Run("generate-url", func(t *testing.T) {
		name := w.fast
		out := w.mustCLI(t, "generate", "--definition", name, "--wait", "--return", "url")
		rec := w.newest(t, name)
		u := strings.TrimSuffix(out, "\n")
		if strings.Contains(u, "\n") || !strings.HasPrefix(u, w.server+"/files/disk/") {
			t.Fatalf("generate --return url: %q", out)
		}
		if !bytes.Equal(fetch(t, u), w.bucketObject(t, rec.Key)) {
			t.Errorf("the URL serves other bytes than %s", rec.Key)
		}
		var withJSON struct {
			ExportID  int64     `json:"export_id"`
			URL       string    `json:"url"`
			ExpiresAt time.Time `json:"expires_at"`
			Export    pipeline.Record
		}
		json.Unmarshal([]byte(w.mustCLI(t, "generate", "--definition", name, "--wait", "--return", "url", "--output", "json")), &withJSON)
		if withJSON.URL == "" || withJSON.ExportID != withJSON.Export.ID || withJSON.Export.Status != pipeline.StatusComplete || withJSON.ExpiresAt.IsZero() {
			t.Errorf("generate --return url --output json: %+v", withJSON)
		}
		// --wait alone: the done record.
		var rec2 pipeline.Record
		json.Unmarshal([]byte(w.mustCLI(t, "generate", "--definition", name, "--wait", "--output", "json")), &rec2)
		if rec2.Status != pipeline.StatusComplete || rec2.Name != name {
			t.Errorf("generate --wait: %+v", rec2)
		}
	})

	t.Run("generate-then-data", func(t *testing.T) {
		raw := w.mustCLI(t, "generate", "--definition", w.slow, "--output", "json")
		if !strings.HasPrefix(raw, "{\n  \"id\": ") {
			t.Errorf("generate --output json does not start with the id (for jq .id): %.40q", raw)
		}
		var pending pipeline.Record
		json.Unmarshal([]byte(raw), &pending)
		if pending.Status != pipeline.StatusPending || pending.Name != w.slow || pending.ID == 0 {
			t.Fatalf("generate without --wait: %+v", pending)
		}
		id := strconv.FormatInt(pending.ID, 10)

		// Not ready yet: the API's 409, exit 1.
		code, _, errOut := w.cli(t, "data", id)
		if code != 1 || !strings.HasPrefix(errOut, "exportstream: export not ready yet") || !strings.Contains(errOut, "(not_ready, HTTP 409)") {
			t.Errorf("data of a pending export: exit %d, %q", code, errOut)
		}
		code, _, errOut = w.cli(t, "url", id)
		if code != 1 || !strings.Contains(errOut, "(not_ready, HTTP 409)") {
			t.Errorf("url of a pending export: exit %d, %q", code, errOut)
		}

		dir := t.TempDir()
		file := filepath.Join(dir, "slow.json")
		code, out, errOut := w.cli(t, "data", id, "--wait", "--out", file)
		if code != 0 || out != "" {
			t.Fatalf("data --wait: exit %d, %q: %s", code, out, errOut)
		}
		if !strings.Contains(errOut, "export "+id+": pending") {
			t.Errorf("data --wait does not show the wait: %q", errOut)
		}
		rec := w.record(t, pending.ID)
		got, _ := os.ReadFile(file)
		if rec.Status != pipeline.StatusComplete || !bytes.Equal(got, w.bucketObject(t, rec.Key)) {
			t.Errorf("data --wait --out: %d bytes; record %+v", len(got), rec)
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o644 {
			t.Errorf("a new --out file has mode %v", fi.Mode())
		}
		noPartials(t, dir)

		// Complete now: data to stdout, and its URL.
		if out := w.mustCLI(t, "data", id); out != string(got) {
			t.Errorf("data to stdout differs")
		}
		u := strings.TrimSpace(w.mustCLI(t, "url", id))
		if !bytes.Equal(fetch(t, u), got) {
			t.Errorf("url %s serves other bytes", u)
		}
		var uj struct {
			ExportID  int64     `json:"export_id"`
			URL       string    `json:"url"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		json.Unmarshal([]byte(w.mustCLI(t, "url", id, "--output", "json")), &uj)
		if uj.ExportID != pending.ID || uj.URL == "" || time.Until(uj.ExpiresAt) < 50*time.Minute {
			t.Errorf("url --output json: %+v", uj)
		}
	})

	t.Run("adhoc", func(t *testing.T) {
		var rec pipeline.Record
		json.Unmarshal([]byte(w.mustCLI(t, "generate", "--project", w.exp.Project, "--source", "project", "--completion", "all",
			"--connection", "disk", "--wait", "--output", "json")), &rec)
		if rec.Name != pipeline.AdhocName || rec.Status != pipeline.StatusComplete || rec.FileListLength == 0 || rec.Completion != "all" {
			t.Errorf("ad-hoc export of the project: %+v", rec)
		}
		// Each source kind, checked against the definition expected.json
		// has for it.
		for _, c := range []struct{ source, definition string }{
			{"directory=Luckfrill", "luckfrill-complete"},
			{"directory_id=7", "dir7-by-id"},
			{"job=Night Review", "night-review-complete"},
			{"job_id=12", "job12-by-id"},
		} {
			d, ok := w.exp.Definitions[c.definition]
			if !ok || d.Completion != "complete" || d.IncludeRemoved {
				t.Fatalf("expected.json has no plain %s", c.definition)
			}
			data := w.mustCLI(t, "generate", "--project", w.exp.Project, "--source", c.source, "--connection", "disk", "--wait", "--return", "data")
			for _, p := range pipelinetest.Check([]byte(data), w.exp, d) {
				t.Errorf("--source %s: %s", c.source, p)
			}
		}
		d := w.exp.Definitions["task-9002"]
		data := w.mustCLI(t, "generate", "--project", w.exp.Project, "--source", "task_id=9002", "--completion", d.Completion,
			"--connection", "disk", "--wait", "--return", "data")
		for _, p := range pipelinetest.Check([]byte(data), w.exp, d) {
			t.Errorf("--source task_id=9002: %s", p)
		}
		// --formats: every format beside the document, each object
		// passing its reader and matching its check values.
		var multi pipeline.Record
		json.Unmarshal([]byte(w.mustCLI(t, "generate", "--project", w.exp.Project, "--source", "project", "--completion", "all",
			"--connection", "disk", "--formats", "coco,yolo,jsonl", "--wait", "--output", "json")), &multi)
		if multi.Status != pipeline.StatusComplete || len(multi.Formats) != 4 || multi.ContentHash != rec.ContentHash {
			t.Errorf("--formats coco,yolo,jsonl: %+v; want complete, four formats, the content of %d", multi, rec.ID)
		}
		named := map[string]pipelinetest.LatestFormat{}
		for name, o := range multi.Formats {
			named[name] = pipelinetest.LatestFormat{Key: o.Key, SHA256: o.SHA256, Bytes: o.Bytes, SkippedInstances: o.SkippedInstances}
		}
		for _, p := range pipelinetest.CheckFormats(t.Context(), w.svc.Bucket("disk"), named, []string{"diffgram", "coco", "yolo", "jsonl"}) {
			t.Errorf("--formats: %s", p)
		}
		code, _, errOut := w.cli(t, "generate", "--project", w.exp.Project, "--source", "project", "--connection", "disk", "--formats", "coco,yml")
		if code == 0 || !strings.Contains(errOut, `"yml"`) {
			t.Errorf("--formats coco,yml: exit %d, %q; want an error naming yml", code, errOut)
		}
		// The server's own checks come back as its errors.
		code, _, errOut = w.cli(t, "generate", "--project", w.exp.Project, "--source", "project", "--connection", "nowhere")
		if code != 1 || !strings.Contains(errOut, "(bad_request, HTTP 400)") {
			t.Errorf("unknown connection: exit %d, %q", code, errOut)
		}
		code, _, errOut = w.cli(t, "generate", "--project", w.exp.Project, "--source", "project", "--connection", "disk", "--completion", "done")
		if code != 1 || !strings.Contains(errOut, `completion "done"`) {
			t.Errorf("bad completion: exit %d, %q", code, errOut)
		}
		// A source that matches no file: nothing written, the reason as
		// the error.
		code, _, errOut = w.cli(t, "generate", "--project", w.exp.Project, "--source", "directory=Luckfril", "--connection", "disk", "--wait", "--return", "data")
		if code != 1 || !strings.Contains(errOut, "(empty_source, HTTP 422)") || !strings.Contains(errOut, `no directory "Luckfril"`) ||
			!strings.Contains(errOut, "Luckfrill (id 7)") {
			t.Errorf("empty ad-hoc source: exit %d, %q", code, errOut)
		}
		// exports list shows a definition's skipped attempt with its reason.
		out := w.mustCLI(t, "list", "--definition", "typo-directory")
		if !strings.Contains(out, "skipped") || !strings.Contains(out, `no directory "Luckfril" in project street-scenes`) {
			t.Errorf("exports list of an empty source:\n%s", out)
		}
	})

	t.Run("failed-export", func(t *testing.T) {
		// A file where the ad-hoc exports' folder goes: their commit fails.
		blocker := filepath.Join(w.bucketDir, strings.TrimSuffix(pipeline.AdhocPath, "/"))
		if err := os.RemoveAll(blocker); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blocker, []byte("not a folder"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(blocker)
		adhoc := []string{"--project", w.exp.Project, "--source", "project", "--connection", "disk"}

		code, out, errOut := w.cli(t, "generate", append(adhoc, "--wait", "--return", "data")...)
		if code != 1 || out != "" || !strings.Contains(errOut, "failed: ") || !strings.Contains(errOut, "(export_failed, HTTP 500)") {
			t.Errorf("generate --wait of a failing export: exit %d, %q, %q", code, out, errOut)
		}

		var pending pipeline.Record
		json.Unmarshal([]byte(w.mustCLI(t, "generate", append(adhoc, "--output", "json")...)), &pending)
		file := filepath.Join(t.TempDir(), "never.json")
		code, _, errOut = w.cli(t, "data", strconv.FormatInt(pending.ID, 10), "--wait", "--out", file)
		rec := w.record(t, pending.ID)
		if rec.Status != pipeline.StatusFailed || rec.StatusText == "" {
			t.Fatalf("the export did not fail: %+v", rec)
		}
		if want := "exportstream: export " + strconv.FormatInt(rec.ID, 10) + " failed: " + rec.StatusText + "\n"; code != 1 || !strings.HasSuffix(errOut, want) {
			t.Errorf("data --wait of a failed export: exit %d, %q, want it to end with %q", code, errOut, want)
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("data --wait of a failed export wrote %s", file)
		}
		noPartials(t, filepath.Dir(file))
	})

	t.Run("integrity", func(t *testing.T) {
		// An object changed in the bucket behind the record's back (same
		// length, one byte off): the download does not match the record's
		// sha256, and --out keeps what it held.
		rec := w.newest(t, w.fast)
		obj := filepath.Join(w.bucketDir, filepath.FromSlash(rec.Key))
		orig, err := os.ReadFile(obj)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(orig)
		bad[len(bad)/2] ^= 1
		if err := os.WriteFile(obj, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(obj, orig, 0o644)
		dir := t.TempDir()
		file := filepath.Join(dir, "kept.json")
		os.WriteFile(file, []byte("kept"), 0o644)
		id := strconv.FormatInt(rec.ID, 10)
		code, out, errOut := w.cli(t, "data", id, "--out", file)
		if code != 1 || out != "" || !strings.Contains(errOut, "the record says "+rec.SHA256) {
			t.Errorf("data of a changed object: exit %d, %q, %q", code, out, errOut)
		}
		if got, _ := os.ReadFile(file); string(got) != "kept" {
			t.Errorf("--out was replaced by a download that failed its check: %.60q", got)
		}
		noPartials(t, dir)
		code, _, errOut = w.cli(t, "data", id)
		if code != 1 || !strings.Contains(errOut, "sha256") {
			t.Errorf("data of a changed object to stdout: exit %d, %q", code, errOut)
		}
	})

	t.Run("errors", func(t *testing.T) {
		// A wrong token: the API's 401, and neither token shown.
		// The message names where the token comes from.
		const wrong = "n0t-the-t0ken-b3a7"
		code, out, errOut := cliRun(t, "exports", "list", "--server", w.server, "--token", wrong)
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "exportstream: missing or wrong bearer token") ||
			!strings.Contains(errOut, "(unauthorized, HTTP 401)") || !strings.Contains(errOut, "--token") ||
			strings.Count(errOut, "\n") != 1 {
			t.Errorf("wrong token: exit %d, %q, %q", code, out, errOut)
		}
		if strings.Contains(out+errOut, wrong) {
			t.Errorf("the wrong token is shown")
		}
		code, _, errOut = cliRun(t, "exports", "get", "1", "--server", w.server)
		if code != 1 || !strings.Contains(errOut, "(unauthorized, HTTP 401)") || !strings.Contains(errOut, "$EXPORTSTREAM_TOKEN") ||
			!strings.Contains(errOut, "--token") {
			t.Errorf("no token: exit %d, %q", code, errOut)
		}
		t.Setenv("EXPORTSTREAM_TOKEN", wrong)
		code, _, errOut = cliRun(t, "exports", "get", "1", "--server", w.server)
		if code != 1 || !strings.Contains(errOut, "(unauthorized, HTTP 401)") || !strings.Contains(errOut, "the token in $EXPORTSTREAM_TOKEN") {
			t.Errorf("a wrong $EXPORTSTREAM_TOKEN: exit %d, %q", code, errOut)
		}
		if strings.Contains(errOut, wrong) {
			t.Errorf("the wrong token is shown")
		}

		// An unknown export.
		for _, sub := range []string{"get", "url", "data"} {
			code, out, errOut := w.cli(t, sub, "99999999")
			if code != 1 || out != "" || errOut != "exportstream: no export 99999999 (not_found, HTTP 404)\n" {
				t.Errorf("%s of an unknown id: exit %d, %q, %q", sub, code, out, errOut)
			}
		}
		code, _, errOut = w.cli(t, "generate", "--definition", "nope")
		if code != 1 || !strings.Contains(errOut, "(not_found, HTTP 404)") {
			t.Errorf("unknown definition: exit %d, %q", code, errOut)
		}
		code, _, errOut = w.cli(t, "list", "--limit", "5000")
		if code != 1 || !strings.Contains(errOut, "(bad_request, HTTP 400)") {
			t.Errorf("limit beyond the API's: exit %d, %q", code, errOut)
		}
		// Not the API: a route that is no export.
		code, _, errOut = cliRun(t, "exports", "list", "--server", w.server+"/metrics", "--token", exportsToken)
		if code != 1 || !strings.Contains(errOut, "HTTP 404") {
			t.Errorf("a server that is not the API: exit %d, %q", code, errOut)
		}
	})

	t.Run("environment", func(t *testing.T) {
		t.Setenv("EXPORTSTREAM_SERVER", w.server+"/")
		t.Setenv("EXPORTSTREAM_TOKEN", exportsToken)
		code, out, errOut := cliRun(t, "exports", "get", strconv.FormatInt(all.Exports[0].ID, 10), "--output", "json")
		if code != 0 || !strings.Contains(out, `"id": `+strconv.FormatInt(all.Exports[0].ID, 10)) {
			t.Errorf("server and token from the environment: exit %d, %q, %q", code, out, errOut)
		}
		// The flags win.
		code, _, errOut = cliRun(t, "exports", "list", "--token", "other")
		if code != 1 || !strings.Contains(errOut, "(unauthorized, HTTP 401)") {
			t.Errorf("--token over $EXPORTSTREAM_TOKEN: exit %d, %q", code, errOut)
		}
	})
}

// TestExportsListDeleted: exports list --status deleted lists the
// exports retention (keep_last) deleted from the bucket, --status existing
// those still there, in pages, as JSON and as a table that says when each
// was deleted.
func TestExportsListDeleted(t *testing.T) {
	w := startExportsWorld(t)
	if w.kept == "" {
		t.Fatal("no definition with keep_last 1")
	}
	for range 2 {
		w.mustCLI(t, "generate", "--definition", w.kept, "--wait")
	}
	// What the records and the bucket say: the newest export of w.kept is
	// there, the older ones are marked deleted and gone.
	inBucket := func(key string) bool {
		_, err := os.Stat(filepath.Join(w.bucketDir, filepath.FromSlash(key)))
		return err == nil
	}
	var deleted, existing []int64
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var complete listJSON
		if err := json.Unmarshal(w.apiGet(t, "/api/v1/exports?status=complete&definition="+w.kept), &complete); err != nil {
			t.Fatal(err)
		}
		deleted, existing = nil, nil
		for _, r := range complete.Exports {
			if r.DeletedTime != nil && !inBucket(r.Key) {
				deleted = append(deleted, r.ID)
			} else if r.DeletedTime == nil && inBucket(r.Key) {
				existing = append(existing, r.ID)
			}
		}
		if len(deleted) >= 2 && len(existing) == 1 && len(deleted)+len(existing) == len(complete.Exports) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("retention did not delete the older exports of %s: %d deleted, %d there, of %d complete",
				w.kept, len(deleted), len(existing), len(complete.Exports))
		}
	}
	ids := func(l listJSON) []int64 {
		var out []int64
		for _, r := range l.Exports {
			out = append(out, r.ID)
		}
		return out
	}
	for _, c := range []struct {
		status string
		want   []int64
	}{{"deleted", deleted}, {"existing", existing}} {
		var got listJSON
		if err := json.Unmarshal([]byte(w.mustCLI(t, "list", "--definition", w.kept, "--status", c.status, "--output", "json")), &got); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), c.want) || got.Total != len(c.want) || got.NextBefore != 0 {
			t.Errorf("--status %s: %v (total %d, next_before %d), want %v", c.status, ids(got), got.Total, got.NextBefore, c.want)
		}
		// Page by page.
		var paged listJSON
		if err := json.Unmarshal([]byte(w.mustCLI(t, "list", "--definition", w.kept, "--status", c.status, "--limit", "1", "--all", "--output", "json")), &paged); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(paged), c.want) || paged.Total != len(c.want) {
			t.Errorf("--status %s --limit 1 --all: %v (total %d), want %v", c.status, ids(paged), paged.Total, c.want)
		}
		if len(c.want) > 1 {
			var first listJSON
			json.Unmarshal([]byte(w.mustCLI(t, "list", "--definition", w.kept, "--status", c.status, "--limit", "1", "--output", "json")), &first)
			if !slices.Equal(ids(first), c.want[:1]) || first.NextBefore != c.want[0] || first.Total != len(c.want) {
				t.Errorf("--status %s --limit 1: %v, next_before %d, total %d; want %v, %d, %d",
					c.status, ids(first), first.NextBefore, first.Total, c.want[:1], c.want[0], len(c.want))
			}
		}
	}
	// The table says when each was deleted.
	table := w.mustCLI(t, "list", "--definition", w.kept, "--status", "deleted")
	rows := strings.Split(strings.TrimSpace(table), "\n")[1:]
	if len(rows) != len(deleted) {
		t.Fatalf("--status deleted table: %d rows, want %d:\n%s", len(rows), len(deleted), table)
	}
	for _, row := range rows {
		if !strings.Contains(row, "deleted by retention at ") {
			t.Errorf("row %q does not say it was deleted", row)
		}
	}
	// Across definitions: every existing export is complete, not deleted.
	var all listJSON
	json.Unmarshal([]byte(w.mustCLI(t, "list", "--status", "existing", "--all", "--output", "json")), &all)
	if len(all.Exports) < len(w.exp.Definitions)-1 {
		t.Errorf("--status existing lists %d exports", len(all.Exports))
	}
	for _, r := range all.Exports {
		if r.Status != pipeline.StatusComplete || r.DeletedTime != nil || !inBucket(r.Key) {
			t.Errorf("--status existing lists export %d: %s, deleted %v", r.ID, r.Status, r.DeletedTime)
		}
	}
	// Any other status is refused, naming the ones there are.
	code, _, errOut := w.cli(t, "list", "--status", "gone")
	if code != 1 || !strings.Contains(errOut, "(bad_request, HTTP 400)") || !strings.Contains(errOut, "deleted") || !strings.Contains(errOut, "existing") {
		t.Errorf("--status gone: exit %d, %q", code, errOut)
	}
}

// TestExportsUsage: mistakes in the command line exit 2 before any
// request; help exits 0; an unreachable server exits 1.
func TestExportsUsage(t *testing.T) {
	// Nothing listens there: a case that sent a request would say so.
	t.Setenv("EXPORTSTREAM_SERVER", "http://127.0.0.1:1")
	t.Setenv("EXPORTSTREAM_TOKEN", exportsToken)

	for _, args := range [][]string{
		{"exports"},
		{"exports", "nope"},
		{"exports", "list", "--bogus"},
		{"exports", "list", "extra"},
		{"exports", "list", "--output", "yaml"},
		{"exports", "list", "--limit", "-1"},
		{"exports", "list", "--limit", "x"},
		{"exports", "list", "--server", "ftp://host"},
		{"exports", "list", "--server", "127.0.0.1:8080"},
		{"exports", "list", "--timeout", "0s"},
		{"exports", "get"},
		{"exports", "get", "abc"},
		{"exports", "get", "0"},
		{"exports", "get", "1", "2"},
		{"exports", "url"},
		{"exports", "data", "1", "--timeout", "soon"},
		{"exports", "generate"},
		{"exports", "generate", "--definition", "a", "--project", "p"},
		{"exports", "generate", "--definition", "a", "--connection", "c"},
		{"exports", "generate", "--project", "p", "--source", "project"},
		{"exports", "generate", "--project", "p", "--source", "folder=x", "--connection", "c"},
		{"exports", "generate", "--project", "p", "--source", "job_id=abc", "--connection", "c"},
		{"exports", "generate", "--project", "p", "--source", "directory=", "--connection", "c"},
		{"exports", "generate", "--project", "p", "--source", "project=no", "--connection", "c"},
		{"exports", "generate", "--definition", "a", "--return", "data"},
		{"exports", "generate", "--definition", "a", "--wait", "--return", "zip"},
		{"exports", "generate", "--definition", "a", "--wait", "--out", "f"},
	} {
		code, out, errOut := cliRun(t, args...)
		if code != 2 || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and a message", args, code, out, errOut)
		}
		if strings.Contains(errOut, "connection refused") {
			t.Errorf("%q: sent a request: %s", args, errOut)
		}
	}
	for _, args := range [][]string{{"exports", "help"}, {"exports", "--help"}} {
		code, out, _ := cliRun(t, args...)
		if code != 0 || !strings.Contains(out, "Exit status:") || !strings.Contains(out, "exports generate") {
			t.Errorf("%q: exit %d, %q", args, code, out)
		}
	}
	code, _, errOut := cliRun(t, "exports", "list", "-h")
	if code != 0 || !strings.Contains(errOut, "-definition") || strings.Contains(errOut, exportsToken) {
		t.Errorf("list -h: exit %d, %q", code, errOut)
	}
	if code, out, _ := cliRun(t, "help"); code != 0 || !strings.Contains(out, "exportstream exports list|get|generate|url|data") {
		t.Errorf("the main usage does not name the exports command: %q", out)
	}

	// Nothing listens: exit 1, the error says where.
	code, _, errOut = cliRun(t, "exports", "list")
	if code != 1 || !strings.HasPrefix(errOut, "exportstream: ") || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Errorf("unreachable server: exit %d, %q", code, errOut)
	}
}
