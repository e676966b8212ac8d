package main

import (
	"bytes"
	"fmt"
	"net"
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
	// What only the provider can tell (its naming rules, key formats) is
	// reported too, with the connection's path.
	provider := filepath.Join(dir, "provider.yaml")
	os.WriteFile(provider, []byte("connections:\n  - name: g\n    type: gcs\n    gcs: {bucket: No_Such, kms_key_name: k}\n  - name: a\n    type: azure\n    azure: {container: c, account_name: acct, account_key: \"not base64!\"}\n"), 0o644)
	errOut.Reset()
	if code := run([]string{"check-config", "--config", provider}, &out, &errOut); code != 1 {
		t.Errorf("provider problems: exit %d, want 1", code)
	}
	for _, want := range []string{
		`connections[0].gcs: bucket "No_Such" is not a valid bucket name`,
		`connections[0].gcs: KMS key name "k" is not`,
		`connections[1].azure: container "c" is not a valid container name`,
		`connections[1].azure: account key is not base64`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("provider problems: output lacks %q:\n%s", want, errOut.String())
		}
	}
	if strings.Contains(errOut.String(), "not base64!") {
		t.Errorf("provider problems show the account key:\n%s", errOut.String())
	}
	if code := run([]string{"check-config"}, &out, &errOut); code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
}

// TestCheckConfigStateDir: check-config reports a state.dir the service
// could not use, like any other problem, and accepts a missing folder it
// could create without creating it; --print shows the effective folder.
func TestCheckConfigStateDir(t *testing.T) {
	dir := t.TempDir()
	exports := "exports:\n  - {name: a, project: p, source: {project: true}, connection: local-disk}\n"
	write := func(name, stateDir string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("state: {dir: %q}\n%s", stateDir, exports)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	missing := filepath.Join(dir, "data", "state")
	good := write("good.yaml", missing)
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "--print", "--config", good}, &out, &errOut); code != 0 {
		t.Fatalf("missing state.dir under a writable folder: exit %d: %s", code, errOut.String())
	}
	if want := fmt.Sprintf("\nstate:\n  dir: %s\n", missing); !strings.Contains(out.String(), want) {
		t.Errorf("--print lacks %q:\n%s", want, out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("check-config created the state folder's parent (stat: %v)", err)
	}

	file := filepath.Join(dir, "not-a-folder")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ stateDir, want string }{
		"a file in its place": {file, "state.dir " + file + ": is a file, not a folder: choose another folder or move the file away"},
		"a file on its way": {filepath.Join(file, "state"), "state.dir " + filepath.Join(file, "state") + ": " + file +
			" is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + file + " away"},
	} {
		cfg := write("bad.yaml", tc.stateDir)
		out.Reset()
		errOut.Reset()
		if code := run([]string{"check-config", "--config", cfg}, &out, &errOut); code != 1 {
			t.Errorf("%s: exit %d, want 1\nstdout: %s\nstderr: %s", name, code, out.String(), errOut.String())
		}
		if want := cfg + ": 1 problem(s):\n" + tc.want + "\n"; errOut.String() != want {
			t.Errorf("%s: stderr\n%s\nwant\n%s", name, errOut.String(), want)
		}
		if strings.Contains(out.String(), "OK") {
			t.Errorf("%s: stdout says OK: %s", name, out.String())
		}
	}

	// An explicit empty folder is a config problem.
	empty := write("empty.yaml", "")
	errOut.Reset()
	if code := run([]string{"check-config", "--config", empty}, &out, &errOut); code != 1 {
		t.Errorf("empty state.dir: exit %d, want 1", code)
	}
	if want := "state.dir: must name a folder"; !strings.Contains(errOut.String(), want) {
		t.Errorf("empty state.dir: stderr lacks %q:\n%s", want, errOut.String())
	}
}

// TestCheckConfigProbe: --probe says OK for a connection that works and,
// in an operator's words, what is wrong with one that does not.
func TestCheckConfigProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "probe.yaml")
	cfg := fmt.Sprintf(`connections:
  - {name: disk, type: local, local: {dir: %q}}
  - name: far
    type: s3
    s3: {bucket: b, region: us-east-1, endpoint: "http://%s", path_style: true, access_key_id: AKIA, secret_access_key: "s3cr3t-value"}
exports:
  - {name: a, project: p, source: {project: true}, connection: disk}
`, filepath.Join(dir, "bucket"), closed)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"check-config", "--probe", "--timeout", "10s", "--config", path}, &out, &errOut)
	if code != 1 {
		t.Errorf("exit %d, want 1 (one connection fails)", code)
	}
	for _, want := range []string{
		"connection disk (local): OK",
		"connection far (s3): ENDPOINT UNREACHABLE",
		"check the endpoint URL",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "1 of 2 connection(s) failed the probe") {
		t.Errorf("stderr: %q", errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "s3cr3t-value") {
		t.Error("the probe output shows a secret")
	}
	// The probe object is gone again.
	entries, _ := os.ReadDir(filepath.Join(dir, "bucket", "exports", "a"))
	if len(entries) != 0 {
		t.Errorf("probe left %d entries behind", len(entries))
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
	s, _ := js.Stream(t.Context(), "DIFFGRAM_EVENTS")
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Lines with the same id (repeats in the file, and the second pass)
	// are de-duplicated by Nats-Msg-Id.
	ids := map[string]bool{}
	noID, lines := 0, 0
	f, _ := os.ReadFile(scenario)
	for _, line := range strings.Split(string(f), "\n") {
		if _, body, ok := strings.Cut(line, "\t"); ok {
			lines++
			if i := strings.Index(body, `"id":`); i >= 0 && (strings.HasPrefix(body[i+5:], `"`) || strings.HasPrefix(body[i+5:], ` "`)) {
				rest := strings.TrimLeft(body[i+5:], ` "`)
				ids[rest[:strings.IndexByte(rest, '"')]] = true
			} else {
				noID++
			}
		}
	}
	if want := fmt.Sprintf("published %d events", 2*lines); !strings.Contains(out.String(), want) {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if want := fmt.Sprintf("%d of them not stored", 2*lines-(len(ids)+2*noID)); !strings.Contains(out.String(), want) {
		t.Errorf("output %q, want %q (the duplicates the stream acknowledged without storing)", out.String(), want)
	}
	if want := uint64(len(ids) + 2*noID); info.State.Msgs != want {
		t.Errorf("stream holds %d messages, want %d (distinct ids + lines without an id, twice)", info.State.Msgs, want)
	}
}
