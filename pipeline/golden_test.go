package pipeline

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestRenderGolden renders a small project covering the export rules the
// contract examples do not (every media type, instance field rules,
// relations, removed instances, attribute groups, escaping) and compares
// the documents with testdata/*.golden.json. Run with -update to rewrite
// them, then review the diff.
func TestRenderGolden(t *testing.T) {
	s := NewState()
	if bad := applyAll(t, s, readLines(t, "testdata/render-cases.jsonl")); bad != 0 {
		t.Fatalf("%d bad lines in the test input", bad)
	}
	for _, tc := range []struct {
		name string
		def  Definition
	}{
		{"directory-complete", Definition{Name: "g", Project: "golden", Source: Source{Kind: SourceDirectory, Name: "All Files/2026"}, Completion: CompletionComplete}},
		{"project-with-removed", Definition{Name: "g", Project: "golden", Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			res, err := s.Render(&buf, &tc.def, 42, time.Date(2026, 11, 28, 10, 0, 0, 123456000, time.UTC))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pipelinetest.StrictJSONCheck(buf.Bytes()) {
				t.Errorf("%s", p)
			}
			sub, err := pipelinetest.ImagesAndVideos(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pipelinetest.DiffgramImportCheck(sub) {
				t.Errorf("Diffgram's importer: %s", p)
			}
			var pretty bytes.Buffer
			json.Indent(&pretty, buf.Bytes(), "", "  ")
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("document differs from %s (-want +got):\n%s", path, diff)
			}
			if res.Ref != "All-Files-2026" && tc.def.Source.Kind == SourceDirectory {
				t.Errorf("ref %q, want All-Files-2026", res.Ref)
			}
		})
	}
}
