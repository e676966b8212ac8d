package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("exports:\n  - name: a\n    project: p\n    source: {project: true}\n    connection: local-disk\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("nats:\n  replicas: 9\nexports:\n  - name: a\n    project: p\n    source: {directory: x, job: y}\n    connection: s4\n    sorce: 1\n"), 0o644)

	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "--config", good}, &out, &errOut); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "OK") {
		t.Errorf("good config: output %q", out.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"check-config", "--config", bad}, &out, &errOut); code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	for _, want := range []string{
		"nats.replicas:",
		"exports[0].source: exactly one of",
		`exports[0].connection: no connection named "s4"`,
		"exports[0].sorce: unknown key",
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("bad config: output lacks %q:\n%s", want, errOut.String())
		}
	}
	gcs := filepath.Join(dir, "gcs.yaml")
	os.WriteFile(gcs, []byte("connections:\n  - name: g\n    type: gcs\n    gcs: {bucket: b}\n"), 0o644)
	errOut.Reset()
	if code := run([]string{"check-config", "--config", gcs}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), `connections[0].type: "gcs" connections are not supported by this build yet`) {
		t.Errorf("gcs connection: exit %d, output %q", code, errOut.String())
	}
	if code := run([]string{"check-config"}, &out, &errOut); code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
}

func TestPublish(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "DIFFGRAM_EVENTS", Subjects: []string{"diffgram.events.>"}}); err != nil {
		t.Fatal(err)
	}
	scenario := filepath.Join(pipelinetest.ExamplesDir(), "street-scenes-chaos", "events.jsonl")
	var out, errOut bytes.Buffer
	if code := run([]string{"publish", "--nats", ns.ClientURL(), scenario, scenario}, &out, &errOut); code != 0 {
		t.Fatalf("publish: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "published 508 events") {
		t.Errorf("output %q", out.String())
	}
	s, _ := js.Stream(t.Context(), "DIFFGRAM_EVENTS")
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Lines with the same id (repeats in the file, and the second pass)
	// are de-duplicated by Nats-Msg-Id.
	ids := map[string]bool{}
	noID := 0
	f, _ := os.ReadFile(scenario)
	for _, line := range strings.Split(string(f), "\n") {
		if _, body, ok := strings.Cut(line, "\t"); ok {
			if i := strings.Index(body, `"id":`); i >= 0 && (strings.HasPrefix(body[i+5:], `"`) || strings.HasPrefix(body[i+5:], ` "`)) {
				rest := strings.TrimLeft(body[i+5:], ` "`)
				ids[rest[:strings.IndexByte(rest, '"')]] = true
			} else {
				noID++
			}
		}
	}
	if want := uint64(len(ids) + 2*noID); info.State.Msgs != want {
		t.Errorf("stream holds %d messages, want %d (distinct ids + lines without an id, twice)", info.State.Msgs, want)
	}
}
