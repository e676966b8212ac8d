package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// world is a random project as the platform would publish it: the events
// (each a newer version of its entity) and, kept beside them, what the
// newest state holds, so that the test knows the answer without the code
// under test.
type world struct {
	rng    *rand.Rand
	lines  []line
	seq    int
	files  map[int64]*worldFile
	latest map[int64]worldInst // lineage → newest version
	nextID int64
}

type worldFile struct {
	id, parent int64
	typ        string
	removed    bool
	seqs       []int64
}

type worldInst struct {
	id, file int64
	deleted  bool
}

var worldTypes = []string{"image", "image", "video", "video", "text", "compound", "audio", "geospatial", "sensor_fusion"}

// names with multi-byte text, quotes and escapes, all valid UTF-8.
var worldNames = []string{"a.jpg", "straße.png", "日本語.mp4", `q"uote\.txt`, "emoji 🚗.jpg", "tab\there", "\u2028line"}

func (w *world) emit(kind, action, key string, v map[string]any) {
	w.seq++
	body, err := json.Marshal(map[string]any{
		"specversion": "1.0", "id": fmt.Sprintf("p%d", w.seq), "source": "test", "type": "diffgram." + kind + "." + action,
		"diffgramproject": "prop", "data": map[string]any{key: v},
	})
	if err != nil {
		panic(err)
	}
	w.lines = append(w.lines, line{"diffgram.events.prop." + kind + "." + action, body})
}

func (w *world) id() int64 { w.nextID++; return w.nextID }

func newWorld(seed uint64) *world {
	w := &world{rng: rand.New(rand.NewPCG(seed, 99)), files: map[int64]*worldFile{}, latest: map[int64]worldInst{}, nextID: 1000}
	w.emit("project", "upserted", "project", map[string]any{"string_id": "prop", "name": "Prop", "version": 1})
	w.emit("directory", "upserted", "directory", map[string]any{"id": 1, "nickname": "D", "created_time": "2026-01-01T00:00:00Z", "version": 1})
	w.emit("label", "upserted", "label_file", map[string]any{"id": 11, "label": map[string]any{"id": 1, "name": "car"}, "colour": map[string]any{"hex": "#fff"}, "state": "added", "version": 1})
	w.emit("attribute_group", "upserted", "attribute_group", map[string]any{"id": 5, "kind": "select", "name": "g", "prompt": "?",
		"is_global": false, "global_type": nil, "archived": false, "attribute_template_list": []any{}, "label_file_ids": []int{11},
		"label_file_list": []any{}, "version": 1})
	nFiles := 1 + w.rng.IntN(12)
	var compounds []int64
	for range nFiles {
		f := &worldFile{id: w.id(), typ: worldTypes[w.rng.IntN(len(worldTypes))]}
		if len(compounds) > 0 && f.typ != "compound" && w.rng.IntN(3) == 0 {
			f.parent = compounds[w.rng.IntN(len(compounds))]
		}
		if f.typ == "compound" {
			compounds = append(compounds, f.id)
		}
		w.files[f.id] = f
		snap := map[string]any{"id": f.id, "type": f.typ, "original_filename": worldNames[w.rng.IntN(len(worldNames))],
			"created_time": "2026-02-01T00:00:00Z", "state": "added", "ann_is_complete": w.rng.IntN(2) == 0,
			"directory_ids": []int{1}, "parent_id": nil, "blob_url": "https://m/x", "version": 1}
		if f.parent != 0 {
			snap["parent_id"] = f.parent
		}
		w.emit("file", "uploaded", "file", snap)
		if f.typ == "video" {
			for range w.rng.IntN(3) {
				sid := w.id()
				f.seqs = append(f.seqs, sid)
				w.emit("sequence", "upserted", "sequence", map[string]any{"id": sid, "file_id": f.id, "label_file_id": 11,
					"number": len(f.seqs), "keyframe_list": nil, "single_frame": false, "archived": w.rng.IntN(3) == 0, "version": 1})
			}
		}
		for range w.rng.IntN(6) {
			w.instance(f)
		}
		if w.rng.IntN(8) == 0 {
			f.removed = true
			w.emit("file", "removed", "file", map[string]any{"id": f.id, "version": 2})
		}
	}
	return w
}

// instance creates an annotation on f, then maybe edits and deletes it.
func (w *world) instance(f *worldFile) {
	types := []string{"box", "polygon", "ellipse", "point", "tag", "keypoints", "cuboid_3d", "relation"}
	typ := types[w.rng.IntN(len(types))]
	root := w.id()
	cur := root
	snap := func(id, prev int64, version int, deleted bool) map[string]any {
		s := map[string]any{"id": id, "root_id": root, "previous_id": nil, "version": version, "file_id": f.id,
			"soft_delete": deleted, "type": typ, "label_file_id": 11, "attribute_groups": map[string]any{"5": worldNames[w.rng.IntN(len(worldNames))]},
			"x_min": w.rng.IntN(3), "y_min": 0, "x_max": w.rng.IntN(3), "y_max": 1}
		if prev != 0 {
			s["previous_id"] = prev
		}
		if typ == "ellipse" && w.rng.IntN(2) == 0 {
			s["angle"] = 0
		}
		if f.typ == "video" && w.rng.IntN(4) > 0 {
			s["frame_number"] = w.rng.IntN(10)
			s["global_frame_number"] = s["frame_number"]
			s["number"] = 1
			switch r := w.rng.IntN(4); {
			case r == 0 || len(f.seqs) == 0:
				s["sequence_id"] = nil
			case r == 1:
				s["sequence_id"] = 999999 // names no sequence
			default:
				s["sequence_id"] = f.seqs[w.rng.IntN(len(f.seqs))]
			}
		}
		return s
	}
	w.emit("instance", "created", "instance", snap(root, 0, 1, false))
	version := 1
	for w.rng.IntN(2) == 0 {
		version++
		next := w.id()
		w.emit("instance", "edited", "instance", snap(next, cur, version, false))
		cur = next
	}
	deleted := w.rng.IntN(4) == 0
	if deleted {
		version++
		next := w.id()
		w.emit("instance", "deleted", "instance", snap(next, cur, version, true))
		cur = next
	}
	w.latest[root] = worldInst{id: cur, file: f.id, deleted: deleted}
}

// exported reports whether a project export has an entry that shows the
// file's instances: the file is not removed and its type has an export
// form (a compound child has its own top-level entry too).
func (w *world) exported(id int64) bool {
	f := w.files[id]
	return f != nil && !f.removed && hasEntry(f.typ)
}

// TestRenderProperty renders random event streams, shuffled and with
// repeats, and reads the documents back: every live instance of every
// exported file is in the document, once per entry that shows the file;
// instance_count is the number of distinct instances; the document is
// valid UTF-8 and no object names a key twice.
func TestRenderProperty(t *testing.T) {
	for seed := range uint64(300) {
		w := newWorld(seed)
		lines := shuffled(w.lines, seed)
		s := NewState()
		if bad := applyAll(t, s, lines); bad != 0 {
			t.Fatalf("seed %d: %d bad events", seed, bad)
		}
		for _, withRemoved := range []bool{false, true} {
			d := &Definition{Name: "p", Project: "prop", Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: withRemoved}
			var buf bytes.Buffer
			res, err := s.Render(&buf, d, 1, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			doc := buf.Bytes()
			for _, p := range pipelinetest.StrictJSONCheck(doc) {
				t.Errorf("seed %d: %s", seed, p)
			}
			checkInstances(t, seed, w, doc, res, withRemoved)
		}
		if t.Failed() {
			return
		}
	}
}

func checkInstances(t *testing.T, seed uint64, w *world, doc []byte, res Result, withRemoved bool) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	var info struct {
		InstanceCount int `json:"instance_count"`
	}
	json.Unmarshal(top["export_info"], &info)

	// Where each instance id appears, per top-level file key.
	inEntry := map[int64][]int64{} // file id → instance ids its own entry shows
	var walk func(fileKey int64, raw json.RawMessage)
	walk = func(fileKey int64, raw json.RawMessage) {
		if string(raw) == "null" {
			return
		}
		var entry map[string]json.RawMessage
		if err := json.Unmarshal(raw, &entry); err != nil {
			t.Fatalf("seed %d: file %d: %v", seed, fileKey, err)
		}
		var lists []json.RawMessage
		lists = append(lists, entry["instance_list"], entry["parent_instance_list"])
		var seqs []struct {
			InstanceList json.RawMessage `json:"instance_list"`
		}
		json.Unmarshal(entry["sequence_list"], &seqs)
		for _, sq := range seqs {
			lists = append(lists, sq.InstanceList)
		}
		for _, l := range lists {
			var insts []map[string]any
			json.Unmarshal(l, &insts)
			for _, in := range insts {
				if in["type"] == "relation" {
					continue // relations have no id in the document
				}
				id := int64(in["id"].(float64))
				inEntry[fileKey] = append(inEntry[fileKey], id)
			}
		}
		for k, v := range entry {
			var child int64
			if _, err := fmt.Sscan(k, &child); err == nil {
				walk(child, v)
			}
		}
	}
	for k, v := range top {
		var id int64
		if _, err := fmt.Sscan(k, &id); err == nil {
			walk(id, v)
		}
	}
	distinct := map[int64]bool{}
	for root, in := range w.latest {
		f := w.files[in.file]
		live := !in.deleted || withRemoved
		ids := inEntry[in.file]
		n := 0
		for _, id := range ids {
			if id == in.id {
				n++
			}
		}
		switch {
		case !live || !w.exported(in.file):
			if n > 0 {
				t.Errorf("seed %d: instance %d (lineage %d, file %d %s) shown but should not be", seed, in.id, root, in.file, f.typ)
			}
		default:
			distinct[in.id] = true
			if isRelation(w, root) {
				continue
			}
			if n == 0 {
				t.Errorf("seed %d: live instance %d (lineage %d) of exported file %d (%s) is missing", seed, in.id, root, in.file, f.typ)
			}
		}
	}
	if info.InstanceCount != len(distinct) || res.Instances != len(distinct) {
		t.Errorf("seed %d (removed %t): instance_count %d (result %d), want %d distinct", seed, withRemoved, info.InstanceCount, res.Instances, len(distinct))
	}
}

// isRelation reports whether the lineage is a relation, which the
// document shows without an id.
func isRelation(w *world, root int64) bool {
	for _, l := range w.lines {
		if !bytes.Contains(l.body, []byte(`"type":"relation"`)) {
			continue
		}
		ev, err := events.Decode(l.subject, l.body, 0)
		if err == nil && ev.Kind == events.KindInstance && ev.EntityID == root {
			return true
		}
	}
	return false
}
