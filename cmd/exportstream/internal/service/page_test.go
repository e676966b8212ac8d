package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/exportstream/exportstream/api"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline"
)

// chromiumPath is Debian's chromium, which .ci/run installs at a pinned
// version.
const chromiumPath = "/usr/bin/chromium"

// chromium returns the browser's path. Without it the test fails in CI
// (CI=true) and is skipped, saying how to install it, elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("a browser, left out by -short")
	}
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
	want := pageRow{Name: rec.Name, ID: strconv.FormatInt(rec.ID, 10), Status: string(rec.Status),
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

// pageTimeZone is the time zone the browser runs in: not UTC, and with a
// half-hour offset and no daylight saving time, so the page's times can
// be checked exactly.
const pageTimeZone = "Asia/Kolkata"

var pageZone = time.FixedZone("IST", 5*3600+30*60)

// shownTime is what the page shows of a time: the clock time in the
// browser's zone with the zone's name, and how long ago it was.
type shownTime struct {
	Datetime string `json:"datetime"`
	Text     string `json:"text"`
	Ago      string `json:"ago"`
}

// readTime reads the first time under sel.
func readTime(p *pageSession, sel string) shownTime {
	p.t.Helper()
	return eval[shownTime](p, fmt.Sprintf(`(() => {
		const e = document.querySelector(%s);
		const t = e?.querySelector("time");
		return {datetime: t?.getAttribute("datetime") ?? "", text: (t?.textContent ?? "").replace(/[\u202f\u00a0]/g, " "),
			ago: e?.querySelector(".ago")?.textContent ?? ""};
	})()`, jsString(sel)))
}

var agoPattern = regexp.MustCompile(`^(\d+) (s|min|h|d) ago$`)

// wantTimeShown checks that the page shows at in the browser's zone, with
// its name, and how long ago it was.
func wantTimeShown(t *testing.T, what string, shown shownTime, at time.Time) {
	t.Helper()
	local := at.In(pageZone)
	wantText := local.Format("Jan 2, 2006, 03:04:05 PM") + " GMT+5:30"
	if shown.Text != wantText {
		t.Errorf("%s: the page shows %q, want %q (%s)", what, shown.Text, wantText, pageTimeZone)
	}
	m := agoPattern.FindStringSubmatch(shown.Ago)
	if m == nil {
		t.Errorf("%s: %q does not say how long ago", what, shown.Ago)
		return
	}
	n, _ := strconv.Atoi(m[1])
	unit := map[string]time.Duration{"s": time.Second, "min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	ago := time.Since(at)
	if shownAgo := time.Duration(n) * unit; shownAgo > ago+2*time.Second || shownAgo+unit+2*time.Second < ago {
		t.Errorf("%s: the page says %q, it was %v ago", what, shown.Ago, ago.Round(time.Second))
	}
}

// nothingVisible is true when the page shows no table and no data panel.
const nothingVisible = `[...document.querySelectorAll("table, #content, [data-testid=events], [data-testid=deadletter-list]")].every(e => !e.checkVisibility())`

// readChart reads a definition's chart: its series' values, oldest first.
func readChart(p *pageSession, name string) map[string]string {
	p.t.Helper()
	return eval[map[string]string](p, fmt.Sprintf(`Object.fromEntries([...document.querySelectorAll(%s)].map(g => [g.dataset.series, g.dataset.values]))`,
		jsString(rowSel(name)+` [data-field=chart] svg.chart g[data-series]`)))
}

// wantChart waits until a definition's chart shows its complete exports as
// the API lists them (the newest 30, oldest first), each series one
// point per export.
func wantChart(t *testing.T, p *pageSession, c apiClient, name string) int {
	t.Helper()
	var recs struct {
		Exports []pipeline.Record
		Total   int
	}
	c.json("GET", "/api/v1/exports?status=complete&limit=30&definition="+name, nil, http.StatusOK, &recs)
	if len(recs.Exports) == 0 {
		t.Fatalf("definition %s has no complete export", name)
	}
	slices.Reverse(recs.Exports)
	join := func(f func(r pipeline.Record) int64) string {
		var s []string
		for _, r := range recs.Exports {
			s = append(s, strconv.FormatInt(f(r), 10))
		}
		return strings.Join(s, ",")
	}
	want := map[string]string{
		"files":     join(func(r pipeline.Record) int64 { return int64(r.FileListLength) }),
		"instances": join(func(r pipeline.Record) int64 { return int64(r.InstanceCount) }),
		"size":      join(func(r pipeline.Record) int64 { return r.Bytes }),
	}
	p.waitFor("the chart of "+name, fmt.Sprintf(`document.querySelector(%s)?.dataset.exports === %q`,
		jsString(rowSel(name)+` svg.chart`), strconv.Itoa(len(recs.Exports))), 15*time.Second)
	if got := readChart(p, name); !maps.Equal(got, want) {
		t.Errorf("the chart of %s shows %v, the API's exports are %v", name, got, want)
	}
	// One point per export in each line, the last one marked.
	points := eval[[]int](p, fmt.Sprintf(`[...document.querySelectorAll(%s)].map(l => l.getAttribute("points").trim().split(/\s+/).length)`,
		jsString(rowSel(name)+` svg.chart polyline`)))
	if len(points) != 3 || slices.ContainsFunc(points, func(n int) bool { return n != len(recs.Exports) }) {
		t.Errorf("the chart of %s draws %v points per line, want 3 lines of %d", name, points, len(recs.Exports))
	}
	return len(recs.Exports)
}

// historyShown is what an open history shows.
type historyShown struct {
	IDs      []string `json:"ids"`
	Deleted  []string `json:"deleted"`
	Range    string   `json:"range"`
	Newer    bool     `json:"newer"` // the Newer button is enabled
	Older    bool     `json:"older"`
	Disabled []string `json:"disabledDownloads"`
}

func readHistory(p *pageSession, name string) historyShown {
	p.t.Helper()
	return eval[historyShown](p, fmt.Sprintf(`(() => {
		const h = document.querySelector(%s);
		const rows = [...h.querySelectorAll("tbody tr[data-export-id]")];
		return {
			ids: rows.map(tr => tr.dataset.exportId),
			deleted: rows.filter(tr => tr.dataset.deleted === "true" && tr.classList.contains("deleted") &&
				tr.querySelector("[data-field=deleted]")?.textContent === "deleted").map(tr => tr.dataset.exportId),
			range: h.querySelector("[data-field=range]")?.textContent ?? "",
			newer: !h.querySelector("[data-action=history-newer]").disabled,
			older: !h.querySelector("[data-action=history-older]").disabled,
			disabledDownloads: rows.filter(tr => tr.querySelector("button[data-action=download]").disabled).map(tr => tr.dataset.exportId),
		};
	})()`, jsString(`tr[data-history-for=`+strconv.Quote(name)+`]`)))
}

// wantHistoryPage checks an open history page against the API's page
// (both read again until they agree: retention may mark an export deleted
// in between) and returns the API's cursor of the next page.
func wantHistoryPage(t *testing.T, p *pageSession, c apiClient, name, query string, from int) (nextBefore int64) {
	t.Helper()
	var want, got historyShown
	deadline := time.Now().Add(10 * time.Second)
	for {
		var page struct {
			Exports    []pipeline.Record
			Total      int
			NextBefore int64 `json:"next_before"`
		}
		c.json("GET", "/api/v1/exports?limit=20&definition="+name+query, nil, http.StatusOK, &page)
		want = historyShown{Range: fmt.Sprintf("%d–%d of %d", from, from+len(page.Exports)-1, page.Total),
			Newer: from > 1, Older: page.NextBefore != 0, IDs: []string{}, Deleted: []string{}, Disabled: []string{}}
		for _, r := range page.Exports {
			id := strconv.FormatInt(r.ID, 10)
			want.IDs = append(want.IDs, id)
			if r.DeletedTime != nil {
				want.Deleted = append(want.Deleted, id)
			}
			if r.DeletedTime != nil || r.Status != pipeline.StatusComplete {
				want.Disabled = append(want.Disabled, id)
			}
		}
		nextBefore = page.NextBefore
		got = readHistory(p, name)
		if reflect.DeepEqual(got, want) {
			return nextBefore
		}
		if time.Now().After(deadline) {
			t.Errorf("history of %s: the page shows %+v, the API %+v", name, got, want)
			return nextBefore
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPage drives the export page in headless Chromium against the real
// service (token required): it asks for the token with nothing behind
// it, says how current the exports are, shows every definition's latest
// export and a chart of its exports, generates one and follows it to
// complete, downloads it byte for byte (and the banner clears), pages
// through a history with deleted exports marked, runs ad-hoc exports
// (all files, incomplete files), shows and redrives the dead letters,
// follows a new event, and fits a phone's width. Times show in the
// browser's zone with how long ago. Screenshots go to the artifacts
// folder.
func TestPage(t *testing.T) {
	execPath := chromium(t)
	var keepLastOf string
	svc, c, exp, cfg := startAPIService(t, addWaitingDefinition, func(cfg *config.Config) {
		// The first definition keeps its newest 3 exports: older ones are
		// deleted, and the history marks them.
		keepLastOf = cfg.Exports[0].Name
		cfg.Exports[0].KeepLast = 3
	})
	js := streamJS(t, svc)
	start := time.Now()
	p := openBrowser(t, execPath)
	p.artifacts = artifactsDir(t)
	t.Logf("browser up in %v", time.Since(start).Round(time.Millisecond))
	if _, err := chromedp.Call(p.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: pageTimeZone}); err != nil {
		t.Fatalf("time zone: %v", err)
	}
	if _, err := chromedp.Call(p.ctx, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: "en-US"}); err != nil {
		t.Fatalf("locale: %v", err)
	}

	type definition struct {
		Name       string
		Connection string
		Latest     *pipeline.Record
		Skipped    *pipeline.Record
	}
	var defs struct{ Definitions []definition }
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	if len(defs.Definitions) != len(exp.Definitions)+1 {
		t.Fatalf("%d definitions, want %d", len(defs.Definitions), len(exp.Definitions)+1)
	}
	var dl struct {
		Count   int
		Entries []struct {
			Sequence        uint64
			Reason          string
			OriginalSubject string `json:"original_subject"`
		}
	}
	c.json("GET", "/api/v1/deadletters?limit=10", nil, http.StatusOK, &dl)
	if dl.Count != exp.Poison || exp.Poison == 0 {
		t.Fatalf("API: %d dead letters, want %d (more than none)", dl.Count, exp.Poison)
	}
	var st apiStatus
	waitStatus := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
			if ok() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("API status: %s: %+v", what, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitStatus("nothing left to apply", func() bool { return st.Events.Backlog != nil && *st.Events.Backlog == 0 })

	// The page asks for the token, with nothing behind the question.
	p.do("open the page", chromedp.Navigate(c.base+"/"))
	p.waitFor("the token field", `!document.getElementById("auth").hidden`, 30*time.Second)
	if !eval[bool](p, nothingVisible) {
		t.Error("tables or panels show behind the token form")
	}
	p.screenshot("sign-in")
	p.do("give the token",
		chromedp.SendKeys(chromedp.CSS(`[data-testid=token-input]`), testToken),
		chromedp.Click(chromedp.CSS(`[data-testid=token-submit]`)))
	exported := 0
	for _, d := range defs.Definitions {
		if d.Latest != nil || d.Skipped != nil {
			exported++
		}
	}
	p.waitFor("every definition's row",
		fmt.Sprintf(`document.querySelectorAll("tr[data-definition]").length === %d && document.querySelectorAll("tr[data-definition] [data-field=status].badge").length === %d`,
			len(defs.Definitions), exported), 10*time.Second)
	p.waitFor("the dead-letter count", `document.getElementById("deadletter-count").dataset.count !== undefined`, 30*time.Second)
	if !eval[bool](p, `document.getElementById("definitions").checkVisibility() && document.getElementById("auth").hidden`) {
		t.Error("the definitions do not show after the token was accepted")
	}
	rows := eval[[]pageRow](p, readRows)
	if len(rows) != len(defs.Definitions) {
		t.Fatalf("the page shows %d definitions, want %d", len(rows), len(defs.Definitions))
	}
	for i, d := range defs.Definitions {
		if rows[i].Name != d.Name {
			t.Errorf("row %d is %q, want %q", i, rows[i].Name, d.Name)
			continue
		}
		if d.Name == waitingDefinition {
			if d.Latest != nil || d.Skipped != nil || rows[i].Status != "no export yet" {
				t.Errorf("definition %s: latest %+v, the page shows %q; want no export yet", d.Name, d.Latest, rows[i].Status)
			}
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
		// The example's links are copied as received: the row says when
		// the newest export's expire (its media_links_expire_at).
		links := eval[struct{ Expires, Text string }](p, `(() => { const e = document.querySelector(`+
			jsString(rowSel(d.Name)+` [data-field=media-links]`)+`); return {expires: e.hidden ? "" : e.dataset.expiresAt, text: e.textContent}; })()`)
		if at := d.Latest.MediaLinksExpireAt; at == nil {
			t.Errorf("definition %s: the newest export has no media_links_expire_at (the example's links carry expiries)", d.Name)
		} else if shown, err := time.Parse(time.RFC3339, links.Expires); err != nil || !shown.Equal(*at) ||
			!strings.HasPrefix(links.Text, "Media links copied as received; the newest export's expire ") {
			t.Errorf("definition %s: the page shows links expiring %q (%q), want %v", d.Name, links.Expires, links.Text, *at)
		}
	}
	if token := eval[string](p, `sessionStorage.getItem("exportstream.token") ?? ""`); token != testToken {
		t.Errorf("the token is not kept in sessionStorage: %q", token)
	}
	if !eval[bool](p, `document.getElementById("auth").hidden`) {
		t.Error("the token form stays after the token was accepted")
	}

	// How current the exports are: as the API says.
	type freshnessShown struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		Pending string `json:"pending"`
		Newest  string `json:"newest"`
		Text    string `json:"text"`
	}
	readFreshness := func() []freshnessShown {
		t.Helper()
		return eval[[]freshnessShown](p, `[...document.querySelectorAll("tr[data-definition]")].map(tr => {
			const f = tr.querySelector("[data-field=freshness]");
			return {name: tr.dataset.definition, state: f.dataset.state, pending: f.dataset.pending ?? "",
				newest: f.dataset.newestEvent ?? "", text: f.querySelector(".fresh")?.textContent ?? ""};
		})`)
	}
	wantFreshness := func() {
		t.Helper()
		byName := map[string]freshnessShown{}
		for _, f := range readFreshness() {
			byName[f.Name] = f
		}
		for _, f := range st.Definitions {
			got := byName[f.Name]
			want := freshnessShown{Name: f.Name, State: "current", Pending: "0", Text: "up to date"}
			if !f.UpToDate {
				want = freshnessShown{Name: f.Name, State: "pending", Pending: strconv.Itoa(f.PendingEvents),
					Newest: strconv.FormatUint(f.NewestEvent, 10), Text: fmt.Sprintf("%d events pending", f.PendingEvents)}
			}
			if got != want {
				t.Errorf("definition %s: the page shows %+v, want %+v", f.Name, got, want)
			}
		}
	}
	c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
	lastSeq := strconv.FormatUint(st.Events.LastAppliedSequence, 10)
	p.waitFor("the last event applied", fmt.Sprintf(`document.querySelector("#events-last [data-field=sequence]")?.dataset.value === %q`, lastSeq), 30*time.Second)
	if got := eval[string](p, `document.querySelector("#events-last [data-field=sequence]").textContent`); got != "#"+lastSeq {
		t.Errorf("the page shows last event %q, the API #%s", got, lastSeq)
	}
	wantTimeShown(t, "the last event applied", readTime(p, "#events-last"), *st.Events.LastAppliedTime)
	if got := eval[string](p, `document.getElementById("events-backlog").dataset.value`); got != "0" {
		t.Errorf("the page shows a backlog of %q, the API none", got)
	}
	_, waitingBefore, _, _ := st.freshness(waitingDefinition)
	if waitingBefore < 1 {
		t.Fatalf("API: %s has %d events pending, want some", waitingDefinition, waitingBefore)
	}
	wantFreshness()
	// Each connection's health, as the status says it.
	var health struct{ Connections []api.Check }
	c.json("GET", "/api/v1/status", nil, http.StatusOK, &health)
	var wantConns []string
	for _, cn := range health.Connections {
		wantConns = append(wantConns, fmt.Sprintf("%s=%t", cn.Name, cn.OK))
	}
	if len(wantConns) == 0 {
		t.Fatal("GET /api/v1/status lists no connection")
	}
	if got := eval[[]string](p, `[...document.querySelectorAll("#events-connections [data-connection]")].map(e => e.dataset.connection + "=" + e.dataset.ok)`); !slices.Equal(got, wantConns) {
		t.Errorf("the page shows the connections %q, the API %q", got, wantConns)
	}
	if got, want := eval[string](p, `document.getElementById("events-summary").textContent`),
		fmt.Sprintf("%d of %d up to date, 1 with events pending", len(defs.Definitions)-1, len(defs.Definitions)); got != want {
		t.Errorf("the page sums up %q, want %q", got, want)
	}

	// Times: in the browser's zone, with its name and how long ago.
	for i, d := range defs.Definitions {
		if d.Latest != nil {
			at := d.Latest.CreatedTime
			if d.Latest.CompletedTime != nil {
				at = *d.Latest.CompletedTime
			}
			wantTimeShown(t, "definition "+d.Name, readTime(p, rowSel(d.Name)+` [data-field=time]`), at)
			if rows[i].Time == "" {
				t.Errorf("definition %s shows no time", d.Name)
			}
		}
	}

	// Charts: each exported definition's complete exports.
	for _, d := range defs.Definitions {
		if d.Latest != nil {
			wantChart(t, p, c, d.Name)
		}
	}
	if n := eval[int](p, `document.querySelectorAll("[style]").length`); n != 0 {
		t.Errorf("%d elements carry a style attribute, which the page's policy refuses", n)
	}
	p.screenshot("loaded")

	// Generate: a new export of the first definition, followed until it
	// is complete.
	target := defs.Definitions[0]
	if target.Name != keepLastOf {
		t.Fatalf("the first definition is %s, keep_last was set on %s", target.Name, keepLastOf)
	}
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
	// The chart takes the new export in.
	if n := wantChart(t, p, c, target.Name); n < 2 {
		t.Errorf("the chart of %s shows %d exports after one more", target.Name, n)
	}
	p.screenshot("generated")

	// Download: the browser saves the export; it is the bucket's object.
	got, url := p.download(rowSel(target.Name) + ` button[data-action=download]`)
	downloaded := time.Now()
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

	// More exports than a page holds: page through them; those that
	// retention deleted are marked and cannot be downloaded.
	for hist.Total <= 20 {
		var r pipeline.Record
		c.json("POST", "/api/v1/exports", map[string]any{"definition": target.Name, "wait": true}, http.StatusOK, &r)
		c.json("GET", "/api/v1/exports?limit=1&definition="+target.Name, nil, http.StatusOK, &hist)
	}
	next := wantHistoryPage(t, p, c, target.Name, "", 1)
	if next == 0 {
		t.Fatalf("%d exports of %s and no next page", hist.Total, target.Name)
	}
	if got := readHistory(p, target.Name); len(got.Deleted) == 0 {
		t.Errorf("no export marked deleted on the first page of %s (keep_last 3)", target.Name)
	}
	p.screenshot("history-page-1")
	p.do("click Older", chromedp.Click(chromedp.CSS(histSel+` button[data-action=history-older]`)))
	wantHistoryPage(t, p, c, target.Name, "&before="+strconv.FormatInt(next, 10), 21)
	if focused := eval[string](p, `document.activeElement?.dataset.action ?? ""`); focused != "history-newer" && focused != "history-older" {
		t.Errorf("after paging the focus is on %q, not on the pager", focused)
	}
	p.screenshot("history-page-2")
	p.do("click Newer", chromedp.Click(chromedp.CSS(histSel+` button[data-action=history-newer]`)))
	wantHistoryPage(t, p, c, target.Name, "", 1)

	// The download banner went away on its own.
	p.waitFor("the download banner to clear", `document.getElementById("notice").hidden && !document.querySelector("[data-testid=download-link]")`,
		time.Until(downloaded.Add(20*time.Second)))

	// Ad hoc: the whole project, every file.
	connection := target.Connection
	adhoc := func(completion string, more ...chromedp.Action[chromedp.Void]) pipeline.Record {
		t.Helper()
		before := eval[string](p, `document.querySelector("[data-testid=adhoc-result]").dataset.exportId ?? ""`)
		p.do("fill the ad-hoc form: "+completion, append([]chromedp.Action[chromedp.Void]{
			chromedp.SetValue(chromedp.CSS(`[data-testid=adhoc-project]`), exp.Project),
			selectOption(`[data-testid=adhoc-source-kind]`, "project"),
			selectOption(`[data-testid=adhoc-connection]`, connection),
			selectOption(`[data-testid=adhoc-completion]`, completion)}, more...)...)
		if !eval[bool](p, `document.querySelector("[data-testid=adhoc-source-value]").disabled`) {
			t.Error("the source value stays enabled for a whole-project source")
		}
		p.do("submit the ad-hoc form", chromedp.Click(chromedp.CSS(`[data-testid=adhoc-submit]`)))
		p.waitFor("the ad-hoc export to complete", fmt.Sprintf(`(() => {
			const box = document.querySelector("[data-testid=adhoc-result]");
			return !box.hidden && box.dataset.exportId !== %q && box.querySelector("[data-field=status]")?.textContent === "complete";
		})()`, before), 60*time.Second)
		adhocID := eval[string](p, `document.querySelector("[data-testid=adhoc-result]").dataset.exportId`)
		var r pipeline.Record
		c.json("GET", "/api/v1/exports/"+adhocID, nil, http.StatusOK, &r)
		if r.Name != pipeline.AdhocName || string(r.Completion) != completion || r.Project != exp.Project ||
			r.Source != "project" || r.Connection != connection || r.Status != pipeline.StatusComplete {
			t.Errorf("ad-hoc export from the page: %+v, want a complete export of project %s, %s files, on %s", r, exp.Project, completion, connection)
		}
		if files := eval[string](p, `document.querySelector("[data-testid=adhoc-result] [data-field=files]").dataset.value`); files != strconv.Itoa(r.FileListLength) {
			t.Errorf("the ad-hoc result shows %s files, the record has %d", files, r.FileListLength)
		}
		if shown := eval[string](p, `document.querySelector("[data-testid=adhoc-result] [data-field=completion]").textContent`); shown != completion+" files" {
			t.Errorf("the ad-hoc result says %q, want %q", shown, completion+" files")
		}
		return r
	}
	all := adhoc("all")
	incomplete := adhoc("incomplete")
	// Incomplete and complete files are all of them.
	var complete pipeline.Record
	c.json("POST", "/api/v1/exports", map[string]any{"project": exp.Project, "source": map[string]any{"project": true},
		"completion": "complete", "connection": connection, "wait": true}, http.StatusOK, &complete)
	if incomplete.FileListLength+complete.FileListLength != all.FileListLength || incomplete.FileListLength == 0 {
		t.Errorf("ad hoc: %d incomplete files + %d complete ones, want all %d (and some incomplete)",
			incomplete.FileListLength, complete.FileListLength, all.FileListLength)
	}

	// Ad hoc with COCO and JSONL, as of the first ad-hoc export's
	// watermark: the page sends both, and the export reproduces that
	// one's content beside the two formats.
	ticks := []chromedp.Action[chromedp.Void]{
		chromedp.Click(chromedp.CSS(`[data-testid=adhoc-format-coco]`)),
		chromedp.Click(chromedp.CSS(`[data-testid=adhoc-format-jsonl]`)),
	}
	asOf := strconv.FormatUint(all.Watermark, 10)
	past := adhoc("all", append(ticks, chromedp.SetValue(chromedp.CSS(`[data-testid=adhoc-as-of]`), asOf))...)
	if past.AsOf != asOf || past.Watermark != all.Watermark || past.ContentHash != all.ContentHash {
		t.Errorf("ad hoc as of %s from the page: as_of %q, watermark %d, content %s; want the export at that watermark, %s",
			asOf, past.AsOf, past.Watermark, past.ContentHash, all.ContentHash)
	}
	if got := slices.Sorted(maps.Keys(past.Formats)); !slices.Equal(got, []string{"coco", "diffgram", "jsonl"}) {
		t.Errorf("ad hoc with COCO and JSONL ticked: formats %v", got)
	}
	p.do("untick the formats", ticks...)
	if !eval[bool](p, `(() => {
		const e = document.querySelector("[data-testid=adhoc-as-of]");
		e.value = "";
		e.dispatchEvent(new Event("input", {bubbles: true}));
		return e.value === "";
	})()`) {
		t.Fatal("the as-of field could not be cleared")
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

	// Redrive the newest dead letter: its event is published again on its
	// subject, leaves the dead letters, and (still bad) comes back under
	// a new number.
	first := dl.Entries[0]
	p.do("click Redrive", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#deadletter-list li[data-sequence="%d"] button[data-action=redrive]`, first.Sequence))))
	redrivenSel := fmt.Sprintf(`#notice [data-field=redriven][data-sequence="%d"]`, first.Sequence)
	p.waitFor("the redrive notice", fmt.Sprintf(`document.querySelector(%s) !== null`, jsString(redrivenSel)), 30*time.Second)
	newSeq, err := strconv.ParseUint(eval[string](p, `document.querySelector(`+jsString(redrivenSel)+`).dataset.streamSequence`), 10, 64)
	if err != nil {
		t.Fatalf("the redrive notice names no event: %v", err)
	}
	stream, err := js.Stream(t.Context(), cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetMsg(t.Context(), newSeq)
	if err != nil {
		t.Fatalf("event #%d, redriven from the page: %v", newSeq, err)
	}
	if m.Subject != first.OriginalSubject || m.Header.Get("Exportstream-Redriven-From") != strconv.FormatUint(first.Sequence, 10) {
		t.Errorf("event #%d: subject %s, redriven from %q; want %s, from %d", newSeq, m.Subject, m.Header.Get("Exportstream-Redriven-From"),
			first.OriginalSubject, first.Sequence)
	}
	if text := eval[string](p, `document.getElementById("notice").textContent`); !strings.Contains(text, fmt.Sprintf("#%d", newSeq)) ||
		!strings.Contains(text, first.OriginalSubject) {
		t.Errorf("the redrive notice says %q, want the new event #%d on %s", text, newSeq, first.OriginalSubject)
	}
	// Dead-lettered again, under a new number, with the same reason.
	var back struct {
		Count   int
		Entries []struct {
			Sequence         uint64
			Reason           string
			OriginalSequence string `json:"original_sequence"`
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.json("GET", "/api/v1/deadletters?limit=10", nil, http.StatusOK, &back)
		if len(back.Entries) > 0 && back.Entries[0].OriginalSequence == strconv.FormatUint(newSeq, 10) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the redriven event #%d did not come back as a dead letter: %+v", newSeq, back)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if back.Count != dl.Count || back.Entries[0].Reason != first.Reason {
		t.Errorf("after the redrive: %d dead letters, the newest %+v; want %d, reason %q", back.Count, back.Entries[0], dl.Count, first.Reason)
	}
	p.waitFor("the dead letters after the redrive", fmt.Sprintf(`(() => {
		const seqs = [...document.querySelectorAll("#deadletter-list li[data-sequence]")].map(li => li.dataset.sequence);
		return !seqs.includes("%d") && seqs[0] === "%d" && document.getElementById("deadletter-count").textContent === "%d";
	})()`, first.Sequence, back.Entries[0].Sequence, back.Count), 15*time.Second)

	// A dead letter redriven elsewhere meanwhile: the page says the
	// redrive failed and shows the list as it is.
	p.do("stop the auto-refresh", chromedp.Click(chromedp.CSS(`[data-testid=auto-refresh]`)))
	other := back.Entries[1].Sequence
	var res struct {
		Redriven []struct{ Sequence uint64 }
	}
	c.json("POST", "/api/v1/deadletters/redrive", map[string]any{"sequences": []uint64{other}}, http.StatusOK, &res)
	if len(res.Redriven) != 1 || res.Redriven[0].Sequence != other {
		t.Fatalf("API redrive of %d: %+v", other, res)
	}
	otherSel := fmt.Sprintf(`#deadletter-list li[data-sequence="%d"]`, other)
	p.do("click Redrive on a dead letter that is gone", chromedp.Click(chromedp.CSS(otherSel+` button[data-action=redrive]`)))
	p.waitFor("the failed redrive", fmt.Sprintf(`!document.getElementById("message").hidden &&
		document.getElementById("message").textContent.includes("%d") && document.querySelector(%s) === null`, other, jsString(otherSel)), 10*time.Second)
	p.do("restart the auto-refresh", chromedp.Click(chromedp.CSS(`[data-testid=auto-refresh]`)))

	// A new event: the page follows it; the definition never exported
	// counts one more.
	seq := publishLabelChange(t, js, 1)
	waitStatus("the new event applied", func() bool {
		upToDate, pending, newest, _ := st.freshness(waitingDefinition)
		return st.Events.LastAppliedSequence == seq && !upToDate && pending == waitingBefore+1 && newest == seq
	})
	p.waitFor("the new event on the page", fmt.Sprintf(`document.querySelector("#events-last [data-field=sequence]")?.dataset.value === "%d" &&
		document.querySelector(%s).dataset.pending === "%d"`, seq, jsString(rowSel(waitingDefinition)+` [data-field=freshness]`), waitingBefore+1), 15*time.Second)
	waitStatus("every exported definition up to date", func() bool {
		for _, f := range st.Definitions {
			if !f.UpToDate && f.Name != waitingDefinition {
				return false
			}
		}
		return true
	})
	p.waitFor("the page to say so", fmt.Sprintf(`document.querySelectorAll("[data-field=freshness][data-state=current]").length === %d`, len(defs.Definitions)-1), 15*time.Second)
	c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
	wantFreshness()

	// A phone's width: no sideways scrolling, every button within reach.
	p.do("narrow the window", chromedp.EmulateViewport(420, 900))
	p.waitFor("the narrow layout", `window.innerWidth === 420`, 5*time.Second)
	type overflow struct {
		ScrollWidth int      `json:"scrollWidth"`
		Outside     []string `json:"outside"`
	}
	narrow := eval[overflow](p, `(() => {
		const w = window.innerWidth;
		const outside = [...document.querySelectorAll("button, select, input")].filter(b => b.checkVisibility()).filter(b => {
			const r = b.getBoundingClientRect();
			return r.left < 0 || r.right > w;
		}).map(b => (b.closest("[data-definition]")?.dataset.definition ?? "") + " " + (b.dataset.action || b.id || b.textContent));
		return {scrollWidth: document.documentElement.scrollWidth, outside};
	})()`)
	if narrow.ScrollWidth > 420 || len(narrow.Outside) > 0 {
		t.Errorf("at 420 px the page is %d px wide; outside the window: %q", narrow.ScrollWidth, narrow.Outside)
	}
	p.screenshot("narrow")
	p.do("click Generate, narrow", chromedp.Click(chromedp.CSS(rowSel(target.Name)+` button[data-action=generate]`)))
	p.waitFor("Generate to answer at 420 px", `!document.getElementById("notice").hidden`, 30*time.Second)
	p.do("widen the window", chromedp.ResetViewport())

	// Forgetting the token hides everything again.
	p.do("forget the token", chromedp.Click(chromedp.CSS(`[data-testid=forget-token]`)))
	p.waitFor("the token field again", `!document.getElementById("auth").hidden`, 5*time.Second)
	if !eval[bool](p, nothingVisible) {
		t.Error("tables or panels show behind the token form after Forget token")
	}
	p.do("give the token again",
		chromedp.SendKeys(chromedp.CSS(`[data-testid=token-input]`), testToken),
		chromedp.Click(chromedp.CSS(`[data-testid=token-submit]`)))
	p.waitFor("the page again", `document.getElementById("definitions").checkVisibility()`, 30*time.Second)

	// A reload in the same tab keeps the token: no question asked.
	p.do("reload", chromedp.Reload())
	p.waitFor("the rows after a reload", `document.querySelectorAll("tr[data-definition] [data-field=status].badge").length > 0`, 30*time.Second)
	if !eval[bool](p, `document.getElementById("auth").hidden`) {
		t.Error("the page asks for the token again after a reload")
	}
	t.Logf("page test: %v in the browser", time.Since(start).Round(time.Millisecond))
}
