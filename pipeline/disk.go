package pipeline

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/exportstream/exportstream/events"
)

// DiskState is the state kept on disk, in an embedded Pebble store, behind
// the same read seam as State (View, ProjectView): the newest snapshot of
// every entity and the indexes render needs, laid out in export order, and
// the key-value revision the store reflects. It holds no per-entity state
// in memory: only the revision and the list of project names.
//
// It is a cache of the JetStream key-value state bucket, which stays the
// source of truth: the store may be deleted at any time and is rebuilt by
// watching the bucket from the start, and a store that survived a restart
// resumes the watch after Rev. That is why writes are not synced one by
// one (pebble.NoSync): a crash may lose the newest writes, but never
// leaves the recorded revision ahead of the data, because the revision is
// written in the same batch as the snapshots it covers and Pebble
// recovers whole batches in order. Sync makes everything written so far
// durable, for a clean shutdown or a checkpoint.
//
// Key layout (all ids big-endian, sign bit flipped, so that byte order is
// numeric order; P is the project's 4-byte number, see below):
//
//	m format                   the layout version ("1")
//	m rev                      highest key-value revision applied (8 bytes)
//	n <project name>           the project's number P (4 bytes)
//	p P P                      the project snapshot
//	p P d <dir>                directory        p P l <label>  label
//	p P g <group>              attribute group  p P j <job>    job
//	p P t <task>               task
//	p P f <file>               file
//	p P f <file> c <child>     index: compound parent → child (no value)
//	p P f <file> i <lineage>   the file's instance, newest of the lineage
//	p P f <file> s <sequence>  the video's sequence
//	p P f <file> t <task>      index: file → task (no value)
//	p P I <lineage>            where the lineage's instance is: <file>
//	p P S <sequence>           where the sequence is: <file>
//	p P J <job> <task>         index: job → task (no value)
//	p P F <file>               the file's mark: what selects it for an
//	                           export (see encodeMark)
//	p P k <kind> c|e <id>      the key-value revision of the state entry
//	                           of the chunk (c) or entity (e) (8 bytes)
//	m seq                      the number of the last write transaction
//	r P <file> m               the transaction that last changed the file's
//	                           entry (the file, its instances, sequences)
//	r P <file> 0|1             the file's rendered entry, without or with
//	                           removed instances (see entryCache)
//	m bound                    the state bucket the store reflects (its
//	                           stream's creation time)
//
// So a project's files, each followed by its instances, are one
// ascending range: an export reads the store front to back. Projects get
// numbers rather than their names in keys so that no name can be a prefix
// of another's keys. Entity values are the version (8 bytes), the
// revision (8 bytes) and the compact JSON snapshot.
//
// A DiskState is safe for concurrent use: writes are serialized, reads
// see a Pebble snapshot and never block writes for longer than it takes
// to take one.
type DiskState struct {
	db    *pebble.DB
	lock  *pebble.Lock  // the folder's, held from open to close
	cache *pebble.Cache // the block cache, referenced from open to close

	wmu sync.Mutex // serializes write transactions

	mu    sync.Mutex        // guards the fields below; held while a batch commits
	rev   uint64            // every key-value entry up to it is reflected
	saved uint64            // the revision recorded in the store (≤ rev)
	seq   uint64            // the last committed write transaction's number
	names map[string]uint32 // project name → number; replaced, never mutated
	next  uint32            // next project number
	cond  *sync.Cond
}

// ErrDiskFormat is returned by OpenDiskState when the folder holds a store
// of another layout (or no layout mark): delete the folder and rebuild.
var ErrDiskFormat = errors.New("disk state: unknown store layout")

// ErrDiskInUse is returned by OpenDiskState when another process (or
// another DiskState of this one) has the folder's store open.
var ErrDiskInUse = errors.New("disk state: the folder is in use by another process")

// diskFormat is the layout version this code reads and writes.
const diskFormat = "3"

var (
	keyFormat = []byte("mformat")
	keyRev    = []byte("mrev")
	keySeq    = []byte("mseq")
	keyBound  = []byte("mbound")
)

// Pebble's memory: the block cache, from which Pebble also reserves the
// memtables' room (so the cache must be well above two memtables, or it
// caches nothing: 16 MB with 8 MB memtables drained 3x slower). It is Go
// memory in the binary built without cgo (the production build), malloc'd
// with cgo. 24 MB with 8 MB memtables: every flush makes an L0 table
// that spans the whole key range (a batch writes snapshots, locators and
// marks all over it), so each L0 compaction rewrites the whole base level,
// and half as many flushes halve that work. Against 16 MB with 4 MB
// memtables, the service's CPU per drained event fell by 23 %
// and its peak RSS stayed within 4 MB, well under the 150 MB budget
// (docs/performance.md has the figures).
const (
	diskCacheSize    = 24 << 20
	diskMemTableSize = 8 << 20
	diskBlockSize    = 32 << 10
)

// OpenDiskState opens the store in dir, creating it if needed. If dir
// holds a store of another layout, ErrDiskFormat is returned.
func OpenDiskState(dir string) (*DiskState, error) {
	return openDiskState(dir, nil)
}

// OpenScratchState opens a store in dir, as OpenDiskState does, that
// shares the block cache of other (an open store) instead of having one
// of its own: a point-in-time export's scratch store, beside the live
// one, adds no cache to the process's memory.
func OpenScratchState(dir string, other *DiskState) (*DiskState, error) {
	return openDiskState(dir, other.cache)
}

// openDiskState opens the store in dir with the block cache (nil: a new
// one of diskCacheSize).
func openDiskState(dir string, cache *pebble.Cache) (*DiskState, error) {
	// The folder's lock first, so that "another process has it open" is
	// told apart from a store that cannot be opened.
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDiskInUse, dir, err)
	}
	if cache == nil {
		cache = pebble.NewCache(diskCacheSize)
	} else {
		cache.Ref()
	}
	opts := &pebble.Options{
		Cache:              cache,
		MemTableSize:       diskMemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{},
		Lock:               lock,
	}
	// Bloom filters: most lookups on apply are of entities not stored
	// yet. 32 KiB blocks: an export reads ranges, not single keys (4 KiB
	// blocks made the 100k x 10 plan 1.7x slower, 64 KiB no faster).
	// Later levels inherit both.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	opts.Levels[0].BlockSize = diskBlockSize
	// The drain writes every entity once, mostly in ascending key order
	// within each key range: compactions, not the writes, were a third
	// of the service's CPU while draining (docs/performance.md). Fewer,
	// larger compactions (more L0 files before one starts, a base level
	// of 256 MB so that a 100k-file store skips the middle levels) and
	// block compression only in the bottom level, where the data settles
	// (snappy on every level cost CPU on every compaction; none at all
	// made the store 4x larger on disk) brought the service's CPU per
	// event down by a fifth (docs/performance.md).
	opts.L0CompactionThreshold = 8
	opts.L0CompactionFileThreshold = 1000
	opts.L0StopWritesThreshold = 64
	opts.LBaseMaxBytes = 256 << 20
	opts.ApplyCompressionSettings(func() pebble.DBCompressionSettings {
		cs := pebble.DBCompressionNone
		cs.Levels[len(cs.Levels)-1] = pebble.DBCompressionFastest.Levels[0]
		return cs
	})
	db, err := pebble.Open(dir, opts)
	if err != nil {
		lock.Close()
		cache.Unref()
		return nil, fmt.Errorf("disk state %s: %w", dir, err)
	}
	d := &DiskState{db: db, lock: lock, cache: cache, names: map[string]uint32{}, next: 1}
	d.cond = sync.NewCond(&d.mu)
	if err := d.load(); err != nil {
		db.Close()
		lock.Close()
		cache.Unref()
		return nil, fmt.Errorf("disk state %s: %w", dir, err)
	}
	return d, nil
}

// load reads the layout mark, the revision and the project names.
func (d *DiskState) load() error {
	format, err := d.get(d.db, keyFormat)
	if err != nil {
		return err
	}
	it, err := d.db.NewIter(nil)
	if err != nil {
		return err
	}
	empty := !it.First()
	if err := it.Close(); err != nil {
		return err
	}
	switch {
	case format == nil && empty:
		return d.db.Set(keyFormat, []byte(diskFormat), pebble.Sync)
	case string(format) != diskFormat:
		return fmt.Errorf("%w (found %q, want %q)", ErrDiskFormat, format, diskFormat)
	}
	for key, into := range map[string]*uint64{string(keyRev): &d.rev, string(keySeq): &d.seq} {
		v, err := d.get(d.db, []byte(key))
		if err != nil {
			return err
		}
		if len(v) == 8 {
			*into = binary.BigEndian.Uint64(v)
		}
	}
	d.saved = d.rev
	it, err = d.db.NewIter(&pebble.IterOptions{LowerBound: []byte("n"), UpperBound: []byte("o")})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Value()) != 4 {
			it.Close()
			return fmt.Errorf("project %q: bad number", it.Key()[1:])
		}
		n := binary.BigEndian.Uint32(it.Value())
		d.names[string(it.Key()[1:])] = n
		d.next = max(d.next, n+1)
	}
	return it.Close()
}

// get returns a copy of the key's value, or nil when it is absent.
func (d *DiskState) get(r pebble.Reader, key []byte) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v = bytes.Clone(v)
	return v, closer.Close()
}

// Close closes the store, syncing it first. The DiskState must not be used
// after.
func (d *DiskState) Close() error {
	syncErr := d.Sync()
	d.wmu.Lock()
	defer d.wmu.Unlock()
	err := errors.Join(syncErr, d.db.Close(), d.lock.Close())
	if d.cache != nil {
		d.cache.Unref()
		d.cache = nil
	}
	return err
}

// Sync makes every write so far durable (the write-ahead log synced),
// with the revision the watch has passed.
func (d *DiskState) Sync() error {
	// The revision the watch passed last, if no transaction recorded it.
	saveErr := d.Update(func(*DiskTx) error { return nil })
	return errors.Join(saveErr, d.db.LogData(nil, pebble.Sync))
}

// Rev is the highest key-value revision applied: every entry of the bucket
// up to Rev is reflected in the store. A watch resumes at Rev+1.
func (d *DiskState) Rev() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rev
}

// WaitRev blocks until the store has applied key-value revision rev, or
// done is closed (then it reports false).
func (d *DiskState) WaitRev(rev uint64, done <-chan struct{}) bool {
	return waitRevision(d.cond, func() uint64 { return d.rev }, rev, done)
}

// Offer stores sn in the project if it is newer than what the store holds,
// with State.offer's rules: the highest version wins; a snapshot of the
// same version with a higher revision only updates the stored revision.
// It reports the snapshot it replaced (nil if none) and whether sn was
// stored; indexes follow the entity (an instance, sequence or task that
// moves to another file or job, a file that moves to another parent) in
// the same batch.
func (d *DiskState) Offer(project string, sn *snap) (old *snap, stored bool, err error) {
	err = d.Update(func(tx *DiskTx) error {
		tx.NoteRev(sn.rev)
		old, stored, err = tx.Offer(project, sn)
		return err
	})
	return old, stored, err
}

// NoteWatched records that every key-value entry up to rev is reflected
// in the store, when the entries after Rev are ones the store holds
// already (this replica's own writes, committed by their transactions,
// passed by the watch): no write now, the next transaction (or Sync)
// records it.
func (d *DiskState) NoteWatched(rev uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rev > d.rev {
		d.rev = rev
		d.cond.Broadcast()
	}
}

// NoteRev records that every key-value entry up to rev has been applied.
func (d *DiskState) NoteRev(rev uint64) error {
	return d.Update(func(tx *DiskTx) error {
		tx.NoteRev(rev)
		return nil
	})
}

// Current returns the stored snapshot of the entity (an instance by
// lineage id), or nil.
func (d *DiskState) Current(project string, k events.Kind, id int64) (*snap, error) {
	d.mu.Lock()
	n, ok := d.names[project]
	d.mu.Unlock()
	if !ok {
		return nil, nil
	}
	_, sn, err := d.lookup(d.db, projectPrefix(n), project, k, id)
	return sn, err
}

// Update runs fn in a write transaction: what fn offers and notes is
// committed together in one batch (without sync; see DiskState) when fn
// returns nil, and dropped when it returns an error. Transactions run one
// at a time; a transaction reads its own writes.
func (d *DiskState) Update(fn func(tx *DiskTx) error) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.mu.Lock()
	tx := &DiskTx{d: d, b: d.db.NewIndexedBatch(), seq: d.seq + 1, names: d.names}
	d.mu.Unlock()
	defer tx.b.Close()
	if err := fn(tx); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// The revision, with the writes it covers and never ahead of them:
	// the transaction's entries, or the revision the watch passed
	// meanwhile over writes committed before (NoteWatched).
	rev := max(tx.rev, d.rev)
	if tx.b.Empty() && rev <= d.saved {
		return nil
	}
	if err := tx.b.Set(keySeq, binary.BigEndian.AppendUint64(nil, tx.seq), nil); err != nil {
		return err
	}
	if rev > d.saved {
		if err := tx.b.Set(keyRev, binary.BigEndian.AppendUint64(nil, rev), nil); err != nil {
			return err
		}
	}
	if err := tx.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("disk state: commit: %w", err)
	}
	if tx.added != nil {
		d.names = tx.names
		d.next = tx.next
	}
	d.seq = tx.seq
	d.saved = max(d.saved, rev)
	if rev > d.rev {
		d.rev = rev
		d.cond.Broadcast()
	}
	return nil
}

// DiskTx is a write transaction of a DiskState (see Update).
type DiskTx struct {
	d     *DiskState
	b     *pebble.Batch
	rev   uint64
	seq   uint64 // this transaction's number
	names map[string]uint32
	next  uint32
	added []string // projects numbered in this transaction
	// memo holds what the transaction knows to be stored for the
	// entities it looked up or offered (the key, and the snapshot or nil):
	// the Offer that follows a Current reads nothing again.
	memo map[memoKey]memoEntry
	// modded holds the files whose entry this transaction has marked
	// changed (the mark is the transaction's number, the same for every
	// change): a batch changes a file and its instances, and the mark is
	// written once, not once per instance.
	modded map[modKey]struct{}
}

type modKey struct {
	project string
	file    int64
}

type memoKey struct {
	project string
	kind    events.Kind
	id      int64
}

type memoEntry struct {
	key []byte
	sn  *snap
}

// remember records what is stored for the entity in the transaction.
func (tx *DiskTx) remember(project string, k events.Kind, id int64, key []byte, sn *snap) {
	if tx.memo == nil {
		tx.memo = map[memoKey]memoEntry{}
	}
	tx.memo[memoKey{project, k, id}] = memoEntry{key, sn}
}

// NoteRev records that every key-value entry up to rev has been applied,
// with the transaction's writes.
func (tx *DiskTx) NoteRev(rev uint64) {
	tx.rev = max(tx.rev, rev)
}

// prefix returns the project's key prefix "p"+number, numbering the
// project when add is set and it has no number yet (nil otherwise).
func (tx *DiskTx) prefix(project string, add bool) ([]byte, error) {
	n, ok := tx.names[project]
	if !ok {
		if !add {
			return nil, nil
		}
		if tx.added == nil {
			tx.names = maps.Clone(tx.names)
			tx.next = tx.d.next
		}
		n = tx.next
		tx.next++
		tx.names[project] = n
		tx.added = append(tx.added, project)
		if err := tx.b.Set(append([]byte("n"), project...), binary.BigEndian.AppendUint32(nil, n), nil); err != nil {
			return nil, err
		}
	}
	return projectPrefix(n), nil
}

func projectPrefix(n uint32) []byte {
	return binary.BigEndian.AppendUint32(append(make([]byte, 0, 32), 'p'), n)
}

// Current returns the stored snapshot of the entity, or nil.
func (tx *DiskTx) Current(project string, k events.Kind, id int64) (*snap, error) {
	p, err := tx.prefix(project, false)
	if p == nil || err != nil {
		return nil, err
	}
	if m, ok := tx.memo[memoKey{project, k, id}]; ok {
		return m.sn, nil
	}
	key, sn, err := tx.d.lookup(tx.b, p, project, k, id)
	if err == nil {
		tx.remember(project, k, id, key, sn)
	}
	return sn, err
}

// entityRef names an entity for Prefetch.
type entityRef struct {
	project string
	kind    events.Kind
	id      int64
}

// Prefetch looks up the entities the transaction does not know yet, in
// key order through one iterator, so that the Current and Offer calls
// that follow read nothing: a batch of point lookups in ascending order
// costs Pebble far less than as many separate Gets (each builds its own
// iterator stack; the drain spent a tenth of its time there).
func (tx *DiskTx) Prefetch(refs []entityRef) error {
	type want struct {
		ref     entityRef
		key     []byte
		p       []byte
		located bool // key is the entity's locator
	}
	var first []want
	for _, r := range refs {
		if _, ok := tx.memo[memoKey(r)]; ok {
			continue
		}
		p, err := tx.prefix(r.project, false)
		if err != nil {
			return err
		}
		if p == nil {
			continue // an unknown project stores nothing
		}
		key, located := lookupKey(p, r.kind, r.id)
		// Remembered as absent now: a duplicate ref is then skipped,
		// and what is found below replaces it.
		tx.remember(r.project, r.kind, r.id, nil, nil)
		first = append(first, want{r, key, p, located})
	}
	if len(first) == 0 {
		return nil
	}
	it, err := tx.b.NewIter(nil)
	if err != nil {
		return err
	}
	defer it.Close()
	seek := func(ws []want, found func(w want, v []byte) error) error {
		slices.SortFunc(ws, func(a, b want) int { return bytes.Compare(a.key, b.key) })
		for _, w := range ws {
			if !it.SeekPrefixGE(w.key) || !bytes.Equal(it.Key(), w.key) {
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			if err := found(w, v); err != nil {
				return err
			}
		}
		return it.Error()
	}
	var owned []want
	load := func(w want, v []byte) error {
		sn, err := loadSnap(w.ref.project, w.ref.kind, v)
		if err != nil {
			return fmt.Errorf("%s %d: %w", w.ref.kind, w.ref.id, err)
		}
		tx.remember(w.ref.project, w.ref.kind, w.ref.id, w.key, sn)
		return nil
	}
	err = seek(first, func(w want, v []byte) error {
		if !w.located {
			return load(w, v)
		}
		key, err := locatedKey(w.p, v, w.ref.kind, w.ref.id)
		if err != nil {
			return err
		}
		owned = append(owned, want{w.ref, key, w.p, false})
		return nil
	})
	if err != nil {
		return err
	}
	return seek(owned, load)
}

// lookup finds the entity's key and snapshot in r (nil key and snapshot
// when absent).
func (d *DiskState) lookup(r pebble.Reader, p []byte, project string, k events.Kind, id int64) ([]byte, *snap, error) {
	key, v, err := d.find(r, p, k, id)
	if v == nil || err != nil {
		return nil, nil, err
	}
	sn, err := loadSnap(project, k, v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %d: %w", k, id, err)
	}
	return key, sn, nil
}

// find returns the entity's key and stored value (a copy), nil when it is
// absent.
func (d *DiskState) find(r pebble.Reader, p []byte, k events.Kind, id int64) ([]byte, []byte, error) {
	key, located := lookupKey(p, k, id)
	if located {
		loc, err := d.get(r, key)
		if loc == nil || err != nil {
			return nil, nil, err
		}
		if key, err = locatedKey(p, loc, k, id); err != nil {
			return nil, nil, err
		}
	}
	v, err := d.get(r, key)
	if v == nil || err != nil {
		return nil, nil, err
	}
	if len(v) < 16 {
		return nil, nil, fmt.Errorf("%s %d: stored value too short", k, id)
	}
	return key, v, nil
}

// entryRevKey is "p P k <kind> c|e <id>".
func entryRevKey(p []byte, e entryKey) []byte {
	form := byte('e')
	if e.chunk {
		form = 'c'
	}
	return appendID(append(slices.Clip(p), 'k', kindInfos[e.kind].code, form), e.id)
}

// EntryRev returns the key-value revision of the state entry the store
// reflects (ok false when it has taken or written none): the watch passes
// over entries it holds already, and a write of the entry expects it.
func (tx *DiskTx) EntryRev(e entryKey) (rev uint64, ok bool, err error) {
	p, err := tx.prefix(e.project, false)
	if p == nil || err != nil {
		return 0, false, err
	}
	v, err := tx.d.get(tx.b, entryRevKey(p, e))
	if v == nil || err != nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("state entry %s: bad stored revision", e)
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// SetEntryRev records the key-value revision of the state entry.
func (tx *DiskTx) SetEntryRev(e entryKey, rev uint64) error {
	p, err := tx.prefix(e.project, true)
	if err != nil {
		return err
	}
	return tx.b.Set(entryRevKey(p, e), binary.BigEndian.AppendUint64(nil, rev), nil)
}

// Bound returns what Bind recorded: the identity of the key-value bucket
// the store reflects ("" for a new store).
func (d *DiskState) Bound() (string, error) {
	v, err := d.get(d.db, keyBound)
	return string(v), err
}

// Reset empties the store (for a store that reflects another bucket, or
// none) and binds it to the bucket named by bound.
func (d *DiskState) Reset(bound string) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.db.NewBatch()
	defer b.Close()
	for _, err := range []error{
		b.DeleteRange([]byte{0}, []byte{0xff}, nil),
		b.Set(keyFormat, []byte(diskFormat), nil),
		b.Set(keyBound, []byte(bound), nil),
		// The transaction numbers go on: kept entries stamped before the
		// reset were deleted with it, and none can pass for a later view.
		b.Set(keySeq, binary.BigEndian.AppendUint64(nil, d.seq+1), nil),
	} {
		if err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("disk state: reset: %w", err)
	}
	d.seq++
	d.rev, d.saved, d.names, d.next = 0, 0, map[string]uint32{}, 1
	return nil
}

// Offer is DiskState.Offer inside the transaction.
func (tx *DiskTx) Offer(project string, sn *snap) (old *snap, stored bool, err error) {
	p, err := tx.prefix(project, true)
	if err != nil {
		return nil, false, err
	}
	var oldKey []byte
	if m, ok := tx.memo[memoKey{project, sn.kind, sn.id}]; ok {
		oldKey, old = m.key, m.sn
	} else if oldKey, old, err = tx.d.lookup(tx.b, p, project, sn.kind, sn.id); err != nil {
		return nil, false, err
	}
	if old != nil && old.version >= sn.version {
		if old.version == sn.version && sn.rev > old.rev {
			old.rev = sn.rev
			if err := tx.b.Set(oldKey, encodeValue(old), nil); err != nil {
				return nil, false, err
			}
		}
		return old, false, nil
	}
	key := snapKey(p, sn)
	tx.remember(project, sn.kind, sn.id, key, sn)
	if oldKey != nil && !bytes.Equal(oldKey, key) {
		if err := tx.b.Delete(oldKey, nil); err != nil {
			return nil, false, err
		}
	}
	if err := tx.b.Set(key, encodeValue(sn), nil); err != nil {
		return nil, false, err
	}
	var was []diskIndex
	if old != nil {
		was = indexKeys(p, old)
	}
	now := indexKeys(p, sn)
	for _, f := range entryFiles(old, sn) {
		if _, ok := tx.modded[modKey{project, f}]; ok {
			continue
		}
		if tx.modded == nil {
			tx.modded = map[modKey]struct{}{}
		}
		tx.modded[modKey{project, f}] = struct{}{}
		if err := tx.b.Set(fragKey(p, f, fragMod), binary.BigEndian.AppendUint64(nil, tx.seq), nil); err != nil {
			return nil, false, err
		}
	}
	for _, ix := range was {
		if !slices.ContainsFunc(now, ix.same) {
			if err := tx.b.Delete(ix.key, nil); err != nil {
				return nil, false, err
			}
		}
	}
	for _, ix := range now {
		if !slices.ContainsFunc(was, ix.sameValue) {
			if err := tx.b.Set(ix.key, ix.val, nil); err != nil {
				return nil, false, err
			}
		}
	}
	return old, true, nil
}

// diskIndex is one index (or locator) key and its value.
type diskIndex struct{ key, val []byte }

func (a diskIndex) same(b diskIndex) bool      { return bytes.Equal(a.key, b.key) }
func (a diskIndex) sameValue(b diskIndex) bool { return a.same(b) && bytes.Equal(a.val, b.val) }

// indexKeys are the index and locator keys that point at the snapshot.
func indexKeys(p []byte, sn *snap) []diskIndex {
	info := kindInfos[sn.kind]
	var ix []diskIndex
	if info.owner != nil {
		ix = append(ix, diskIndex{locatorKey(p, sn.kind, sn.id), appendID(nil, info.owner(sn.val))})
	}
	if info.mark != nil {
		ix = append(ix, info.mark(p, sn))
	}
	for _, l := range info.links {
		if l.key == nil {
			continue
		}
		if owner, ok := l.owner(sn.val); ok {
			ix = append(ix, diskIndex{l.key(p, owner, sn.id), nil})
		}
	}
	return ix
}

// encodeMark is a file's mark: a flags byte (1 removed, 2 complete,
// 4 has a parent), the parent's id if any, then the directory ids.
func encodeMark(m fileMark) []byte {
	var flags byte
	if m.removed {
		flags |= 1
	}
	if m.complete {
		flags |= 2
	}
	b := make([]byte, 1, 1+8+8*len(m.dirs))
	if m.parent != nil {
		flags |= 4
		b = appendID(b, *m.parent)
	}
	b[0] = flags
	for _, d := range m.dirs {
		b = appendID(b, d)
	}
	return b
}

func decodeMark(id int64, v []byte) (fileMark, error) {
	m := fileMark{id: id}
	if len(v) < 1 || (len(v)-1)%8 != 0 {
		return m, fmt.Errorf("file mark of %d: %d bytes", id, len(v))
	}
	flags, v := v[0], v[1:]
	m.removed, m.complete = flags&1 != 0, flags&2 != 0
	if flags&4 != 0 {
		if len(v) < 8 {
			return m, fmt.Errorf("file mark of %d: no parent", id)
		}
		parent := readID(v)
		m.parent, v = &parent, v[8:]
	}
	if len(v) > 0 {
		m.dirs = make([]int64, 0, len(v)/8)
		for ; len(v) > 0; v = v[8:] {
			m.dirs = append(m.dirs, readID(v))
		}
	}
	return m, nil
}

// appendID appends id big-endian with the sign bit flipped: byte order is
// numeric order, negative ids included.
func appendID(b []byte, id int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(id)^(1<<63))
}

func readID(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

// entityKey is the key of an entity stored by id (not instances or
// sequences, which live under their file).
func entityKey(p []byte, k events.Kind, id int64) []byte {
	key := append(slices.Clip(p), kindInfos[k].code)
	if k == events.KindProject {
		return key
	}
	return appendID(key, id)
}

// fileSubKey is "p P f <file> <code> <id>".
func fileSubKey(p []byte, file int64, code byte, id int64) []byte {
	return appendID(append(appendID(append(slices.Clip(p), 'f'), file), code), id)
}

// ownedKey is the key of an instance or sequence under its file (fileBE:
// the file id as stored in the locator).
func ownedKey(p, fileBE []byte, k events.Kind, id int64) []byte {
	return appendID(append(append(append(slices.Clip(p), 'f'), fileBE...), kindInfos[k].code), id)
}

// lookupKey is where a lookup of the entity starts: its own key, or for
// an instance or sequence (stored under its file) its locator (located).
func lookupKey(p []byte, k events.Kind, id int64) (key []byte, located bool) {
	if kindInfos[k].owner != nil {
		return locatorKey(p, k, id), true
	}
	return entityKey(p, k, id), false
}

// locatedKey is the key of the instance or sequence whose locator holds
// loc (its file).
func locatedKey(p, loc []byte, k events.Kind, id int64) ([]byte, error) {
	if len(loc) != 8 {
		return nil, fmt.Errorf("%s %d: bad locator", k, id)
	}
	return ownedKey(p, loc, k, id), nil
}

// locatorKey is the key naming an instance's or sequence's file.
func locatorKey(p []byte, k events.Kind, id int64) []byte {
	return appendID(append(slices.Clip(p), kindInfos[k].locator), id)
}

// snapKey is where the snapshot is stored.
func snapKey(p []byte, sn *snap) []byte {
	if info := kindInfos[sn.kind]; info.owner != nil {
		return fileSubKey(p, info.owner(sn.val), info.code, sn.id)
	}
	return entityKey(p, sn.kind, sn.id)
}

// encodeValue is version, revision, then the snapshot's compact JSON.
func encodeValue(sn *snap) []byte {
	b := make([]byte, 0, 16+len(sn.raw))
	b = binary.BigEndian.AppendUint64(b, uint64(sn.version))
	b = binary.BigEndian.AppendUint64(b, sn.rev)
	return append(b, sn.raw...)
}

// loadSnap decodes a stored value. The stored JSON is already compact
// (every snapshot's raw is made by compact), so it is decoded as it is,
// like decodeSnap does after compacting: the value is copied, never
// kept, as Pebble reuses its buffers.
func loadSnap(project string, k events.Kind, v []byte) (*snap, error) {
	if len(v) < 16 {
		return nil, errors.New("stored value too short")
	}
	raw := bytes.Clone(v[16:])
	val, err := events.DecodeEntity(k, project, raw)
	if err != nil {
		return nil, err
	}
	sn, err := newSnap(k, raw, val)
	if err != nil {
		return nil, err
	}
	sn.rev = binary.BigEndian.Uint64(v[8:16])
	return sn, nil
}

// Read calls fn with a consistent view of the store (a Pebble snapshot at
// the revision Rev had when Read was called). Entities are decoded as fn
// reads them; the snapshots it hands out are fresh (their render
// fragments empty) and may be kept after fn returns, the view may not.
//
// Read returns the first error a read met (an I/O error or a stored value
// that does not decode): the view then lacked those entities, so whatever
// fn built from it must be discarded. The view is for one goroutine at a
// time, and every Read must end before Close.
func (d *DiskState) Read(fn func(View)) (err error) {
	v := d.View()
	defer func() { err = v.Close() }() // also when fn panics
	fn(v)
	return nil
}

// View returns a consistent view of the store, open until Close, which
// reports the first error a read met (see Read). An export holds one for
// as long as it renders and uploads: a Pebble snapshot blocks no writes.
func (d *DiskState) View() *diskView {
	d.mu.Lock()
	defer d.mu.Unlock()
	return &diskView{d: d, s: d.db.NewSnapshot(), rev: d.rev, seq: d.seq, names: d.names, genAt: time.Now()}
}

// Close releases the view and returns the first error a read met.
func (v *diskView) Close() error {
	err := v.err
	if v.open != 0 {
		err = errors.Join(err, fmt.Errorf("disk state: %d iterators left open", v.open))
	}
	for _, it := range v.idle {
		err = errors.Join(err, it.Close())
	}
	v.idle = nil
	err = errors.Join(err, v.cache.close(), v.s.Close())
	return err
}

// diskView is the View of a DiskState: a Pebble snapshot, read through a
// few iterators that are reused (a seek on a positioned iterator is
// cheaper than a fresh iterator or a Get).
type diskView struct {
	d     *DiskState
	s     *pebble.Snapshot
	rev   uint64
	seq   uint64 // the last write transaction the snapshot holds
	names map[string]uint32
	cache entryCache
	err   error
	idle  []*pebble.Iterator
	open  int // iterators in use
	// An iterator holds on to the memtables that were there when it was
	// made, even once they are flushed: one kept for a whole export
	// beside a drain kept every memtable of those seconds (tens of MB at
	// 1 M files; a drain fills an 8 MB memtable in about 0.2 s). So
	// iterators are renewed once they are older than iterRenew: gen
	// counts the view's generations, one per iterRenew (looked at every
	// 256 reads), and an iterator of an earlier one is closed when given
	// back, or reopened at its key by a scan.
	gen   int
	genAt time.Time
	reads int
	igen  map[*pebble.Iterator]int // the generation each pooled iterator was made in
}

// iterRenew is how long a view's iterators are kept before being made
// anew (a new iterator and a seek cost microseconds).
const iterRenew = 100 * time.Millisecond

// tick counts a read and returns the view's generation.
func (v *diskView) tick() int {
	v.reads++
	if v.reads%256 == 0 && time.Since(v.genAt) >= iterRenew {
		v.gen++
		v.genAt = time.Now()
	}
	return v.gen
}

func (v *diskView) fail(err error) {
	if err != nil && v.err == nil {
		v.err = err
	}
}

// iter returns an iterator over the snapshot: an idle one, or a new one.
// Give it back with done.
func (v *diskView) iter() *pebble.Iterator {
	v.open++
	gen := v.tick()
	for n := len(v.idle); n > 0; n = len(v.idle) {
		it := v.idle[n-1]
		v.idle = v.idle[:n-1]
		if v.igen[it] == gen {
			return it
		}
		delete(v.igen, it)
		v.fail(it.Close())
	}
	it, err := v.s.NewIter(nil)
	if err != nil {
		v.fail(err)
		return nil
	}
	if v.igen == nil {
		v.igen = map[*pebble.Iterator]int{}
	}
	v.igen[it] = gen
	return it
}

func (v *diskView) done(it *pebble.Iterator) {
	v.open--
	if it == nil {
		return
	}
	if err := it.Error(); err != nil || v.igen[it] != v.gen {
		delete(v.igen, it)
		v.fail(err)
		v.fail(it.Close())
		return
	}
	v.idle = append(v.idle, it)
}

// renewed returns it, or, when it is of an earlier generation, a new
// iterator positioned at the same key (ok false: none could be made, or
// the key is gone, which a snapshot does not allow).
func (v *diskView) renewed(it *pebble.Iterator) (*pebble.Iterator, bool) {
	if v.igen[it] == v.tick() {
		return it, true
	}
	key := bytes.Clone(it.Key())
	n, err := v.s.NewIter(nil)
	if err != nil {
		v.fail(err)
		return it, true // keep the old one
	}
	delete(v.igen, it)
	v.fail(it.Close())
	v.igen[n] = v.gen
	if !n.SeekGE(key) || !bytes.Equal(n.Key(), key) {
		v.fail(fmt.Errorf("disk state: key %x not found again in the view", key))
		return n, false
	}
	return n, true
}

func (v *diskView) Rev() uint64 { return v.rev }

func (v *diskView) Projects() []string { return slices.Sorted(maps.Keys(v.names)) }

func (v *diskView) Project(name string) ProjectView {
	n, ok := v.names[name]
	if !ok {
		return nil
	}
	return &diskProject{v: v, name: name, p: projectPrefix(n)}
}

// diskProject is the ProjectView of one project in a diskView.
type diskProject struct {
	v    *diskView
	name string
	p    []byte
}

// load decodes the value at key as a k, or nil when it is absent.
func (dp *diskProject) load(k events.Kind, key []byte) *snap {
	it := dp.v.iter()
	defer dp.v.done(it)
	if it == nil || !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
		return nil
	}
	return dp.decode(k, it)
}

// decode decodes the iterator's value as a k, or nil when it does not
// decode.
func (dp *diskProject) decode(k events.Kind, it *pebble.Iterator) *snap {
	val, err := it.ValueAndErr()
	if err != nil {
		dp.v.fail(err)
		return nil
	}
	sn, err := loadSnap(dp.name, k, val)
	if err != nil {
		dp.v.fail(fmt.Errorf("disk state: %s %x: %w", k, it.Key(), err))
		return nil
	}
	return sn
}

// scan yields, in key order, every key that is prefix and 8 more bytes,
// positioned on it, skipping longer keys (a file's sub-keys when listing
// files). The iterator is given back when the scan ends or the consumer
// stops.
func (dp *diskProject) scan(prefix []byte) iter.Seq[*pebble.Iterator] {
	return func(yield func(*pebble.Iterator) bool) {
		it := dp.v.iter()
		defer func() { dp.v.done(it) }()
		if it == nil {
			return
		}
		want := len(prefix) + 8
		for ok := it.SeekGE(prefix); ok && bytes.HasPrefix(it.Key(), prefix); {
			if it, ok = dp.v.renewed(it); !ok {
				return
			}
			if key := it.Key(); len(key) != want {
				if len(key) < want {
					dp.v.fail(fmt.Errorf("disk state: short key %x", key))
					ok = it.Next()
					continue
				}
				// A sub-key of the entity before (a file's instances):
				// step past them, seeking when there are many.
				ok = skipPast(it, bytes.Clone(key[:want]))
				continue
			}
			if !yield(it) {
				return
			}
			ok = it.Next()
		}
	}
}

// skipPast moves it to the first key not prefixed by stem: a few Next
// calls, then a seek.
func skipPast(it *pebble.Iterator, stem []byte) bool {
	for range 16 {
		if !it.Next() {
			return false
		}
		if !bytes.HasPrefix(it.Key(), stem) {
			return true
		}
	}
	return it.SeekGE(prefixEnd(stem))
}

// prefixEnd is the smallest key after every key with the prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// entities yields the snapshots stored under prefix, one per key of
// exactly prefix + 8 bytes.
func (dp *diskProject) entities(k events.Kind, prefix []byte) iter.Seq[*snap] {
	return func(yield func(*snap) bool) {
		for it := range dp.scan(prefix) {
			if sn := dp.decode(k, it); sn != nil && !yield(sn) {
				return
			}
		}
	}
}

// indexed yields the k snapshots whose ids end the index keys under
// prefix, looked up by key.
func (dp *diskProject) indexed(k events.Kind, prefix []byte) iter.Seq[*snap] {
	return func(yield func(*snap) bool) {
		for it := range dp.scan(prefix) {
			key := it.Key()
			if sn := dp.load(k, entityKey(dp.p, k, readID(key[len(key)-8:]))); sn != nil && !yield(sn) {
				return
			}
		}
	}
}

func (dp *diskProject) kindPrefix(k events.Kind) []byte {
	return append(slices.Clip(dp.p), kindInfos[k].code)
}

func (dp *diskProject) filePrefix(file int64, code byte) []byte {
	return append(appendID(dp.kindPrefix(events.KindFile), file), code)
}

func (dp *diskProject) Info() *snap {
	return dp.load(events.KindProject, entityKey(dp.p, events.KindProject, 0))
}

func (dp *diskProject) all(k events.Kind) iter.Seq[*snap] { return dp.entities(k, dp.kindPrefix(k)) }

func (dp *diskProject) one(k events.Kind, id int64) *snap { return dp.load(k, entityKey(dp.p, k, id)) }

func (dp *diskProject) Labels() iter.Seq[*snap] { return dp.all(events.KindLabel) }
func (dp *diskProject) Groups() iter.Seq[*snap] { return dp.all(events.KindAttributeGroup) }
func (dp *diskProject) Dirs() iter.Seq[*snap]   { return dp.all(events.KindDirectory) }
func (dp *diskProject) Jobs() iter.Seq[*snap]   { return dp.all(events.KindJob) }
func (dp *diskProject) Tasks() iter.Seq[*snap]  { return dp.all(events.KindTask) }
func (dp *diskProject) Files() iter.Seq[*snap]  { return dp.all(events.KindFile) }
func (dp *diskProject) Label(id int64) *snap    { return dp.one(events.KindLabel, id) }
func (dp *diskProject) Dir(id int64) *snap      { return dp.one(events.KindDirectory, id) }
func (dp *diskProject) Job(id int64) *snap      { return dp.one(events.KindJob, id) }
func (dp *diskProject) Task(id int64) *snap     { return dp.one(events.KindTask, id) }
func (dp *diskProject) File(id int64) *snap     { return dp.one(events.KindFile, id) }

func (dp *diskProject) Instances(file int64) iter.Seq[*snap] {
	return dp.entities(events.KindInstance, dp.filePrefix(file, 'i'))
}

func (dp *diskProject) Sequences(file int64) iter.Seq[*snap] {
	return dp.entities(events.KindSequence, dp.filePrefix(file, 's'))
}

func (dp *diskProject) FileTasks(file int64) iter.Seq[*snap] {
	return dp.indexed(events.KindTask, dp.filePrefix(file, 't'))
}

func (dp *diskProject) JobTasks(job int64) iter.Seq[*snap] {
	return dp.indexed(events.KindTask, appendID(append(slices.Clip(dp.p), 'J'), job))
}

func (dp *diskProject) Children(file int64) iter.Seq[*snap] {
	return dp.indexed(events.KindFile, dp.filePrefix(file, 'c'))
}

func (dp *diskProject) FileMarks() iter.Seq[fileMark] {
	return func(yield func(fileMark) bool) {
		for it := range dp.scan(append(slices.Clip(dp.p), 'F')) {
			key := it.Key()
			if m, ok := dp.mark(readID(key[len(key)-8:]), it); ok && !yield(m) {
				return
			}
		}
	}
}

func (dp *diskProject) FileMark(id int64) (fileMark, bool) {
	it := dp.v.iter()
	defer dp.v.done(it)
	key := appendID(append(slices.Clip(dp.p), 'F'), id)
	if it == nil || !seekExact(it, key) {
		return fileMark{}, false
	}
	return dp.mark(id, it)
}

// mark decodes the iterator's value as the file's mark.
func (dp *diskProject) mark(id int64, it *pebble.Iterator) (fileMark, bool) {
	val, err := it.ValueAndErr()
	if err == nil {
		var m fileMark
		if m, err = decodeMark(id, val); err == nil {
			return m, true
		}
	}
	dp.v.fail(fmt.Errorf("disk state: %w", err))
	return fileMark{}, false
}

// quietLogger drops Pebble's informational messages and passes its errors
// to Pebble's default logger.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)           {}
func (quietLogger) Errorf(format string, a ...any) { pebble.DefaultLogger.Errorf(format, a...) }
func (quietLogger) Fatalf(format string, a ...any) { pebble.DefaultLogger.Fatalf(format, a...) }

// OpenStateDir opens the local state store in dir, creating the folder if
// needed. The store is a cache: one that cannot be opened (damaged, or of
// another layout) is emptied and opened again, to be loaded from the
// state bucket; the folder is emptied only when it holds a Pebble store
// (its OPTIONS file), never a folder of other files. A folder another
// process holds open is an error that says so.
func OpenStateDir(dir string, log *slog.Logger) (*DiskState, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state.dir %s: %w", dir, err)
	}
	d, err := OpenDiskState(dir)
	if err == nil {
		return d, nil
	}
	if errors.Is(err, ErrDiskInUse) {
		return nil, fmt.Errorf("state.dir %s is in use by another process (each replica needs a state.dir of its own): %w", dir, err)
	}
	opts, _ := filepath.Glob(filepath.Join(dir, "OPTIONS-*"))
	if len(opts) == 0 {
		entries, _ := os.ReadDir(dir)
		if len(entries) > 0 {
			return nil, fmt.Errorf("state.dir %s holds files that are not a state store; choose an empty folder: %w", dir, err)
		}
		return nil, err
	}
	log.Warn("local state store cannot be opened; emptied, to be loaded again from the state bucket", "dir", dir, "err", err)
	entries, rerr := os.ReadDir(dir)
	if rerr != nil {
		return nil, fmt.Errorf("state.dir %s: %w", dir, rerr)
	}
	for _, e := range entries {
		if rerr := os.RemoveAll(filepath.Join(dir, e.Name())); rerr != nil {
			return nil, fmt.Errorf("state.dir %s: empty it: %w", dir, rerr)
		}
	}
	return OpenDiskState(dir)
}

// Know records the project's name (numbering it) without storing
// anything of it: the store of a replica that holds only some projects
// knows the others' names, to load them when it starts holding them.
func (tx *DiskTx) Know(project string) error {
	_, err := tx.prefix(project, true)
	return err
}

// Names returns the names of the projects the store knows, held or not.
func (d *DiskState) Names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.names))
}

// DropProjects deletes what the store holds of the projects (their
// entities, indexes and cached entries), keeping their names: a replica
// that stops holding them. Loading them again (Store.LoadProjects) brings
// them back.
func (d *DiskState) DropProjects(projects []string) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.mu.Lock()
	names := d.names
	d.mu.Unlock()
	b := d.db.NewBatch()
	defer b.Close()
	for _, name := range projects {
		n, ok := names[name]
		if !ok {
			continue
		}
		p := projectPrefix(n)
		r := fragPrefix(p, len(p))
		for _, pre := range [][]byte{p, r} {
			if err := b.DeleteRange(pre, prefixEnd(pre), nil); err != nil {
				return err
			}
		}
	}
	if b.Empty() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// A view taken before sees the entries; one taken after does not.
	if err := b.Set(keySeq, binary.BigEndian.AppendUint64(nil, d.seq+1), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("disk state: drop projects: %w", err)
	}
	d.seq++
	return nil
}

// KeysByProject counts the store's keys of each project it holds
// anything of (entities and their indexes): what a replica holds.
func (d *DiskState) KeysByProject() (map[string]int, error) {
	d.mu.Lock()
	byNumber := map[uint32]string{}
	for name, n := range d.names {
		byNumber[n] = name
	}
	d.mu.Unlock()
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte("p"), UpperBound: []byte("q")})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for ok := it.First(); ok; ok = it.Next() {
		if k := it.Key(); len(k) >= 5 {
			out[byNumber[binary.BigEndian.Uint32(k[1:5])]]++
		}
	}
	return out, it.Close()
}
