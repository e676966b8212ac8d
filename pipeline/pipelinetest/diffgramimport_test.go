package pipelinetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// validDiffgramExport is a minimal export of one image and one video that
// Diffgram's re-import wizard accepts: every instance type it knows on the
// image, a sequence on the video, and a parent_instance_list instance without
// frame_number (the wizard does not read that list).
const validDiffgramExport = `{
 "readme": {"about": "Diffgram export, format 1.0"},
 "label_map": {"101": "car", "102": "person"},
 "label_colour_map": {"101": {"hex": "#ff0000"}, "102": {"hex": "#00ff00"}},
 "export_info": {"id": 7, "export_format_version": "1.0", "kind": "Annotations", "file_list_length": 2},
 "attribute_groups_reference": [
  {"id": 3, "kind": "select", "name": "occluded", "prompt": "Occluded?", "is_global": false,
   "global_type": null, "default_value": null, "default_id": null, "min_value": null, "max_value": null,
   "archived": false,
   "attribute_template_list": [{"id": 31, "name": "yes", "value_type": null, "archived": false, "parent_id": null, "group_id": 3, "display_order": 0}],
   "label_file_list": [{"id": 101, "type": "label", "state": "added", "colour": {"hex": "#ff0000"}, "label": {"id": 1, "name": "car"}}]}
 ],
 "5001": {
  "file": {"id": 5001, "original_filename": "a.jpg", "blob_url": "https://b/a.jpg", "created_time": "2024-01-01T00:00:00Z", "ann_is_complete": true, "type": "image"},
  "image": {"width": 640, "height": 480},
  "instance_list": [
   {"id": 900001, "type": "box", "attribute_groups": {"3": {"id": 31, "name": "yes"}}, "label_file_id": 101, "x_min": 1, "y_min": 2, "x_max": 30, "y_max": 40},
   {"id": 900002, "type": "polygon", "attribute_groups": null, "label_file_id": 102, "points": [{"x": 1, "y": 1}, {"x": 5, "y": 1}, {"x": 5, "y": 5}]},
   {"id": 900003, "type": "ellipse", "attribute_groups": null, "label_file_id": 101, "center_x": 10, "center_y": 10, "width": 4, "height": 2, "angle": 0},
   {"id": 900004, "type": "point", "attribute_groups": null, "label_file_id": 101, "points": [{"x": 3, "y": 4}]},
   {"id": 900005, "type": "line", "attribute_groups": null, "label_file_id": 101, "points": [{"x": 0, "y": 0}, {"x": 9, "y": 9}]},
   {"id": 900006, "type": "cuboid", "attribute_groups": null, "label_file_id": 101,
    "front_face": {"top_left": {"x": 0, "y": 0}, "top_right": {"x": 4, "y": 0}, "bot_left": {"x": 0, "y": 4}, "bot_right": {"x": 4, "y": 4}},
    "rear_face": {"top_left": {"x": 1, "y": 1}, "top_right": {"x": 5, "y": 1}, "bot_left": {"x": 1, "y": 5}, "bot_right": {"x": 5, "y": 5}}},
   {"id": 900007, "type": "global", "attribute_groups": {"3": {"id": 31}}, "label_file_id": null}
  ]
 },
 "5002": {
  "file": {"id": 5002, "original_filename": "v.mp4", "blob_url": "https://b/v.mp4", "created_time": "2024-01-01T00:00:00Z", "ann_is_complete": true, "type": "video"},
  "video": {"width": 640, "height": 480, "frame_rate": 30},
  "parent_instance_list": [
   {"id": 900019, "type": "box", "attribute_groups": null, "label_file_id": 102, "x_min": 1, "y_min": 1, "x_max": 2, "y_max": 2}
  ],
  "sequence_list": [
   {"id": 12, "label_file_id": 102, "number": 1, "keyframe_list": [0, 5], "single_frame": false, "instance_list": [
    {"id": 900010, "type": "box", "attribute_groups": null, "label_file_id": 102, "x_min": 1, "y_min": 1, "x_max": 9, "y_max": 9,
     "frame_number": 0, "global_frame_number": 0, "local_sequence_number": 1, "number": 1, "interpolated": false},
    {"id": 900011, "type": "box", "attribute_groups": null, "label_file_id": 102, "x_min": 2, "y_min": 2, "x_max": 9, "y_max": 9,
     "frame_number": 5, "global_frame_number": 5, "local_sequence_number": 1, "number": 1, "interpolated": false}
   ]}
  ]
 }
}`

// mutate decodes the valid export, applies f and encodes the result.
func mutate(t *testing.T, f func(doc map[string]any)) []byte {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(validDiffgramExport))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	f(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// obj walks doc by object keys and array indexes.
func obj(v any, path ...any) map[string]any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v.(map[string]any)
}

func TestDiffgramImportCheckAcceptsValidExport(t *testing.T) {
	if p := DiffgramImportCheck([]byte(validDiffgramExport)); len(p) != 0 {
		t.Fatalf("valid export: %q", p)
	}
	if p := StrictJSONCheck([]byte(validDiffgramExport)); len(p) != 0 {
		t.Fatalf("valid export: %q", p)
	}
	// Re-encoded (keys sorted, whitespace gone) it is still valid.
	if p := DiffgramImportCheck(mutate(t, func(map[string]any) {})); len(p) != 0 {
		t.Fatalf("re-encoded valid export: %q", p)
	}
}

func TestDiffgramImportCheckFindsProblems(t *testing.T) {
	image := func(doc map[string]any, i int) map[string]any { return obj(doc, "5001", "instance_list", i) }
	frame := func(doc map[string]any, i int) map[string]any {
		return obj(doc, "5002", "sequence_list", 0, "instance_list", i)
	}
	group := func(doc map[string]any) map[string]any { return obj(doc, "attribute_groups_reference", 0) }
	cases := []struct {
		name string
		f    func(doc map[string]any)
		want string
	}{
		{"group without default_value", func(d map[string]any) { delete(group(d), "default_value") },
			`attribute group 3: key "default_value" is missing (read at agm.ts:92)`},
		{"group without min_value", func(d map[string]any) { delete(group(d), "min_value") },
			`attribute group 3: key "min_value" is missing (read at agm.ts:103)`},
		{"group without max_value", func(d map[string]any) { delete(group(d), "max_value") },
			`attribute group 3: key "max_value" is missing`},
		{"group without default_id", func(d map[string]any) { delete(group(d), "default_id") },
			`attribute group 3: key "default_id" is missing`},
		{"group without kind", func(d map[string]any) { delete(group(d), "kind") },
			`attribute group 3: key "kind" is missing`},
		{"group without prompt", func(d map[string]any) { delete(group(d), "prompt") },
			`attribute group 3: key "prompt" is missing (read at agm.ts:75)`},
		{"group without is_global", func(d map[string]any) { delete(group(d), "is_global") },
			`attribute group 3: key "is_global" is missing (read at validator.vue:519)`},
		{"group without label_file_list", func(d map[string]any) { delete(group(d), "label_file_list") },
			`attribute group 3: key "label_file_list" is missing`},
		{"group label without name", func(d map[string]any) { delete(obj(group(d), "label_file_list", 0), "label") },
			`attribute group 3: label_file_list[0] has no label.name`},
		{"template without name", func(d map[string]any) { delete(obj(group(d), "attribute_template_list", 0), "name") },
			`attribute group 3: attribute_template_list[0] has no "name"`},
		{"group id not an integer", func(d map[string]any) { group(d)["id"] = "three" },
			`id is "three", not an integer`},
		{"attribute_groups_reference an object", func(d map[string]any) { d["attribute_groups_reference"] = map[string]any{"a": 1} },
			`attribute_groups_reference is an object, not an array`},
		{"ellipse without angle", func(d map[string]any) { delete(image(d, 2), "angle") },
			`file 5001 instance 900003 (ellipse): angle is missing`},
		{"box without x_min", func(d map[string]any) { delete(image(d, 0), "x_min") },
			`file 5001 instance 900001 (box): x_min is missing`},
		{"polygon without points", func(d map[string]any) { delete(image(d, 1), "points") },
			`file 5001 instance 900002 (polygon): points is missing`},
		{"polygon points null", func(d map[string]any) { image(d, 1)["points"] = nil },
			`file 5001 instance 900002 (polygon): points is null`},
		{"point without y", func(d map[string]any) { delete(obj(image(d, 3), "points", 0), "y") },
			`file 5001 instance 900004 (point): points[0] has no y`},
		{"cuboid without a corner", func(d map[string]any) { delete(obj(image(d, 5), "rear_face"), "bot_left") },
			`file 5001 instance 900006 (cuboid): rear_face.bot_left is missing`},
		{"unknown instance type", func(d map[string]any) { image(d, 0)["type"] = "keypoints" },
			`file 5001 instance 900001: type "keypoints" is not one of`},
		{"instance without label_file_id", func(d map[string]any) { delete(image(d, 0), "label_file_id") },
			`file 5001 instance 900001: label_file_id is missing`},
		{"label not in label_map", func(d map[string]any) { image(d, 0)["label_file_id"] = json.Number("999") },
			`file 5001 instance 900001: label_file_id 999 is not in label_map`},
		{"image without instance_list", func(d map[string]any) { delete(obj(d, "5001"), "instance_list") },
			`file 5001: instance_list is missing, not an array`},
		{"video instance without frame_number", func(d map[string]any) { delete(frame(d, 0), "frame_number") },
			`file 5002 sequence 12 instance 900010: frame_number is missing`},
		{"video instance frame_number null", func(d map[string]any) { frame(d, 1)["frame_number"] = nil },
			`file 5002 sequence 12 instance 900011: frame_number is null, not a number: isNaN lets it through`},
		{"video instance frame_number a word", func(d map[string]any) { frame(d, 1)["frame_number"] = "five" },
			`file 5002 sequence 12 instance 900011: frame_number is "five": the wizard throws "Invalid frame_number"`},
		{"video instance frame_number a numeric string", func(d map[string]any) { frame(d, 1)["frame_number"] = " 5 " },
			`file 5002 sequence 12 instance 900011: frame_number is " 5 ", not a number: isNaN lets it through`},
		{"video instance frame_number an object", func(d map[string]any) { frame(d, 1)["frame_number"] = map[string]any{} },
			`file 5002 sequence 12 instance 900011: frame_number is an object: the wizard throws "Invalid frame_number"`},
		{"video instance without number", func(d map[string]any) { delete(frame(d, 1), "number") },
			`file 5002 sequence 12 instance 900011: number (the sequence number) is missing`},
		{"video instance number a word", func(d map[string]any) { frame(d, 1)["number"] = "one" },
			`file 5002 sequence 12 instance 900011: number is "one": the wizard throws "Instance sequence number must be a number"`},
		{"video ellipse without angle", func(d map[string]any) {
			in := frame(d, 0)
			in["type"] = "ellipse"
			in["center_x"], in["center_y"], in["width"], in["height"] = 1, 1, 1, 1
		}, `file 5002 sequence 12 instance 900010 (ellipse): angle is missing`},
		{"video without sequence_list", func(d map[string]any) { delete(obj(d, "5002"), "sequence_list") },
			`file 5002: sequence_list is missing, not an array`},
		{"sequence without instance_list", func(d map[string]any) { delete(obj(d, "5002", "sequence_list", 0), "instance_list") },
			`file 5002 sequence 12: instance_list is missing, not an array`},
		{"audio entry (null)", func(d map[string]any) { d["5007"] = nil },
			`file 5007: entry is null`},
		{"audio entry with a file", func(d map[string]any) {
			d["5008"] = map[string]any{"file": map[string]any{"original_filename": "a.wav", "blob_url": "u", "type": "audio"}}
		}, `file 5008: file.type is "audio", not image or video`},
		{"text entry", func(d map[string]any) {
			d["6000"] = map[string]any{"file": map[string]any{"original_filename": "t.txt", "blob_url": "u", "type": "text"}, "instance_list": []any{}}
		}, `file 6000: file.type is "text", not image or video: the wizard throws "Invalid File type" (ingestor.ts:240`},
		{"compound entry", func(d map[string]any) {
			d["6001"] = map[string]any{"file": map[string]any{"original_filename": "c", "blob_url": "u", "type": "compound"}, "instance_list": []any{}}
		}, `file 6001: file.type is "compound"`},
		{"sensor_fusion entry", func(d map[string]any) {
			d["6002"] = map[string]any{"file": map[string]any{"original_filename": "p.pcd", "blob_url": "u", "type": "sensor_fusion"}}
		}, `file 6002: file.type is "sensor_fusion"`},
		{"geospatial entry", func(d map[string]any) {
			d["6003"] = map[string]any{"file": map[string]any{"original_filename": "g.tif", "blob_url": "u", "type": "geospatial"}}
		}, `file 6003: file.type is "geospatial"`},
		{"file without blob_url", func(d map[string]any) { delete(obj(d, "5001", "file"), "blob_url") },
			`file 5001: file.blob_url is missing: the wizard throws "has no blob"`},
		{"file with empty original_filename", func(d map[string]any) { obj(d, "5001", "file")["original_filename"] = "" },
			`file 5001: file.original_filename is "": the wizard throws`},
		{"entry without file", func(d map[string]any) { delete(obj(d, "5001"), "file") },
			`file 5001: no "file" object`},
		{"non-integer top-level key", func(d map[string]any) { d["notes"] = map[string]any{"a": 1} },
			`top-level key "notes" is neither a metadata key nor a file id: the wizard throws "unrecognized key"`},
		{"non-decimal top-level key", func(d map[string]any) { d["12abc"] = d["5001"] },
			`top-level key "12abc" is not a decimal file id`},
		{"missing label_colour_map", func(d map[string]any) { delete(d, "label_colour_map") },
			`top-level key "label_colour_map" is missing: the wizard throws "Invalid Export Format"`},
		{"empty readme string", func(d map[string]any) { d["readme"] = "" },
			`top-level key "readme" is "", which is falsy`},
		{"null export_info", func(d map[string]any) { d["export_info"] = nil },
			`top-level key "export_info" is null, which is falsy`},
		{"label name not a string", func(d map[string]any) { obj(d, "label_map")["102"] = json.Number("5") },
			`label_map["102"] is 5, not a label name`},
		{"colour missing for a label", func(d map[string]any) { delete(obj(d, "label_colour_map"), "102") },
			`label_colour_map has no entry for label file 102`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := mutate(t, tc.f)
			p := DiffgramImportCheck(doc)
			t.Logf("%q", p)
			if !containsProblem(p, tc.want) {
				t.Fatalf("want a problem containing %q, got %q", tc.want, p)
			}
			// The document stays well-formed JSON: only the importer check fails.
			if s := StrictJSONCheck(doc); len(s) != 0 {
				t.Fatalf("StrictJSONCheck: %q", s)
			}
		})
	}
}

func TestDiffgramImportCheckReportsEveryProblem(t *testing.T) {
	doc := mutate(t, func(d map[string]any) {
		delete(obj(d, "attribute_groups_reference", 0), "default_value")
		delete(obj(d, "5001", "instance_list", 2), "angle")
		delete(obj(d, "5002", "sequence_list", 0, "instance_list", 0), "frame_number")
		d["5007"] = nil
	})
	p := DiffgramImportCheck(doc)
	if len(p) != 4 {
		t.Fatalf("want 4 problems, got %d: %q", len(p), p)
	}
}

func TestDiffgramImportCheckNotJSON(t *testing.T) {
	for _, doc := range []string{`{"readme": `, `[1, 2]`, ``, `{} {}`} {
		if p := DiffgramImportCheck([]byte(doc)); len(p) != 1 {
			t.Errorf("%q: want one problem, got %q", doc, p)
		}
	}
}

func TestStrictJSONCheck(t *testing.T) {
	dupInstance := strings.Replace(validDiffgramExport, `"id": 900003,`, `"id": 900003, "id": 900003,`, 1)
	wide := `{"w": {`
	for i := range 40 {
		wide += fmt.Sprintf(`"k%d": %d, `, i, i)
	}
	wide += `"k3": true}}`
	badUTF8 := []byte(strings.Replace(validDiffgramExport, `"a.jpg"`, "\"a\xff.jpg\"", 1))
	cases := []struct {
		name string
		doc  []byte
		want string // "" means no problem
	}{
		{"valid", []byte(validDiffgramExport), ""},
		{"sibling objects share keys", []byte(`[{"a": 1}, {"a": 2}, {"b": {"a": 3}, "a": 4}]`), ""},
		{"scalar document", []byte(`12`), ""},
		{"top-level duplicate", []byte(`{"a": 1, "b": 2, "a": 3}`), `duplicate key "a" at $.a`},
		{"duplicate in an instance", []byte(dupInstance), `duplicate key "id" at $["5001"].instance_list[2].id`},
		{"duplicate after unescaping", []byte(`{"x": [{"a": 1, "\u0061": 2}]}`), `duplicate key "a" at $.x[0].a`},
		{"duplicate in nested empty-key object", []byte(`{"": {"k": 1, "k": 2}}`), `duplicate key "k" at $[""].k`},
		{"escaped quote in a key", []byte(`{"a\"b": 1, "c": {"a\"b": 2}, "a\"b": 3}`), `duplicate key "a\"b" at $["a\"b"]`},
		{"values are not keys", []byte(`{"a": "b", "b": "a", "c": ["a", "a"]}`), ""},
		{"arrays in arrays", []byte(`[[1, {"a": 1}], [2, [{"a": 1, "a": 2}]]]`), `duplicate key "a" at $[1][1][0].a`},
		{"wide object", []byte(wide), `duplicate key "k3" at $.w.k3`},
		{"invalid UTF-8", badUTF8, "invalid UTF-8 at byte offset"},
		{"truncated", []byte(`{"a": [1, 2`), "not valid JSON"},
		{"trailing value", []byte(`{} {}`), "after top-level value"},
		{"trailing garbage", []byte(`{"a": 1} x`), "not valid JSON"},
		{"empty", []byte(``), "empty document"},
		{"single quotes", []byte(`{'a': 1}`), "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := StrictJSONCheck(tc.doc)
			if tc.want == "" {
				if len(p) != 0 {
					t.Fatalf("want no problem, got %q", p)
				}
				return
			}
			if !containsProblem(p, tc.want) {
				t.Fatalf("want a problem containing %q, got %q", tc.want, p)
			}
		})
	}
	if p := StrictJSONCheck(badUTF8); !containsProblem(p, fmt.Sprintf("offset %d (0xff)", bytes.IndexByte(badUTF8, 0xff))) {
		t.Fatalf("invalid UTF-8 offset: %q", p)
	}
}

// TestStrictJSONCheckLargeDocument streams a document of many files and
// finds the one duplicate deep inside it.
func TestStrictJSONCheckLargeDocument(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"readme": {}`)
	const n = 50000
	for i := range n {
		fmt.Fprintf(&b, `, "%d": {"file": {"id": %d}, "instance_list": [{"id": %d, "points": [{"x": 1, "y": 2}]}]}`, i, i, i)
		if i == n-7 {
			b.WriteString(`, "dup": {"x": 1, "x": 2}`)
		}
	}
	b.WriteString("}")
	p := StrictJSONCheck(b.Bytes())
	if len(p) != 1 || p[0] != `duplicate key "x" at $.dup.x` {
		t.Fatalf("got %q", p)
	}
}

func containsProblem(problems []string, want string) bool {
	for _, p := range problems {
		if strings.Contains(p, want) {
			return true
		}
	}
	return false
}
