package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// Store keeps the state durable in a JetStream key-value bucket, one key
// per entity (<project>.<kind>.<id>), and keeps the local disk store
// (DiskState, a cache of the bucket) current with every replica's writes
// through a watch on that bucket.
//
// Writes are compare-and-swap on the key's revision, so the highest
// version wins even when replicas race on the same entity.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	state  *DiskState
	log    *slog.Logger
	watch  jetstream.KeyWatcher
	loaded int // entries read from the bucket at open
	ours   ownWrites
	// known is the highest revision of the bucket known to exist: this
	// replica's acknowledged writes, and the revisions its exports wait
	// for (Expect). A watch that delivers nothing while the store is
	// below it has lost its consumer (see watchStall).
	known atomic.Uint64
	// accept says which projects the local store holds (nil: all): a
	// replica of a partitioned stream holds the projects of the
	// partitions it leases (partition.go). The others' entries are passed
	// over, their names recorded.
	accept func(project string) bool
}

// watchBatch is how many watched entries are applied to the disk store in
// one write transaction, at most.
const watchBatch = 1024

// takeBytes bounds the entries' bytes a load takes in one transaction
// (a chunk's entry holds up to 16 snapshots, all decoded before they are
// stored).
const takeBytes = 1 << 20

// OpenStore creates (or binds to) the state bucket and brings state up to
// date with it; it returns once every stored entity has been loaded. A
// store that reflects this bucket resumes from the revision it recorded;
// one that reflects another bucket (deleted and created again, or
// another NATS) is emptied and loaded from the start.
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, state *DiskState, log *slog.Logger) (*Store, error) {
	return openStore(ctx, js, bucket, replicas, state, log, nil)
}

// openStore is OpenStore for a store that holds only the projects accept
// accepts (nil: all).
func openStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, state *DiskState, log *slog.Logger, accept func(string) bool) (*Store, error) {
	kv, err := createKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "exportstream: newest snapshot of every entity",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: %w", bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: %w", bucket, err)
	}
	var identity string
	var last uint64
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		info := bs.StreamInfo()
		identity = bucket + "@" + info.Created.UTC().Format(time.RFC3339Nano)
		last = info.State.LastSeq
	}
	bound, err := state.Bound()
	if err != nil {
		return nil, err
	}
	if bound != identity || state.Rev() > last {
		if bound != "" || state.Rev() > 0 {
			log.Warn("local state store reflects another state bucket; emptied and loaded again",
				"store", bound, "bucket", identity, "store_revision", state.Rev(), "bucket_revision", last)
		}
		if err := state.Reset(identity); err != nil {
			return nil, err
		}
	}
	s := &Store{js: js, kv: kv, bucket: bucket, state: state, log: log, accept: accept}
	from := state.Rev()
	var resume uint64
	if from > 0 {
		resume = from + 1
	}
	w, err := loadState(ctx, js, bucket, resume)
	if err != nil {
		return nil, fmt.Errorf("load state bucket %s: %w", bucket, err)
	}
	start := time.Now()
	n, err := drain(ctx, w, s.take, func(n int, e jetstream.KeyValueEntry) {
		// Every 256 entries (up to 4,096 snapshots): a progress line,
		// which the crash test also kills the process at.
		if n%256 == 0 {
			log.Debug("state loading", "entries", n, "revision", e.Revision())
		}
	})
	if err != nil {
		return nil, err
	}
	s.loaded = n
	log.Info("state loaded", "bucket", bucket, "from_revision", from+1, "entries", n,
		"revision", state.Rev(), "took", time.Since(start).Round(time.Millisecond).String())
	// Live: the key-value watch, from the next revision. It lives until
	// Run stops it (not until ctx ends: at shutdown the caller's context
	// ends before Run's, and a watch ended that way looked to Run like
	// one the client gave up on). A Store that never runs keeps its
	// watch until the NATS connection closes.
	if s.watch, err = kv.WatchAll(context.WithoutCancel(ctx), jetstream.IgnoreDeletes(), jetstream.ResumeFromRevision(state.Rev()+1)); err != nil {
		return nil, fmt.Errorf("watch state bucket %s: %w", bucket, err)
	}
	return s, nil
}

// drain reads the feed to its end (its nil entry) and stops it, handing
// the entries to take in batches of at most watchBatch, and each entry
// with its count to seen (nil: none); it returns how many it read.
func drain(ctx context.Context, f *stateFeed, take func([]jetstream.KeyValueEntry) error, seen func(int, jetstream.KeyValueEntry)) (int, error) {
	defer f.Stop()
	n, size := 0, 0
	batch := make([]jetstream.KeyValueEntry, 0, watchBatch)
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case e, ok := <-f.Updates():
			if !ok {
				return n, errors.New("state feed ended while loading")
			}
			if e != nil {
				batch = append(batch, e)
				size += len(e.Value())
				n++
				if seen != nil {
					seen(n, e)
				}
			}
			if e == nil || len(batch) == watchBatch || size >= takeBytes {
				if err := take(batch); err != nil {
					return n, err
				}
				batch, size = batch[:0], 0
			}
			if e == nil {
				return n, nil
			}
		}
	}
}

// take applies key-value entries of the watch to the disk store in one
// write transaction, and records that every entry up to the last one is
// reflected. Entries the store holds already (this replica's own writes,
// coming back through the watch) are passed over without being decoded.
func (s *Store) take(entries []jetstream.KeyValueEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := s.state.Update(func(tx *DiskTx) error { return s.takeTx(tx, entries, true) }); err != nil {
		return fmt.Errorf("local state store: %w", err)
	}
	return nil
}

// takeTx stores the entries the store does not hold yet. With watched,
// they are the watch's, in order, and the transaction records their
// revisions as reflected; entries read on their own (a conflict's) are
// not: the watch has not passed the revisions before them.
func (s *Store) takeTx(tx *DiskTx, entries []jetstream.KeyValueEntry, watched bool) error {
	type taken struct {
		e       jetstream.KeyValueEntry
		key     entryKey
		members []*snap
	}
	var todo []taken
	var refs []entityRef
	for _, e := range entries {
		if watched {
			tx.NoteRev(e.Revision())
			if s.ours.passes(e.Revision(), closedChan) {
				continue
			}
		}
		key, ok := parseEntryKey(e.Key())
		if !ok {
			s.log.Warn("state bucket holds a foreign key; ignored", "key", e.Key())
			continue
		}
		if s.accept != nil && !s.accept(key.project) {
			if err := tx.Know(key.project); err != nil {
				return err
			}
			continue
		}
		rev, ok, err := tx.EntryRev(key)
		if err != nil {
			return err
		}
		if ok && rev >= e.Revision() {
			continue
		}
		raws, err := entryMembers(key, e.Value())
		if err != nil {
			s.log.Error("state bucket holds an undecodable entry; ignored", "key", e.Key(), "err", err)
			continue
		}
		t := taken{e: e, key: key}
		for _, raw := range raws {
			sn, err := decodeSnap(key.project, key.kind, raw)
			if err == nil && !key.has(sn.id) {
				err = fmt.Errorf("%s %d does not belong in this entry", key.kind, sn.id)
			}
			if err != nil {
				s.log.Error("state bucket holds an undecodable snapshot; ignored", "key", e.Key(), "err", err)
				continue
			}
			sn.rev = e.Revision()
			t.members = append(t.members, sn)
			refs = append(refs, entityRef{key.project, key.kind, sn.id})
		}
		todo = append(todo, t)
	}
	if err := tx.Prefetch(refs); err != nil {
		return err
	}
	for _, t := range todo {
		for _, sn := range t.members {
			// Only what is newer than the store's: a chunk's other
			// members are mostly what the store holds already.
			cur, err := tx.Current(t.key.project, sn.kind, sn.id)
			if err != nil {
				return err
			}
			if cur != nil && cur.version >= sn.version {
				continue
			}
			if _, _, err := tx.Offer(t.key.project, sn); err != nil {
				return err
			}
		}
		if err := tx.SetEntryRev(t.key, t.e.Revision()); err != nil {
			return err
		}
	}
	return nil
}

// closedChan makes ownWrites.passes not wait (inside a transaction: the
// Apply it would wait for waits for the transaction's lock).
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// pass records the watch's entries when every one is this replica's own
// committed write (waiting for those still pending), without a
// transaction, and reports whether it did.
func (s *Store) pass(ctx context.Context, entries []jetstream.KeyValueEntry) bool {
	for _, e := range entries {
		if !s.ours.passes(e.Revision(), ctx.Done()) {
			// Not ours (or stopping): take reads the store for it, and
			// passes over the ones before it again (they are dropped from
			// the list now, and found stored).
			return false
		}
	}
	s.state.NoteWatched(entries[len(entries)-1].Revision())
	return true
}

// Run follows the state bucket (other replicas' writes) until ctx is done,
// applying what is waiting in batches. If the watch ends on its own (the
// client gave up on its ordered consumer), or delivers nothing for
// watchStall while the store is below a revision known to exist, it is
// opened again from the next revision. A write to the local store that
// fails ends Run with the error.
func (s *Store) Run(ctx context.Context) error {
	defer func() { s.watch.Stop() }()
	batch := make([]jetstream.KeyValueEntry, 0, watchBatch)
	check := time.NewTicker(watchStall / 4)
	defer check.Stop()
	heard := time.Now() // the watch's last delivery (or opening)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			if rev, known := s.state.Rev(), s.known.Load(); rev < known && time.Since(heard) >= watchStall {
				s.log.Warn("state watch silent while behind; watching again", "revision", rev, "known_revision", known,
					"silent", time.Since(heard).Round(time.Millisecond).String())
				_ = s.watch.Stop()
				if !s.rewatch(ctx) {
					return nil
				}
				heard = time.Now()
			}
		case e, ok := <-s.watch.Updates():
			heard = time.Now()
			if !ok {
				if ctx.Err() != nil {
					return nil // closed because we are stopping
				}
				s.log.Warn("state watch ended; watching again", "from_revision", s.state.Rev()+1)
				if !s.rewatch(ctx) {
					return nil
				}
				heard = time.Now()
				continue
			}
			if e == nil {
				continue
			}
			batch = append(batch[:0], e)
		more:
			for len(batch) < watchBatch {
				select {
				case e, ok := <-s.watch.Updates():
					if !ok {
						break more // handled above on the next turn
					}
					if e != nil {
						batch = append(batch, e)
					}
				default:
					break more
				}
			}
			if s.pass(ctx, batch) {
				continue
			}
			if err := s.take(batch); err != nil {
				return err
			}
		}
	}
}

// rewatch opens the state watch again from the revision after the
// store's, trying until it opens (true) or ctx is done (false).
func (s *Store) rewatch(ctx context.Context) bool {
	next := s.state.Rev() + 1
	for failures := 0; ; {
		w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes(), jetstream.ResumeFromRevision(next))
		if err == nil {
			s.watch = w
			return true
		}
		// NATS not back yet: never fatal, try again.
		if !waitToReopen(ctx, s.log, "state", &failures, reopenMaxWait, err) {
			return false
		}
	}
}

// Expect notes that the bucket holds revision rev (a dirty mark names
// it): until the store has it, a watch that delivers nothing is opened
// again after watchStall.
func (s *Store) Expect(rev uint64) {
	for {
		cur := s.known.Load()
		if rev <= cur || s.known.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// watchStall is how long the state watch may deliver nothing while the
// store is below a revision known to exist before it is opened again. A
// key-value watch is an ordered push consumer of one replica, placed on
// one NATS node: when that node stops, nats.go notices only after two
// missed idle heartbeats of 5 s, checked every 10 s, that is 10-20 s
// later, and every export waits for the store (exportOnce) meanwhile.
// A live watch delivers what the bucket holds beyond the store at once.
const watchStall = 2 * time.Second

// reopenMaxWait caps the wait between attempts to open the state watch
// again.
const reopenMaxWait = 5 * time.Second

// stallWait bounds how long a state write waits for room among the
// outstanding async publishes.
var stallWait = jetstream.WithStallWait(10 * time.Second)

// applied is what Store.Apply did.
type applied struct {
	changes []change
	rev     uint64 // highest state revision written
	// again holds the projects of events whose exact version was already
	// stored (a duplicate, or a retry of an attempt that stored it).
	again map[string]bool
	// stale counts, by event type, the events that changed nothing (not
	// newer than the stored snapshot).
	stale map[string]int
}

func (a *applied) countStale(ev *events.Event) {
	if a.stale == nil {
		a.stale = map[string]int{}
	}
	a.stale[ev.Type]++
}

// entityUpdate is what an event batch makes of one entity.
type entityUpdate struct {
	old, sn *snap // old: what the store held (the compare-and-swap on the entry guarantees it)
	entry   entryKey
}

// write is one state entry written.
type write struct {
	key     entryKey
	members []*snap // the entry's snapshots: the changed ones, then a chunk's others as stored
	changed int     // members[:changed] are the batch's
	fut     jetstream.PubAckFuture
}

// Apply stores the newest snapshot each event carries, durably, and
// returns the changes it made, the highest state revision written, and the
// projects of events whose exact version was already stored. Stale events
// (not newer than what is stored) change nothing.
//
// The whole batch is one write transaction of the local store: what it
// reads there (the stored versions) stays true until its writes, which
// the bucket acknowledged, are committed together; the watch waits
// meanwhile, and then passes over these writes (ours).
func (s *Store) Apply(ctx context.Context, evs []*events.Event) (applied, error) {
	var res applied
	var revs []uint64
	// The watch waits for the fate of the writes it sees meanwhile:
	// committed with this transaction, or (an error dropped it) to be
	// applied from the watch like anyone's.
	s.ours.begin()
	err := s.state.Update(func(tx *DiskTx) error {
		return s.apply(ctx, tx, evs, &res, &revs)
	})
	s.ours.end(revs, err == nil)
	for _, r := range revs {
		s.Expect(r)
	}
	if err != nil {
		return applied{}, err
	}
	return res, nil
}

func (s *Store) apply(ctx context.Context, tx *DiskTx, evs []*events.Event, res *applied, revs *[]uint64) error {
	pendingEvs := evs
	for attempt := 0; len(pendingEvs) > 0; attempt++ {
		if attempt == 5 {
			return fmt.Errorf("state writes kept conflicting with another replica")
		}
		refs := make([]entityRef, len(pendingEvs))
		for i, ev := range pendingEvs {
			refs[i] = entityRef{ev.Project, ev.Kind, ev.EntityID}
		}
		if err := tx.Prefetch(refs); err != nil {
			return fmt.Errorf("local state store: %w", err)
		}
		// What the batch makes of each entity it changes.
		updates := make(map[entityRef]*entityUpdate, len(pendingEvs))
		changed := make([]entityRef, 0, len(pendingEvs))
		for _, ev := range pendingEvs {
			ref := entityRef{ev.Project, ev.Kind, ev.EntityID}
			u := updates[ref]
			var cur, base *snap
			if u != nil {
				if ev.Version <= u.sn.version {
					res.countStale(ev)
					continue
				}
				base = u.sn
			} else {
				var err error
				if cur, err = tx.Current(ev.Project, ev.Kind, ev.EntityID); err != nil {
					return fmt.Errorf("local state store: %w", err)
				}
				base = cur
				if cur != nil && cur.version >= ev.Version {
					if attempt == 0 && cur.version == ev.Version {
						if res.again == nil {
							res.again = map[string]bool{}
						}
						res.again[ev.Project] = true
					}
					res.countStale(ev)
					continue
				}
			}
			sn, err := snapFromEvent(ev, base)
			if err != nil {
				return fmt.Errorf("event %s: %w", ev.ID, err)
			}
			if u == nil {
				u = &entityUpdate{old: cur}
				updates[ref] = u
				changed = append(changed, ref)
			}
			u.sn = sn
		}
		if len(changed) == 0 {
			break
		}
		writes, err := s.entryWrites(tx, updates, changed)
		if err != nil {
			return fmt.Errorf("local state store: %w", err)
		}
		for _, w := range writes {
			expect, _, err := tx.EntryRev(w.key)
			if err != nil {
				return fmt.Errorf("local state store: %w", err)
			}
			value := w.members[0].raw
			if w.key.chunk {
				value = encodeChunk(slices.Clone(w.members))
			}
			// The compare-and-swap header, set directly (the same as
			// jetstream.WithExpectLastSequencePerSubject, without its
			// per-message option processing).
			msg := &nats.Msg{Subject: KVSubject(s.bucket, w.key.String()), Data: value,
				Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(expect, 10)}}}
			if w.fut, err = s.js.PublishMsgAsync(msg, stallWait); err != nil {
				return fmt.Errorf("state write %s: %w", w.key, err)
			}
		}
		conflicted := map[entryKey]bool{}
		var firstErr error
		res.changes = slices.Grow(res.changes, len(changed))
		for _, w := range writes {
			select {
			case ack := <-w.fut.Ok():
				res.rev = max(res.rev, ack.Sequence)
				*revs = append(*revs, ack.Sequence)
				for _, sn := range w.members[:w.changed] {
					sn.rev = ack.Sequence
					if _, _, err := tx.Offer(w.key.project, sn); err != nil {
						return fmt.Errorf("local state store: %w", err)
					}
					u := updates[entityRef{w.key.project, sn.kind, sn.id}]
					res.changes = append(res.changes, change{project: w.key.project, kind: sn.kind, old: u.old, new: sn})
				}
				if err := tx.SetEntryRev(w.key, ack.Sequence); err != nil {
					return fmt.Errorf("local state store: %w", err)
				}
			case err := <-w.fut.Err():
				if conflict(err) {
					conflicted[w.key] = true
					continue
				}
				if firstErr == nil {
					firstErr = fmt.Errorf("state write %s: %w", w.key, err)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if firstErr != nil {
			// What was acknowledged reaches the local store through the
			// watch (this transaction is dropped, and none of it is ours).
			return firstErr
		}
		if len(conflicted) == 0 {
			break
		}
		// Another replica wrote these entries: load what it wrote, then
		// decide again for the events that touched them.
		var got []jetstream.KeyValueEntry
		for key := range conflicted {
			e, err := s.kv.Get(ctx, key.String())
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("state read %s: %w", key, err)
			}
			if e != nil {
				s.Expect(e.Revision())
				got = append(got, e)
			}
		}
		if err := s.takeTx(tx, got, false); err != nil {
			return fmt.Errorf("local state store: %w", err)
		}
		var retry []*events.Event
		for _, ev := range pendingEvs {
			if u := updates[entityRef{ev.Project, ev.Kind, ev.EntityID}]; u != nil && conflicted[u.entry] {
				retry = append(retry, ev)
			}
		}
		pendingEvs = retry
	}
	return nil
}

// entryWrites groups the batch's changed entities into the state entries
// that hold them, in the order of their first change; a chunk's entry
// also carries the chunk's other members as the store holds them (the
// entry replaces the whole chunk), except those too large to share it.
func (s *Store) entryWrites(tx *DiskTx, updates map[entityRef]*entityUpdate, changed []entityRef) ([]*write, error) {
	byKey := map[entryKey]*write{}
	var writes []*write
	var others []entityRef
	for _, ref := range changed {
		u := updates[ref]
		u.entry = entryOf(ref.project, ref.kind, ref.id, len(u.sn.raw))
		w := byKey[u.entry]
		if w == nil {
			w = &write{key: u.entry}
			byKey[u.entry] = w
			writes = append(writes, w)
			if u.entry.chunk {
				for id := u.entry.id * chunkIDs; id < (u.entry.id+1)*chunkIDs; id++ {
					others = append(others, entityRef{ref.project, ref.kind, id})
				}
			}
		}
		w.members = append(w.members, u.sn)
		w.changed++
	}
	if len(others) == 0 {
		return writes, nil
	}
	if err := tx.Prefetch(others); err != nil {
		return nil, err
	}
	for _, w := range writes {
		if !w.key.chunk {
			continue
		}
		for id := w.key.id * chunkIDs; id < (w.key.id+1)*chunkIDs; id++ {
			if updates[entityRef{w.key.project, w.key.kind, id}] != nil {
				continue
			}
			cur, err := tx.Current(w.key.project, w.key.kind, id)
			if err != nil {
				return nil, err
			}
			if cur != nil && len(cur.raw) <= chunkMemberMax {
				w.members = append(w.members, cur)
			}
		}
	}
	return writes, nil
}

// ownWrites are the revisions of this replica's state writes that the
// watch has not passed yet, ascending, kept once the transaction that
// stored them committed: the watch passes them without reading the store.
// While an Apply runs, the watch waits for it to end before it decides
// about a revision it does not know (the echo of a write can arrive
// before its acknowledgement). The watch delivers revisions in order, so
// any kept below the one it delivers is gone.
type ownWrites struct {
	mu      sync.Mutex
	revs    []uint64
	active  int           // Apply calls running
	settled chan struct{} // closed (and replaced) when one ends
}

// ownWritesMax bounds the list (a watch that stopped leaves it full):
// beyond it the oldest are dropped, and their echoes are checked against
// the store as any entry is.
const ownWritesMax = 1 << 16

// begin records that an Apply runs.
func (o *ownWrites) begin() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active++
}

// end records that an Apply ended, keeping its writes' revisions if its
// transaction committed.
func (o *ownWrites) end(revs []uint64, committed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active--
	if o.settled != nil {
		close(o.settled)
		o.settled = nil
	}
	if !committed || len(revs) == 0 {
		return
	}
	slices.Sort(revs)
	if n := len(o.revs); n > 0 && revs[0] < o.revs[n-1] {
		// Out of order with the list (cannot happen with one Apply at a
		// time): keep it sorted.
		o.revs = append(o.revs, revs...)
		slices.Sort(o.revs)
	} else {
		o.revs = append(o.revs, revs...)
	}
	if over := len(o.revs) - ownWritesMax; over > 0 {
		o.revs = append(o.revs[:0], o.revs[over:]...)
	}
}

// passes reports whether rev is one of ours, committed, dropping it and
// every lower one. A revision it does not know while an Apply runs is
// waited for, until the Apply ends or done is closed.
func (o *ownWrites) passes(rev uint64, done <-chan struct{}) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		i, found := slices.BinarySearch(o.revs, rev)
		if found || o.active == 0 {
			if found {
				i++
			}
			if i > 0 {
				o.revs = append(o.revs[:0], o.revs[i:]...)
			}
			return found
		}
		if o.settled == nil {
			o.settled = make(chan struct{})
		}
		ch := o.settled
		o.mu.Unlock()
		select {
		case <-ch:
			o.mu.Lock()
		case <-done:
			o.mu.Lock()
			return false
		}
	}
}

// LoadProjects brings the named projects up to date in the local store
// from the state bucket (the newest entry of each of their keys): for a
// replica that starts holding them. Entries the store holds already, or
// newer ones the watch brought meanwhile, are kept.
func (s *Store) LoadProjects(ctx context.Context, projects []string) (int, error) {
	n := 0
	// A consumer takes a bounded number of filters: load in groups.
	for chunk := range slices.Chunk(projects, 64) {
		filters := make([]string, len(chunk))
		for i, p := range chunk {
			filters[i] = p + ".>"
		}
		f, err := loadKeys(ctx, s.js, s.bucket, 0, filters)
		if err != nil {
			return n, fmt.Errorf("load projects from state bucket %s: %w", s.bucket, err)
		}
		got, err := drain(ctx, f, func(batch []jetstream.KeyValueEntry) error {
			if err := s.state.Update(func(tx *DiskTx) error { return s.takeTx(tx, batch, false) }); err != nil {
				return fmt.Errorf("local state store: %w", err)
			}
			return nil
		}, nil)
		n += got
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
