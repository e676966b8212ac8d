package pipeline

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

func openDisk(t testing.TB, dir string) *DiskState {
	t.Helper()
	d, err := OpenDiskState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// txApply is State.applyLocal inside a DiskState transaction: the
// snapshot is made from the event and what the store holds, then offered;
// a stale event changes nothing.
func txApply(tx *DiskTx, ev *events.Event) error {
	cur, err := tx.Current(ev.Project, ev.Kind, ev.EntityID)
	if err != nil {
		return err
	}
	if cur != nil && cur.version >= ev.Version {
		return nil
	}
	sn, err := snapFromEvent(ev, cur)
	if err != nil {
		return fmt.Errorf("event %s: %w", ev.ID, err)
	}
	tx.NoteRev(sn.rev)
	_, _, err = tx.Offer(ev.Project, sn)
	return err
}

// diskApply applies one event in a transaction of its own.
func diskApply(t testing.TB, d *DiskState, ev *events.Event) {
	t.Helper()
	if err := d.Update(func(tx *DiskTx) error { return txApply(tx, ev) }); err != nil {
		t.Fatal(err)
	}
}

// diskApplyAll is applyAll for a DiskState.
func diskApplyAll(t testing.TB, d *DiskState, lines []line) int {
	t.Helper()
	evs, bad := decodeLines(t, lines)
	for _, ev := range evs {
		diskApply(t, d, ev)
	}
	return bad
}

// diskApplyBatches applies lines n at a time, each batch one transaction
// (as a consumer applying a fetched batch would): a batch reads its own
// writes.
func diskApplyBatches(t testing.TB, d *DiskState, lines []line, n int) int {
	t.Helper()
	evs, bad := decodeLines(t, lines)
	for batch := range slices.Chunk(evs, n) {
		err := d.Update(func(tx *DiskTx) error {
			for _, ev := range batch {
				if err := txApply(tx, ev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return bad
}

// renderView renders d from the view fn gives, as export 1 at time 0.
func renderView(t testing.TB, read func(func(View)) error, d *Definition) ([]byte, Result) {
	t.Helper()
	var buf bytes.Buffer
	var res Result
	var rerr error
	if err := read(func(v View) { res, rerr = buildPlan(v, d).render(&buf, 1, time.Unix(0, 0)) }); err != nil {
		t.Fatal(err)
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	return buf.Bytes(), res
}

func memRead(s *State) func(func(View)) error {
	return func(fn func(View)) error { s.Read(fn); return nil }
}

// sameRenders requires every definition to render byte-identical
// documents from the in-memory and the disk state.
func sameRenders(t *testing.T, label string, s *State, d *DiskState, defs []*Definition) {
	t.Helper()
	for _, def := range defs {
		want, wres := renderView(t, memRead(s), def)
		got, gres := renderView(t, d.Read, def)
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: %s: disk render differs at byte %d:\n disk %.200q\n  mem %.200q", label, def.Name, i, got[max(0, i-40):], want[max(0, i-40):])
		}
		if gres != wres {
			t.Errorf("%s: %s: result %+v, want %+v", label, def.Name, gres, wres)
		}
	}
}

// sameViews requires both states to hold the same entities, revisions and
// indexes, read through every View method.
func sameViews(t *testing.T, label string, s *State, d *DiskState) {
	t.Helper()
	var want, got string
	s.Read(func(v View) { want = dumpView(v) })
	if err := d.Read(func(v View) { got = dumpView(v) }); err != nil {
		t.Fatal(err)
	}
	if got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Errorf("%s: views differ at line %d:\n disk %.300s\n  mem %.300s", label, i, gl[i], wl[i])
				return
			}
		}
		t.Errorf("%s: views differ: %d lines on disk, %d in memory", label, len(gl), len(wl))
	}
}

// dumpView writes out everything a View shows: every entity of every
// kind, and every index asked of every id the entities name (0 and
// unknown ids included). Instances are sorted, as their order is free.
func dumpView(v View) string {
	var b strings.Builder
	line := func(what string, s *snap) {
		if s == nil {
			fmt.Fprintf(&b, "%s: nil\n", what)
			return
		}
		fmt.Fprintf(&b, "%s: %s %d v%d r%d %s\n", what, s.kind, s.id, s.version, s.rev, s.raw)
	}
	list := func(what string, seq func(func(*snap) bool), sorted bool) {
		var all []*snap
		for s := range seq {
			all = append(all, s)
		}
		if sorted {
			slices.SortFunc(all, func(a, b *snap) int { return cmp.Compare(a.id, b.id) })
		}
		for _, s := range all {
			line(what, s)
		}
	}
	fmt.Fprintf(&b, "rev %d\nprojects %q\n", v.Rev(), v.Projects())
	for _, name := range v.Projects() {
		pv := v.Project(name)
		fmt.Fprintf(&b, "project %s\n", name)
		line("info", pv.Info())
		ids := map[int64]bool{0: true, -1: true, 1 << 40: true}
		for _, seq := range []func(func(*snap) bool){pv.Labels(), pv.Groups(), pv.Dirs(), pv.Jobs(), pv.Tasks(), pv.Files()} {
			for s := range seq {
				ids[s.id] = true
				switch x := s.val.(type) {
				case *events.Task:
					ids[x.FileID], ids[x.JobID] = true, true
				case *events.File:
					if x.ParentID != nil {
						ids[*x.ParentID] = true
					}
				}
			}
		}
		list("label", pv.Labels(), false)
		list("group", pv.Groups(), false)
		list("dir", pv.Dirs(), false)
		list("job", pv.Jobs(), false)
		list("task", pv.Tasks(), false)
		list("file", pv.Files(), false)
		for f := range pv.Files() {
			for in := range pv.Instances(f.id) {
				ids[in.val.(*events.Instance).FileID] = true
			}
		}
		for _, id := range slices.Sorted(func(yield func(int64) bool) {
			for id := range ids {
				if !yield(id) {
					return
				}
			}
		}) {
			fmt.Fprintf(&b, "id %d\n", id)
			line(" label", pv.Label(id))
			line(" dir", pv.Dir(id))
			line(" job", pv.Job(id))
			line(" task", pv.Task(id))
			line(" file", pv.File(id))
			list(" instance", pv.Instances(id), true)
			list(" sequence", pv.Sequences(id), false)
			list(" file task", pv.FileTasks(id), false)
			list(" job task", pv.JobTasks(id), false)
			list(" child", pv.Children(id), false)
		}
	}
	if v.Project("no such project") != nil {
		b.WriteString("unknown project found\n")
	}
	return b.String()
}

// exampleDefinitions are the scenario's definitions, by name.
func exampleDefinitions(t testing.TB, exp *pipelinetest.Expected) []*Definition {
	var defs []*Definition
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range exp.Definitions {
			if !yield(n) {
				return
			}
		}
	}) {
		defs = append(defs, definitionFor(t, n, exp.Project, exp.Definitions[n]))
	}
	return defs
}

// worldDefinitions cover every source and completion the random worlds
// can match.
func worldDefinitions() []*Definition {
	var defs []*Definition
	for _, src := range []Source{{Kind: SourceProject}, {Kind: SourceDirectory, Name: "D"}, {Kind: SourceDirectory, ID: 1}} {
		for _, c := range []Completion{CompletionAll, CompletionComplete, CompletionIncomplete} {
			for _, rm := range []bool{false, true} {
				defs = append(defs, &Definition{Name: fmt.Sprintf("%s-%d-%s-%t", src.Kind, src.ID, c, rm),
					Project: "prop", Source: src, Completion: c, IncludeRemovedInstances: rm})
			}
		}
	}
	return defs
}

// TestDiskEquivalentExamples applies each contract example, in order and
// shuffled with repeats, to the in-memory and the disk state (one event
// per transaction, or batches of them): every
// definition renders the same bytes and every View method reads the same.
func TestDiskEquivalentExamples(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range scenarios {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			exp, err := pipelinetest.LoadExpected(dir)
			if err != nil {
				t.Fatal(err)
			}
			defs := exampleDefinitions(t, exp)
			lines := readLines(t, dir)
			for seed := range uint64(6) {
				order := lines
				if seed > 0 {
					order = shuffled(lines, seed)
				}
				s, d := NewState(), openDisk(t, t.TempDir())
				mbad := applyAll(t, s, order)
				apply := diskApplyAll
				if seed%2 == 1 {
					apply = func(t testing.TB, d *DiskState, lines []line) int {
						return diskApplyBatches(t, d, lines, 1+int(seed)*7)
					}
				}
				if dbad := apply(t, d, order); dbad != mbad {
					t.Errorf("seed %d: %d bad events on disk, %d in memory", seed, dbad, mbad)
				}
				label := fmt.Sprintf("seed %d", seed)
				sameRenders(t, label, s, d, defs)
				sameViews(t, label, s, d)
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestDiskEquivalentRandom does the same for the random worlds of the
// render property test.
func TestDiskEquivalentRandom(t *testing.T) {
	defs := worldDefinitions()
	d := openDisk(t, t.TempDir())
	defer d.Close()
	for seed := range uint64(120) {
		w := newWorld(seed)
		lines := w.lines
		if seed%2 == 1 {
			lines = shuffled(lines, seed)
		}
		// One store for every world, each world a project of its own.
		proj := fmt.Sprintf("prop%d", seed)
		s := NewState()
		renamed := renameProject(lines, proj)
		applyAll(t, s, renamed)
		if seed%3 == 0 {
			diskApplyBatches(t, d, renamed, 16)
		} else {
			diskApplyAll(t, d, renamed)
		}
		var pdefs []*Definition
		for _, def := range defs {
			c := *def
			c.Project = proj
			pdefs = append(pdefs, &c)
		}
		sameRenders(t, fmt.Sprintf("seed %d", seed), s, d, pdefs)
		// The disk store holds every world so far; compare this one.
		var want, got string
		s.Read(func(v View) { want = dumpProject(v, proj) })
		if err := d.Read(func(v View) { got = dumpProject(v, proj) }); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("seed %d: views differ", seed)
		}
		if t.Failed() {
			return
		}
	}
}

// renameProject moves a random world's events (project "prop") to
// another project.
func renameProject(lines []line, name string) []line {
	var out []line
	for _, l := range lines {
		body := bytes.ReplaceAll(l.body, []byte(`"diffgramproject":"prop"`), []byte(`"diffgramproject":"`+name+`"`))
		body = bytes.ReplaceAll(body, []byte(`"string_id":"prop"`), []byte(`"string_id":"`+name+`"`))
		out = append(out, line{strings.Replace(l.subject, ".prop.", "."+name+".", 1), body})
	}
	return out
}

// dumpProject is dumpView limited to one project (and without the
// revision and the project list).
func dumpProject(v View, name string) string {
	return dumpView(oneProject{v, name})
}

type oneProject struct {
	View
	name string
}

func (o oneProject) Rev() uint64        { return 0 }
func (o oneProject) Projects() []string { return []string{o.name} }

// offerBoth offers the event's snapshot, made from each state's current
// one, to both states with revision rev, and requires the same answer.
func offerBoth(t *testing.T, s *State, d *DiskState, ev *events.Event, rev uint64) {
	t.Helper()
	mcur := s.current(ev.Project, ev.Kind, ev.EntityID)
	dcur, err := d.Current(ev.Project, ev.Kind, ev.EntityID)
	if err != nil {
		t.Fatal(err)
	}
	msn, err := snapFromEvent(ev, mcur)
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := snapFromEvent(ev, dcur)
	if err != nil {
		t.Fatal(err)
	}
	msn.rev, dsn.rev = rev, rev
	mold, mstored := s.offer(ev.Project, msn)
	dold, dstored, err := d.Offer(ev.Project, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if mstored != dstored || (mold == nil) != (dold == nil) ||
		mold != nil && (mold.version != dold.version || mold.rev != dold.rev || !bytes.Equal(mold.raw, dold.raw)) {
		t.Fatalf("event %s rev %d: disk offer (%v, %t), memory (%v, %t)", ev.ID, rev, dold, dstored, mold, mstored)
	}
}

// TestDiskOfferRevisions offers snapshots with revisions, repeats (the
// same version again at a higher revision) and revision notes in random
// order to both states: each offer answers the same, and the states
// keep the same revisions.
func TestDiskOfferRevisions(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for seed := range uint64(4) {
		var lines []line
		for _, dir := range scenarios {
			lines = append(lines, readLines(t, dir)...)
		}
		lines = append(lines, newWorld(seed).lines...)
		lines = shuffled(lines, seed)
		s, d := NewState(), openDisk(t, t.TempDir())
		rng := rand.New(rand.NewPCG(seed, 3))
		rev := uint64(0)
		for _, l := range lines {
			ev, err := events.Decode(l.subject, l.body, 1<<20)
			if err != nil {
				continue
			}
			rev += 1 + uint64(rng.IntN(3))
			if rng.IntN(5) == 0 {
				// A revision older than the newest: must not move Rev back.
				offerBoth(t, s, d, ev, rev/2)
			} else {
				offerBoth(t, s, d, ev, rev)
			}
			if rng.IntN(10) == 0 {
				rev++
				s.noteRev(rev)
				if err := d.NoteRev(rev); err != nil {
					t.Fatal(err)
				}
			}
			if d.Rev() != s.rev {
				t.Fatalf("seed %d: disk rev %d, memory %d", seed, d.Rev(), s.rev)
			}
		}
		sameViews(t, fmt.Sprintf("seed %d", seed), s, d)
		d.Close()
	}
}

// snapOf makes a snapshot of the kind from JSON, with revision rev.
func snapOf(t *testing.T, k events.Kind, raw string, rev uint64) *snap {
	t.Helper()
	sn, err := decodeSnap("moves", k, []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	sn.rev = rev
	return sn
}

// ids lists the ids of a sequence's snapshots, sorted.
func ids(seq func(func(*snap) bool)) []int64 {
	var out []int64
	for s := range seq {
		out = append(out, s.id)
	}
	slices.Sort(out)
	return out
}

// TestDiskIndexMoves moves an instance and a sequence to another file, a
// task to another job and file, and a file to another parent and to
// none: the indexes follow, on disk as in memory.
func TestDiskIndexMoves(t *testing.T) {
	s, d := NewState(), openDisk(t, t.TempDir())
	defer d.Close()
	rev := uint64(0)
	offer := func(k events.Kind, raw string) {
		t.Helper()
		rev++
		ms, ds := snapOf(t, k, raw, rev), snapOf(t, k, raw, rev)
		_, mstored := s.offer("moves", ms)
		_, dstored, err := d.Offer("moves", ds)
		if err != nil {
			t.Fatal(err)
		}
		if !mstored || !dstored {
			t.Fatalf("%s not stored (memory %t, disk %t)", raw, mstored, dstored)
		}
	}
	check := func(what string, got func(ProjectView) []int64, want []int64) {
		t.Helper()
		if err := d.Read(func(v View) {
			if g := got(v.Project("moves")); !slices.Equal(g, want) {
				t.Errorf("disk: %s: %v, want %v", what, g, want)
			}
		}); err != nil {
			t.Fatal(err)
		}
		s.Read(func(v View) {
			if g := got(v.Project("moves")); !slices.Equal(g, want) {
				t.Errorf("memory: %s: %v, want %v", what, g, want)
			}
		})
	}
	file := func(id int64, typ, parent string, version int) string {
		return fmt.Sprintf(`{"id":%d,"type":%q,"state":"added","parent_id":%s,"directory_ids":[1],"version":%d}`, id, typ, parent, version)
	}
	offer(events.KindFile, file(1, "compound", "null", 1))
	offer(events.KindFile, file(2, "compound", "null", 1))
	offer(events.KindFile, file(3, "video", "null", 1))
	offer(events.KindFile, file(4, "video", "null", 1))
	offer(events.KindFile, file(10, "image", "1", 1))
	offer(events.KindInstance, `{"id":100,"root_id":100,"file_id":3,"type":"box","version":1}`)
	offer(events.KindInstance, `{"id":101,"root_id":101,"file_id":3,"type":"box","version":1}`)
	offer(events.KindSequence, `{"id":50,"file_id":3,"number":1,"version":1}`)
	offer(events.KindJob, `{"id":7,"name":"a","status":"active","version":1}`)
	offer(events.KindJob, `{"id":8,"name":"b","status":"active","version":1}`)
	offer(events.KindTask, `{"id":70,"job_id":7,"file_id":3,"status":"available","version":1}`)

	inst := func(f int64) func(ProjectView) []int64 {
		return func(pv ProjectView) []int64 { return ids(pv.Instances(f)) }
	}
	check("instances of 3", inst(3), []int64{100, 101})
	check("children of 1", func(pv ProjectView) []int64 { return ids(pv.Children(1)) }, []int64{10})

	// An edit (new id in the lineage) on another file.
	offer(events.KindInstance, `{"id":102,"root_id":100,"previous_id":100,"file_id":4,"type":"box","version":2}`)
	check("instances of 3 after the move", inst(3), []int64{101})
	check("instances of 4 after the move", inst(4), []int64{100})
	offer(events.KindSequence, `{"id":50,"file_id":4,"number":1,"version":2}`)
	check("sequences of 3", func(pv ProjectView) []int64 { return ids(pv.Sequences(3)) }, nil)
	check("sequences of 4", func(pv ProjectView) []int64 { return ids(pv.Sequences(4)) }, []int64{50})

	offer(events.KindTask, `{"id":70,"job_id":8,"file_id":4,"status":"available","version":2}`)
	check("tasks of job 7", func(pv ProjectView) []int64 { return ids(pv.JobTasks(7)) }, nil)
	check("tasks of job 8", func(pv ProjectView) []int64 { return ids(pv.JobTasks(8)) }, []int64{70})
	check("tasks of file 3", func(pv ProjectView) []int64 { return ids(pv.FileTasks(3)) }, nil)
	check("tasks of file 4", func(pv ProjectView) []int64 { return ids(pv.FileTasks(4)) }, []int64{70})

	offer(events.KindFile, file(10, "image", "2", 2))
	check("children of 1 after re-parenting", func(pv ProjectView) []int64 { return ids(pv.Children(1)) }, nil)
	check("children of 2 after re-parenting", func(pv ProjectView) []int64 { return ids(pv.Children(2)) }, []int64{10})
	offer(events.KindFile, file(10, "image", "null", 3))
	check("children of 2 after orphaning", func(pv ProjectView) []int64 { return ids(pv.Children(2)) }, nil)

	// Older versions change nothing, whatever they name.
	rev++
	stale := `{"id":100,"root_id":100,"file_id":3,"type":"box","version":1}`
	if _, stored, err := d.Offer("moves", snapOf(t, events.KindInstance, stale, rev)); err != nil || stored {
		t.Fatalf("stale instance: stored %t, %v", stored, err)
	}
	s.offer("moves", snapOf(t, events.KindInstance, stale, rev))
	check("instances of 3 after a stale offer", inst(3), []int64{101})
	check("files", func(pv ProjectView) []int64 { return ids(pv.Files()) }, []int64{1, 2, 3, 4, 10})
	sameViews(t, "moves", s, d)
}

// TestDiskReopen closes the store and opens it again: the same revision,
// the same views and renders; writes go on after.
func TestDiskReopen(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, d := NewState(), openDisk(t, dir)
	var defs []*Definition
	for _, sc := range scenarios {
		exp, err := pipelinetest.LoadExpected(sc)
		if err != nil {
			t.Fatal(err)
		}
		defs = append(defs, exampleDefinitions(t, exp)...)
		lines := readLines(t, sc)
		applyAll(t, s, lines)
		diskApplyAll(t, d, lines)
	}
	w := newWorld(5)
	applyAll(t, s, w.lines)
	diskApplyAll(t, d, w.lines)
	defs = append(defs, worldDefinitions()...)
	s.noteRev(4242)
	if err := d.NoteRev(4242); err != nil {
		t.Fatal(err)
	}
	sameRenders(t, "before", s, d, defs)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openDisk(t, dir)
	defer d.Close()
	if d.Rev() != 4242 {
		t.Errorf("rev after reopen: %d, want 4242", d.Rev())
	}
	sameRenders(t, "reopened", s, d, defs)
	sameViews(t, "reopened", s, d)

	// A new project after reopening gets a number of its own.
	other := renameProject(newWorld(6).lines, "other")
	applyAll(t, s, other)
	diskApplyAll(t, d, other)
	sameViews(t, "after new project", s, d)
}

// TestDiskReadStopsEarly stops every sequence after its first snapshot:
// no iterator is left open, and the store closes cleanly.
func TestDiskReadStopsEarly(t *testing.T) {
	d := openDisk(t, t.TempDir())
	w := newWorld(3)
	diskApplyAll(t, d, w.lines)
	n := 0
	err := d.Read(func(v View) {
		pv := v.Project("prop")
		for f := range pv.Files() {
			for range pv.Instances(f.id) {
				n++
				break
			}
			break
		}
		for range pv.Labels() {
			break
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("read %d instances, want 1", n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("no panic")
			}
		}()
		d.Read(func(v View) {
			for range v.Project("prop").Files() {
				panic("stop")
			}
		})
	}()
	// Pebble reports leaked iterators and snapshots on Close.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// otherLayoutStore returns the folder of a closed store marked with
// another layout version.
func otherLayoutStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	d := openDisk(t, dir)
	if err := d.db.Set(keyFormat, []byte("0"), nil); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDiskFormat refuses a store of another layout.
func TestDiskFormat(t *testing.T) {
	dir := otherLayoutStore(t)
	if _, err := OpenDiskState(dir); !errors.Is(err, ErrDiskFormat) {
		t.Fatalf("open: %v, want ErrDiskFormat", err)
	}
}

// TestDiskWaitRev wakes a waiter when a later transaction notes the
// revision, and when done is closed.
func TestDiskWaitRev(t *testing.T) {
	d := openDisk(t, t.TempDir())
	defer d.Close()
	got := make(chan bool)
	go func() { got <- d.WaitRev(10, nil) }()
	if err := d.NoteRev(10); err != nil {
		t.Fatal(err)
	}
	if !<-got {
		t.Fatal("WaitRev: false")
	}
	done := make(chan struct{})
	go func() { got <- d.WaitRev(11, done) }()
	close(done)
	if <-got {
		t.Fatal("WaitRev after done: true")
	}
}

// TestDiskReadConsistent reads while another goroutine writes: every view
// holds exactly the writes up to its revision.
func TestDiskReadConsistent(t *testing.T) {
	d := openDisk(t, t.TempDir())
	defer d.Close()
	const n = 300
	done := make(chan error)
	go func() {
		for i := int64(1); i <= n; i++ {
			sn, err := decodeSnap("c", events.KindFile, fmt.Appendf(nil, `{"id":%d,"type":"image","state":"added","version":1}`, i))
			if err != nil {
				done <- err
				return
			}
			sn.rev = uint64(i)
			if _, _, err := d.Offer("c", sn); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for reading := true; reading; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			reading = false
		default:
		}
		if err := d.Read(func(v View) {
			files := 0
			if pv := v.Project("c"); pv != nil {
				files = len(ids(pv.Files()))
			}
			if uint64(files) != v.Rev() {
				t.Errorf("view at rev %d holds %d files", v.Rev(), files)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if d.Rev() != n {
		t.Errorf("rev %d, want %d", d.Rev(), n)
	}
}

// TestDiskEntriesFollowChanges renders after every few events, so that
// the entries the store keeps are read back after changes to their files:
// every render must still equal the in-memory state's. A view opened
// before a change renders the state before it, even after a newer view
// has kept newer entries of the same files.
func TestDiskEntriesFollowChanges(t *testing.T) {
	defs := worldDefinitions()
	for seed := range uint64(24) {
		w := newWorld(seed)
		lines := w.lines
		if seed%2 == 1 {
			lines = shuffled(lines, seed)
		}
		s, d := NewState(), openDisk(t, t.TempDir())
		step := max(1, len(lines)/6)
		var old *diskView
		var oldWant [][]byte
		for i := 0; i < len(lines); i += step {
			chunk := lines[i:min(i+step, len(lines))]
			applyAll(t, s, chunk)
			diskApplyAll(t, d, chunk)
			label := fmt.Sprintf("seed %d, after %d events", seed, i+len(chunk))
			sameRenders(t, label, s, d, defs)
			if old != nil {
				for j, def := range defs {
					got, _ := renderView(t, func(fn func(View)) error { fn(old); return nil }, def)
					if !bytes.Equal(got, oldWant[j]) {
						t.Errorf("%s: %s from the view before the change differs from the state before it", label, def.Name)
					}
				}
				if err := old.Close(); err != nil {
					t.Fatal(err)
				}
			}
			old, oldWant = d.View(), nil
			for _, def := range defs {
				want, _ := renderView(t, memRead(s), def)
				oldWant = append(oldWant, want)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}

// TestDiskViewRenewsIterators reads a view while the store moves on and
// its memtables are flushed, with the view's iterators renewed every 256
// reads (an iterator holds on to the memtables it was made with): the
// scan, reopened at its key each time, and the point reads through new
// iterators still see exactly the view's snapshot, and nothing is left
// open.
func TestDiskViewRenewsIterators(t *testing.T) {
	d := openDisk(t, t.TempDir())
	offer := func(i int64) {
		t.Helper()
		sn, err := decodeSnap("c", events.KindFile, fmt.Appendf(nil, `{"id":%d,"type":"image","state":"added","version":1}`, i))
		if err != nil {
			t.Fatal(err)
		}
		sn.rev = uint64(i)
		if _, _, err := d.Offer("c", sn); err != nil {
			t.Fatal(err)
		}
	}
	const n = 1000
	for i := int64(1); i <= n; i++ {
		offer(i)
	}
	v := d.View()
	pv := v.Project("c")
	var got []int64
	next := int64(n + 1)
	for f := range pv.Files() {
		got = append(got, f.id)
		v.genAt = time.Time{} // due: every 256th read starts a generation
		if pv.File(f.id) == nil || pv.File(next) != nil {
			t.Fatalf("point reads beside the scan at file %d: wrong", f.id)
		}
		offer(next)
		next++
		if next%100 == 0 {
			if err := d.db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.gen < 5 {
		t.Fatalf("%d generations: the iterators were not renewed", v.gen)
	}
	if len(got) != n || got[0] != 1 || got[n-1] != n || !slices.IsSorted(got) {
		t.Fatalf("the scan read %d files (%v … %v), want 1 … %d", len(got), got[:min(3, len(got))], got[max(0, len(got)-3):], n)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// Pebble reports leaked iterators and snapshots on Close.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestScratchStateSharesCache: a scratch store uses the live store's block
// cache (no second cache in the process), and either may be closed first.
func TestScratchStateSharesCache(t *testing.T) {
	for _, liveFirst := range []bool{true, false} {
		live, err := OpenDiskState(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		scratch, err := OpenScratchState(t.TempDir(), live)
		if err != nil {
			t.Fatal(err)
		}
		if scratch.cache != live.cache {
			t.Fatal("the scratch store has a block cache of its own")
		}
		first, second := scratch, live
		if liveFirst {
			first, second = live, scratch
		}
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		// The other still reads and writes through the cache.
		if err := second.Update(func(*DiskTx) error { return nil }); err != nil {
			t.Errorf("after the other store closed: %v", err)
		}
		if err := second.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
