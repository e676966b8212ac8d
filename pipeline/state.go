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
	tables map[events.Kind]map[int64]*snap // every kind but the project; instances by lineage (root) id

	// rels are the indexes (kindInfo.links), kept in step with tables:
	// owner id → entity id → newest snapshot.
	rels [numRels]map[int64]map[int64]*snap
}

func newProject(name string) *project {
	p := &project{name: name, tables: map[events.Kind]map[int64]*snap{}}
	for _, k := range events.Kinds() {
		if k != events.KindProject {
			p.tables[k] = map[int64]*snap{}
		}
	}
	for r := range p.rels {
		p.rels[r] = map[int64]map[int64]*snap{}
	}
	return p
}

func (p *project) get(k events.Kind, id int64) *snap {
	if k == events.KindProject {
		return p.info
	}
	return p.tables[k][id]
}

// put replaces the entity with s, keeping the indexes in step.
func (p *project) put(s *snap) {
	if s.kind == events.KindProject {
		p.info = s
		return
	}
	t := p.tables[s.kind]
	if old := t[s.id]; old != nil {
		p.index(old, false)
	}
	t[s.id] = s
	p.index(s, true)
}

// index adds s to its kind's indexes, or removes it.
func (p *project) index(s *snap, add bool) {
	for _, l := range kindInfos[s.kind].links {
		owner, ok := l.owner(s.val)
		if !ok {
			continue
		}
		m := p.rels[l.rel]
		set := m[owner]
		switch {
		case add && set == nil:
			m[owner] = map[int64]*snap{s.id: s}
		case add:
			set[s.id] = s
		case set != nil:
			delete(set, s.id)
			if len(set) == 0 {
				delete(m, owner)
			}
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

// sortedKeys returns the keys of a map in ascending order.
func sortedKeys[V any](m map[int64]V) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
