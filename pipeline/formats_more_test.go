package pipeline

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/events/simulate"
)

// TestFormatsReadersOnMoreData: beyond the contract examples and the
// simulator's small run (formats_test.go), every format passes its
// independent reader (pipeline/pipelinetest) on the format and render
// cases, a large simulator dataset, the benchmark's data, the edge cases
// of edgeFormatEvents and randomFormatEvents' entries (odd values made to
// trip the one-pass scanner of format_shapes.go): the readers and the
// writers must agree on what counts as a frame, a size and a number
// (docs/contract-decisions.md, "Which values count").
func TestFormatsReadersOnMoreData(t *testing.T) {
	type dataset struct {
		name  string
		lines []line
		defs  []*Definition
	}
	all := func(project string) []*Definition {
		return []*Definition{
			{Name: "all", Project: project, Source: Source{Kind: SourceProject}, Completion: CompletionAll},
			{Name: "removed", Project: project, Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true},
		}
	}
	sets := []dataset{
		{"format-cases", readLines(t, "testdata/format-cases.jsonl"), all("fmt")},
		{"render-cases", readLines(t, "testdata/render-cases.jsonl"), all("golden")},
		{"edges", edgeFormatEvents(), all("edge")},
	}
	for seed := range uint64(4) {
		sets = append(sets, dataset{fmt.Sprint("random-", seed), randomFormatEvents(rand.New(rand.NewPCG(seed, 2)), 400), all("rnd")})
	}
	// The big datasets (20,000 files; 60,000 simulated events) are left
	// out by -short.
	if !testing.Short() {
		sets = append(sets, dataset{"bench", syntheticEvents(2000, 10), all("bench")})
		sim := simulate.New(simulate.Options{Seed: 11, Files: 300}, nil)
		var simLines []line
		for range 60000 {
			subject, body, _ := sim.Next()
			simLines = append(simLines, line{subject, body})
		}
		sets = append(sets, dataset{"simulator", simLines, all(simulate.DefaultProject)})
	}
	for _, ds := range sets {
		s := NewState()
		applyAll(t, s, ds.lines)
		for _, d := range ds.defs {
			t.Run(ds.name+"/"+d.Name, func(t *testing.T) {
				data, objs := renderAll(t, s, d, nil)
				checkFormats(t, data, objs, nil)
			})
		}
	}
}

// envelopes returns a function that wraps an entity's data in an event of
// project proj, numbering the events' ids idPrefix1, idPrefix2, ...
func envelopes(proj, idPrefix string) func(kind, action, data string) line {
	n := 0
	return func(kind, action, data string) line {
		n++
		return line{
			subject: "diffgram.events." + proj + "." + kind + "." + action,
			body: []byte(`{"specversion":"1.0","id":"` + idPrefix + fmt.Sprint(n) + `","source":"t","type":"diffgram.` + kind + "." + action +
				`","diffgramproject":"` + proj + `","data":` + data + `}`),
		}
	}
}

// randomFormatEvents returns the events of project "rnd": labels, and
// files (images, videos with sequences, compound files with children,
// text files) with instances whose members take odd values.
func randomFormatEvents(r *rand.Rand, files int) []line {
	const proj = "rnd"
	env := envelopes(proj, "r")
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	num := func() string {
		return pick("0", "-0", "7", "-3", "12.5", "0.1", "1e2", "2.5E-1", "-7.25", "1920", "100000",
			"12345678901234567890", "9007199254740993", "1e400", "null", `"5"`, "true", "[]", "{}", fmt.Sprint(r.IntN(3000)),
			fmt.Sprintf("%.3f", r.Float64()*2000))
	}
	name := func(id int) string {
		return pick(fmt.Sprintf(`"img_%d.jpg"`, id), `"a/b.jpg"`, `"a\\b.png"`, `"same.jpg"`, `"same"`, `null`,
			`"caf\u00e9 \"q\".jpg"`, `".hidden"`, `"x.tar.gz"`, `"é/ü.jpg"`, `""`, `"..jpg"`)
	}
	out := []line{
		env("project", "upserted", `{"project":{"string_id":"rnd","name":"R","version":1}}`),
		env("label", "upserted", `{"label_file":{"id":11,"label":{"id":1,"name":"car"},"colour":{"hex":"#ff0000"},"state":"added","version":1}}`),
		env("label", "upserted", `{"label_file":{"id":12,"label":{"id":2,"name":"gone"},"colour":{"hex":"#00ff00"},"state":"removed","version":2}}`),
		env("label", "upserted", `{"label_file":{"id":13,"label":{"id":3,"name":"p \"x\""},"colour":{"hex":"#0000ff"},"state":"added","version":1}}`),
		env("label", "upserted", `{"label_file":{"id":5000,"label":{"id":4,"name":"far"},"colour":{"hex":"#0000ff"},"state":"added","version":1}}`),
	}
	inst := 100000
	instance := func(file int, video bool, seqs []int) line {
		inst++
		typ := pick(`"box"`, `"box"`, `"box"`, `"polygon"`, `"polygon"`, `"keypoints"`, `"point"`, `"tag"`, `"ellipse"`, `"cuboid"`, `"global"`)
		var b strings.Builder
		fmt.Fprintf(&b, `{"id":%d,"root_id":%d,"previous_id":null,"version":1,"file_id":%d,"soft_delete":%s,"type":%s,"label_file_id":%s`,
			inst, inst, file, pick("false", "false", "false", "true"), typ, pick("11", "11", "13", "12", "99", "null", "5000"))
		fmt.Fprintf(&b, `,"attribute_groups":%s`, pick("null", `{"x_min":1,"type":"polygon","points":[{"x":1}]}`, `[{"id":1,"nodes":[]}]`))
		switch typ {
		case `"box"`:
			for _, k := range []string{"x_min", "y_min", "x_max", "y_max"} {
				if r.IntN(12) > 0 {
					// A box coordinate that is no number is bad input
					// (the decoder refuses it): null stands for it, and
					// the draws stay those of the other values.
					v := num()
					if strings.ContainsAny(v[:1], `"t[{`) {
						v = "null"
					}
					fmt.Fprintf(&b, `,%q:%s`, k, v)
				}
			}
		case `"polygon"`, `"point"`:
			b.WriteString(`,"points":[`)
			for i := range r.IntN(9) {
				if i > 0 {
					b.WriteString(",")
				}
				x, y := num(), num()
				if r.IntN(4) > 0 {
					x, y = fmt.Sprint(r.IntN(400)-50), fmt.Sprintf("%.2f", r.Float64()*300)
				}
				fmt.Fprintf(&b, `{"x":%s,"y":%s,"figure_id":%s,"name":"p"}`, x, y, pick("null", "1", "2", `"a"`, "1.0"))
			}
			b.WriteString("]")
		case `"keypoints"`:
			b.WriteString(`,"nodes":[`)
			for i := range r.IntN(6) {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `{"x":%s,"y":%d,"occluded":%s,"name":"n"}`, pick(fmt.Sprint(r.IntN(300)), "null", "1.5"), r.IntN(300), pick("false", "true", "null", "1", "0", `""`, `"y"`))
			}
			b.WriteString(`],"edges":[]`)
		case `"ellipse"`:
			b.WriteString(`,"center_x":5,"center_y":5,"width":2,"height":2,"angle":0`)
		}
		if video {
			seq := "null"
			if len(seqs) > 0 && r.IntN(4) > 0 {
				seq = fmt.Sprint(seqs[r.IntN(len(seqs))])
			}
			fmt.Fprintf(&b, `,"frame_number":%s,"global_frame_number":1,"sequence_id":%s,"number":1,"interpolated":false`,
				pick("0", "1", "2", "3", "10", "2", "null", "-1", "4.0", "9007199254740993"), seq)
		}
		b.WriteString("}")
		return env("instance", "created", `{"instance":`+b.String()+`}`)
	}
	fileEvent := func(id int, typ string, parent string, media string) line {
		return env("file", "uploaded", fmt.Sprintf(`{"file":{"id":%d,"type":%q,"original_filename":%s,"created_time":"2026-02-01T00:00:00Z","state":"added","ann_is_complete":true,"directory_ids":[1],"parent_id":%s,"blob_url":"https://m/%d","version":1%s}}`,
			id, typ, name(id), parent, id, media))
	}
	imageMedia := func() string {
		return pick(`,"image":{"width":200,"height":100}`, `,"image":{"width":200,"height":100,"width":5}`, "",
			`,"image":{"height":50}`, `,"image":{"width":0,"height":0}`, `,"image":{"width":"200","height":100}`,
			`,"image":{"width":640.5,"height":480,"extra":{"width":1}}`, `,"image":{"width":-5,"height":1e3}`,
			`,"image":{"width":9007199254740993,"height":0}`)
	}
	id := 0
	for range files {
		id++
		switch k := r.IntN(20); {
		case k < 13:
			out = append(out, fileEvent(id, "image", "null", imageMedia()))
			for range r.IntN(8) {
				out = append(out, instance(id, false, nil))
			}
		case k < 16:
			out = append(out, fileEvent(id, "video", "null", pick(`,"video":{"width":640,"height":480,"frame_rate":5}`, "")))
			var seqs []int
			for i := range r.IntN(3) {
				sq := id*10 + i
				seqs = append(seqs, sq)
				out = append(out, env("sequence", "upserted", fmt.Sprintf(`{"sequence":{"id":%d,"file_id":%d,"label_file_id":11,"number":%d,"keyframe_list":[1],"single_frame":false,"archived":false,"version":1}}`, sq, id, i+1)))
			}
			for range r.IntN(10) {
				out = append(out, instance(id, true, seqs))
			}
		case k < 18:
			parent := id
			out = append(out, fileEvent(parent, "compound", "null", ""))
			out = append(out, instance(parent, false, nil))
			for range 1 + r.IntN(3) {
				id++
				out = append(out, fileEvent(id, pick("image", "image", "video", "text"), fmt.Sprint(parent), imageMedia()))
				for range r.IntN(4) {
					out = append(out, instance(id, false, nil))
				}
			}
		default:
			out = append(out, fileEvent(id, pick("text", "audio", "geospatial"), "null", ""))
			for range r.IntN(3) {
				out = append(out, instance(id, false, nil))
			}
		}
	}
	return out
}

// TestRandomFormatEvents: the random dataset is mostly valid events, and
// holds what the comparison needs (every picture format's kinds).
func TestRandomFormatEvents(t *testing.T) {
	lines := randomFormatEvents(rand.New(rand.NewPCG(1, 2)), 400)
	s := NewState()
	bad := applyAll(t, s, lines)
	t.Logf("bad %d of %d", bad, len(lines))
	if bad > len(lines)/10 {
		t.Fatalf("%d of %d random events are bad", bad, len(lines))
	}
	d := &Definition{Name: "all", Project: "rnd", Source: Source{Kind: SourceProject}, Completion: CompletionAll}
	data, objs := renderAll(t, s, d, nil)
	for _, f := range []string{FormatCOCO, FormatYOLO} {
		if len(objs[f].SkippedInstances) < 3 {
			t.Errorf("%s skipped only %v", f, objs[f].SkippedInstances)
		}
	}
	for _, want := range []string{`"segmentation":[[`, `"keypoints":[`, `"frame_number":`} {
		if !bytes.Contains(data[FormatCOCO], []byte(want)) {
			t.Errorf("COCO output lacks %s", want)
		}
	}
}

// edgeFormatEvents returns the events of project "edge": the values the
// picture formats must take as decided (docs/contract-decisions.md, "Which
// values count"): frame numbers below 0 and beyond 2^53, media sizes of
// 0, below 0 and beyond 2^53, coordinates beyond 2^53 and beyond
// float64's range, ids beyond 2^53.
func edgeFormatEvents() []line {
	const proj = "edge"
	env := envelopes(proj, "e")
	file := func(id int64, typ, name, media string) line {
		return env("file", "uploaded", fmt.Sprintf(`{"file":{"id":%d,"type":%q,"original_filename":%s,"created_time":"2026-02-01T00:00:00Z","state":"added","ann_is_complete":true,"directory_ids":[1],"parent_id":null,"blob_url":"https://m/%d","version":1%s}}`,
			id, typ, name, id, media))
	}
	inst := func(id, file int64, label, rest string) line {
		return env("instance", "created", fmt.Sprintf(`{"instance":{"id":%d,"root_id":%d,"previous_id":null,"version":1,"file_id":%d,"soft_delete":false,"label_file_id":%s,"attribute_groups":null,%s}}`,
			id, id, file, label, rest))
	}
	frame := func(f string, seq string) string {
		return `,"frame_number":` + f + `,"global_frame_number":1,"sequence_id":` + seq + `,"number":1,"interpolated":false`
	}
	box := `"type":"box","x_min":10,"y_min":20,"x_max":110,"y_max":220`
	return []line{
		env("project", "upserted", `{"project":{"string_id":"edge","name":"E","version":1}}`),
		env("label", "upserted", `{"label_file":{"id":11,"label":{"id":1,"name":"car"},"colour":{"hex":"#ff0000"},"state":"added","version":1}}`),
		env("label", "upserted", `{"label_file":{"id":9007199254740993,"label":{"id":2,"name":"big"},"colour":{"hex":"#00ff00"},"state":"added","version":1}}`),
		// Size 0 × 0: the extent of the shapes held (110 × 220); a box
		// beyond float64's range and a polygon with a point that is no
		// number are not held.
		file(1, "image", `"zero.jpg"`, `,"image":{"width":0,"height":0}`),
		inst(101, 1, "11", box),
		inst(102, 1, "11", `"type":"box","x_min":10,"y_min":20,"x_max":1e400,"y_max":220`),
		inst(103, 1, "11", `"type":"polygon","points":[{"x":1,"y":1,"figure_id":null},{"x":5,"y":"5","figure_id":null},{"x":9,"y":1,"figure_id":null}]`),
		// A width beyond 2^53; an instance id and a label id beyond 2^53;
		// a corner beyond 2^53.
		file(2, "image", `"wide.jpg"`, `,"image":{"width":9007199254740993,"height":100}`),
		inst(9007199254740995, 2, "9007199254740993", `"type":"box","x_min":0,"y_min":0,"x_max":12345678901234567890,"y_max":50`),
		// A video: frames below 0 name no frame (skipped); frames beyond
		// 2^53 and int64's largest are frames.
		file(3, "video", `"clip.mp4"`, `,"video":{"width":640,"height":480,"frame_rate":5}`),
		env("sequence", "upserted", `{"sequence":{"id":31,"file_id":3,"label_file_id":11,"number":1,"keyframe_list":[1],"single_frame":false,"archived":false,"version":1}}`),
		inst(301, 3, "11", box+frame("-1", "null")),
		inst(302, 3, "11", box+frame("-5", "31")),
		inst(303, 3, "11", box+frame("0", "31")),
		inst(304, 3, "11", box+frame("9007199254740993", "31")),
		inst(305, 3, "11", box+frame("9223372036854775807", "null")),
		// A file id beyond 2^53, a name whose stem is "." (the stem is the
		// file id), a width of 0 (the extent: 110) and a height.
		file(9007199254740997, "image", `"..jpg"`, `,"image":{"width":0,"height":50}`),
		inst(401, 9007199254740997, "11", box),
		// A width below 0 and a height in exponent form.
		file(5, "image", `"neg.jpg"`, `,"image":{"width":-5,"height":1e3}`),
		inst(501, 5, "11", box),
	}
}

// TestFormatsEdges: what the picture formats make of edgeFormatEvents'
// values, as decided (docs/contract-decisions.md, "Which values count");
// TestFormatsReadersOnMoreData checks the same export with the readers.
func TestFormatsEdges(t *testing.T) {
	s := NewState()
	if bad := applyAll(t, s, edgeFormatEvents()); bad != 0 {
		t.Fatalf("%d bad events", bad)
	}
	d := &Definition{Name: "all", Project: "edge", Source: Source{Kind: SourceProject}, Completion: CompletionAll}
	data, objs := renderAll(t, s, d, nil)
	checkFormats(t, data, objs, nil)
	skipped := map[string]int{"box": 3, "polygon": 1}
	for _, f := range []string{FormatCOCO, FormatYOLO} {
		if got := objs[f].SkippedInstances; !maps.Equal(got, skipped) {
			t.Errorf("%s skipped %v, want %v", f, got, skipped)
		}
	}
	coco := string(data[FormatCOCO])
	for _, want := range []string{
		`"file_name":"zero.jpg","width":110,"height":220,"diffgram_file_id":1}`,
		`"file_name":"wide.jpg","width":9007199254740993,"height":100,`,
		`{"id":9007199254740995,"image_id":2,"category_id":9007199254740993,"bbox":[0,0,12345678901234567000,50]`,
		`{"id":9007199254740993,"name":"big",`,
		`"file_name":"3_0","width":640,"height":480,"diffgram_file_id":3,"frame_number":0,`,
		`"file_name":"3_9007199254740993","width":640,"height":480,"diffgram_file_id":3,"frame_number":9007199254740993,`,
		`"file_name":"3_9223372036854775807","width":640,"height":480,"diffgram_file_id":3,"frame_number":9223372036854775807,`,
		`"file_name":"..jpg","width":110,"height":50,"diffgram_file_id":9007199254740997}`,
		`"file_name":"neg.jpg","width":110,"height":1000,"diffgram_file_id":5}`,
	} {
		if !strings.Contains(coco, want) {
			t.Errorf("COCO lacks %s", want)
		}
	}
	if strings.Contains(coco, `"frame_number":-`) {
		t.Errorf("COCO has a frame below 0")
	}
	_, y := checkFormats(t, data, objs, nil)
	for _, stem := range []string{"zero", "wide", "clip_0", "clip_9007199254740993", "clip_9223372036854775807", "9007199254740997", "neg"} {
		if _, ok := y.Labels[stem]; !ok {
			t.Errorf("YOLO has no labels/%s.txt (has %v)", stem, slices.Sorted(maps.Keys(y.Labels)))
		}
	}
	if len(y.Labels) != 7 {
		t.Errorf("YOLO has %d label files, want 7", len(y.Labels))
	}
}
