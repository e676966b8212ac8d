package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// msg is one event as a consumer sees it, decoded.
type msg struct {
	Subject string
	ID      string
	Body    []byte
	CE      struct {
		SpecVersion     string                     `json:"specversion"`
		ID              string                     `json:"id"`
		Source          string                     `json:"source"`
		Type            string                     `json:"type"`
		Time            string                     `json:"time"`
		DataContentType string                     `json:"datacontenttype"`
		DiffgramProject string                     `json:"diffgramproject"`
		Data            map[string]json.RawMessage `json:"data"`
	}
	Entity, Action string
	Snap           map[string]any // the entity's snapshot, numbers as json.Number
}

func (m *msg) int(t *testing.T, key string) int {
	t.Helper()
	n, ok := m.Snap[key].(json.Number)
	if !ok {
		t.Fatalf("%s: %s is %T (%v), want a number", m.Subject, key, m.Snap[key], m.Snap[key])
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%s: %s = %v: not an integer", m.Subject, key, n)
	}
	return int(i)
}

// optInt returns a nullable integer field; ok is false for null or absent.
func (m *msg) optInt(t *testing.T, key string) (int, bool) {
	t.Helper()
	if m.Snap[key] == nil {
		return 0, false
	}
	return m.int(t, key), true
}

var entityKey = map[string]string{
	"project": "project", "directory": "directory", "label": "label_file",
	"attribute_group": "attribute_group", "job": "job", "file": "file",
	"task": "task", "sequence": "sequence", "instance": "instance",
}

// decode checks one message against the envelope rules of EVENTS.md and
// returns it decoded.
func decode(t *testing.T, subject string, body []byte, msgID string) *msg {
	t.Helper()
	m := &msg{Subject: subject, ID: msgID, Body: body}
	if err := json.Unmarshal(body, &m.CE); err != nil {
		t.Fatalf("%s: body is not JSON: %v\n%s", subject, err, body)
	}
	tok := strings.Split(subject, ".")
	if len(tok) != 5 || tok[0] != "diffgram" || tok[1] != "events" {
		t.Fatalf("subject %q: want diffgram.events.<project>.<entity>.<action>", subject)
	}
	m.Entity, m.Action = tok[3], tok[4]
	ce := &m.CE
	switch {
	case ce.SpecVersion != "1.0":
		t.Fatalf("%s: specversion %q", subject, ce.SpecVersion)
	case ce.Type != "diffgram."+m.Entity+"."+m.Action:
		t.Fatalf("%s: type %q does not match the subject", subject, ce.Type)
	case ce.DiffgramProject != tok[2]:
		t.Fatalf("%s: diffgramproject %q does not match the subject", subject, ce.DiffgramProject)
	case ce.Source != "diffgram/projects/"+tok[2]:
		t.Fatalf("%s: source %q", subject, ce.Source)
	case ce.DataContentType != "application/json":
		t.Fatalf("%s: datacontenttype %q", subject, ce.DataContentType)
	case ce.ID == "" || ce.ID != msgID:
		t.Fatalf("%s: id %q, msgID %q", subject, ce.ID, msgID)
	}
	if _, err := time.Parse(time.RFC3339Nano, ce.Time); err != nil {
		t.Fatalf("%s: time %q: %v", subject, ce.Time, err)
	}
	key, ok := entityKey[m.Entity]
	if !ok {
		t.Fatalf("%s: unknown entity %q", subject, m.Entity)
	}
	if len(ce.Data) != 1 || ce.Data[key] == nil {
		t.Fatalf("%s: data has keys %v, want exactly %q", subject, keys(ce.Data), key)
	}
	dec := json.NewDecoder(bytes.NewReader(ce.Data[key]))
	dec.UseNumber()
	if err := dec.Decode(&m.Snap); err != nil {
		t.Fatalf("%s: data.%s is not an object: %v", subject, key, err)
	}
	if m.Entity == "project" {
		if s, _ := m.Snap["string_id"].(string); s != tok[2] {
			t.Fatalf("%s: project string_id %v", subject, m.Snap["string_id"])
		}
	} else {
		m.int(t, "id")
	}
	if v := m.int(t, "version"); v < 1 {
		t.Fatalf("%s: version %d", subject, v)
	}
	return m
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// next decodes the simulator's next event.
func next(t *testing.T, s *Simulator) *msg {
	t.Helper()
	subject, body, msgID := s.Next()
	return decode(t, subject, body, msgID)
}

func TestStreamShape(t *testing.T) {
	t.Parallel()
	for _, seed := range []int64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s := New(Options{Seed: seed}, nil)
			ids := map[string]bool{}
			var last time.Time
			for range 5000 {
				subject, body, msgID := s.Next()
				m := decode(t, subject, body, msgID)
				if ids[msgID] {
					t.Fatalf("event id %s used twice", msgID)
				}
				ids[msgID] = true
				tm, _ := time.Parse(time.RFC3339Nano, m.CE.Time)
				if tm.Before(last) {
					t.Fatalf("%s: time %s before the previous event's %s", subject, tm, last)
				}
				last = tm
				if m.CE.DiffgramProject != DefaultProject {
					t.Fatalf("project %q, want the default %q", m.CE.DiffgramProject, DefaultProject)
				}
			}
		})
	}
}

func TestOtherProject(t *testing.T) {
	s := New(Options{Seed: 9, Project: "night-drive-2"}, nil)
	for range 500 {
		subject, body, msgID := s.Next()
		m := decode(t, subject, body, msgID)
		if m.CE.DiffgramProject != "night-drive-2" {
			t.Fatalf("%s: project %q", subject, m.CE.DiffgramProject)
		}
	}
	setup := s.Setup()
	m := decode(t, setup[0].Subject, setup[0].Body, setup[0].ID)
	if m.Snap["name"] != "Night Drive 2" {
		t.Errorf("project name %v, want Night Drive 2", m.Snap["name"])
	}
}

// TestVersions replays the stream as the connector would, checking that
// every change of an entity is its previous version plus one and that
// instance lineages are kept as EVENTS.md says.
func TestVersions(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 7}, nil)
	version := map[string]int{} // entity/id (instances: lineage root) -> version
	lastRow := map[int]int{}    // instance root -> id of its newest row
	rowDeleted := map[int]bool{}
	maxInstance := 0
	var edits, deletes, undeletes int
	for range 5000 {
		m := next(t, s)
		var key string
		switch m.Entity {
		case "project":
			key = "project/" + m.Snap["string_id"].(string)
		case "instance":
			key = fmt.Sprint("instance/", m.int(t, "root_id"))
		default:
			key = fmt.Sprint(m.Entity, "/", m.int(t, "id"))
		}
		v := m.int(t, "version")
		if prev, seen := version[key]; v != prev+1 {
			t.Fatalf("%s %s: version %d after %d (seen before: %v), want +1", m.Subject, key, v, prev, seen)
		}
		version[key] = v

		if m.Entity != "instance" {
			continue
		}
		id, root := m.int(t, "id"), m.int(t, "root_id")
		prevID, hasPrev := m.optInt(t, "previous_id")
		softDelete, _ := m.Snap["soft_delete"].(bool)
		switch m.Action {
		case "created":
			if id != root || hasPrev || v != 1 || softDelete {
				t.Fatalf("%s: created row id %d root %d previous %v version %d soft_delete %v", m.Subject, id, root, m.Snap["previous_id"], v, softDelete)
			}
		case "edited":
			edits++
			if !hasPrev || prevID != lastRow[root] || id == root || softDelete {
				t.Fatalf("%s: edit row %d of lineage %d has previous_id %v, want %d", m.Subject, id, root, m.Snap["previous_id"], lastRow[root])
			}
		case "deleted", "undeleted":
			if m.Action == "deleted" {
				deletes++
			} else {
				undeletes++
			}
			if id != lastRow[root] || softDelete != (m.Action == "deleted") || rowDeleted[root] == softDelete {
				t.Fatalf("%s: row %d (newest of lineage %d: %d) soft_delete %v", m.Subject, id, root, lastRow[root], softDelete)
			}
		default:
			t.Fatalf("unknown instance action %q", m.Action)
		}
		if m.Action == "created" || m.Action == "edited" {
			if id <= maxInstance {
				t.Fatalf("%s: new row id %d not above %d", m.Subject, id, maxInstance)
			}
			maxInstance = id
		}
		lastRow[root] = id
		rowDeleted[root] = softDelete
	}
	if edits < 20 || deletes < 5 || undeletes < 2 {
		t.Errorf("edits %d, deletes %d, undeletes %d: want a real mix", edits, deletes, undeletes)
	}
}

// world is the state the stream describes, built up event by event.
type world struct {
	t         *testing.T
	files     map[int]*msg
	tasks     map[int]*msg
	sequences map[int]*msg
	instances map[int]*msg // by row id
	dirs      map[int]bool
	labels    map[int]bool
	counts    map[string]int // type -> events
}

func newWorld(t *testing.T) *world {
	return &world{t: t, files: map[int]*msg{}, tasks: map[int]*msg{}, sequences: map[int]*msg{},
		instances: map[int]*msg{}, dirs: map[int]bool{}, labels: map[int]bool{}, counts: map[string]int{}}
}

// apply checks that the event only refers to things that exist, then keeps it.
func (w *world) apply(m *msg) {
	t := w.t
	t.Helper()
	w.counts[m.CE.Type]++
	id, _ := m.optInt(t, "id")
	fileOK := func(fid int) {
		t.Helper()
		f := w.files[fid]
		if f == nil {
			t.Fatalf("%s: file %d does not exist", m.Subject, fid)
		}
		if f.Snap["state"] == "removed" {
			t.Fatalf("%s: file %d is removed", m.Subject, fid)
		}
	}
	switch m.Entity {
	case "directory":
		w.dirs[id] = true
	case "label":
		w.labels[id] = true
	case "file":
		if (m.Action == "uploaded") != (w.files[id] == nil) {
			t.Fatalf("%s: file %d uploaded twice or changed before upload", m.Subject, id)
		}
		if m.Action != "uploaded" {
			fileOK(id)
		}
		for _, d := range m.Snap["directory_ids"].([]any) {
			n, _ := d.(json.Number).Int64()
			if !w.dirs[int(n)] {
				t.Fatalf("%s: directory %d does not exist", m.Subject, n)
			}
		}
		if p, ok := m.optInt(t, "parent_id"); ok {
			fileOK(p)
		}
		if (m.Action == "removed") != (m.Snap["state"] == "removed") {
			t.Fatalf("%s: state %v", m.Subject, m.Snap["state"])
		}
		w.files[id] = m
	case "task":
		fileOK(m.int(t, "file_id"))
		if m.int(t, "job_id") != JobNightReview {
			t.Fatalf("%s: job %d", m.Subject, m.int(t, "job_id"))
		}
		if (m.Action == "archived") != (m.Snap["status"] == "archived") {
			t.Fatalf("%s: status %v", m.Subject, m.Snap["status"])
		}
		w.tasks[id] = m
	case "sequence":
		fileOK(m.int(t, "file_id"))
		w.sequences[id] = m
	case "instance":
		fid := m.int(t, "file_id")
		fileOK(fid)
		if l, ok := m.optInt(t, "label_file_id"); ok && !w.labels[l] {
			t.Fatalf("%s: label %d does not exist", m.Subject, l)
		}
		if q, ok := m.optInt(t, "sequence_id"); ok {
			if w.sequences[q] == nil || w.sequences[q].int(t, "file_id") != fid {
				t.Fatalf("%s: sequence %d is not on file %d", m.Subject, q, fid)
			}
		}
		if m.Snap["type"] == "relation" {
			for _, k := range []string{"from_instance_id", "to_instance_id"} {
				if end := w.instances[m.int(t, k)]; end == nil || end.int(t, "file_id") != fid {
					t.Fatalf("%s: %s %d is not on file %d", m.Subject, k, m.int(t, k), fid)
				}
			}
		}
		w.instances[id] = m
	}
}

// completeIn reports whether a live file linked to dir is complete.
func (w *world) completeIn(dir int) bool {
	for _, f := range w.files {
		if f.Snap["state"] == "removed" || f.Snap["ann_is_complete"] != true {
			continue
		}
		for _, d := range f.Snap["directory_ids"].([]any) {
			if d.(json.Number).String() == fmt.Sprint(dir) {
				return true
			}
		}
	}
	return false
}

func (w *world) jobTaskComplete() bool {
	for _, tk := range w.tasks {
		if tk.Snap["status"] == "complete" {
			return true
		}
	}
	return false
}

func TestMediaTypes(t *testing.T) {
	t.Parallel()
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s := New(Options{Seed: seed}, nil)
			w := newWorld(t)
			types := map[string]int{}
			instTypes := map[string]int{}
			children := map[int]int{} // compound parent -> children
			var frameInstances, globalsOnVideo int
			for range 5000 {
				m := next(t, s)
				w.apply(m)
				switch {
				case m.CE.Type == "diffgram.file.uploaded":
					typ := m.Snap["type"].(string)
					types[typ]++
					if p, ok := m.optInt(t, "parent_id"); ok {
						if w.files[p].Snap["type"] != "compound" {
							t.Fatalf("%s: parent %d is not compound", m.Subject, p)
						}
						children[p]++
					}
					if block := map[string]string{"image": "image", "video": "video", "text": "text"}[typ]; block != "" && m.Snap[block] == nil {
						t.Fatalf("%s: %s file without its %q block", m.Subject, typ, block)
					}
				case m.Entity == "instance" && m.Action == "created":
					instTypes[m.Snap["type"].(string)]++
					if w.files[m.int(t, "file_id")].Snap["type"] != "video" {
						break
					}
					if _, ok := m.optInt(t, "frame_number"); ok {
						for _, k := range []string{"global_frame_number", "sequence_id", "number"} {
							m.int(t, k)
						}
						if _, ok := m.Snap["interpolated"].(bool); !ok {
							t.Fatalf("%s: interpolated %v", m.Subject, m.Snap["interpolated"])
						}
						frameInstances++
					} else if m.Snap["type"] == "global" {
						globalsOnVideo++
					}
				}
			}
			for _, typ := range []string{"image", "video", "text", "compound", "audio"} {
				if types[typ] == 0 {
					t.Errorf("no %s file uploaded in 5000 events (uploads: %v)", typ, types)
				}
			}
			if types["image"] <= types["video"]+types["text"]+types["compound"]+types["audio"] {
				t.Errorf("uploads %v: want mostly images", types)
			}
			for p, n := range children {
				if n != 2 {
					t.Errorf("compound %d has %d children, want 2", p, n)
				}
			}
			if len(children) == 0 {
				t.Error("no compound file with children")
			}
			for _, typ := range []string{"box", "polygon", "point", "tag", "text_token", "relation", "global"} {
				if instTypes[typ] == 0 {
					t.Errorf("no %s instance (instances: %v)", typ, instTypes)
				}
			}
			if frameInstances == 0 || globalsOnVideo == 0 {
				t.Errorf("video: %d frame instances, %d global instances", frameInstances, globalsOnVideo)
			}
			for _, typ := range []string{
				"diffgram.sequence.upserted", "diffgram.task.created", "diffgram.task.status_changed",
				"diffgram.task.archived", "diffgram.file.updated", "diffgram.file.completion_changed",
				"diffgram.instance.edited", "diffgram.instance.deleted", "diffgram.instance.undeleted",
			} {
				if w.counts[typ] == 0 {
					t.Errorf("no %s in 5000 events", typ)
				}
			}
		})
	}
}

// TestLongRun runs past the upload phase: files get reopened, reviewed again
// and (rarely) removed, and the stream goes on.
func TestLongRun(t *testing.T) {
	t.Parallel()
	s := New(Options{Seed: 11, Files: 30}, nil)
	w := newWorld(t)
	for range 12000 {
		w.apply(next(t, s))
	}
	roots := 0
	for _, f := range w.files {
		if _, child := f.optInt(t, "parent_id"); !child {
			roots++
		}
	}
	if roots != 30 {
		t.Errorf("%d root files uploaded, want Options.Files = 30", roots)
	}
	if w.counts["diffgram.file.removed"] == 0 {
		t.Error("no file removed in 12000 events")
	}
	reopened := 0
	for _, f := range w.files {
		if f.Snap["state"] != "removed" && f.int(t, "version") > 4 {
			reopened++
		}
	}
	if reopened == 0 {
		t.Error("no file changed more than a few times")
	}
}

func TestSetup(t *testing.T) {
	s := New(Options{Seed: 3}, nil)
	setup := s.Setup()
	if again := s.Setup(); len(again) != len(setup) || string(again[0].Body) != string(setup[0].Body) {
		t.Fatal("Setup changed between calls")
	}
	for i, ev := range setup {
		subject, body, id := s.Next()
		if subject != ev.Subject || string(body) != string(ev.Body) || id != ev.ID {
			t.Fatalf("Next #%d = %s %s, want the setup event %s %s", i, subject, body, ev.Subject, ev.Body)
		}
	}
	got := map[string]string{}
	for _, ev := range setup {
		m := decode(t, ev.Subject, ev.Body, ev.ID)
		switch m.Entity {
		case "directory":
			got[fmt.Sprint("directory ", m.int(t, "id"))] = m.Snap["nickname"].(string)
		case "label":
			got[fmt.Sprint("label ", m.int(t, "id"))] = m.Snap["label"].(map[string]any)["name"].(string)
			if _, ok := m.Snap["colour"].(map[string]any); !ok || m.Snap["state"] != "added" {
				t.Errorf("%s: colour %v state %v", ev.Subject, m.Snap["colour"], m.Snap["state"])
			}
		case "attribute_group":
			got[fmt.Sprint("attribute_group ", m.int(t, "id"))] = m.Snap["name"].(string)
			if l, ok := m.Snap["attribute_template_list"].([]any); !ok || len(l) == 0 {
				t.Errorf("%s: attribute_template_list %v", ev.Subject, m.Snap["attribute_template_list"])
			}
			if _, ok := m.Snap["label_file_ids"].([]any); !ok {
				t.Errorf("%s: label_file_ids %v", ev.Subject, m.Snap["label_file_ids"])
			}
		case "job":
			got[fmt.Sprint("job ", m.int(t, "id"))] = m.Snap["name"].(string)
			if m.int(t, "completion_directory_id") != DirectoryArchive {
				t.Errorf("job completion directory %v", m.Snap["completion_directory_id"])
			}
		case "project":
			got["project"] = m.Snap["name"].(string)
		}
	}
	want := map[string]string{
		"project":     "Street Scenes",
		"directory 7": "Luckfrill", "directory 8": "Archive",
		"label 101": "car", "label 102": "person", "label 103": "bicycle", "label 104": "traffic light",
		"attribute_group 3": "occlusion", "attribute_group 4": "weather",
		"job 12": "Night Review",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("setup world\n got %v\nwant %v", got, want)
	}
}

// TestDemoFirstTenSeconds pins what the demo's export definitions rely on:
// at the default rate, within 10 seconds (200 events after the setup) the
// Luckfrill and Archive directories each hold a complete file and the job
// has a complete task, whatever the seed.
func TestDemoFirstTenSeconds(t *testing.T) {
	t.Parallel()
	for seed := int64(1); seed <= 50; seed++ {
		s := New(Options{Seed: seed}, nil)
		w := newWorld(t)
		for range len(s.Setup()) + int(10*DefaultRate) {
			w.apply(next(t, s))
		}
		if !w.completeIn(DirectoryLuckfrill) || !w.completeIn(DirectoryArchive) || !w.jobTaskComplete() {
			t.Errorf("seed %d: after 10 s: complete in Luckfrill %v, in Archive %v, job task complete %v",
				seed, w.completeIn(DirectoryLuckfrill), w.completeIn(DirectoryArchive), w.jobTaskComplete())
		}
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	a := New(Options{Seed: 42}, nil)
	b := New(Options{Seed: 42}, nil)
	c := New(Options{Seed: 43}, nil)
	differ := false
	for i := range 5000 {
		as, ab, aid := a.Next()
		bs, bb, bid := b.Next()
		if as != bs || !bytes.Equal(ab, bb) || aid != bid {
			t.Fatalf("event %d differs with the same seed:\n%s %s\n%s %s", i, as, ab, bs, bb)
		}
		if _, cb, _ := c.Next(); !bytes.Equal(ab, cb) {
			differ = true
		}
	}
	if !differ {
		t.Error("seeds 42 and 43 gave the same stream")
	}
	// Unseeded simulators differ from each other.
	_, x, _ := New(Options{}, nil).Next()
	_, y, _ := New(Options{}, nil).Next()
	if bytes.Equal(x, y) {
		t.Error("two unseeded simulators gave the same first event")
	}
}

// collector is a Publisher that keeps what it is given.
type collector struct {
	mu   sync.Mutex
	msgs []*msg
	t    *testing.T
}

func (c *collector) publish(ctx context.Context, subject string, body []byte, msgID string) error {
	m := decode(c.t, subject, body, msgID)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	return nil
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func TestRunRate(t *testing.T) {
	c := &collector{t: t}
	s := New(Options{Seed: 1, Rate: 1000}, c.publish)
	setup := len(s.Setup())
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	elapsed := time.Since(start)
	if elapsed > 2*time.Second {
		t.Errorf("Run returned %v after start, want soon after the 300 ms deadline", elapsed)
	}
	n := c.len()
	// 300 events in 300 ms (Run catches up with late ticks, and never
	// publishes past the deadline); leave room for a slow, loaded,
	// race-instrumented machine.
	if n-setup < 100 || n-setup > 310 {
		t.Errorf("published %d events after the %d setup events in %v, want about 300", n-setup, setup, elapsed)
	}
	for i, ev := range s.Setup() {
		if c.msgs[i].ID != ev.ID {
			t.Fatalf("published #%d is %s, want setup event %s", i, c.msgs[i].Subject, ev.Subject)
		}
	}
	// That nothing is published after Run returns is checked on the fake
	// clock (TestRunPaced).
}

// TestRunPaced checks the pacing exactly on a fake clock: 10 s at 20 per
// second is the setup and then 200 events.
func TestRunPaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &collector{t: t}
		s := New(Options{Seed: 5}, c.publish)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second+25*time.Millisecond)
		defer cancel()
		if err := s.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got, want := c.len(), len(s.Setup())+200; got != want {
			t.Errorf("published %d events in 10 s at 20/s, want %d", got, want)
		}
		// Nothing is published after Run returns: a minute later (on the
		// fake clock, once every goroutine of the test is idle), still
		// the same events.
		n := c.len()
		time.Sleep(time.Minute)
		synctest.Wait()
		if c.len() != n {
			t.Errorf("%d events published after Run returned", c.len()-n)
		}
		// A Run resumed later continues the same stream.
		ref := New(Options{Seed: 5}, nil)
		ctx2, cancel2 := context.WithTimeout(t.Context(), time.Second+25*time.Millisecond)
		defer cancel2()
		if err := s.Run(ctx2); err != nil {
			t.Fatalf("Run again: %v", err)
		}
		if got, want := c.len(), len(s.Setup())+220; got != want {
			t.Errorf("after resuming for 1 s: %d events, want %d", got, want)
		}
		for i, m := range c.msgs {
			if _, _, id := ref.Next(); id != m.ID {
				t.Fatalf("published #%d has id %s, Next gives %s", i, m.ID, id)
			}
		}
	})
}

func TestRunUnlimited(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	s := New(Options{Seed: 2, Rate: -1}, func(ctx context.Context, subject string, body []byte, msgID string) error {
		n++
		if n == 3000 {
			cancel()
		}
		return nil
	})
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n != 3000 {
		t.Errorf("published %d events, want 3000 (stop right after the cancel)", n)
	}
}

func TestRunPublishError(t *testing.T) {
	errFull := errors.New("stream full")
	n := 0
	s := New(Options{Seed: 2, Rate: -1}, func(ctx context.Context, subject string, body []byte, msgID string) error {
		n++
		if n == 25 {
			return errFull
		}
		return nil
	})
	err := s.Run(t.Context())
	if !errors.Is(err, errFull) {
		t.Fatalf("Run = %v, want the publisher's error", err)
	}
	if n != 25 {
		t.Errorf("published %d times, want to stop at the failure (25)", n)
	}
}

// TestRunCancelledPublish: a publish failing because ctx is done is a clean
// stop, not an error.
func TestRunCancelledPublish(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	s := New(Options{Seed: 2}, func(ctx context.Context, subject string, body []byte, msgID string) error {
		cancel()
		return ctx.Err()
	})
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

func TestRunBadProject(t *testing.T) {
	called := false
	s := New(Options{Project: "Street Scenes"}, func(context.Context, string, []byte, string) error {
		called = true
		return nil
	})
	if err := s.Run(t.Context()); err == nil || called {
		t.Fatalf("Run = %v (published: %v), want an error before publishing", err, called)
	}
	if err := New(Options{}, nil).Run(t.Context()); err == nil {
		t.Fatal("Run without a Publisher = nil, want an error")
	}
}

func BenchmarkNext(b *testing.B) {
	s := New(Options{Seed: 1}, nil)
	var bytes int64
	for b.Loop() {
		_, body, _ := s.Next()
		bytes += int64(len(body))
	}
	b.SetBytes(bytes / int64(b.N))
}
