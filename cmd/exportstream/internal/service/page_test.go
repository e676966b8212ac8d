package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/exportstream/exportstream/pipeline"
)

// chromiumPath is Debian's chromium, which .ci/run installs at a pinned
// version.
const chromiumPath = "/usr/bin/chromium"

// chromium returns the browser's path. Without it the test fails in CI
// (CI=true) and is skipped, saying how to install it, elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the page test needs Chromium at %s, which .ci/run installs: %v", chromiumPath, err)
		}
		t.Skipf("Chromium is not installed (%v), so the export page is not tested: "+
			"apt-get install -y --no-install-recommends chromium (.ci/run pins the version CI uses)", err)
	}
	return chromiumPath
}

// artifactsDir is where the screenshots go: $EXPORTSTREAM_ARTIFACTS, else
// <repository root>/.artifacts/page.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EXPORTSTREAM_ARTIFACTS")
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		root := ""
		if ok && filepath.IsAbs(file) {
			root = moduleRoot(filepath.Dir(file))
		}
		if root == "" { // built with -trimpath: from the package's folder
			wd, err := os.Getwd()
			if err != nil {
				t.Fatal(err)
			}
			root = moduleRoot(wd)
		}
		if root == "" {
			t.Fatal("cannot find the repository root (go.mod) for the screenshots; set EXPORTSTREAM_ARTIFACTS")
		}
		dir = filepath.Join(root, ".artifacts", "page")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// moduleRoot is the nearest folder at or above dir with a go.mod.
func moduleRoot(dir string) string {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// syncBuffer collects the browser's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pageSession is one headless Chromium tab on the export page.
type pageSession struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
	shots     int
	downloads string // the browser saves downloads here, named by their GUIDs

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// openBrowser starts Chromium for the rest of the test and returns a tab.
// The browser is gone, and its console checked, when the test ends: an
// uncaught exception or a security (CSP) message fails the test.
func openBrowser(t *testing.T, execPath string) *pageSession {
	out := &syncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900), // a laptop screen
		chromedp.CombinedOutput(out),
	)
	// Not t.Context(): the browser must outlive the test function until
	// its cleanup, which runs before the service's.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	p := &pageSession{t: t, ctx: ctx, downloads: t.TempDir()}

	messages := chromedp.Console(ctx) // starts the browser
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		wg.Wait()
		if t.Failed() {
			t.Logf("browser output:\n%s", tail(out.String(), 4000))
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.console {
			if m.IsException() || m.Source == "security" {
				t.Errorf("page console: %s (%s:%d)", m, m.URL, m.Line+1)
			} else if testing.Verbose() {
				t.Logf("page console: %s (%s)", m, m.URL)
			}
		}
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v\n%s", err, tail(out.String(), 4000))
	}
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior:      browser.SetDownloadBehaviorBehaviorAllowAndName,
		DownloadPath:  p.downloads,
		EventsEnabled: new(true),
	})
	if err != nil {
		t.Fatalf("allow downloads: %v", err)
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// do runs actions, failing the test on an error.
func (p *pageSession) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](p *pageSession, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is truthy in the page.
func (p *pageSession) waitFor(what, expr string, timeout time.Duration) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		p.fail("waiting for %s: %v", what, err)
	}
}

// fail saves a screenshot and what the page says, and ends the test.
func (p *pageSession) fail(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if p.ctx.Err() == nil {
		p.screenshot("failure")
		if text, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](
			`[document.getElementById("message")?.textContent, document.getElementById("notice")?.textContent].filter(Boolean).join(" | ")`)); err == nil && text != "" {
			msg += "\npage says: " + text
		}
	}
	p.t.Fatal(msg)
}

// screenshot saves a full-page PNG in the artifacts folder.
func (p *pageSession) screenshot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p.shots++
	path := filepath.Join(p.artifacts, fmt.Sprintf("page-%d-%s.png", p.shots, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p.t.Logf("screenshot: %s", path)
}

// download clicks the element and returns the file the browser saved.
func (p *pageSession) download(sel string) (data []byte, url string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	began := chromedp.BrowserEvents(ctx, browser.DownloadWillBegin)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	p.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	var guid string
	for ev, err := range began {
		if err != nil {
			p.fail("no download began after clicking %s: %v", sel, err)
		}
		guid, url = ev.GUID, ev.URL
		break
	}
	for ev, err := range progress {
		if err != nil {
			p.fail("download %s did not complete: %v", url, err)
		}
		if ev.GUID != guid {
			continue
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			p.fail("download of %s was canceled", url)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			break
		}
	}
	data, err := os.ReadFile(filepath.Join(p.downloads, guid))
	if err != nil {
		p.fail("downloaded file: %v", err)
	}
	return data, url
}

// selectOption chooses a <select>'s option as a user does: the value,
// then a change event. It fails when there is no such option.
func selectOption(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const s = document.querySelector(%s);
		if (![...s.options].some(o => o.value === %s)) throw new Error("no option " + %[2]s + " in " + %[1]s);
		s.value = %[2]s;
		s.dispatchEvent(new Event("change", {bubbles: true}));
	})()`, jsString(sel), jsString(value)))
}

// pageRow is what the page shows for a definition.
type pageRow struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	Status    string `json:"status"`
	Files     string `json:"files"`
	Instances string `json:"instances"`
	Bytes     string `json:"bytes"`
	Time      string `json:"time"`
}

const readRows = `[...document.querySelectorAll("tr[data-definition]")].map(tr => ({
	name: tr.dataset.definition,
	id: tr.querySelector("[data-field=id]").textContent,
	status: tr.querySelector("[data-field=status]").textContent,
	files: tr.querySelector("[data-field=files]").dataset.value,
	instances: tr.querySelector("[data-field=instances]").dataset.value,
	bytes: tr.querySelector("[data-field=bytes]").dataset.value,
	time: tr.querySelector("[data-field=time] time")?.getAttribute("datetime") ?? "",
}))`

// rowSel selects a definition's row.
func rowSel(name string) string { return `tr[data-definition=` + strconv.Quote(name) + `]` }

// jsString quotes s for JavaScript.
func jsString(s string) string { return strconv.Quote(s) }

func wantRecordShown(t *testing.T, row pageRow, rec *pipeline.Record) {
	t.Helper()
	want := pageRow{Name: rec.Name, ID: strconv.FormatInt(rec.ID, 10), Status: rec.Status,
		Files: strconv.Itoa(rec.FileListLength), Instances: strconv.Itoa(rec.InstanceCount),
		Bytes: strconv.FormatInt(rec.Bytes, 10), Time: row.Time}
	at := rec.CreatedTime
	if rec.CompletedTime != nil {
		at = *rec.CompletedTime
	}
	if shown, err := time.Parse(time.RFC3339Nano, row.Time); err != nil || !shown.Equal(at) {
		t.Errorf("definition %s shows time %q, want %v", rec.Name, row.Time, at)
	}
	if row != want {
		t.Errorf("definition %s: the page shows %+v, want %+v", rec.Name, row, want)
	}
}

// TestPage drives the export page in headless Chromium against the real
// service (token required): it asks for the token, shows every
// definition's latest export, generates one and follows it to complete,
// downloads it byte for byte, expands a history, runs an ad-hoc export
// and shows the dead letters. Screenshots go to the artifacts folder.
func TestPage(t *testing.T) {
	execPath := chromium(t)
	svc, c, exp, _ := startAPIService(t)
	start := time.Now()
	p := openBrowser(t, execPath)
	p.artifacts = artifactsDir(t)
	t.Logf("browser up in %v", time.Since(start).Round(time.Millisecond))

	type definition struct {
		Name       string
		Connection string
		Latest     *pipeline.Record
		Skipped    *pipeline.Record
	}
	var defs struct{ Definitions []definition }
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	if len(defs.Definitions) != len(exp.Definitions) {
		t.Fatalf("%d definitions, want %d", len(defs.Definitions), len(exp.Definitions))
	}
	var dl struct {
		Count   int
		Entries []struct{ Reason string }
	}
	c.json("GET", "/api/v1/deadletters?limit=10", nil, http.StatusOK, &dl)
	if dl.Count != exp.Poison || exp.Poison == 0 {
		t.Fatalf("API: %d dead letters, want %d (more than none)", dl.Count, exp.Poison)
	}

	// The page asks for the token, and then shows every definition with
	// its latest export, and the dead letters.
	p.do("open the page", chromedp.Navigate(c.base+"/"))
	p.waitFor("the token field", `!document.getElementById("auth").hidden`, 10*time.Second)
	p.do("give the token",
		chromedp.SendKeys(chromedp.CSS(`[data-testid=token-input]`), testToken),
		chromedp.Click(chromedp.CSS(`[data-testid=token-submit]`)))
	p.waitFor("every definition's row",
		fmt.Sprintf(`document.querySelectorAll("tr[data-definition] [data-field=status].badge").length === %d`, len(defs.Definitions)),
		10*time.Second)
	p.waitFor("the dead-letter count", `document.getElementById("deadletter-count").dataset.count !== undefined`, 10*time.Second)
	rows := eval[[]pageRow](p, readRows)
	if len(rows) != len(defs.Definitions) {
		t.Fatalf("the page shows %d definitions, want %d", len(rows), len(defs.Definitions))
	}
	for i, d := range defs.Definitions {
		if rows[i].Name != d.Name {
			t.Errorf("row %d is %q, want %q", i, rows[i].Name, d.Name)
			continue
		}
		if exp.Definitions[d.Name].NoExport {
			// No export: the row shows the skipped attempt and why.
			if d.Latest != nil || d.Skipped == nil {
				t.Fatalf("definition %s: latest %+v, skipped %+v; want only a skipped attempt", d.Name, d.Latest, d.Skipped)
			}
			wantRecordShown(t, rows[i], d.Skipped)
			text := eval[string](p, `document.querySelector(`+jsString(rowSel(d.Name)+` [data-field=status-text]`)+`)?.textContent ?? ""`)
			if !strings.Contains(text, d.Skipped.StatusText) || !strings.Contains(text, `no directory "Luckfril"`) {
				t.Errorf("definition %s shows %q, want the skipped reason %q", d.Name, text, d.Skipped.StatusText)
			}
			continue
		}
		if d.Latest == nil {
			t.Fatalf("definition %s has no export after convergence", d.Name)
		}
		wantRecordShown(t, rows[i], d.Latest)
	}
	if token := eval[string](p, `sessionStorage.getItem("exportstream.token") ?? ""`); token != testToken {
		t.Errorf("the token is not kept in sessionStorage: %q", token)
	}
	if !eval[bool](p, `document.getElementById("auth").hidden`) {
		t.Error("the token form stays after the token was accepted")
	}
	p.screenshot("loaded")

	// Generate: a new export of the first definition, followed until it
	// is complete.
	target := defs.Definitions[0]
	prev := target.Latest.ID
	genStart := time.Now()
	// Record every status the row shows, to see it follow the export.
	p.do("watch the row", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const tr = document.querySelector(%s);
		window.seenStatuses = [];
		new MutationObserver(() => {
			const s = tr.dataset.exportId + " " + tr.querySelector("[data-field=status]").textContent;
			if (window.seenStatuses.at(-1) !== s) window.seenStatuses.push(s);
		}).observe(tr, {subtree: true, childList: true, characterData: true, attributes: true});
	})()`, jsString(rowSel(target.Name)))))
	p.do("click Generate", chromedp.Click(chromedp.CSS(rowSel(target.Name)+` button[data-action=generate]`)))
	p.waitFor("the generated export to complete", fmt.Sprintf(`(() => {
		const tr = document.querySelector(%s);
		return Number(tr.dataset.exportId) > %d && tr.querySelector("[data-field=status]").textContent === "complete";
	})()`, jsString(rowSel(target.Name)), prev), 60*time.Second)
	t.Logf("generate → complete in the page: %v", time.Since(genStart).Round(time.Millisecond))
	var row pageRow
	for _, r := range eval[[]pageRow](p, readRows) {
		if r.Name == target.Name {
			row = r
		}
	}
	id, _ := strconv.ParseInt(row.ID, 10, 64)
	var rec pipeline.Record
	c.json("GET", "/api/v1/exports/"+row.ID, nil, http.StatusOK, &rec)
	if rec.Name != target.Name || rec.Status != pipeline.StatusComplete || rec.Trigger != pipeline.TriggerManual || id <= prev {
		t.Fatalf("the page shows export %s; the API has %+v", row.ID, rec)
	}
	wantRecordShown(t, row, &rec)
	seen := eval[[]string](p, `window.seenStatuses`)
	if !slices.Contains(seen, row.ID+" pending") && !slices.Contains(seen, row.ID+" generating") && !slices.Contains(seen, row.ID+" uploading") {
		t.Errorf("the row showed %q: not export %s in progress before it completed", seen, row.ID)
	}
	if eval[bool](p, `document.querySelector(`+jsString(rowSel(target.Name)+` button[data-action=generate]`)+`).disabled`) {
		t.Error("Generate stays disabled after the export completed")
	}
	p.screenshot("generated")

	// Download: the browser saves the export; it is the bucket's object.
	got, url := p.download(rowSel(target.Name) + ` button[data-action=download]`)
	want := bucketBytes(t, svc, rec.Key)
	if !bytes.Equal(got, want) {
		t.Errorf("downloaded %d bytes from %s, which differ from the bucket's %d bytes of %s", len(got), url, len(want), rec.Key)
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != rec.SHA256 {
		t.Errorf("the download's sha256 differs from the record's %s", rec.SHA256)
	}
	if !strings.HasPrefix(url, c.base+"/files/"+rec.Connection+"/") {
		t.Errorf("the page downloaded %s, not a signed link of the service", url)
	}
	if shown := eval[string](p, `document.querySelector("[data-testid=download-link]")?.href ?? ""`); shown != url {
		t.Errorf("the page shows download link %q, the browser downloaded %q", shown, url)
	}

	// History: the definition's exports, newest first, as the API lists
	// them.
	var hist struct {
		Exports []pipeline.Record
		Total   int
	}
	c.json("GET", "/api/v1/exports?limit=20&definition="+target.Name, nil, http.StatusOK, &hist)
	p.do("click History", chromedp.Click(chromedp.CSS(rowSel(target.Name)+` button[data-action=history]`)))
	histSel := `tr[data-history-for=` + strconv.Quote(target.Name) + `]`
	p.waitFor("the history", fmt.Sprintf(`document.querySelectorAll(%s).length === %d`,
		jsString(histSel+` tbody tr[data-export-id]`), len(hist.Exports)), 10*time.Second)
	shownIDs := eval[[]string](p, fmt.Sprintf(`[...document.querySelectorAll(%s)].map(tr => tr.dataset.exportId)`,
		jsString(histSel+` tbody tr[data-export-id]`)))
	var wantIDs []string
	for _, r := range hist.Exports {
		wantIDs = append(wantIDs, strconv.FormatInt(r.ID, 10))
	}
	if !slices.Equal(shownIDs, wantIDs) || len(wantIDs) < 2 || wantIDs[0] != row.ID {
		t.Errorf("history shows exports %v, the API lists %v (newest %s first)", shownIDs, wantIDs, row.ID)
	}
	if expanded := eval[string](p, `document.querySelector(`+jsString(rowSel(target.Name)+` button[data-action=history]`)+`).getAttribute("aria-expanded")`); expanded != "true" {
		t.Errorf("History button aria-expanded=%q", expanded)
	}

	// Ad hoc: the whole project, every file (complete-only off).
	connection := target.Connection
	p.do("fill the ad-hoc form",
		chromedp.SetValue(chromedp.CSS(`[data-testid=adhoc-project]`), exp.Project),
		selectOption(`[data-testid=adhoc-source-kind]`, "project"),
		selectOption(`[data-testid=adhoc-connection]`, connection),
		chromedp.Click(chromedp.CSS(`[data-testid=adhoc-complete-only]`)))
	if !eval[bool](p, `document.querySelector("[data-testid=adhoc-source-value]").disabled`) {
		t.Error("the source value stays enabled for a whole-project source")
	}
	if eval[bool](p, `document.querySelector("[data-testid=adhoc-complete-only]").checked`) {
		t.Fatal("complete-only is still on after a click")
	}
	p.do("submit the ad-hoc form", chromedp.Click(chromedp.CSS(`[data-testid=adhoc-submit]`)))
	p.waitFor("the ad-hoc export to complete", `(() => {
		const box = document.querySelector("[data-testid=adhoc-result]");
		return !box.hidden && box.querySelector("[data-field=status]")?.textContent === "complete";
	})()`, 60*time.Second)
	adhocID := eval[string](p, `document.querySelector("[data-testid=adhoc-result]").dataset.exportId`)
	var adhoc pipeline.Record
	c.json("GET", "/api/v1/exports/"+adhocID, nil, http.StatusOK, &adhoc)
	if adhoc.Name != pipeline.AdhocName || adhoc.Completion != "all" || adhoc.Project != exp.Project ||
		adhoc.Source != "project" || adhoc.Connection != connection || adhoc.Status != pipeline.StatusComplete {
		t.Errorf("ad-hoc export from the page: %+v, want a complete export of project %s, all files, on %s", adhoc, exp.Project, connection)
	}
	if files := eval[string](p, `document.querySelector("[data-testid=adhoc-result] [data-field=files]").dataset.value`); files != strconv.Itoa(adhoc.FileListLength) {
		t.Errorf("the ad-hoc result shows %s files, the record has %d", files, adhoc.FileListLength)
	}

	// An ad-hoc source that matches no file: nothing is written, and the
	// page says why.
	p.do("ask for a directory that does not exist",
		selectOption(`[data-testid=adhoc-source-kind]`, "directory"),
		chromedp.SetValue(chromedp.CSS(`[data-testid=adhoc-source-value]`), "Luckfril"),
		chromedp.Click(chromedp.CSS(`[data-testid=adhoc-submit]`)))
	p.waitFor("the empty-source message", `!document.getElementById("message").hidden &&
		document.getElementById("message").textContent.includes('no directory "Luckfril"')`, 10*time.Second)
	if msg := eval[string](p, `document.getElementById("message").textContent`); !strings.Contains(msg, "Luckfrill (id 7)") {
		t.Errorf("the page's message for an empty ad-hoc source: %q, want it to name the directories there are", msg)
	}

	// Dead letters: the API's count, and its newest reasons, as text.
	if shown := eval[string](p, `document.getElementById("deadletter-count").textContent`); shown != strconv.Itoa(dl.Count) {
		t.Errorf("the page shows %s dead letters, the API %d", shown, dl.Count)
	}
	reasons := eval[[]string](p, `[...document.querySelectorAll("#deadletter-list [data-field=reason]")].map(e => e.textContent)`)
	var wantReasons []string
	for _, e := range dl.Entries {
		wantReasons = append(wantReasons, e.Reason)
	}
	if !slices.Equal(reasons, wantReasons) {
		t.Errorf("the page shows dead-letter reasons %q, the API %q", reasons, wantReasons)
	}
	p.screenshot("history-adhoc")

	// A reload in the same tab keeps the token: no question asked.
	p.do("reload", chromedp.Reload())
	p.waitFor("the rows after a reload", `document.querySelectorAll("tr[data-definition] [data-field=status].badge").length > 0`, 10*time.Second)
	if !eval[bool](p, `document.getElementById("auth").hidden`) {
		t.Error("the page asks for the token again after a reload")
	}
	t.Logf("page test: %v in the browser", time.Since(start).Round(time.Millisecond))
}
