package events_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/exportstream/exportstream/events"
)

// examplesDir holds the contract's example streams (shared/contract/examples).
var examplesDir = filepath.Join("..", "..", "shared", "contract", "examples")

// exampleLine is one message of an example stream.
type exampleLine struct {
	line    int // 1-based line number in the file
	subject string
	body    []byte
}

// readExample reads an example stream (SUBJECT<TAB>BODY a line) without
// going through ReadStream, so the decoder tests do not depend on it.
func readExample(t testing.TB, name string) []exampleLine {
	t.Helper()
	f, err := os.Open(filepath.Join(examplesDir, name, "events.jsonl"))
	if err != nil {
		t.Fatalf("example stream %s: %v", name, err)
	}
	defer f.Close()
	var lines []exampleLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	n := 0
	for sc.Scan() {
		n++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		subject, body, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("%s line %d: no tab", name, n)
		}
		lines = append(lines, exampleLine{line: n, subject: subject, body: []byte(body)})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if len(lines) == 0 {
		t.Fatalf("example stream %s is empty", name)
	}
	return lines
}

// ce builds a CloudEvents body of type typ for project street-scenes with
// the given data (raw JSON; "" leaves data out), after applying edits to
// the envelope's attributes.
func ce(typ, data string, edits ...func(map[string]any)) []byte {
	m := map[string]any{
		"specversion":     "1.0",
		"id":              "e-1",
		"source":          "diffgram/projects/street-scenes",
		"type":            typ,
		"time":            "2026-11-28T10:00:00Z",
		"datacontenttype": "application/json",
		"diffgramproject": "street-scenes",
	}
	if data != "" {
		m["data"] = json.RawMessage(data)
	}
	for _, edit := range edits {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func without(key string) func(map[string]any) {
	return func(m map[string]any) { delete(m, key) }
}

func with(key string, v any) func(map[string]any) {
	return func(m map[string]any) { m[key] = v }
}

// subj is the subject of an event of type diffgram.<entity>.<action> in
// project street-scenes.
func subj(entityAction string) string {
	return "diffgram.events.street-scenes." + entityAction
}

const (
	goodFile     = `{"file":{"id":5,"type":"image","original_filename":"a.jpg","state":"added","ann_is_complete":null,"directory_ids":[7],"parent_id":null,"version":1}}`
	goodInstance = `{"instance":{"id":9,"root_id":9,"previous_id":null,"version":1,"file_id":5,"soft_delete":false,"type":"box","label_file_id":101}}`
	goodProject  = `{"project":{"string_id":"street-scenes","name":"Street Scenes","version":1}}`
	maxTestBytes = 4096
)

// badInputs are bodies the contract calls bad input ("Bad input" in
// EVENTS.md), each with a substring of the reason Decode must give. The
// fuzz test seeds its corpus with them.
var badInputs = []struct {
	name    string
	subject string
	body    []byte
	reason  string
}{
	{"not JSON", subj("file.uploaded"), []byte("this is not json"), "not a JSON object"},
	{"truncated JSON", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile)[:40], "not a JSON object"},
	{"empty body", subj("file.uploaded"), nil, "not a JSON object"},
	{"JSON array", subj("file.uploaded"), []byte(`[{"specversion":"1.0"}]`), "not a JSON object"},
	{"JSON string", subj("file.uploaded"), []byte(`"diffgram.file.uploaded"`), "not a JSON object"},
	{"JSON number", subj("file.uploaded"), []byte(`42`), "not a JSON object"},
	{"JSON null", subj("file.uploaded"), []byte(`null`), "body is not a JSON object"},
	{"no specversion", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, without("specversion")), "missing specversion"},
	{"specversion 0.3", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("specversion", "0.3")), `specversion "0.3" is not 1.0`},
	{"specversion number", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("specversion", 1.0)), "specversion"},
	{"missing id", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, without("id")), "missing id"},
	{"empty id", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("id", "")), "missing id"},
	{"id not a string", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("id", 7)), "id"},
	{"missing source", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, without("source")), "missing source"},
	{"missing type", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, without("type")), "missing type"},
	{"unknown action", subj("file.exploded"), ce("diffgram.file.exploded", goodFile), `unknown type "diffgram.file.exploded"`},
	{"unknown entity", subj("widget.upserted"), ce("diffgram.widget.upserted", `{"widget":{"id":1,"version":1}}`), `unknown type "diffgram.widget.upserted"`},
	{"not a diffgram type", subj("file.uploaded"), ce("com.example.file.uploaded", goodFile), `unknown type "com.example.file.uploaded"`},
	{"type without action", subj("file.uploaded"), ce("diffgram.file", goodFile), `unknown type "diffgram.file"`},
	{"subject entity disagrees", subj("task.uploaded"), ce("diffgram.file.uploaded", goodFile), "disagree"},
	{"subject action disagrees", subj("file.updated"), ce("diffgram.file.uploaded", goodFile), "disagree"},
	{"subject project disagrees", "diffgram.events.other-project.file.uploaded", ce("diffgram.file.uploaded", goodFile), `subject project "other-project" and diffgramproject "street-scenes" disagree`},
	{"missing diffgramproject", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, without("diffgramproject")), "missing diffgramproject"},
	{"empty diffgramproject", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("diffgramproject", "")), "missing diffgramproject"},
	{"project not [a-z0-9-]+", "diffgram.events.Street_Scenes.file.uploaded", ce("diffgram.file.uploaded", goodFile, with("diffgramproject", "Street_Scenes")), "is not [a-z0-9-]+"},
	{"subject too short", "street-scenes.file.uploaded", ce("diffgram.file.uploaded", goodFile), "is not <prefix>.<project>.<entity>.<action>"},
	{"empty subject", "", ce("diffgram.file.uploaded", goodFile), "is not <prefix>.<project>.<entity>.<action>"},
	{"data null", subj("file.uploaded"), ce("diffgram.file.uploaded", `null`), "missing data"},
	{"data missing", subj("file.uploaded"), ce("diffgram.file.uploaded", ""), "missing data"},
	{"data an array", subj("file.uploaded"), ce("diffgram.file.uploaded", `[{"file":{"id":5,"version":1}}]`), "data is not an object"},
	{"data a string", subj("file.uploaded"), ce("diffgram.file.uploaded", `"file"`), "data is not an object"},
	{"entity key missing", subj("instance.created"), ce("diffgram.instance.created", goodFile), `data has no "instance"`},
	{"entity key of another kind", subj("label.upserted"), ce("diffgram.label.upserted", `{"label":{"id":101,"version":1}}`), `data has no "label_file"`},
	{"entity null", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":null}`), `data has no "file"`},
	{"entity not an object", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":[5,1]}`), "file is not an object"},
	{"missing version", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"id":5,"type":"image"}}`), "file has no version"},
	{"null version", subj("job.upserted"), ce("diffgram.job.upserted", `{"job":{"id":1,"name":"j","version":null}}`), "job has no version"},
	{"version a string", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"id":5,"version":"1"}}`), "field version: string is not an integer"},
	{"version a fraction", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1.5}}`), "field version: number 1.5 is not an integer"},
	{"version negative", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"id":5,"version":-1}}`), "version -1 is negative"},
	{"id a string", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"id":"nine","version":1}}`), "field id: string is not an integer"},
	{"missing entity id", subj("file.uploaded"), ce("diffgram.file.uploaded", `{"file":{"type":"image","version":1}}`), "file has no id"},
	{"null entity id", subj("directory.upserted"), ce("diffgram.directory.upserted", `{"directory":{"id":null,"nickname":"d","version":1}}`), "directory has no id"},
	{"entity id zero", subj("directory.upserted"), ce("diffgram.directory.upserted", `{"directory":{"id":0,"nickname":"d","version":1}}`), "directory id 0 is not positive"},
	{"project without string_id", subj("project.upserted"), ce("diffgram.project.upserted", `{"project":{"name":"Street Scenes","version":1}}`), "project has no string_id"},
	{"project string_id differs", subj("project.upserted"), ce("diffgram.project.upserted", `{"project":{"string_id":"other-project","name":"Other","version":1}}`), `project string_id "other-project" and event project "street-scenes" disagree`},
	{"body over the limit", subj("file.uploaded"), ce("diffgram.file.uploaded", goodFile, with("pad", strings.Repeat("x", maxTestBytes))), "over the limit of 4096"},
	{"ann_is_complete a string", subj("file.completion_changed"), ce("diffgram.file.completion_changed", `{"file":{"id":5,"ann_is_complete":"yes","version":2}}`), "field ann_is_complete: string is not a boolean"},
	{"directory_ids a string", subj("file.updated"), ce("diffgram.file.updated", `{"file":{"id":5,"directory_ids":"7","version":2}}`), "field directory_ids: string is not an array"},
	{"directory_ids of strings", subj("file.updated"), ce("diffgram.file.updated", `{"file":{"id":5,"directory_ids":["7"],"version":2}}`), "field directory_ids"},
	{"label name a number", subj("label.upserted"), ce("diffgram.label.upserted", `{"label_file":{"id":101,"label":{"id":11,"name":7},"state":"added","version":1}}`), "field label.name: number is not a string"},
	{"instance without file_id", subj("instance.created"), ce("diffgram.instance.created", `{"instance":{"id":9,"root_id":9,"type":"box","version":1}}`), "instance 9 has no file_id"},
	{"instance edit with only id and version", subj("instance.edited"), ce("diffgram.instance.edited", `{"instance":{"id":9,"version":2}}`), "instance 9 has no file_id"},
	{"instance root_id a string", subj("instance.created"), ce("diffgram.instance.created", `{"instance":{"id":9,"root_id":"9","file_id":5,"version":1}}`), "field root_id: string is not an integer"},
	{"box x_min a string", subj("instance.created"), ce("diffgram.instance.created", box(`"12"`, "20", "110", "120")), "instance 9: field x_min: string is not a number"},
	{"box y_min a boolean", subj("instance.created"), ce("diffgram.instance.created", box("12", "true", "110", "120")), "instance 9: field y_min: bool is not a number"},
	{"box x_max an object", subj("instance.edited"), ce("diffgram.instance.edited", box("12", "20", `{"value":110}`, "120")), "instance 9: field x_max: object is not a number"},
	{"box y_max an array", subj("instance.created"), ce("diffgram.instance.created", box("12", "20", "110", "[120]")), "instance 9: field y_max: array is not a number"},
	{"box coordinate repeated, first a string", subj("instance.created"), ce("diffgram.instance.created", box(`"12","x_min":12`, "20", "110", "120")), "instance 9: field x_min: string is not a number"},
	{"task without job_id", subj("task.created"), ce("diffgram.task.created", `{"task":{"id":3,"file_id":5,"status":"created","version":1}}`), "task 3 has no job_id or file_id"},
	{"sequence without file_id", subj("sequence.upserted"), ce("diffgram.sequence.upserted", `{"sequence":{"id":77,"number":1,"version":1}}`), "sequence 77 has no file_id"},
	{"0xff in a string", subj("file.uploaded"), rawUTF8(ce("diffgram.file.uploaded", fileNamed(badMark)), "cam_\xff.jpg"), "body is not valid UTF-8: invalid byte at offset "},
	{"truncated sequence in an attribute", subj("file.uploaded"), rawUTF8(ce("diffgram.file.uploaded", goodFile, with("comment", badMark)), "\xe2\x82"), "body is not valid UTF-8: invalid byte at offset "},
	{"nested deeper than the limit", subj("file.uploaded"), ce("diffgram.file.uploaded", nestedFile(DefaultDepthForTests-2)), "nested deeper than 64"},
}

// box is the data of a box instance event (id 9) with these coordinates
// (JSON text).
func box(xMin, yMin, xMax, yMax string) string {
	return `{"instance":{"id":9,"root_id":9,"file_id":5,"type":"box","label_file_id":1,"version":1,` +
		`"x_min":` + xMin + `,"y_min":` + yMin + `,"x_max":` + xMax + `,"y_max":` + yMax + `}}`
}

// DefaultDepthForTests is events.DefaultMaxDepth, spelled out so that a
// change to the default is a deliberate one.
const DefaultDepthForTests = 64

// badMark stands for raw bytes json.Marshal would not write; rawUTF8 puts
// them in.
const badMark = "@@raw@@"

// rawUTF8 replaces badMark in body with raw.
func rawUTF8(body []byte, raw string) []byte {
	if !bytes.Contains(body, []byte(badMark)) {
		panic("no " + badMark + " in " + string(body))
	}
	return bytes.Replace(body, []byte(badMark), []byte(raw), 1)
}

// fileNamed is the data of a good file event whose original_filename is
// name.
func fileNamed(name string) string {
	return `{"file":{"id":5,"type":"image","original_filename":"` + name + `","state":"added","directory_ids":[7],"version":1}}`
}

// nestedFile is the data of a good file event whose snapshot holds k
// nested arrays: the body, whose own object is depth 1, data 2 and the
// snapshot 3, is then nested 3+k deep.
func nestedFile(k int) string {
	return `{"file":{"id":5,"version":1,"extra":` + strings.Repeat("[", k) + strings.Repeat("]", k) + `}}`
}

func TestDecodeBadInput(t *testing.T) {
	for _, tc := range badInputs {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := events.Decode(tc.subject, tc.body, maxTestBytes)
			if err == nil {
				t.Fatalf("Decode accepted bad input as %+v", ev)
			}
			if ev != nil {
				t.Errorf("Decode returned an event (%+v) with the error %v", ev, err)
			}
			var b *events.BadInputError
			if !errors.As(err, &b) {
				t.Fatalf("error %v (%T) is not a *BadInputError", err, err)
			}
			if !events.IsBadInput(err) {
				t.Errorf("IsBadInput(%v) = false", err)
			}
			if !strings.Contains(b.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", b.Reason, tc.reason)
			}
		})
	}
}

// TestDecodeSizeLimit checks the limit's edges: a body of exactly maxBytes
// passes, one byte more is bad input, and 0 means no limit.
func TestDecodeSizeLimit(t *testing.T) {
	body := ce("diffgram.file.uploaded", goodFile)
	for _, tc := range []struct {
		name     string
		maxBytes int
		ok       bool
	}{
		{"no limit", 0, true},
		{"exactly the limit", len(body), true},
		{"one byte over", len(body) - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.Decode(subj("file.uploaded"), body, tc.maxBytes)
			if tc.ok && err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tc.ok && !events.IsBadInput(err) {
				t.Fatalf("Decode = %v, want bad input", err)
			}
		})
	}
}

// want is what Decode must make of a good event, worked out from the body
// independently of the decoder.
type want struct {
	kind     events.Kind
	action   string
	project  string
	entityID int64
	version  int64
	raw      json.RawMessage
}

// expect works out from a body, with generic JSON, what Decode must return.
func expect(t *testing.T, body []byte) want {
	t.Helper()
	var env struct {
		Type            string                     `json:"type"`
		DiffgramProject string                     `json:"diffgramproject"`
		Data            map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("example body: %v", err)
	}
	parts := strings.Split(env.Type, ".")
	if len(parts) != 3 || len(env.Data) != 1 {
		t.Fatalf("example body has type %q and %d data keys", env.Type, len(env.Data))
	}
	w := want{kind: events.Kind(parts[1]), action: parts[2], project: env.DiffgramProject}
	for _, raw := range env.Data {
		w.raw = raw
	}
	var snap struct {
		ID      *int64 `json:"id"`
		RootID  *int64 `json:"root_id"`
		Version int64  `json:"version"`
	}
	if err := json.Unmarshal(w.raw, &snap); err != nil {
		t.Fatalf("example snapshot: %v", err)
	}
	w.version = snap.Version
	switch {
	case w.kind == events.KindProject:
		w.entityID = 0
	case w.kind == events.KindInstance && snap.RootID != nil:
		w.entityID = *snap.RootID
	case snap.ID != nil:
		w.entityID = *snap.ID
	}
	return w
}

// entityTypes is the typed snapshot Decode returns for each kind.
var entityTypes = map[events.Kind]reflect.Type{
	events.KindProject:        reflect.TypeFor[*events.Project](),
	events.KindDirectory:      reflect.TypeFor[*events.Directory](),
	events.KindLabel:          reflect.TypeFor[*events.LabelFile](),
	events.KindAttributeGroup: reflect.TypeFor[*events.AttributeGroup](),
	events.KindJob:            reflect.TypeFor[*events.Job](),
	events.KindFile:           reflect.TypeFor[*events.File](),
	events.KindTask:           reflect.TypeFor[*events.Task](),
	events.KindSequence:       reflect.TypeFor[*events.Sequence](),
	events.KindInstance:       reflect.TypeFor[*events.Instance](),
}

// TestDecodeOrderedExample decodes every line of the ordered example: all
// are good, and together they cover every kind.
func TestDecodeOrderedExample(t *testing.T) {
	seen := map[events.Kind]int{}
	for _, l := range readExample(t, "street-scenes-ordered") {
		ev, err := events.Decode(l.subject, l.body, 1<<20)
		if err != nil {
			t.Errorf("line %d: %v", l.line, err)
			continue
		}
		w := expect(t, l.body)
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(l.body, &id)
		if ev.ID != id.ID || ev.Type != "diffgram."+string(w.kind)+"."+w.action {
			t.Errorf("line %d: ID, Type = %q, %q; want %q, diffgram.%s.%s", l.line, ev.ID, ev.Type, id.ID, w.kind, w.action)
		}
		if ev.Kind != w.kind || ev.Action != w.action || ev.Project != w.project {
			t.Errorf("line %d: Kind, Action, Project = %s, %s, %s; want %s, %s, %s",
				l.line, ev.Kind, ev.Action, ev.Project, w.kind, w.action, w.project)
		}
		if ev.EntityID != w.entityID || ev.Version != w.version {
			t.Errorf("line %d: EntityID, Version = %d, %d; want %d, %d", l.line, ev.EntityID, ev.Version, w.entityID, w.version)
		}
		if !bytes.Equal(ev.Raw, w.raw) {
			t.Errorf("line %d: Raw = %s, want the snapshot as received: %s", l.line, ev.Raw, w.raw)
		}
		if got := reflect.TypeOf(ev.Entity); got != entityTypes[ev.Kind] {
			t.Errorf("line %d: Entity is %v, want %v", l.line, got, entityTypes[ev.Kind])
		}
		if ev.Seq != 0 {
			t.Errorf("line %d: Seq = %d, want 0 (only the consumer sets it)", l.line, ev.Seq)
		}
		seen[ev.Kind]++
	}
	for _, k := range events.Kinds() {
		if seen[k] == 0 {
			t.Errorf("the ordered example has no %s event", k)
		}
	}
}

// TestDecodeBoxCoordinates: a box's coordinates may be any JSON number
// (integer, fraction, negative, exponent) or null.
func TestDecodeBoxCoordinates(t *testing.T) {
	for _, data := range []string{
		box("12", "20", "110", "120"),
		box("12.5", "-0.25", "1e2", "1.2E+2"),
		box("null", "20", "null", "120"),
	} {
		if _, err := events.Decode(subj("instance.created"), ce("diffgram.instance.created", data), maxTestBytes); err != nil {
			t.Errorf("Decode(%s): %v", data, err)
		}
	}
}

// TestDecodeInstanceLineage checks an instance's EntityID is its lineage
// (root_id), falling back to id, while the typed snapshot keeps both.
func TestDecodeInstanceLineage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		data     string
		entityID int64
	}{
		{"edit of a lineage", `{"instance":{"id":12,"root_id":9,"previous_id":9,"file_id":5,"version":2}}`, 9},
		{"new instance", `{"instance":{"id":9,"root_id":9,"previous_id":null,"file_id":5,"version":1}}`, 9},
		{"no root_id", `{"instance":{"id":9,"file_id":5,"version":1}}`, 9},
		{"null root_id", `{"instance":{"id":9,"root_id":null,"file_id":5,"version":1}}`, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := events.Decode(subj("instance.edited"), ce("diffgram.instance.edited", tc.data), 0)
			if err != nil {
				t.Fatal(err)
			}
			if ev.EntityID != tc.entityID {
				t.Errorf("EntityID = %d, want %d", ev.EntityID, tc.entityID)
			}
			if in := ev.Entity.(*events.Instance); in.Root() != tc.entityID {
				t.Errorf("Root() = %d, want %d", in.Root(), tc.entityID)
			}
		})
	}
}

// TestDecodeRemovals checks removals: one that carries only id and version
// is Partial and says what it removes; a full snapshot is not Partial.
func TestDecodeRemovals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		typ      string
		data     string
		partial  bool
		entityID int64
		version  int64
		check    func(t *testing.T, entity any)
	}{
		{
			name: "partial file removal", typ: "file.removed",
			data:    `{"file":{"id":5,"version":3}}`,
			partial: true, entityID: 5, version: 3,
			check: func(t *testing.T, e any) {
				if f := e.(*events.File); f.State != "removed" || !f.Removed() {
					t.Errorf("State = %q, want removed", f.State)
				}
			},
		},
		{
			name: "full file removal", typ: "file.removed",
			data:    `{"file":{"id":5,"type":"image","original_filename":"a.jpg","state":"removed","ann_is_complete":true,"directory_ids":[7],"parent_id":null,"version":3}}`,
			partial: false, entityID: 5, version: 3,
			check: func(t *testing.T, e any) {
				f := e.(*events.File)
				if !f.Removed() || f.Type != "image" || !f.Complete() || !reflect.DeepEqual(f.DirectoryIDs, []int64{7}) {
					t.Errorf("File = %+v, want the full removed snapshot", f)
				}
			},
		},
		{
			name: "partial instance deletion", typ: "instance.deleted",
			data:    `{"instance":{"id":9,"version":4}}`,
			partial: true, entityID: 9, version: 4,
			check: func(t *testing.T, e any) {
				if in := e.(*events.Instance); !in.SoftDelete {
					t.Error("SoftDelete = false, want true")
				}
			},
		},
		{
			name: "full instance deletion", typ: "instance.deleted",
			data:    `{"instance":{"id":12,"root_id":9,"previous_id":9,"file_id":5,"soft_delete":true,"type":"box","version":4}}`,
			partial: false, entityID: 9, version: 4,
			check: func(t *testing.T, e any) {
				if in := e.(*events.Instance); !in.SoftDelete || in.FileID != 5 {
					t.Errorf("Instance = %+v, want the full deleted snapshot", in)
				}
			},
		},
		{
			name: "partial task archive", typ: "task.archived",
			data:    `{"task":{"id":3,"version":5}}`,
			partial: true, entityID: 3, version: 5,
			check: func(t *testing.T, e any) {
				if tk := e.(*events.Task); tk.Status != "archived" {
					t.Errorf("Status = %q, want archived", tk.Status)
				}
			},
		},
		{
			name: "full task archive", typ: "task.archived",
			data:    `{"task":{"id":3,"job_id":1,"file_id":5,"status":"archived","version":5}}`,
			partial: false, entityID: 3, version: 5,
			check: func(t *testing.T, e any) {
				if tk := e.(*events.Task); tk.Status != "archived" || tk.JobID != 1 {
					t.Errorf("Task = %+v, want the full archived snapshot", tk)
				}
			},
		},
		{
			name: "id and version on an update is not a removal", typ: "file.updated",
			data:    `{"file":{"id":5,"version":3}}`,
			partial: false, entityID: 5, version: 3,
			check: func(t *testing.T, e any) {
				if f := e.(*events.File); f.Removed() {
					t.Error("an update with only id and version removed the file")
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := events.Decode(subj(tc.typ), ce("diffgram."+tc.typ, tc.data), 0)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Partial != tc.partial {
				t.Errorf("Partial = %v, want %v", ev.Partial, tc.partial)
			}
			if ev.EntityID != tc.entityID || ev.Version != tc.version {
				t.Errorf("EntityID, Version = %d, %d; want %d, %d", ev.EntityID, ev.Version, tc.entityID, tc.version)
			}
			tc.check(t, ev.Entity)
		})
	}
}

// TestDecodeExamplePoison decodes every line of both example streams: each
// is an event or a *BadInputError, the distinct bad lines are exactly
// expected.json's poison_count (none when it has none: the ordered stream
// holds no bad input), the one line with a raw invalid UTF-8 byte is among
// them, and every accepted snapshot is valid UTF-8.
func TestDecodeExamplePoison(t *testing.T) {
	for _, tc := range []struct {
		name string
		// needCount: expected.json must give poison_count.
		needCount bool
		// utf8Lines is how many distinct lines are bad for their UTF-8.
		utf8Lines int
	}{
		{"street-scenes-ordered", false, 0},
		{"street-scenes-chaos", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(examplesDir, tc.name, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var expected struct {
				PoisonCount *int `json:"poison_count"`
			}
			if err := json.Unmarshal(raw, &expected); err != nil {
				t.Fatalf("expected.json: %v", err)
			}
			poison := 0
			switch {
			case expected.PoisonCount != nil:
				poison = *expected.PoisonCount
			case tc.needCount:
				t.Fatal("expected.json has no poison_count")
			}
			rejected := map[string]int{} // distinct bad line → its first line number
			good, badUTF8 := 0, 0
			for _, l := range readExample(t, tc.name) {
				ev, err := events.Decode(l.subject, l.body, 1<<20)
				var b *events.BadInputError
				switch {
				case err == nil && ev != nil:
					good++
					if !utf8.Valid(ev.Raw) {
						t.Errorf("line %d: accepted, and Raw is not valid UTF-8", l.line)
					}
				case errors.As(err, &b) && ev == nil:
					if b.Reason == "" {
						t.Errorf("line %d: empty reason", l.line)
					}
					key := l.subject + "\t" + string(l.body)
					if _, dup := rejected[key]; dup {
						continue
					}
					rejected[key] = l.line
					t.Logf("line %d rejected: %s", l.line, b.Reason)
					if !utf8.Valid(l.body) {
						badUTF8++
						if want := fmt.Sprintf("body is not valid UTF-8: invalid byte at offset %d", firstInvalid(l.body)); b.Reason != want {
							t.Errorf("line %d: reason %q, want %q", l.line, b.Reason, want)
						}
					}
				default:
					t.Errorf("line %d: Decode = %v, %v (%T); want an event or a *BadInputError", l.line, ev, err, err)
				}
			}
			if len(rejected) != poison {
				t.Errorf("%d distinct lines rejected, want poison_count %d", len(rejected), poison)
			}
			if badUTF8 != tc.utf8Lines {
				t.Errorf("%d distinct lines rejected as not UTF-8, want %d", badUTF8, tc.utf8Lines)
			}
			if good == 0 {
				t.Error("no line decoded")
			}
		})
	}
}

// firstInvalid is the offset of the first invalid UTF-8 sequence in b
// (-1: none), worked out rune by rune.
func firstInvalid(b []byte) int {
	for i, r := range string(b) {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRune(b[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}

// TestDecodeInvalidUTF8: a body with an invalid UTF-8 sequence anywhere,
// in the envelope or in the data, inside a string or not, is bad input
// whose reason names the byte offset of the sequence.
func TestDecodeInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		raw  string // the invalid bytes, put where badMark is
		at   int    // offset of the invalid sequence within raw
	}{
		{"0xff in the data's filename", ce("diffgram.file.uploaded", fileNamed(badMark)), "cam_\xff.jpg", 4},
		{"0xff after multibyte characters", ce("diffgram.file.uploaded", fileNamed(badMark)), "Zürich-東京-\xff", len("Zürich-東京-")},
		{"truncated 3-byte sequence in the data", ce("diffgram.file.uploaded", fileNamed(badMark)), "price-\xe2\x82", 6},
		{"truncated 4-byte sequence at the end of a string", ce("diffgram.file.uploaded", fileNamed(badMark)), "car-\xf0\x9f\x9a", 4},
		{"stray continuation byte", ce("diffgram.file.uploaded", fileNamed(badMark)), "a\x80b", 1},
		{"overlong encoding of /", ce("diffgram.file.uploaded", fileNamed(badMark)), "a\xc0\xafb", 1},
		{"encoded surrogate", ce("diffgram.file.uploaded", fileNamed(badMark)), "\xed\xa0\x80", 0},
		{"0xff in the envelope's source", ce("diffgram.file.uploaded", goodFile, with("source", badMark)), "diffgram/\xff", 9},
		{"truncated sequence in an extension attribute", ce("diffgram.file.uploaded", goodFile, with("comment", badMark)), "\xe2\x82", 0},
		{"0xff in an object key of the data", ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1,"`+badMark+`":1}}`), "k\xff", 1},
		{"0xff in an instance (the reflection-free decoder)", ce("diffgram.instance.created", `{"instance":{"id":9,"root_id":9,"version":1,"file_id":5,"type":"`+badMark+`"}}`), "bo\xffx", 2},
		{"0xff outside any string", bytes.Replace(ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1,"n":"`+badMark+`"}}`), []byte(`"`+badMark+`"`), []byte(badMark), 1), "\xff", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := bytes.Index(tc.body, []byte(badMark))
			body := rawUTF8(tc.body, tc.raw)
			want := fmt.Sprintf("body is not valid UTF-8: invalid byte at offset %d", mark+tc.at)
			subject := subj("file.uploaded")
			if strings.Contains(tc.name, "instance") {
				subject = subj("instance.created")
			}
			ev, err := events.Decode(subject, body, 0)
			var b *events.BadInputError
			if !errors.As(err, &b) || ev != nil {
				t.Fatalf("Decode = %+v, %v; want a *BadInputError", ev, err)
			}
			if b.Reason != want {
				t.Errorf("reason %q, want %q", b.Reason, want)
			}
			// The same body with the bytes made valid decodes: the
			// UTF-8 check is what rejected it.
			if _, err := events.Decode(subject, rawUTF8(tc.body, strings.ToValidUTF8(tc.raw, "x")), 0); err != nil && !strings.Contains(tc.name, "outside") {
				t.Errorf("with valid bytes instead: %v", err)
			}
		})
	}
}

// TestDecodeValidText: multibyte characters and JSON escapes, lone
// surrogates included, are good input; Raw keeps them as received (an
// escape as its text, valid UTF-8) and a lone surrogate decodes as U+FFFD.
func TestDecodeValidText(t *testing.T) {
	for _, tc := range []struct {
		name, filename, decoded string
	}{
		{"multibyte", "Zürich 東京 🚗.jpg", "Zürich 東京 🚗.jpg"},
		{"escaped pair", `\ud83d\ude97.jpg`, "🚗.jpg"},
		{"lone low surrogate", `\udc00.jpg`, "\uFFFD.jpg"},
		{"lone high surrogate", `a\ud800`, "a\uFFFD"},
		{"U+FFFD itself", "\uFFFD", "\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := fileNamed(tc.filename)
			ev, err := events.Decode(subj("file.uploaded"), ce("diffgram.file.uploaded", data), 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := data[len(`{"file":`) : len(data)-1]; string(ev.Raw) != want {
				t.Errorf("Raw = %s, want %s", ev.Raw, want)
			}
			if !utf8.Valid(ev.Raw) {
				t.Errorf("Raw is not valid UTF-8: %q", ev.Raw)
			}
			if got := ev.Entity.(*events.File).OriginalFilename; got != tc.decoded {
				t.Errorf("OriginalFilename = %q, want %q", got, tc.decoded)
			}
		})
	}
}

// TestDecodeDepth checks the depth limit's edges: a body nested exactly
// MaxDepth deep passes, one level more is bad input saying so, whether the
// nesting is arrays or objects, in the data or in the envelope; brackets
// inside strings do not count.
func TestDecodeDepth(t *testing.T) {
	objects := func(k int) string { // k nested objects
		return strings.Repeat(`{"a":`, k) + "1" + strings.Repeat("}", k)
	}
	// s1 and s2 are strings holding 303 brackets, escaped quotes and
	// backslashes around them.
	s1, s2 := `"`+strings.Repeat(`[{\"[{\\`, 75)+`"`, `"]]]\\"`
	for _, tc := range []struct {
		name     string
		maxDepth int // 0: DefaultMaxDepth
		limit    int // the limit in effect
		body     func(depth int) []byte
	}{
		{"arrays in the data", 5, 5, func(d int) []byte { return ce("diffgram.file.uploaded", nestedFile(d-3)) }},
		{"objects in the data", 7, 7, func(d int) []byte {
			return ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1,"extra":`+objects(d-3)+`}}`)
		}},
		{"objects in the envelope", 6, 6, func(d int) []byte {
			return ce("diffgram.file.uploaded", goodFile, with("ext", json.RawMessage(objects(d-1))))
		}},
		{"the default", 0, DefaultDepthForTests, func(d int) []byte { return ce("diffgram.file.uploaded", nestedFile(d-3)) }},
		{"encoding/json's limit", 10000, 10000, func(d int) []byte { return ce("diffgram.file.uploaded", nestedFile(d-3)) }},
		{"above encoding/json's limit", 20000, 10000, func(d int) []byte { return ce("diffgram.file.uploaded", nestedFile(d-3)) }},
		{"brackets in strings", 3, 3, func(d int) []byte {
			if d == 3 {
				return ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1,"original_filename":`+s1+`,"k":`+s2+`}}`)
			}
			return ce("diffgram.file.uploaded", `{"file":{"id":5,"version":1,"x":[`+s1+`,`+s2+`]}}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := events.Limits{MaxDepth: tc.maxDepth}
			body := tc.body(tc.limit)
			if d := jsonDepth(t, body); d != tc.limit {
				t.Fatalf("test body is nested %d deep, want %d", d, tc.limit)
			}
			if _, err := events.DecodeWith(subj("file.uploaded"), body, lim); err != nil {
				t.Errorf("nested exactly %d deep: %v", tc.limit, err)
			}
			body = tc.body(tc.limit + 1)
			if d := jsonDepth(t, body); d != tc.limit+1 {
				t.Fatalf("test body is nested %d deep, want %d", d, tc.limit+1)
			}
			ev, err := events.DecodeWith(subj("file.uploaded"), body, lim)
			var b *events.BadInputError
			if !errors.As(err, &b) || ev != nil {
				t.Fatalf("nested %d deep: Decode = %+v, %v; want a *BadInputError", tc.limit+1, ev, err)
			}
			if want := fmt.Sprintf("nested deeper than %d", tc.limit); b.Reason != want {
				t.Errorf("reason %q, want %q", b.Reason, want)
			}
		})
	}
	// Decode uses the default limit.
	if _, err := events.Decode(subj("file.uploaded"), ce("diffgram.file.uploaded", nestedFile(DefaultDepthForTests-3)), 0); err != nil {
		t.Errorf("Decode at the default limit: %v", err)
	}
	if events.DefaultMaxDepth != DefaultDepthForTests {
		t.Errorf("DefaultMaxDepth = %d, want %d", events.DefaultMaxDepth, DefaultDepthForTests)
	}
}

// jsonDepth is how deep the arrays and objects of the JSON text b nest,
// worked out with encoding/json's tokenizer, or -1 if b is not JSON.
func jsonDepth(t testing.TB, b []byte) int {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, most := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return most
		}
		if err != nil {
			return -1
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			most = max(most, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

// CloudEvents attribute names are lower case: an upper-case copy is not
// the attribute.
func TestDecodeAttributeCase(t *testing.T) {
	body := []byte(`{"SPECVERSION":"1.0","specversion":"1.0","ID":"x","source":"s","type":"diffgram.project.upserted","diffgramproject":"p","data":{"project":{"string_id":"p","name":"P","version":1}}}`)
	_, err := events.Decode("diffgram.events.p.project.upserted", body, 0)
	var b *events.BadInputError
	if !errors.As(err, &b) || !strings.Contains(b.Reason, "missing id") {
		t.Fatalf("got %v, want bad input: missing id", err)
	}
	body = []byte(`{"specversion":"1.0","id":7,"source":"s","type":"diffgram.project.upserted","diffgramproject":"p","data":{}}`)
	_, err = events.Decode("diffgram.events.p.project.upserted", body, 0)
	if !errors.As(err, &b) || !strings.Contains(b.Reason, "field id: number is not a string") {
		t.Fatalf("got %v, want bad input naming field id", err)
	}
}
