package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

// TestCheckConfigLocalFolders: check-config reports a local bucket folder
// the service could not use (a file in its place or on its way, a file
// where an export's folder goes) with its key and what to do, like any
// other problem, with or without --probe, and gives no cloud advice.
func TestCheckConfigLocalFolders(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-folder")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	bucket := filepath.Join(dir, "bucket")
	if err := os.MkdirAll(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bucket, "exports"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(bucketDir string) string {
		t.Helper()
		p := filepath.Join(dir, "c.yaml")
		cfg := fmt.Sprintf(`connections:
  - {name: disk, type: local, local: {dir: %q}}
exports:
  - {name: a, project: p, source: {project: true}, connection: disk}
state: {dir: %q}
`, bucketDir, filepath.Join(dir, "state"))
		if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct{ bucketDir, want string }{
		"a file in its place": {file, "connections[0].local.dir " + file + ": is a file, not a folder: choose another folder or move the file away"},
		"a file on its way": {filepath.Join(file, "bucket"), "connections[0].local.dir " + filepath.Join(file, "bucket") + ": " + file +
			" is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + file + " away"},
		"a file where the export's folder goes": {bucket, "exports[0].path " + filepath.Join(bucket, "exports", "a") + ": " + filepath.Join(bucket, "exports") +
			" is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + filepath.Join(bucket, "exports") + " away"},
	} {
		path := write(tc.bucketDir)
		for _, args := range [][]string{{"check-config", "--config", path}, {"check-config", "--probe", "--config", path}} {
			var out, errOut bytes.Buffer
			if code := run(args, &out, &errOut); code != 1 {
				t.Errorf("%s: %v: exit %d, want 1\nstdout: %s\nstderr: %s", name, args, code, out.String(), errOut.String())
			}
			if want := path + ": 1 problem(s):\n" + tc.want + "\n"; errOut.String() != want {
				t.Errorf("%s: %v: stderr\n%s\nwant\n%s", name, args, errOut.String(), want)
			}
			if s := out.String() + errOut.String(); strings.Contains(s, "OK") || strings.Contains(s, "grant") || strings.Contains(s, "bucket") && !strings.Contains(tc.want, "bucket") {
				t.Errorf("%s: %v: says OK or gives cloud advice:\n%s", name, args, s)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Errorf("check-config created the state folder (stat: %v)", err)
	}
}

// TestCheckConfigProbeLocal: a local connection whose folder passes the
// check but fails the probe (here the connector's own .tmp folder is a
// file) gets advice about a folder on disk, not a cloud provider's.
func TestCheckConfigProbeLocal(t *testing.T) {
	dir := t.TempDir()
	bucket := filepath.Join(dir, "bucket")
	if err := os.MkdirAll(bucket, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bucket, ".tmp"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.yaml")
	cfg := fmt.Sprintf("connections:\n  - {name: disk, type: local, local: {dir: %q}}\nstate: {dir: %q}\n", bucket, filepath.Join(dir, "state"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "--probe", "--config", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}
	t.Logf("stdout:\n%s", out.String())
	if want := "connection disk (local): FAILED\n"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout lacks %q:\n%s", want, out.String())
	}
	if want := "    " + localProbeAdvice[connectors.ProbeFailed] + "\n"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout lacks the local advice %q:\n%s", want, out.String())
	}
	for _, cloud := range probeAdvice {
		if strings.Contains(out.String(), "    "+cloud+"\n") {
			t.Errorf("stdout gives cloud advice %q:\n%s", cloud, out.String())
		}
	}
}

// TestProbeAdviceFor: a failed local connection gets the verdict on its
// folders when they are not usable, folder advice when they are; a cloud
// connection gets the provider advice for the outcome.
func TestProbeAdviceFor(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Connections = []config.Connection{
		{Name: "file", Type: config.TypeLocal, Local: &config.Local{Dir: file}},
		{Name: "fine", Type: config.TypeLocal, Local: &config.Local{Dir: dir}},
		{Name: "s3", Type: config.TypeS3, S3: &config.S3{Bucket: "b", PartSize: config.DefaultPartSize}},
	}
	outcomes := []string{connectors.ProbeBucketMissing, connectors.ProbeAccessDenied, connectors.ProbeWrongRegion,
		connectors.ProbeNoCredentials, connectors.ProbeUnreachable, connectors.ProbeFailed}
	for _, o := range outcomes {
		if got, want := probeAdviceFor(cfg, 0, o), "connections[0].local.dir "+file+": is a file, not a folder: choose another folder or move the file away"; got != want {
			t.Errorf("%s, local folder a file: %q, want %q", o, got, want)
		}
		got := probeAdviceFor(cfg, 1, o)
		if want, ok := localProbeAdvice[o]; ok && got != want || !ok && got != localProbeAdvice[connectors.ProbeFailed] {
			t.Errorf("%s, usable local folder: %q", o, got)
		}
		for _, cloud := range probeAdvice {
			if got == cloud {
				t.Errorf("%s, usable local folder: cloud advice %q", o, got)
			}
		}
		if got := probeAdviceFor(cfg, 2, o); got != probeAdvice[o] || got == "" {
			t.Errorf("%s, s3: %q, want %q", o, got, probeAdvice[o])
		}
	}
}

// TestCheckConfigPrint: --print shows the config the service runs with:
// the defaults a zero stands for, no empty keys; printed again from its
// own output, it is the same.
func TestCheckConfigPrint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	cfg := fmt.Sprintf(`connections:
  - {name: disk, type: local, local: {dir: %q}}
exports:
  - {name: a, project: p, source: {directory: d}, connection: disk}
state: {dir: %q}
deployment: test
`, filepath.Join(dir, "bucket"), filepath.Join(dir, "state"))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	print := func(path string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run([]string{"check-config", "--print", "--config", path}, &out, &errOut); code != 0 {
			t.Fatalf("check-config --print %s: exit %d: %s", path, code, errOut.String())
		}
		ok, yaml, _ := strings.Cut(out.String(), "\n")
		if !strings.HasSuffix(ok, ": OK (1 connection(s), 1 export definition(s))") {
			t.Errorf("first line %q", ok)
		}
		return yaml
	}
	printed := print(path)
	for _, want := range []string{"\n    uploads: 2\n", "\n    signed_url_expiry: 1h0m0s\n", "\n      directory: d\n", "\n    completion: complete\n", "\n    path: exports/a/\n"} {
		if !strings.Contains(printed, want) {
			t.Errorf("--print lacks %q:\n%s", want, printed)
		}
	}
	for _, unwanted := range []string{"uploads: 0", "signed_url_expiry: 0s", `""`, "job:", "directory_id", "token"} {
		if strings.Contains(printed, unwanted) {
			t.Errorf("--print holds %q:\n%s", unwanted, printed)
		}
	}
	again := filepath.Join(dir, "printed.yaml")
	if err := os.WriteFile(again, []byte(printed), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := print(again); got != printed {
		t.Errorf("--print of the printed config differs:\n%s\nfirst:\n%s", got, printed)
	}
}
