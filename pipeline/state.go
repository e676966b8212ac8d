package pipeline

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/exportstream/exportstream/events"
)

// snap is one stored entity snapshot: immutable once made, replaced whole
// when a newer version arrives.
type snap struct {
	kind    events.Kind
	id      int64 // lineage id for instances, 0 for a project
	version int64
	rev     uint64 // key-value revision that stored it (0: not yet stored)
	raw     []byte
	val     any

	frag atomic.Pointer[[2][]byte] // instances: rendered [plain, video] objects
}

// project is the materialized state of one project.
type project struct {
	name   string
	info   *snap
	dirs   map[int64]*snap
	labels map[int64]*snap
	groups map[int64]*snap
	jobs   map[int64]*snap
	files  map[int64]*snap
	tasks  map[int64]*snap
	seqs   map[int64]*snap
	insts  map[int64]*snap // by lineage (root) id

	// indexes, kept in step with the maps above
	fileInsts map[int64]map[int64]*snap    // file id → lineage id → newest instance
	fileSeqs  map[int64]map[int64]struct{} // file id → sequence ids
	fileTasks map[int64]map[int64]struct{} // file id → task ids
	jobTasks  map[int64]map[int64]struct{} // job id → task ids
	children  map[int64]map[int64]struct{} // compound parent id → child ids
}

func newProject(name string) *project {
	return &project{
		name:   name,
		dirs:   map[int64]*snap{},
		labels: map[int64]*snap{}, groups: map[int64]*snap{}, jobs: map[int64]*snap{},
		files: map[int64]*snap{}, tasks: map[int64]*snap{}, seqs: map[int64]*snap{},
		insts:     map[int64]*snap{},
		fileInsts: map[int64]map[int64]*snap{}, fileSeqs: map[int64]map[int64]struct{}{},
		fileTasks: map[int64]map[int64]struct{}{}, jobTasks: map[int64]map[int64]struct{}{},
		children: map[int64]map[int64]struct{}{},
	}
}

func (p *project) table(k events.Kind) map[int64]*snap {
	switch k {
	case events.KindDirectory:
		return p.dirs
	case events.KindLabel:
		return p.labels
	case events.KindAttributeGroup:
		return p.groups
	case events.KindJob:
		return p.jobs
	case events.KindFile:
		return p.files
	case events.KindTask:
		return p.tasks
	case events.KindSequence:
		return p.seqs
	case events.KindInstance:
		return p.insts
	}
	return nil
}

func (p *project) get(k events.Kind, id int64) *snap {
	if k == events.KindProject {
		return p.info
	}
	return p.table(k)[id]
}

// put replaces the entity with s, keeping the indexes in step.
func (p *project) put(s *snap) {
	if s.kind == events.KindProject {
		p.info = s
		return
	}
	t := p.table(s.kind)
	if old := t[s.id]; old != nil {
		p.index(old, false)
	}
	t[s.id] = s
	p.index(s, true)
}

func link(m map[int64]map[int64]struct{}, k, v int64, add bool) {
	if add {
		set := m[k]
		if set == nil {
			set = map[int64]struct{}{}
			m[k] = set
		}
		set[v] = struct{}{}
		return
	}
	if set := m[k]; set != nil {
		delete(set, v)
		if len(set) == 0 {
			delete(m, k)
		}
	}
}

func (p *project) index(s *snap, add bool) {
	switch v := s.val.(type) {
	case *events.Instance:
		set := p.fileInsts[v.FileID]
		switch {
		case add && set == nil:
			p.fileInsts[v.FileID] = map[int64]*snap{s.id: s}
		case add:
			set[s.id] = s
		case set != nil:
			delete(set, s.id)
			if len(set) == 0 {
				delete(p.fileInsts, v.FileID)
			}
		}
	case *events.Sequence:
		link(p.fileSeqs, v.FileID, s.id, add)
	case *events.Task:
		link(p.fileTasks, v.FileID, s.id, add)
		link(p.jobTasks, v.JobID, s.id, add)
	case *events.File:
		if v.ParentID != nil {
			link(p.children, *v.ParentID, s.id, add)
		}
	}
}

// State is the materialized state of every project: the newest snapshot of
// each entity. It is safe for concurrent use; snapshots are immutable, so a
// reader may keep using the pointers it got after the lock is released.
type State struct {
	mu       sync.RWMutex
	projects map[string]*project
	rev      uint64 // highest key-value revision applied
	cond     *sync.Cond
}

// NewState returns an empty state.
func NewState() *State {
	s := &State{projects: map[string]*project{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *State) project(name string) *project {
	p := s.projects[name]
	if p == nil {
		p = newProject(name)
		s.projects[name] = p
	}
	return p
}

// current returns the stored snapshot for the entity, or nil.
func (s *State) current(projectName string, k events.Kind, id int64) *snap {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.projects[projectName]
	if p == nil {
		return nil
	}
	return p.get(k, id)
}

// offer stores sn if it is newer than what the state holds, and reports
// the snapshot it replaced (nil if none) and whether it was stored.
// A snapshot of the same version with a higher revision only updates the
// revision: the stored snapshot is replaced by a copy at that revision
// (the one reported), never changed.
func (s *State) offer(projectName string, sn *snap) (old *snap, stored bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sn.rev > s.rev {
		s.rev = sn.rev
		s.cond.Broadcast()
	}
	p := s.project(projectName)
	old = p.get(sn.kind, sn.id)
	if old != nil && old.version >= sn.version {
		if old.version == sn.version && sn.rev > old.rev {
			// A copy: readers keep the snapshots they got after the lock
			// is released, and read their revision without it.
			old = old.withRev(sn.rev)
			p.put(old)
		}
		return old, false
	}
	p.put(sn)
	return old, true
}

// withRev returns a copy of s stored at key-value revision rev (its
// rendered fragments shared: they do not depend on the revision).
func (s *snap) withRev(rev uint64) *snap {
	c := &snap{kind: s.kind, id: s.id, version: s.version, rev: rev, raw: s.raw, val: s.val}
	c.frag.Store(s.frag.Load())
	return c
}

// noteRev records that every key-value entry up to rev has been applied.
func (s *State) noteRev(rev uint64) {
	s.mu.Lock()
	if rev > s.rev {
		s.rev = rev
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

// waitRevision blocks until cur() reaches want, or done is closed (then
// it reports false). cond.L guards what cur reads, and cond is broadcast
// whenever it grows.
func waitRevision(cond *sync.Cond, cur func() uint64, want uint64, done <-chan struct{}) bool {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
			cond.L.Lock()
			cond.Broadcast()
			cond.L.Unlock()
		case <-stop:
		}
	}()
	cond.L.Lock()
	defer cond.L.Unlock()
	for cur() < want {
		select {
		case <-done:
			return false
		default:
		}
		cond.Wait()
	}
	return true
}

// sortedIDs returns the keys of a set in ascending order.
func sortedIDs(set map[int64]struct{}) []int64 {
	ids := make([]int64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// sortedKeys returns the keys of a map in ascending order.
func sortedKeys[V any](m map[int64]V) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
