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

// inSet yields the snapshots of table whose ids are in set, by id.
func inSet(table map[int64]*snap, set map[int64]struct{}) iter.Seq[*snap] {
	return func(yield func(*snap) bool) {
		for _, id := range sortedIDs(set) {
			if s := table[id]; s != nil && !yield(s) {
				return
			}
		}
	}
}

func (m memProject) Info() *snap                       { return m.p.info }
func (m memProject) Labels() iter.Seq[*snap]           { return ascending(m.p.labels) }
func (m memProject) Groups() iter.Seq[*snap]           { return ascending(m.p.groups) }
func (m memProject) Dirs() iter.Seq[*snap]             { return ascending(m.p.dirs) }
func (m memProject) Jobs() iter.Seq[*snap]             { return ascending(m.p.jobs) }
func (m memProject) Tasks() iter.Seq[*snap]            { return ascending(m.p.tasks) }
func (m memProject) Files() iter.Seq[*snap]            { return ascending(m.p.files) }
func (m memProject) Label(id int64) *snap              { return m.p.labels[id] }
func (m memProject) Dir(id int64) *snap                { return m.p.dirs[id] }
func (m memProject) Job(id int64) *snap                { return m.p.jobs[id] }
func (m memProject) Task(id int64) *snap               { return m.p.tasks[id] }
func (m memProject) File(id int64) *snap               { return m.p.files[id] }
func (m memProject) Instances(f int64) iter.Seq[*snap] { return maps.Values(m.p.fileInsts[f]) }
func (m memProject) Sequences(f int64) iter.Seq[*snap] { return inSet(m.p.seqs, m.p.fileSeqs[f]) }
func (m memProject) FileTasks(f int64) iter.Seq[*snap] { return inSet(m.p.tasks, m.p.fileTasks[f]) }
func (m memProject) JobTasks(j int64) iter.Seq[*snap]  { return inSet(m.p.tasks, m.p.jobTasks[j]) }
func (m memProject) Children(f int64) iter.Seq[*snap]  { return inSet(m.p.files, m.p.children[f]) }

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
	if f := m.p.files[id]; f != nil {
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
