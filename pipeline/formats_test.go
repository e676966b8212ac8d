package pipeline

import (
	"bytes"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/exportstream/exportstream/events/simulate"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

var formatsAt = time.Date(2026, 11, 28, 10, 0, 0, 123456000, time.UTC)

// renderAll renders the definition's export in every format in one pass,
// checks that its Diffgram document is the one Render writes, and returns
// the objects by format with their results.
func renderAll(t *testing.T, s *State, d *Definition, classes []int64) (map[string][]byte, map[string]FormatObject) {
	t.Helper()
	var want bytes.Buffer
	if _, err := s.Render(&want, d, 42, formatsAt); err != nil {
		t.Fatal(err)
	}
	bufs := map[string]*bytes.Buffer{}
	var outs []formatOut
	for _, f := range formatOrder {
		bufs[f] = &bytes.Buffer{}
		outs = append(outs, formatOut{format: f, w: bufs[f]})
	}
	var res []FormatObject
	var err error
	s.Read(func(v View) {
		pl := buildPlan(v, d)
		pl.classes = classes
		res, err = pl.renderFormats(outs, 42, formatsAt)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bufs[FormatDiffgram].Bytes(), want.Bytes()) {
		t.Fatalf("the one-pass Diffgram document differs from Render's")
	}
	data, objs := map[string][]byte{}, map[string]FormatObject{}
	for i, o := range outs {
		data[o.format] = bufs[o.format].Bytes()
		objs[o.format] = res[i]
		if res[i].Bytes != int64(bufs[o.format].Len()) {
			t.Errorf("%s: %d bytes reported, %d written", o.format, res[i].Bytes, bufs[o.format].Len())
		}
	}
	return data, objs
}

// checkFormats runs the independent readers on an export's formats and
// returns what they read, for the caller's own checks.
func checkFormats(t *testing.T, data map[string][]byte, objs map[string]FormatObject, classes []int64) (*pipelinetest.Doc, *pipelinetest.YOLO) {
	t.Helper()
	dg, err := pipelinetest.ReadDoc(data[FormatDiffgram])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pipelinetest.CheckCOCO(data[FormatCOCO], dg, objs[FormatCOCO].SkippedInstances) {
		t.Errorf("COCO: %s", p)
	}
	for _, p := range pipelinetest.StrictJSONCheck(data[FormatCOCO]) {
		t.Errorf("COCO JSON: %s", p)
	}
	y, problems := pipelinetest.ReadYOLO(data[FormatYOLO])
	for _, p := range problems {
		t.Errorf("YOLO: %s", p)
	}
	for _, p := range pipelinetest.CheckYOLO(y, dg, objs[FormatYOLO].SkippedInstances, classes) {
		t.Errorf("YOLO: %s", p)
	}
	for _, p := range pipelinetest.CheckJSONL(data[FormatJSONL], dg) {
		t.Errorf("JSONL: %s", p)
	}
	return dg, y
}

// TestFormatsExamples renders every definition of both contract examples
// in every format and reads each with its independent reader.
func TestFormatsExamples(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range scenarios {
		exp, err := pipelinetest.LoadExpected(dir)
		if err != nil {
			t.Fatal(err)
		}
		s := NewState()
		applyAll(t, s, readLines(t, dir))
		for _, name := range slices.Sorted(maps.Keys(exp.Definitions)) {
			ed := exp.Definitions[name]
			if ed.NoExport {
				continue
			}
			t.Run(filepath.Base(dir)+"/"+name, func(t *testing.T) {
				d := definitionFor(t, name, exp.Project, ed)
				data, objs := renderAll(t, s, d, nil)
				dg, y := checkFormats(t, data, objs, nil)
				if len(dg.FileIDs) != ed.FileListLength {
					t.Errorf("%d file entries, want %d", len(dg.FileIDs), ed.FileListLength)
				}
				if len(y.Labels) == 0 {
					t.Errorf("no YOLO label files")
				}
			})
		}
	}
}

// TestFormatsSimulator renders the demo simulator's data (boxes, polygons,
// videos, compound files, removed files and instances) in every format and
// reads each with its independent reader.
func TestFormatsSimulator(t *testing.T) {
	sim := simulate.New(simulate.Options{Seed: 7, Files: 40}, nil)
	var lines []line
	for range 6000 {
		subject, body, _ := sim.Next()
		lines = append(lines, line{subject, body})
	}
	s := NewState()
	if bad := applyAll(t, s, lines); bad != 0 {
		t.Fatalf("%d bad events from the simulator", bad)
	}
	kinds := map[string]bool{}
	for _, d := range []*Definition{
		{Name: "all", Project: simulate.DefaultProject, Source: Source{Kind: SourceProject}, Completion: CompletionAll},
		{Name: "removed", Project: simulate.DefaultProject, Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true},
		{Name: "luckfrill", Project: simulate.DefaultProject, Source: Source{Kind: SourceDirectory, Name: "Luckfrill"}, Completion: CompletionComplete},
	} {
		t.Run(d.Name, func(t *testing.T) {
			data, objs := renderAll(t, s, d, nil)
			_, y := checkFormats(t, data, objs, nil)
			for _, ls := range y.Labels {
				for _, l := range ls {
					kinds[map[bool]string{true: "box", false: "segment"}[len(l) == 5]] = true
				}
			}
		})
	}
	// The readers saw both kinds of object: the test covers them.
	if !kinds["box"] || !kinds["segment"] {
		t.Errorf("the simulator's exports hold %v; want boxes and segments", kinds)
	}
}

// TestFormatsPassesAgree: a pass writing one format writes the bytes a
// pass writing every format writes for it.
func TestFormatsPassesAgree(t *testing.T) {
	dir, exp := orderedExample(t)
	s := NewState()
	applyAll(t, s, readLines(t, dir))
	d := definitionFor(t, "all", exp.Project, exp.Definitions[slices.Sorted(maps.Keys(exp.Definitions))[0]])
	d.Completion = CompletionAll
	all, _ := renderAll(t, s, d, nil)
	for _, f := range formatOrder {
		var buf bytes.Buffer
		var err error
		s.Read(func(v View) {
			_, err = buildPlan(v, d).renderFormats([]formatOut{{format: f, w: &buf}}, 42, formatsAt)
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), all[f]) {
			t.Errorf("%s alone differs from %s in a pass with every format", f, f)
		}
	}
}

// TestYOLOClassMap: the class ids follow the class map given (a label
// keeps its id), labels the map lacks are appended by id, and data.yaml
// names the classes in that order.
func TestYOLOClassMap(t *testing.T) {
	dir, exp := orderedExample(t)
	s := NewState()
	applyAll(t, s, readLines(t, dir))
	d := &Definition{Name: "all", Project: exp.Project, Source: Source{Kind: SourceProject}, Completion: CompletionAll}
	var labels []int64
	for id := range exp.LabelMap {
		var n int64
		fmt.Sscan(id, &n)
		labels = append(labels, n)
	}
	slices.Sort(labels)
	if len(labels) < 2 {
		t.Fatalf("the example has %d labels; the test needs two", len(labels))
	}
	// An older map: the newest label first, and a label no longer there.
	old := []int64{labels[len(labels)-1], 999999}
	var pl *plan
	s.Read(func(v View) { pl = buildPlan(v, d) })
	classes := mergeClasses(old, pl.labels)
	want := append(slices.Clone(old), labels[:len(labels)-1]...)
	if !slices.Equal(classes, want) {
		t.Fatalf("mergeClasses(%v) = %v, want %v", old, classes, want)
	}
	data, objs := renderAll(t, s, d, classes)
	_, y := checkFormats(t, data, objs, classes)
	if y.Names[0] != exp.LabelMap[fmt.Sprint(labels[len(labels)-1])] || y.Names[1] != "999999" {
		t.Errorf("names %q: want the newest label first, then the gone label's id", y.Names)
	}
}

// TestFormatsCases renders the cases the examples lack (boxes leaving the
// picture or with swapped corners, polygons of several figures or too few
// points, keypoints, labels missing or removed, a picture without a
// size, colliding stems, video frames, compound children, removed
// instances) and the golden render cases, in every format, and reads each
// with its independent reader.
func TestFormatsCases(t *testing.T) {
	for _, tc := range []struct {
		file string
		defs []*Definition
	}{
		{"testdata/format-cases.jsonl", []*Definition{
			{Name: "all", Project: "fmt", Source: Source{Kind: SourceProject}, Completion: CompletionAll},
			{Name: "with-removed", Project: "fmt", Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true},
			{Name: "dir", Project: "fmt", Source: Source{Kind: SourceDirectory, Name: "d"}, Completion: CompletionComplete},
		}},
		{"testdata/render-cases.jsonl", []*Definition{
			{Name: "g", Project: "golden", Source: Source{Kind: SourceDirectory, Name: "All Files/2026"}, Completion: CompletionComplete},
			{Name: "g", Project: "golden", Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true},
		}},
	} {
		s := NewState()
		if bad := applyAll(t, s, readLines(t, tc.file)); bad != 0 {
			t.Fatalf("%s: %d bad lines", tc.file, bad)
		}
		for _, d := range tc.defs {
			t.Run(filepath.Base(tc.file)+"/"+d.Name+"/"+string(d.Source.Kind), func(t *testing.T) {
				data, objs := renderAll(t, s, d, nil)
				_, y := checkFormats(t, data, objs, nil)
				if d.Project != "fmt" || d.Source.Kind != SourceProject {
					return
				}
				for _, stem := range []string{"a_b", "b", "b_3", "b_3_10", "nosize", "empty", "clip_3", "clip_7", "left", "right", "12"} {
					if _, ok := y.Labels[stem]; !ok {
						t.Errorf("no label file %s; have %v", stem, slices.Sorted(maps.Keys(y.Labels)))
					}
				}
				if n := len(y.Labels["empty"]); n != 0 {
					t.Errorf("empty.jpg has %d lines, want none", n)
				}
				if sk := objs[FormatCOCO].SkippedInstances; sk["point"] != 1 || sk["ellipse"] != 1 || sk["relation"] != 1 || sk["box"] < 3 {
					t.Errorf("COCO skipped_instances %v: want the point, the ellipse, the relation and three boxes at least", sk)
				}
			})
		}
	}
}

// A definition's settings fingerprint (what makes a restart export it
// again) covers its formats beyond the Diffgram one; a Diffgram-only
// definition keeps the fingerprint it had before formats existed.
func TestFingerprintCoversFormats(t *testing.T) {
	base := Definition{Name: "d", Project: "p", Connection: "disk", Path: "x/"}
	only := base
	only.Formats = []string{FormatDiffgram}
	more := base
	more.Formats = []string{FormatCOCO}
	other := base
	other.Formats = []string{FormatCOCO, FormatYOLO}
	if base.fingerprint() != only.fingerprint() {
		t.Errorf("[diffgram] and no formats differ: %q, %q", base.fingerprint(), only.fingerprint())
	}
	if base.fingerprint() == more.fingerprint() || more.fingerprint() == other.fingerprint() {
		t.Errorf("formats missing from the fingerprint: %q, %q, %q", base.fingerprint(), more.fingerprint(), other.fingerprint())
	}
}
