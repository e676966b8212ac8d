package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// syncBuffer is a bytes.Buffer safe for the demo's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// demoRun is one `exportstream demo` in the test process.
type demoRun struct {
	stdout, stderr syncBuffer
	cancel         context.CancelFunc
	done           chan int
}

func startDemo(t *testing.T, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	d := &demoRun{cancel: cancel, done: make(chan int, 1)}
	go func() {
		d.done <- commands["demo"](ctx, args, &d.stdout, &d.stderr)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(d.stdout.String(), "Stop with Ctrl-C") {
		select {
		case code := <-d.done:
			t.Fatalf("demo exited with %d before its banner:\n%s\n%s", code, d.stdout.String(), d.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no banner after 60 s:\n%s\n%s", d.stdout.String(), d.stderr.String())
		}
	}
	return d
}

// demoConfig writes a demo config with everything under dir (the
// embedded NATS store, the local-disk bucket under bucket/, the state
// store) and listeners on free ports, and returns its path.
func demoConfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `nats:
  embedded: {listen: "127.0.0.1:0", store_dir: %[1]q}
connections:
  - {name: local-disk, type: local, local: {dir: %[2]q}}
state: {dir: %[3]q}
http: {listen: "127.0.0.1:0"}
`, filepath.Join(dir, "nats"), filepath.Join(dir, "bucket"), filepath.Join(dir, "state")), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// stop interrupts the demo as Ctrl-C does and waits for it.
func (d *demoRun) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		if code != 0 {
			t.Fatalf("demo exited with %d:\n%s", code, d.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("demo did not stop within 60 s")
	}
}

// bannerURL returns the URL the banner gives for name ("Page", "Metrics").
func (d *demoRun) bannerURL(t *testing.T, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + name + `:\s+(\S+)$`).FindStringSubmatch(d.stdout.String())
	if m == nil {
		t.Fatalf("the banner names no %s:\n%s", name, d.stdout.String())
	}
	return m[1]
}

// streamEvent is one message of the event stream.
type streamEvent struct {
	seq     uint64
	subject string
	body    []byte
}

// readEventStream starts an embedded NATS server on storeDir (the demo's
// data, the demo stopped) and returns every message of DIFFGRAM_EVENTS,
// and the stream sequence up to which the service's consumer acked them.
func readEventStream(t *testing.T, storeDir string) ([]streamEvent, uint64) {
	t.Helper()
	ns, err := events.StartEmbedded("127.0.0.1:0", storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := js.Stream(ctx, "DIFFGRAM_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, streamEvent{seq, m.Subject, m.Data})
	}
	cons, err := st.Consumer(ctx, "exportstream")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out, ci.AckFloor.Stream
}

// TestDemoRestartCarriesOn runs the demo twice on the same data folder, as
// a user who stops it with Ctrl-C and starts it again. The second run's
// team carries on from the first one's world: in the event stream every
// entity's versions keep growing across the restart (nothing the service
// would drop as stale), no file changes type, new instance rows get new
// ids; the service counts no stale event; and each run says what it does.
func TestDemoRestartCarriesOn(t *testing.T) {
	dir := t.TempDir()
	cfg := demoConfig(t, dir)
	args := []string{"--config", cfg, "--rate", "200", "--files", "10"}

	first := startDemo(t, args...)
	if !strings.Contains(first.stdout.String(), "starts the project afresh") {
		t.Errorf("first run: the banner does not say the team starts afresh:\n%s", first.stdout.String())
	}
	// The page comes first, then the API, metrics and NATS.
	var order []int
	for _, name := range []string{"Page", "API", "Metrics", "NATS"} {
		order = append(order, strings.Index(first.stdout.String(), name+":"))
	}
	if order[0] < 0 || order[0] > order[1] || order[1] > order[2] || order[2] > order[3] {
		t.Errorf("the banner lists Page, API, Metrics, NATS at %v:\n%s", order, first.stdout.String())
	}
	if page := first.bannerURL(t, "Page"); !strings.HasSuffix(page, "/") || strings.Contains(page, "metrics") {
		t.Errorf("page URL %q", page)
	} else if body := httpGet(t, page); !strings.Contains(body, "<html") {
		t.Errorf("GET %s is not the page:\n%.300s", page, body)
	}
	// Let the team publish a good part of its world (at least 200 events;
	// waiting on the count, not a fixed time, which a loaded machine
	// stretches).
	waitStreamHolds(t, first.bannerURL(t, "NATS"), 200, 60*time.Second)
	first.stop(t)
	before, acked := readEventStream(t, filepath.Join(dir, "nats"))
	if len(before) < 200 {
		t.Fatalf("the first run published %d events", len(before))
	}

	second := startDemo(t, args...)
	wantSaid := fmt.Sprintf("carries on from the %d events of the project", len(before))
	if !strings.Contains(second.stdout.String(), wantSaid) {
		t.Errorf("second run: the banner does not say %q:\n%s", wantSaid, second.stdout.String())
	}
	metrics := second.bannerURL(t, "Metrics")
	// Let the second team work, and the service apply what it sends.
	deadline := time.Now().Add(30 * time.Second)
	var applied, stale float64
	for {
		applied, stale = metricSum(t, metrics, "exportstream_events_applied_total"), metricSum(t, metrics, "exportstream_events_stale_total")
		if applied >= 400 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	second.stop(t)
	if applied < 400 {
		t.Fatalf("the second run's service applied %v events in 30 s", applied)
	}
	// The first run's events it had not acked when it stopped come again
	// (stale, as they were applied); no other event may be stale.
	if unacked := float64(before[len(before)-1].seq - acked); stale > unacked {
		t.Errorf("the second run's service found %v of %v events stale (%v came again unacked)", stale, applied, unacked)
	}
	if !strings.Contains(second.stderr.String(), `"carries_on":true`) {
		t.Errorf("second run: the simulator's start line does not say it carries on:\n%s", second.stderr.String())
	}

	all, _ := readEventStream(t, filepath.Join(dir, "nats"))
	version := map[string]int{}
	fileType := map[int]string{}
	rows := map[int]bool{}
	maxFile := 0
	var continued int
	for i, ev := range all {
		var body struct {
			Type string                     `json:"type"`
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(ev.body, &body); err != nil {
			t.Fatalf("message %d: %v", ev.seq, err)
		}
		entity := strings.Split(ev.subject, ".")[3]
		var snap struct {
			ID       int    `json:"id"`
			RootID   int    `json:"root_id"`
			StringID string `json:"string_id"`
			Type     string `json:"type"`
			Version  int    `json:"version"`
		}
		for _, raw := range body.Data {
			if err := json.Unmarshal(raw, &snap); err != nil {
				t.Fatalf("message %d: %v", ev.seq, err)
			}
		}
		key := entity + "/" + strconv.Itoa(snap.ID)
		switch entity {
		case "project":
			key = "project/" + snap.StringID
		case "instance":
			key = "instance/" + strconv.Itoa(snap.RootID)
		}
		run := "first"
		if i >= len(before) {
			run = "second"
		}
		if prev, seen := version[key]; seen && snap.Version <= prev {
			t.Fatalf("%s run, message %d %s: %s version %d after %d: stale", run, ev.seq, ev.subject, key, snap.Version, prev)
		}
		if run == "second" && version[key] > 0 {
			continued++
		}
		version[key] = snap.Version
		switch entity {
		case "file":
			if old, ok := fileType[snap.ID]; ok && old != snap.Type {
				t.Fatalf("%s run, message %d: file %d changes type from %s to %s", run, ev.seq, snap.ID, old, snap.Type)
			}
			fileType[snap.ID] = snap.Type
			if run == "first" {
				maxFile = max(maxFile, snap.ID)
			}
		case "instance":
			if strings.HasSuffix(body.Type, ".created") || strings.HasSuffix(body.Type, ".edited") {
				if rows[snap.ID] {
					t.Fatalf("%s run, message %d: instance row id %d used again", run, ev.seq, snap.ID)
				}
				rows[snap.ID] = true
			}
		}
	}
	if len(all)-len(before) < 300 {
		t.Errorf("the second run published %d events", len(all)-len(before))
	}
	if continued < 50 {
		t.Errorf("the second run changed what the first made %d times: it does not carry on", continued)
	}
	t.Logf("first run %d events (files up to %d), second run %d events, %d of them changes of the first run's entities",
		len(before), maxFile, len(all)-len(before), continued)
}

// TestDemoBadFlag: a bad flag exits 2 with the flag package's message and
// the usage, and no extra error line.
func TestDemoBadFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--rat", "5"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "flag provided but not defined: -rat") {
		t.Errorf("stderr lacks the flag package's message:\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "exportstream: flag provided") {
		t.Errorf("the error is printed twice:\n%s", errOut.String())
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

// metricSum adds up every series of a counter on the Prometheus page.
func metricSum(t *testing.T, url, name string) float64 {
	t.Helper()
	sum := 0.0
	sc := bufio.NewScanner(strings.NewReader(httpGet(t, url)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitStreamHolds waits until the events stream of the NATS server at url
// holds at least n messages.
func waitStreamHolds(t *testing.T, url string, n uint64, timeout time.Duration) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		if s, err := js.Stream(t.Context(), "DIFFGRAM_EVENTS"); err == nil && s.CachedInfo().State.Msgs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the events stream does not hold %d events after %v", n, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
