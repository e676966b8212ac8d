package pipeline

import (
	"iter"
	"maps"
	"slices"

	"github.com/exportstream/exportstream/events"
)

// The read seam: render (buildPlan), the empty-source reasons and
// "which definitions does this change touch" read the state only through
// View and ProjectView, so that the storage behind them can change (the
// in-memory maps of State today, a disk store next) without touching them.
//
// A View is consistent: it reflects every change up to Rev and none after.
// It is valid only inside the callback that received it (State.Read);
// the snapshots it hands out are immutable and may be kept after.

// View is a consistent read view of the whole state.
type View interface {
	// Rev is the key-value revision the view reflects.
	Rev() uint64
	// Projects lists the projects the state knows, by string id.
	Projects() []string
	// Project returns the project's view, or nil when no event named it.
	Project(name string) ProjectView
}

// ProjectView reads one project. Every sequence is in ascending id order
// unless its comment says otherwise.
type ProjectView interface {
	// Info is the project snapshot, or nil.
	Info() *snap
	// Labels, Groups, Dirs, Jobs and Tasks are all of the kind, by id.
	Labels() iter.Seq[*snap]
	Groups() iter.Seq[*snap]
	Dirs() iter.Seq[*snap]
	Jobs() iter.Seq[*snap]
	Tasks() iter.Seq[*snap]
	// Label, Dir, Job, Task and File return one entity, or nil.
	Label(id int64) *snap
	Dir(id int64) *snap
	Job(id int64) *snap
	Task(id int64) *snap
	File(id int64) *snap
	// Files are the project's files in export order (ascending id),
	// removed ones included.
	Files() iter.Seq[*snap]
	// Instances are the file's instances, newest version of each lineage,
	// removed ones included, in no particular order (render orders them
	// itself).
	Instances(file int64) iter.Seq[*snap]
	// Sequences are the video's sequences, archived ones included.
	Sequences(file int64) iter.Seq[*snap]
	// FileTasks are the tasks on the file; JobTasks the job's tasks.
	FileTasks(file int64) iter.Seq[*snap]
	JobTasks(job int64) iter.Seq[*snap]
	// Children are a compound file's child files.
	Children(file int64) iter.Seq[*snap]
	// FileMarks are the project's files as Files lists them, with only
	// what selects them for an export (no snapshot decoded); FileMark is
	// one file's, ok false when there is no such file.
	FileMarks() iter.Seq[fileMark]
	FileMark(id int64) (m fileMark, ok bool)
}

// fileMark is what an export's file selection reads of a file.
type fileMark struct {
	id                int64
	removed, complete bool
	parent            *int64
	dirs              []int64
}

func markOf(f *events.File) fileMark {
	return fileMark{id: f.ID, removed: f.Removed(), complete: f.Complete(), parent: f.ParentID, dirs: f.DirectoryIDs}
}

// Read calls fn with a consistent view of the state: the in-memory state
// holds its read lock for the call.
func (s *State) Read(fn func(View)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(memView{s})
}

// memView is the View of the in-memory State (its lock held).
type memView struct{ s *State }

func (v memView) Rev() uint64 { return v.s.rev }

func (v memView) Projects() []string { return slices.Sorted(maps.Keys(v.s.projects)) }

func (v memView) Project(name string) ProjectView {
	p := v.s.projects[name]
	if p == nil {
		return nil
	}
	return memProject{p}
}

// memProject is the ProjectView of an in-memory project.
type memProject struct{ p *project }

// ascending yields the table's snapshots in ascending id order.
func ascending(table map[int64]*snap) iter.Seq[*snap] {
	return func(yield func(*snap) bool) {
		for _, id := range sortedKeys(table) {
			if !yield(table[id]) {
				return
			}
		}
	}
}

func (m memProject) all(k events.Kind) iter.Seq[*snap] { return ascending(m.p.tables[k]) }
func (m memProject) one(k events.Kind, id int64) *snap { return m.p.tables[k][id] }

func (m memProject) Info() *snap                       { return m.p.info }
func (m memProject) Labels() iter.Seq[*snap]           { return m.all(events.KindLabel) }
func (m memProject) Groups() iter.Seq[*snap]           { return m.all(events.KindAttributeGroup) }
func (m memProject) Dirs() iter.Seq[*snap]             { return m.all(events.KindDirectory) }
func (m memProject) Jobs() iter.Seq[*snap]             { return m.all(events.KindJob) }
func (m memProject) Tasks() iter.Seq[*snap]            { return m.all(events.KindTask) }
func (m memProject) Files() iter.Seq[*snap]            { return m.all(events.KindFile) }
func (m memProject) Label(id int64) *snap              { return m.one(events.KindLabel, id) }
func (m memProject) Dir(id int64) *snap                { return m.one(events.KindDirectory, id) }
func (m memProject) Job(id int64) *snap                { return m.one(events.KindJob, id) }
func (m memProject) Task(id int64) *snap               { return m.one(events.KindTask, id) }
func (m memProject) File(id int64) *snap               { return m.one(events.KindFile, id) }
func (m memProject) Instances(f int64) iter.Seq[*snap] { return maps.Values(m.p.rels[relFileInsts][f]) }
func (m memProject) Sequences(f int64) iter.Seq[*snap] { return ascending(m.p.rels[relFileSeqs][f]) }
func (m memProject) FileTasks(f int64) iter.Seq[*snap] { return ascending(m.p.rels[relFileTasks][f]) }
func (m memProject) JobTasks(j int64) iter.Seq[*snap]  { return ascending(m.p.rels[relJobTasks][j]) }
func (m memProject) Children(f int64) iter.Seq[*snap]  { return ascending(m.p.rels[relChildren][f]) }

func (m memProject) FileMarks() iter.Seq[fileMark] {
	return func(yield func(fileMark) bool) {
		for f := range m.Files() {
			if !yield(markOf(f.val.(*events.File))) {
				return
			}
		}
	}
}

func (m memProject) FileMark(id int64) (fileMark, bool) {
	if f := m.one(events.KindFile, id); f != nil {
		return markOf(f.val.(*events.File)), true
	}
	return fileMark{}, false
}

// findDir returns the source's directory (by id, else the first by id
// with the nickname), or nil.
func findDir(pv ProjectView, src Source) *snap {
	return findSource(src, pv.Dir, pv.Dirs(), func(v any) string { return v.(*events.Directory).Nickname })
}

// findJob returns the source's job (by id, else the first by id with the
// name), or nil.
func findJob(pv ProjectView, src Source) *snap {
	return findSource(src, pv.Job, pv.Jobs(), func(v any) string { return v.(*events.Job).Name })
}

// findSource returns the entity src names: by id when it has one (byID),
// else the first of all whose name is src.Name; nil when there is none.
func findSource(src Source, byID func(int64) *snap, all iter.Seq[*snap], name func(any) string) *snap {
	if src.ID != 0 {
		return byID(src.ID)
	}
	for s := range all {
		if name(s.val) == src.Name {
			return s
		}
	}
	return nil
}
