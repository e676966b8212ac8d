package simulate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Restored says what Restore found.
type Restored struct {
	// Events is how many events of the project were read. Zero means
	// nothing was found: the simulator starts the project afresh.
	Events int
	// Ignored is how many bodies were passed over: events of other
	// projects, and bodies that are not events of a known entity.
	Ignored int
	// Files is how many root files the team carries on with (removed ones
	// included), Live how many of them are not removed.
	Files, Live int
	// LeftAlone is how many files, sequences and instance lineages the
	// team will not touch: their newest snapshot does not read back the
	// same through the simulator's types (not written by a simulator, e.g.
	// a file type it never uploads), so a change would drop fields.
	LeftAlone int
	// NextFile and NextInstance are the ids the next upload and the next
	// instance row get.
	NextFile, NextInstance int
}

// Restore makes the simulator carry on from the world an earlier run left,
// instead of starting the project again from version 1 (whose events would
// all be older than what is stored). bodies are the event bodies found for
// the project, e.g. every message of the event stream on
// diffgram.events.<project>.>, in any order; older versions, duplicates,
// events of other projects and bodies that are not events are passed over.
//
// For each entity the snapshot with the highest version is kept (for
// instances, the newest row of each lineage): the next change of an entity
// is that version plus one, and new files, tasks, sequences and instance
// rows get ids above every id found. Next and Run then send only the setup
// events of the fixed world's entities that were not found. The plans in
// progress when the earlier run stopped are not known: their files are
// idle again and the team picks them up like any other.
//
// With no event of the project in bodies, Restore changes nothing and
// returns Restored{} (Events 0). It must be called before the first Next
// or Run, and at most once.
func (s *Simulator) Restore(bodies iter.Seq[[]byte]) (Restored, error) {
	if s.emitted != 0 || s.restored {
		return Restored{}, errors.New("simulate: Restore after the stream started, or twice")
	}
	s.restored = true
	var r Restored
	newest := map[string]snapshot{} // entityKey → its highest version
	maxID := map[string]int{}       // entity → highest id seen (instances: any row)
	var last time.Time
	for body := range bodies {
		sn, ok := s.readSnapshot(body)
		if !ok {
			r.Ignored++
			continue
		}
		r.Events++
		if sn.entity != "project" {
			maxID[sn.entity] = max(maxID[sn.entity], sn.id)
		}
		if old, seen := newest[sn.key]; !seen || sn.version > old.version {
			newest[sn.key] = sn
		}
		if sn.time.After(last) {
			last = sn.time
		}
	}
	if r.Events == 0 {
		return r, nil
	}

	// The fixed world: keep what was found, send the setup of the rest.
	var setup []Event
	for _, ev := range s.setup {
		sn, _ := s.readSnapshot(ev.Body)
		found, ok := newest[sn.key]
		if !ok {
			setup = append(setup, ev)
			continue
		}
		var err error
		switch sn.entity {
		case "project":
			err = json.Unmarshal(found.raw, &s.project)
		case "directory":
			err = json.Unmarshal(found.raw, s.directory[sn.id])
		case "label":
			err = json.Unmarshal(found.raw, s.labels[slices.IndexFunc(s.labels, func(l *labelFile) bool { return l.ID == sn.id })])
		case "attribute_group":
			err = json.Unmarshal(found.raw, s.groups[slices.IndexFunc(s.groups, func(g *attributeGroup) bool { return g.ID == sn.id })])
		case "job":
			err = json.Unmarshal(found.raw, s.job)
		}
		if err != nil {
			return Restored{}, fmt.Errorf("simulate: restore %s: %w", sn.key, err)
		}
	}
	s.setup, s.pending = setup, len(setup)

	byEntity := func(entity string) []snapshot {
		var out []snapshot
		for _, sn := range newest {
			if sn.entity == entity {
				out = append(out, sn)
			}
		}
		slices.SortFunc(out, func(a, b snapshot) int { return a.id - b.id })
		return out
	}

	// Files: the team works on the families whose every member it could
	// have written.
	faithfulFile := map[int]bool{}
	for _, sn := range byEntity("file") {
		f := &file{}
		if err := json.Unmarshal(sn.raw, f); err != nil {
			r.LeftAlone++
			continue
		}
		s.files[f.ID] = f
		faithfulFile[f.ID] = isKind(f.Type) && sameJSON(sn.raw, f)
	}
	for _, id := range slices.Sorted(maps.Keys(s.files)) {
		f := s.files[id]
		if f.ParentID == nil {
			continue
		}
		if parent := s.files[*f.ParentID]; parent != nil {
			parent.children = append(parent.children, id)
		} else {
			faithfulFile[id] = false
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.files)) {
		f := s.files[id]
		if f.ParentID != nil {
			continue
		}
		ok := faithfulFile[id]
		for _, c := range f.children {
			ok = ok && faithfulFile[c]
		}
		if !ok {
			r.LeftAlone++
			faithfulFile[id] = false
			for _, c := range f.children {
				faithfulFile[c] = false
			}
			continue
		}
		s.rootFiles = append(s.rootFiles, id)
		if f.State != "removed" {
			s.liveRoots++
		}
	}
	s.uploaded = len(s.rootFiles)
	s.kindsQueue = s.kindsQueue[min(s.uploaded, len(s.kindsQueue)):]

	for _, sn := range byEntity("task") {
		t := &task{}
		if json.Unmarshal(sn.raw, t) == nil {
			s.tasks[t.ID] = t
		}
	}
	for _, sn := range byEntity("sequence") {
		q := &sequence{}
		if json.Unmarshal(sn.raw, q) != nil || !faithfulFile[q.FileID] || !sameJSON(sn.raw, q) {
			r.LeftAlone++
			continue
		}
		s.sequences[q.ID] = q
		f := s.files[q.FileID]
		f.sequences = append(f.sequences, q.ID)
	}
	for _, sn := range byEntity("instance") { // by root id: lineages in creation order
		in, err := decodeInstance(sn.raw)
		if err != nil || !faithfulFile[in.FileID] || !sameJSON(sn.raw, in) {
			r.LeftAlone++
			continue
		}
		s.instances[in.RootID] = in
		f := s.files[in.FileID]
		f.roots = append(f.roots, in.RootID)
	}

	s.nextFile = max(s.nextFile, maxID["file"]+1)
	s.nextTask = max(s.nextTask, maxID["task"]+1)
	s.nextSeq = max(s.nextSeq, maxID["sequence"]+1)
	s.nextInst = max(s.nextInst, maxID["instance"]+1)
	if !last.Before(s.clock) {
		s.clock = last.Add(s.step) // times go on from the newest event found
	}

	r.Files, r.Live = len(s.rootFiles), s.liveRoots
	r.NextFile, r.NextInstance = s.nextFile, s.nextInst
	s.restoredInfo = r
	return r, nil
}

// snapshot is one event's entity as Restore reads it.
type snapshot struct {
	entity  string // project, directory, ..., instance
	key     string // entity/id; instances: instance/<root id>
	id      int    // the entity's id (instances: the row's id); 0 for a project
	version int
	time    time.Time
	raw     json.RawMessage // the entity's snapshot
}

// readSnapshot reads an event body of the simulator's project; ok is false
// for anything else.
func (s *Simulator) readSnapshot(body []byte) (sn snapshot, ok bool) {
	var env struct {
		Type            string                     `json:"type"`
		Time            string                     `json:"time"`
		DiffgramProject string                     `json:"diffgramproject"`
		Data            map[string]json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &env) != nil || env.DiffgramProject != s.opts.Project {
		return sn, false
	}
	entity, _, _ := strings.Cut(strings.TrimPrefix(env.Type, "diffgram."), ".")
	key, known := dataKey[entity]
	if !known || env.Data[key] == nil {
		return sn, false
	}
	var head struct {
		ID       int    `json:"id"`
		RootID   int    `json:"root_id"`
		StringID string `json:"string_id"`
		Version  int    `json:"version"`
	}
	if json.Unmarshal(env.Data[key], &head) != nil || head.Version < 1 {
		return sn, false
	}
	sn = snapshot{entity: entity, id: head.ID, version: head.Version, raw: env.Data[key]}
	switch entity {
	case "project":
		if head.StringID != s.opts.Project {
			return sn, false
		}
		sn.key = "project"
	case "instance":
		if head.RootID < 1 {
			return sn, false
		}
		sn.key = "instance/" + strconv.Itoa(head.RootID)
	default:
		if head.ID < 1 {
			return sn, false
		}
		sn.key = entity + "/" + strconv.Itoa(head.ID)
	}
	sn.time, _ = time.Parse(time.RFC3339Nano, env.Time)
	return sn, true
}

// isKind reports whether the simulator uploads root files of this type.
func isKind(typ string) bool {
	switch typ {
	case "image", "video", "text", "compound", "audio":
		return true
	}
	return false
}

// decodeInstance reads an instance row. encoding/json cannot fill the
// instance's embedded pointers to unexported structs, so each geometry is
// read on its own, when its first member is there.
func decodeInstance(raw []byte) (*instance, error) {
	var p struct {
		ID              int               `json:"id"`
		RootID          int               `json:"root_id"`
		PreviousID      *int              `json:"previous_id"`
		Version         int               `json:"version"`
		FileID          int               `json:"file_id"`
		SoftDelete      bool              `json:"soft_delete"`
		Type            string            `json:"type"`
		LabelFileID     *int              `json:"label_file_id"`
		AttributeGroups map[string]option `json:"attribute_groups"`
		Points          []point           `json:"points"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, err
	}
	in := &instance{ID: p.ID, RootID: p.RootID, PreviousID: p.PreviousID, Version: p.Version,
		FileID: p.FileID, SoftDelete: p.SoftDelete, Type: p.Type, LabelFileID: p.LabelFileID,
		AttributeGroups: p.AttributeGroups, Points: p.Points}
	part := func(member string, v any) error {
		if _, ok := members[member]; !ok {
			return nil
		}
		return json.Unmarshal(raw, v)
	}
	var b bbox
	var t textSpan
	var rel relation
	var fr frame
	for _, e := range []error{part("x_min", &b), part("start_char", &t), part("from_instance_id", &rel), part("frame_number", &fr)} {
		if e != nil {
			return nil, e
		}
	}
	if _, ok := members["x_min"]; ok {
		in.bbox = &b
	}
	if _, ok := members["start_char"]; ok {
		in.textSpan = &t
	}
	if _, ok := members["from_instance_id"]; ok {
		in.relation = &rel
	}
	if _, ok := members["frame_number"]; ok {
		in.frame = &fr
	}
	return in, nil
}

// sameJSON reports whether v marshals to the same JSON value as raw
// (members in any order).
func sameJSON(raw []byte, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	var x, y any
	dx, dy := json.NewDecoder(bytes.NewReader(raw)), json.NewDecoder(bytes.NewReader(b))
	dx.UseNumber()
	dy.UseNumber()
	if dx.Decode(&x) != nil || dy.Decode(&y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
