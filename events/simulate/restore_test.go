package simulate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// streamChecker follows a stream across simulators, as the service would
// see it: every change of an entity is its previous version plus one, a
// file keeps its type, new instance rows get ids never used before, event
// ids are unique, and the world checks of apply hold.
type streamChecker struct {
	t        *testing.T
	w        *world
	version  map[string]int
	fileType map[int]string
	rowIDs   map[int]bool
	eventIDs map[string]bool
}

func newStreamChecker(t *testing.T) *streamChecker {
	return &streamChecker{t: t, w: newWorld(t), version: map[string]int{}, fileType: map[int]string{},
		rowIDs: map[int]bool{}, eventIDs: map[string]bool{}}
}

func entityOf(t *testing.T, m *msg) string {
	t.Helper()
	switch m.Entity {
	case "project":
		return "project/" + m.Snap["string_id"].(string)
	case "instance":
		return fmt.Sprint("instance/", m.int(t, "root_id"))
	}
	return fmt.Sprint(m.Entity, "/", m.int(t, "id"))
}

func (c *streamChecker) check(m *msg) {
	t := c.t
	t.Helper()
	if c.eventIDs[m.ID] {
		t.Fatalf("%s: event id %s used twice", m.Subject, m.ID)
	}
	c.eventIDs[m.ID] = true
	key := entityOf(t, m)
	v := m.int(t, "version")
	if prev := c.version[key]; v != prev+1 {
		t.Fatalf("%s %s: version %d after %d, want %d (stale: the service would drop it)", m.Subject, key, v, prev, prev+1)
	}
	c.version[key] = v
	switch m.Entity {
	case "file":
		id, typ := m.int(t, "id"), m.Snap["type"].(string)
		if old, ok := c.fileType[id]; ok && old != typ {
			t.Fatalf("%s: file %d changes type from %s to %s", m.Subject, id, old, typ)
		}
		c.fileType[id] = typ
	case "instance":
		if id := m.int(t, "id"); m.Action == "created" || m.Action == "edited" {
			if c.rowIDs[id] {
				t.Fatalf("%s: new row id %d was used before", m.Subject, id)
			}
			c.rowIDs[id] = true
		}
	}
	c.w.apply(m)
}

// TestRestoreCarriesOn: a simulator restored from the events of another
// (with another seed, shuffled, with duplicates and foreign bodies) carries
// the same world on: the two streams, one after the other, pass every check
// a single stream passes, and the second one works on the first one's files
// and annotations.
func TestRestoreCarriesOn(t *testing.T) {
	t.Parallel()
	a := New(Options{Seed: 11, Files: 12}, nil)
	c := newStreamChecker(t)
	var bodies [][]byte
	newest := map[string]*msg{}
	maxFile, maxRow := 0, 0
	for range 3000 {
		m := next(t, a)
		c.check(m)
		bodies = append(bodies, m.Body)
		newest[entityOf(t, m)] = m
		switch m.Entity {
		case "file":
			maxFile = max(maxFile, m.int(t, "id"))
		case "instance":
			maxRow = max(maxRow, m.int(t, "id"))
		}
	}
	// As a stream gives them: any order, some twice; plus what is not
	// the project's.
	rng := rand.New(rand.NewPCG(1, 2))
	shuffled := slices.Clone(bodies)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, bodies[:50]...)
	other := New(Options{Seed: 5, Project: "night-drive"}, nil)
	for range 20 {
		_, body, _ := other.Next()
		shuffled = append(shuffled, body)
	}
	shuffled = append(shuffled, []byte("not json"), []byte(`{"diffgramproject":"street-scenes","type":"diffgram.nothing.x","data":{}}`))

	b := New(Options{Seed: 12, Files: 12}, nil)
	r, err := b.Restore(slices.Values(shuffled))
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != 3050 || r.Ignored != 22 || r.LeftAlone != 0 {
		t.Errorf("restored %+v, want 3050 events, 22 ignored, none left alone", r)
	}
	if r.Files != 12 || r.NextFile != maxFile+1 || r.NextInstance != maxRow+1 {
		t.Errorf("restored %+v, want 12 files, next file %d, next instance %d", r, maxFile+1, maxRow+1)
	}
	if len(b.Setup()) != 0 {
		t.Errorf("the restored world has it all, but %d setup events remain", len(b.Setup()))
	}
	// What the team holds is what was published last.
	for id, f := range b.files {
		if !sameJSON(newest[fmt.Sprint("file/", id)].CE.Data["file"], f) {
			t.Errorf("file %d restored as something else than its newest snapshot", id)
		}
	}
	for root, in := range b.instances {
		if !sameJSON(newest[fmt.Sprint("instance/", root)].CE.Data["instance"], in) {
			t.Errorf("instance lineage %d restored as something else than its newest row", root)
		}
	}

	var oldFiles, oldLineages, newFiles int
	for range 3000 {
		m := next(t, b)
		c.check(m)
		switch {
		case m.Entity == "file" && m.int(t, "id") <= maxFile:
			oldFiles++
		case m.Entity == "file":
			newFiles++
		case m.Entity == "instance" && m.int(t, "root_id") <= maxRow:
			oldLineages++
		}
	}
	if oldFiles < 20 || oldLineages < 50 {
		t.Errorf("after the restore: %d changes of earlier files, %d of earlier annotations: the team does not carry on", oldFiles, oldLineages)
	}
	if newFiles != 0 {
		t.Errorf("%d file events above id %d: the team uploads past its 12 files", newFiles, maxFile)
	}
}

// TestRestoreUploadsOn: restored before its files are all uploaded, the
// team uploads the rest with new ids.
func TestRestoreUploadsOn(t *testing.T) {
	t.Parallel()
	a := New(Options{Seed: 3, Files: 40}, nil)
	c := newStreamChecker(t)
	var bodies [][]byte
	for range 200 {
		m := next(t, a)
		c.check(m)
		bodies = append(bodies, m.Body)
	}
	b := New(Options{Seed: 4, Files: 40}, nil)
	r, err := b.Restore(slices.Values(bodies))
	if err != nil {
		t.Fatal(err)
	}
	if r.Files == 0 || r.Files >= 40 {
		t.Fatalf("restored %+v: want some of the 40 files", r)
	}
	uploads := 0
	for range 3000 {
		m := next(t, b)
		c.check(m)
		if m.CE.Type == "diffgram.file.uploaded" && m.Snap["parent_id"] == nil {
			uploads++
		}
	}
	if r.Files+uploads != 40 {
		t.Errorf("%d files restored + %d uploaded after, want 40", r.Files, uploads)
	}
}

// TestRestoreNothing: with no event of its project, Restore changes
// nothing: the stream is the one of a simulator never restored.
func TestRestoreNothing(t *testing.T) {
	other := New(Options{Seed: 5, Project: "night-drive"}, nil)
	var foreign [][]byte
	for range 30 {
		_, body, _ := other.Next()
		foreign = append(foreign, body)
	}
	a, b := New(Options{Seed: 8}, nil), New(Options{Seed: 8}, nil)
	r, err := b.Restore(slices.Values(foreign))
	if err != nil || r.Events != 0 || r.Ignored != 30 {
		t.Fatalf("Restore = %+v, %v; want no events, 30 ignored", r, err)
	}
	for i := range 500 {
		_, want, _ := a.Next()
		_, got, _ := b.Next()
		if string(got) != string(want) {
			t.Fatalf("event %d differs from the unrestored stream:\n%s\n%s", i, got, want)
		}
	}
	if _, err := b.Restore(slices.Values(foreign)); err == nil {
		t.Errorf("Restore after Next: no error")
	}
}

// TestRestoreLeavesForeignAlone: files, lineages and sequences the
// simulator could not have written (another file type, members it does
// not know) are never changed: a change would drop what it does not know.
func TestRestoreLeavesForeignAlone(t *testing.T) {
	t.Parallel()
	a := New(Options{Seed: 21, Files: 6}, nil)
	var bodies [][]byte
	for range 400 {
		_, body, _ := a.Next()
		bodies = append(bodies, body)
	}
	env := `{"specversion":"1.0","id":"%s","source":"diffgram/projects/street-scenes","type":"diffgram.%s","time":"2026-11-28T10:00:00.000000Z","datacontenttype":"application/json","diffgramproject":"street-scenes","data":{%s}}`
	bodies = append(bodies,
		// A file type the team never uploads.
		fmt.Appendf(nil, env, "f-1", "file.uploaded", `"file":{"id":4001,"type":"sensor_fusion","original_filename":"lidar.pcd","created_time":"2026-11-28T10:00:00Z","state":"added","ann_is_complete":true,"directory_ids":[7],"parent_id":null,"blob_url":null,"version":3}`),
		// An image the team could have made, with an instance it could not
		// have (a member its types do not have).
		fmt.Appendf(nil, env, "f-2", "file.uploaded", `"file":{"id":4002,"type":"image","original_filename":"x.jpg","created_time":"2026-11-28T10:00:00.000000Z","state":"added","ann_is_complete":null,"directory_ids":[7],"parent_id":null,"blob_url":null,"image":{"width":1920,"height":1080,"rotation_degrees":0,"image_signed_url":"u","image_signed_expiry":1},"version":1}`),
		fmt.Appendf(nil, env, "i-1", "instance.created", `"instance":{"id":800001,"root_id":800001,"previous_id":null,"version":1,"file_id":4002,"soft_delete":false,"type":"box","label_file_id":101,"attribute_groups":null,"x_min":1,"y_min":2,"x_max":30,"y_max":40,"width":29}`),
	)
	b := New(Options{Seed: 22, Files: 6}, nil)
	r, err := b.Restore(slices.Values(bodies))
	if err != nil {
		t.Fatal(err)
	}
	if r.LeftAlone != 2 {
		t.Errorf("left alone %d, want 2 (the sensor_fusion file, the unknown box)", r.LeftAlone)
	}
	for range 4000 {
		subject, body, id := b.Next()
		m := decode(t, subject, body, id)
		if m.Entity == "file" && m.int(t, "id") == 4001 {
			t.Fatalf("%s: the team changed the foreign file 4001", subject)
		}
		if m.Entity == "instance" && m.int(t, "root_id") == 800001 {
			t.Fatalf("%s: the team changed the foreign instance 800001", subject)
		}
		if strings.Contains(string(body), `"width":29`) {
			t.Fatalf("%s: a foreign member travelled into the team's events", subject)
		}
	}
}
