package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadmeTrainingJob runs the README's Python training-job example
// ("For training jobs") against the demo's whole-project export: it must
// find the export, pass its own size and SHA-256 checks, and count the
// COCO object's images and annotations as they are.
func TestReadmeTrainingJob(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 is needed to run the README's training-job example: %v", err)
		}
		t.Skipf("python3: %v", err)
	}
	blocks := codeBlocks(readme(t, "### For training jobs"), "python")
	if len(blocks) != 1 {
		t.Fatalf("%d python blocks in the section, want 1", len(blocks))
	}
	if n := strings.Count(blocks[0], "\n"); n > 40 {
		t.Errorf("the example has %d lines; it is meant to be about 30", n)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "read_coco.py")
	if err := os.WriteFile(script, []byte(blocks[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := demoConfig(t, dir)
	demo := startDemo(t, "--config", cfg, "--rate", "200", "--files", "8")
	defer demo.stop(t)

	// An export with COCO annotations in it.
	bucket := filepath.Join(dir, "bucket")
	type object struct {
		Key string `json:"key"`
	}
	var latest struct {
		ID      int64             `json:"id"`
		Formats map[string]object `json:"formats"`
	}
	var coco struct {
		Images      []json.RawMessage `json:"images"`
		Annotations []json.RawMessage `json:"annotations"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no whole-project export with COCO annotations after 60 s:\n%s", demo.stderr.String())
		}
		b, err := os.ReadFile(filepath.Join(bucket, "exports", "whole-project", "latest.json"))
		if err != nil || json.Unmarshal(b, &latest) != nil || latest.Formats["coco"].Key == "" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(bucket, filepath.FromSlash(latest.Formats["coco"].Key)))
		if err == nil && json.Unmarshal(raw, &coco) == nil && len(coco.Annotations) > 0 {
			break
		}
	}
	// The demo goes on exporting: the script reads whatever latest.json
	// says then, which is this export or a newer one.
	cmd := exec.Command(python, script, bucket, "exports/whole-project/", fmt.Sprint(latest.ID-1))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 %s: %v\n%s", script, err, out)
	}
	var id int64
	var images, annotations int
	if _, err := fmt.Sscanf(string(out), "export %d (events up to", &id); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if _, err := fmt.Sscanf(first[strings.Index(first, "):")+2:], " %d images, %d annotations", &images, &annotations); err != nil {
		t.Fatalf("output %q: %v", first, err)
	}
	if id < latest.ID {
		t.Errorf("the script read export %d, older than %d", id, latest.ID)
	}
	if id == latest.ID && (images != len(coco.Images) || annotations != len(coco.Annotations)) {
		t.Errorf("the script counted %d images and %d annotations, the COCO object has %d and %d", images, annotations, len(coco.Images), len(coco.Annotations))
	}
	if !strings.Contains(string(out), "media links expire in") {
		t.Errorf("the script said nothing about media links:\n%s", out)
	}
}
