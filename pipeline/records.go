package pipeline

// The export records: every replica keeps an index of them in memory, fed
// by a watch on the records bucket. The index holds a summary of each
// record (what lists, filters, waits and retention need) and the full
// record only while it runs and for each definition's newest complete
// and newest skipped one; any other record is read from the bucket when
// it is asked for. Retention (Options.RecordsKeepLast, RecordsMaxAge)
// deletes old records from the bucket; the delete markers take them out
// of every replica's index through its watch, and are purged from the
// bucket's stream once the watches had time to see them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Retention timing defaults.
const (
	// defaultPruneEvery is the shortest time between two retention rounds
	// of a replica; a round also runs at start and every 6 × this while
	// nothing is written (records age, markers wait to be purged).
	defaultPruneEvery = 10 * time.Second
	// defaultMarkerGrace is how long a delete marker stays in the records
	// bucket before it is purged: long enough for every replica's watch to
	// have seen it.
	defaultMarkerGrace = 5 * time.Minute
	// loadTimeout bounds the bucket reads of the calls that take no
	// context (Records, RecordByID, LatestRecord, SkippedRecord).
	loadTimeout = 10 * time.Second
	// loadParallel bounds the concurrent bucket reads of one page.
	loadParallel = 16
)

// statusCode is a record status in one byte.
type statusCode uint8

const (
	codeOther statusCode = iota // a status this version does not know
	codePending
	codeGenerating
	codeUploading
	codeComplete
	codeFailed
	codeSkipped
	// codeNone matches no record: a filter on an unknown status.
	codeNone statusCode = 0xff
)

var statusNames = [...]Status{
	codeOther: "", codePending: StatusPending, codeGenerating: StatusGenerating, codeUploading: StatusUploading,
	codeComplete: StatusComplete, codeFailed: StatusFailed, codeSkipped: StatusSkipped,
}

func statusOf(s Status) statusCode {
	for i, n := range statusNames {
		if i > 0 && n == s {
			return statusCode(i)
		}
	}
	return codeOther
}

func (c statusCode) final() bool { return c == codeComplete || c == codeFailed || c == codeSkipped }

// summary is what the index keeps of every record: 48 bytes.
type summary struct {
	id int64
	// rev is the key-value revision of the record held, or of its
	// delete marker once gone.
	rev uint64
	// ended is completed_time, or created_time while there is none, in
	// Unix nanoseconds: what max_age is measured from.
	ended   int64
	name    unique.Handle[string]
	project unique.Handle[string]
	status  statusCode
	// gone marks a deleted record, kept until the next compaction so that
	// an older write arriving late does not bring it back.
	gone bool
}

func summaryOf(r *Record, rev uint64) summary {
	at := r.CreatedTime
	if r.CompletedTime != nil {
		at = *r.CompletedTime
	}
	return summary{id: r.ID, rev: rev, ended: at.UnixNano(), name: unique.Make(r.Name),
		project: unique.Make(r.Project), status: statusOf(r.Status)}
}

// newest are the ids of a definition's newest complete, newest skipped
// and newest final records (0: none).
type newest struct{ complete, skipped, final int64 }

// marker is a delete marker seen in the records bucket, to be purged.
type marker struct {
	id  int64
	rev uint64
	at  time.Time
}

// victim is a record retention deletes, at the revision it decided on.
type victim struct {
	id  int64
	rev uint64
}

// recordIndex is the in-memory index of the export records.
type recordIndex struct {
	// every and grace time retention (defaultPruneEvery,
	// defaultMarkerGrace); tests shorten them before Run.
	every, grace time.Duration

	mu    sync.Mutex
	sums  []summary // ascending id
	dead  int       // gone entries in sums
	names map[unique.Handle[string]]*newest
	// full holds the full record of every summary that is not final and
	// of each name's newest complete and newest skipped record, when
	// known; a record held is never modified.
	full    map[int64]*Record
	markers []marker
	changed chan struct{}
	// wrote gets a value when this replica writes a final record.
	wrote chan struct{}
}

func newRecordIndex() *recordIndex {
	return &recordIndex{every: defaultPruneEvery, grace: defaultMarkerGrace,
		names: map[unique.Handle[string]]*newest{}, full: map[int64]*Record{},
		changed: make(chan struct{}), wrote: make(chan struct{}, 1)}
}

func (x *recordIndex) find(id int64) (int, bool) {
	return slices.BinarySearchFunc(x.sums, id, func(s summary, id int64) int {
		switch {
		case s.id < id:
			return -1
		case s.id > id:
			return 1
		}
		return 0
	})
}

func (x *recordIndex) notify() {
	close(x.changed)
	x.changed = make(chan struct{})
}

// put stores r, written by this replica at key-value revision rev
// (records.put), and wakes retention when r is final.
func (x *recordIndex) put(r *Record, rev uint64) {
	if x.store(r, rev) && Final(r.Status) {
		select {
		case x.wrote <- struct{}{}:
		default:
		}
	}
}

// store stores r, written at key-value revision rev, unless the index
// holds that write or a newer one (this replica's own writes arrive twice:
// directly and through the watch). It reports whether it stored r.
func (x *recordIndex) store(r *Record, rev uint64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	i, found := x.find(r.ID)
	if found && rev <= x.sums[i].rev {
		return false
	}
	s := summaryOf(r, rev)
	if found {
		old := x.sums[i]
		if old.gone {
			x.dead--
		} else if old.name != s.name {
			x.sums[i].gone = true // a record never changes its name; be safe anyway
			x.rescan(old.name)
		}
		x.sums[i] = s
	} else {
		x.sums = slices.Insert(x.sums, i, s)
	}
	n := x.names[s.name]
	if n == nil {
		n = &newest{}
		x.names[s.name] = n
	}
	prev := *n
	if prev.complete == s.id && s.status != codeComplete || prev.skipped == s.id && s.status != codeSkipped ||
		prev.final == s.id && !s.status.final() {
		x.rescan(s.name) // a record moved back (failed, then retried)
	} else {
		if s.status == codeComplete && s.id > n.complete {
			n.complete = s.id
		}
		if s.status == codeSkipped && s.id > n.skipped {
			n.skipped = s.id
		}
		if s.status.final() && s.id > n.final {
			n.final = s.id
		}
		x.dropUnneeded(prev, n)
	}
	if !s.status.final() || n.complete == s.id || n.skipped == s.id {
		x.full[s.id] = r
	} else {
		delete(x.full, s.id)
	}
	x.notify()
	return true
}

// dropUnneeded forgets the full records of prev's marks that n no longer
// names.
func (x *recordIndex) dropUnneeded(prev newest, n *newest) {
	for _, id := range []int64{prev.complete, prev.skipped} {
		if id != 0 && id != n.complete && id != n.skipped {
			if i, ok := x.find(id); !ok || x.sums[i].gone || x.sums[i].status.final() {
				delete(x.full, id)
			}
		}
	}
}

// rescan works out name's newest records again from the summaries.
func (x *recordIndex) rescan(name unique.Handle[string]) {
	n := x.names[name]
	if n == nil {
		n = &newest{}
		x.names[name] = n
	}
	prev := *n
	*n = newest{}
	for i := len(x.sums) - 1; i >= 0 && (n.complete == 0 || n.skipped == 0 || n.final == 0); i-- {
		s := &x.sums[i]
		if s.gone || s.name != name {
			continue
		}
		if s.status == codeComplete && n.complete == 0 {
			n.complete = s.id
		}
		if s.status == codeSkipped && n.skipped == 0 {
			n.skipped = s.id
		}
		if s.status.final() && n.final == 0 {
			n.final = s.id
		}
	}
	x.dropUnneeded(prev, n)
}

// remove takes record id out of the index: its delete (or purge) marker,
// at revision rev and time at, was seen. The marker is queued for
// purging.
func (x *recordIndex) remove(id int64, rev uint64, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.markers = append(x.markers, marker{id: id, rev: rev, at: at})
	i, found := x.find(id)
	if !found || rev <= x.sums[i].rev {
		return
	}
	x.sums[i].rev = rev
	if x.drop(i) {
		x.rescan(x.sums[i].name)
	}
	x.compact()
	x.notify()
}

// forget takes record id out of the index if it still holds it at
// revision rev: the bucket said it is not there (its delete marker may
// have been purged before this replica's watch saw it).
func (x *recordIndex) forget(id int64, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, found := x.find(id); found && !x.sums[i].gone && x.sums[i].rev == rev {
		if x.drop(i) {
			x.rescan(x.sums[i].name)
		}
		x.compact()
		x.notify()
	}
}

// sweep takes out the records held at a revision up to upTo that a
// watch's initial values did not list (seen): their keys were deleted
// and purged while no watch was open.
func (x *recordIndex) sweep(seen map[int64]bool, upTo uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	names := map[unique.Handle[string]]bool{}
	for i := range x.sums {
		if s := &x.sums[i]; !s.gone && s.rev <= upTo && !seen[s.id] {
			if x.drop(i) {
				names[s.name] = true
			}
			n++
		}
	}
	for name := range names {
		x.rescan(name)
	}
	if n > 0 {
		x.compact()
		x.notify()
	}
}

// drop marks sums[i] gone and reports whether it was one of its name's
// newest records (the caller then rescans the name).
func (x *recordIndex) drop(i int) bool {
	s := &x.sums[i]
	if s.gone {
		return false
	}
	s.gone = true
	x.dead++
	delete(x.full, s.id)
	n := x.names[s.name]
	return n != nil && (n.complete == s.id || n.skipped == s.id || n.final == s.id)
}

// compact removes the gone entries from sums once they are many.
func (x *recordIndex) compact() {
	if x.dead <= 1024 || x.dead*4 <= len(x.sums) {
		return
	}
	x.sums = slices.DeleteFunc(x.sums, func(s summary) bool { return s.gone })
	if cap(x.sums) > 2*len(x.sums)+1024 {
		x.sums = slices.Clone(x.sums)
	}
	x.dead = 0
}

// state says whether the index holds record id and whether it is final,
// and returns the channel closed on the next change.
func (x *recordIndex) state(id int64) (found, final bool, changed <-chan struct{}) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, ok := x.find(id); ok && !x.sums[i].gone {
		return true, x.sums[i].status.final(), x.changed
	}
	return false, false, x.changed
}

// held returns a copy of record id's full record if the index holds it.
func (x *recordIndex) held(id int64) *Record {
	x.mu.Lock()
	defer x.mu.Unlock()
	if r := x.full[id]; r != nil {
		c := *r
		return &c
	}
	return nil
}

// keep holds r, read from the bucket at revision rev, if the index
// holds that revision and keeps such a record in full.
func (x *recordIndex) keep(r *Record, rev uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	i, ok := x.find(r.ID)
	if !ok || x.sums[i].gone || x.sums[i].rev != rev {
		return
	}
	s := &x.sums[i]
	if n := x.names[s.name]; !s.status.final() || n != nil && (n.complete == s.id || n.skipped == s.id) {
		x.full[s.id] = r
	}
}

// latest returns the id of name's newest complete record (0: none) and
// its full record if held.
func (x *recordIndex) latest(name string) (int64, *Record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.names[unique.Make(name)]
	if n == nil || n.complete == 0 {
		return 0, nil
	}
	return n.complete, copyOf(x.full[n.complete])
}

// skipped returns the id of name's newest final record if it is skipped
// (else 0) and its full record if held.
func (x *recordIndex) skipped(name string) (int64, *Record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.names[unique.Make(name)]
	if n == nil || n.skipped == 0 || n.skipped != n.final {
		return 0, nil
	}
	return n.skipped, copyOf(x.full[n.skipped])
}

func copyOf(r *Record) *Record {
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// pageItem is a record of a page: its full record when held.
type pageItem struct {
	id  int64
	rev uint64
	rec *Record
}

// page returns the records of the page f selects, newest first, how many
// match f in all, and whether older ones match too.
func (x *recordIndex) page(f RecordFilter) (items []pageItem, total int, more bool) {
	var name, project unique.Handle[string]
	if f.Definition != "" {
		name = unique.Make(f.Definition)
	}
	if f.Project != "" {
		project = unique.Make(f.Project)
	}
	code := codeNone
	if f.Status != "" {
		if code = statusOf(f.Status); code == codeOther {
			code = codeNone
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := len(x.sums) - 1; i >= 0; i-- {
		s := &x.sums[i]
		if s.gone || f.Definition != "" && s.name != name || f.Project != "" && s.project != project ||
			f.Status != "" && s.status != code {
			continue
		}
		total++
		if f.Before > 0 && s.id >= f.Before {
			continue
		}
		if len(items) < f.Limit {
			items = append(items, pageItem{id: s.id, rev: s.rev, rec: x.full[s.id]})
		} else {
			more = true
		}
	}
	return items, total, more
}

// expired returns the records retention deletes: final ones that have
// keepLast newer records of their name (keepLast > 0), or that ended
// before now - maxAge (maxAge > 0); never a name's newest complete or
// newest skipped record.
func (x *recordIndex) expired(keepLast int, maxAge time.Duration, now time.Time) []victim {
	x.mu.Lock()
	defer x.mu.Unlock()
	cutoff := now.Add(-maxAge).UnixNano()
	newer := make(map[unique.Handle[string]]int, len(x.names))
	var out []victim
	for i := len(x.sums) - 1; i >= 0; i-- {
		s := &x.sums[i]
		if s.gone {
			continue
		}
		k := newer[s.name]
		newer[s.name] = k + 1
		if !s.status.final() {
			continue
		}
		if n := x.names[s.name]; n.complete == s.id || n.skipped == s.id {
			continue
		}
		if keepLast > 0 && k >= keepLast || maxAge > 0 && s.ended < cutoff {
			out = append(out, victim{id: s.id, rev: s.rev})
		}
	}
	return out
}

// takeMarkers returns the queued delete markers made before before, and
// keeps the others queued.
func (x *recordIndex) takeMarkers(before time.Time) []marker {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out, left []marker
	for _, m := range x.markers {
		if m.at.Before(before) {
			out = append(out, m)
		} else {
			left = append(left, m)
		}
	}
	x.markers = left
	return out
}

// requeue queues markers again, after a failed purge.
func (x *recordIndex) requeue(ms []marker) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.markers = append(x.markers, ms...)
}

// records are the export records: the records bucket (its keys in
// recordkeys.go), the index of it this replica keeps from a watch, and
// retention. The Pipeline writes records through put and reads them
// through the index (index) or get; run keeps the index current.
type records struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	bucket string // kv's name
	index  *recordIndex
	owner  string // this replica's lease identity, stored beside each record it writes (sweep.go)
	// keepLast and maxAge are Options.RecordsKeepLast and RecordsMaxAge.
	keepLast int
	maxAge   time.Duration
	// maxBackoff is Options.MaxBackoff: how long a watch that cannot be
	// opened, or a leader get, waits at most before trying again.
	maxBackoff time.Duration
	log        *slog.Logger
	health     *writeHealth           // told the outcome of each record write
	runCtx     func() context.Context // the Pipeline's Run context, for the reads of calls that take none
}

// nextID allocates an export id: unique across replicas and growing, from
// a counter in the records bucket updated with compare-and-swap.
func (rs *records) nextID(ctx context.Context) (int64, error) {
	for range 100 {
		e, err := rs.kv.Get(ctx, nextIDKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := rs.kv.Create(ctx, nextIDKey, []byte("2")); err == nil {
				return 1, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(string(e.Value()), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("export id counter holds %q", e.Value())
		}
		if _, err := rs.kv.Update(ctx, nextIDKey, []byte(strconv.FormatInt(n+1, 10)), e.Revision()); err == nil {
			return n, nil
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
	}
	return 0, errors.New("export id counter: too many conflicts")
}

// put writes export record r and holds it in the index.
func (rs *records) put(ctx context.Context, r *Record) error {
	b, err := json.Marshal(storedRecord{Record: r, Owner: rs.owner})
	if err != nil {
		return err
	}
	rev, err := rs.kv.Put(ctx, RecordKey(r.ID), b)
	if err == nil || ctx.Err() == nil {
		rs.health.noteRecord(err)
	}
	if err == nil {
		c := *r
		rs.index.put(&c, rev)
	}
	return err
}

// get returns the export record with the given id. If there is none, an
// error wrapping jetstream.ErrKeyNotFound is returned.
func (rs *records) get(ctx context.Context, id int64) (*Record, error) {
	// Never older than the revision the index knows (a lagging replica of
	// an R3 bucket may answer a direct get with an older version: then a
	// complete export would read as still generating).
	return rs.fetch(ctx, id, rs.index.revOf(id))
}

// errBadRecord is wrapped by the error of stored for a record that is
// not a JSON export record.
var errBadRecord = errors.New("not an export record")

// stored returns export record id as the bucket holds it (with its
// writer's owner) and its key-value revision. A record the bucket does
// not hold is jetstream.ErrKeyNotFound; one it cannot decode, errBadRecord.
func (rs *records) stored(ctx context.Context, id int64) (storedRecord, uint64, error) {
	e, err := rs.kv.Get(ctx, RecordKey(id))
	if err != nil {
		return storedRecord{}, 0, err
	}
	sr := storedRecord{Record: &Record{}}
	if err := json.Unmarshal(e.Value(), &sr); err != nil {
		return storedRecord{}, 0, fmt.Errorf("export record %d: %w: %w", id, errBadRecord, err)
	}
	return sr, e.Revision(), nil
}

// update writes export record r over the one at key-value revision rev
// and holds it in the index; another write meanwhile is an error wrapping
// jetstream.ErrKeyExists or jetstream.ErrKeyRevisionMismatch.
func (rs *records) update(ctx context.Context, r *Record, rev uint64) error {
	b, err := json.Marshal(storedRecord{Record: r, Owner: rs.owner})
	if err != nil {
		return err
	}
	next, err := rs.kv.Update(ctx, RecordKey(r.ID), b, rev)
	if err != nil {
		return err
	}
	c := *r
	rs.index.put(&c, next)
	return nil
}

// delete deletes export record id (an attempt that wrote nothing).
func (rs *records) delete(ctx context.Context, id int64) error {
	return rs.kv.Delete(ctx, RecordKey(id))
}

// definitionState returns what the definition's newest export holds
// (nil: nothing yet, or unreadable).
func (rs *records) definitionState(ctx context.Context, name string) (*definitionState, error) {
	e, err := rs.kv.Get(ctx, definitionKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st definitionState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, nil
	}
	return &st, nil
}

// putDefinitionState stores the definition's state.
func (rs *records) putDefinitionState(ctx context.Context, name string, st definitionState) error {
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = rs.kv.Put(ctx, definitionKey(name), body)
	return err
}

// pending returns the id of the definition's export in progress and the
// key-value revision that says so; an error when there is none or it
// cannot be read.
func (rs *records) pending(ctx context.Context, name string) (id int64, rev uint64, err error) {
	e, err := rs.kv.Get(ctx, pendingKey(name))
	if err != nil {
		return 0, 0, err
	}
	id, err = strconv.ParseInt(string(e.Value()), 10, 64)
	return id, e.Revision(), err
}

// setPending notes export id as the definition's export in progress.
func (rs *records) setPending(ctx context.Context, name string, id int64) error {
	_, err := rs.kv.Put(ctx, pendingKey(name), []byte(strconv.FormatInt(id, 10)))
	return err
}

// clearPending removes the note of the definition's export in progress:
// only if it is still at revision rev, when rev > 0.
func (rs *records) clearPending(ctx context.Context, name string, rev uint64) error {
	if rev > 0 {
		return rs.kv.Delete(ctx, pendingKey(name), jetstream.LastRevision(rev))
	}
	return rs.kv.Delete(ctx, pendingKey(name))
}

// classMap returns d's YOLO class map (classesKey) and its key-value
// revision (0: there is none yet).
func (rs *records) classMap(ctx context.Context, d *Definition) (classes []int64, rev uint64, err error) {
	key := classesKey(d)
	e, err := rs.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("YOLO class map: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &classes); err != nil {
		return nil, 0, fmt.Errorf("YOLO class map %s: %w", key, err)
	}
	return classes, e.Revision(), nil
}

// putClassMap stores d's YOLO class map over the one at revision rev
// (0: creates it). Another writer's map meanwhile is an error wrapping
// jetstream.ErrKeyExists or jetstream.ErrKeyRevisionMismatch.
func (rs *records) putClassMap(ctx context.Context, d *Definition, classes []int64, rev uint64) error {
	body, err := json.Marshal(classes)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = rs.kv.Create(ctx, classesKey(d), body)
	} else {
		_, err = rs.kv.Update(ctx, classesKey(d), body, rev)
	}
	return err
}

// run keeps the index current from the records bucket and applies
// retention, until ctx is done; it runs each of also beside, with a
// channel closed once the records are loaded.
func (rs *records) run(ctx context.Context, also ...func(ctx context.Context, loaded <-chan struct{}) error) error {
	loaded := make(chan struct{})
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rs.follow(ctx, loaded) })
	g.Go(func() error { return rs.retain(ctx, loaded) })
	for _, f := range also {
		g.Go(func() error { return f(ctx, loaded) })
	}
	return g.Wait()
}

// follow feeds the index from a watch on the records, opening the
// watch again if it ends on its own or cannot be opened (a WARN per failed
// attempt, backing off as failed exports do, up to Options.MaxBackoff)
// until ctx is done; loaded is closed once the first watch delivered
// every record. It never fails.
func (rs *records) follow(ctx context.Context, loaded chan struct{}) error {
	first := true
	failures := 0 // failed attempts in a row to open the watch
	for {
		// Records held at a revision up to the stream's last one must be
		// among the watch's initial values, or they are gone.
		var upTo uint64
		if st, err := rs.kv.Status(ctx); err == nil {
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
				upTo = bs.StreamInfo().State.LastSeq
			}
		}
		w, err := rs.kv.Watch(ctx, RecordKeyPrefix+"*")
		if err != nil {
			// Right after a NATS restart the server may not answer yet
			// (context deadline exceeded, no responders, JetStream not
			// ready): never fatal, try again, backing off up to MaxBackoff.
			if !waitToReopen(ctx, rs.log, "export records", &failures, rs.maxBackoff, err) {
				return nil
			}
			continue
		}
		failures = 0
		seen := map[int64]bool{}
		for e := range w.Updates() {
			if e == nil { // the end of the initial values
				if seen != nil {
					rs.index.sweep(seen, upTo)
					seen = nil
				}
				if first {
					close(loaded)
					first = false
				}
				continue
			}
			id, err := recordID(e.Key())
			if err != nil {
				continue
			}
			if seen != nil {
				seen[id] = true
			}
			if e.Operation() != jetstream.KeyValuePut {
				rs.index.remove(id, e.Revision(), e.Created())
				continue
			}
			var r Record
			if json.Unmarshal(e.Value(), &r) == nil {
				rs.index.store(&r, e.Revision())
			}
		}
		_ = w.Stop()
		if ctx.Err() != nil {
			return nil
		}
		rs.log.Warn("export records watch ended; opening it again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// retain runs retention rounds: once the records are loaded, after
// this replica writes a final record, and every 6 × index.every while
// nothing is written; never two within index.every.
func (rs *records) retain(ctx context.Context, loaded <-chan struct{}) error {
	every := rs.index.every
	// A watch learns that it has delivered every record from the last one
	// it expected; if that one was purged meanwhile (a delete marker), it
	// learns only with the next write. Retention does not wait that long:
	// an index still loading makes it delete less, never wrongly.
	select {
	case <-ctx.Done():
		return nil
	case <-loaded:
	case <-time.After(6 * every):
	}
	idle := time.NewTicker(6 * every)
	defer idle.Stop()
	var stream jetstream.Stream
	for {
		rs.prune(ctx)
		stream = rs.purgeMarkers(ctx, stream)
		next := time.Now().Add(every)
		select {
		case <-ctx.Done():
			return nil
		case <-rs.index.wrote:
		case <-idle.C:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// prune deletes the records retention no longer keeps. Each delete
// is conditional on the revision the decision saw: a record deleted by
// another replica meanwhile, or written again, is left to the next round.
func (rs *records) prune(ctx context.Context) {
	keep, age := rs.keepLast, rs.maxAge
	if keep <= 0 && age <= 0 {
		return
	}
	deleted := 0
	for _, v := range rs.index.expired(keep, age, time.Now()) {
		err := rs.kv.Delete(ctx, RecordKey(v.id), jetstream.LastRevision(v.rev))
		if err == nil {
			deleted++
			continue
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if ctx.Err() == nil {
			rs.log.Warn("deleting old export records failed; trying again in the next round", "export_id", v.id, "err", err)
		}
		break
	}
	if deleted > 0 {
		rs.log.Debug("old export records deleted", "deleted", deleted, "keep_last", keep, "max_age", age)
	}
}

// purgeMarkers removes the delete markers older than index.grace from
// the records bucket's stream: each one only (its subject, up to its
// revision), so that a record written again since stays. It returns the
// stream handle to use next time.
func (rs *records) purgeMarkers(ctx context.Context, stream jetstream.Stream) jetstream.Stream {
	ms := rs.index.takeMarkers(time.Now().Add(-rs.index.grace))
	if len(ms) == 0 {
		return stream
	}
	bucket := rs.bucket
	if stream == nil {
		s, err := rs.js.Stream(ctx, KVStream(bucket))
		if err != nil {
			rs.index.requeue(ms)
			if ctx.Err() == nil {
				rs.log.Warn("purging export record delete markers failed; trying again later", "err", err)
			}
			return nil
		}
		stream = s
	}
	for i, m := range ms {
		err := stream.Purge(ctx, jetstream.WithPurgeSubject(KVSubject(bucket, RecordKey(m.id))), jetstream.WithPurgeSequence(m.rev+1))
		if err != nil {
			rs.index.requeue(ms[i:])
			if ctx.Err() == nil {
				rs.log.Warn("purging export record delete markers failed; trying again later", "err", err)
			}
			break
		}
	}
	return stream
}

// fetch reads record id from the bucket, holds it in the index if the
// index keeps it in full, and takes it out of the index if the bucket no
// longer has it (the error then wraps jetstream.ErrKeyNotFound). rev is
// the revision the index holds the record at (0: none): the record
// returned is never older than that.
//
// The records bucket is created with AllowDirect (the jetstream default),
// so KeyValue.Get is a direct get that any replica of an R3 bucket may
// answer, including one that lags behind the stream leader: it can return
// an older, unfinished version of a record, or not find a record just
// written. The direct get stays the first try (cheap, spread over the
// replicas); when it answers older than rev, or not found while the index
// holds the record, the record is read again from the stream leader
// (leaderGet; in nats.go both KeyValue.GetRevision and
// Stream.GetLastMsgForSubject are direct gets too while AllowDirect is
// on), which has every acknowledged write. Only the leader's "not found"
// takes the record out of the index.
func (rs *records) fetch(ctx context.Context, id int64, rev uint64) (*Record, error) {
	var val []byte
	var got uint64
	e, err := rs.kv.Get(ctx, RecordKey(id))
	if err == nil {
		val, got = e.Value(), e.Revision()
	}
	if rev != 0 && (err == nil && got < rev || errors.Is(err, jetstream.ErrKeyNotFound)) {
		val, got, err = rs.leaderGet(ctx, id, rev)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) && rev != 0 {
		rs.index.forget(id, rev)
	}
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(val, &r); err != nil {
		return nil, fmt.Errorf("export record %d: %w", id, err)
	}
	c := r
	rs.index.keep(&c, got)
	return &r, nil
}

// leaderGet reads record id from the records bucket's stream leader (the
// non-direct STREAM.MSG.GET API), again while it answers older than rev
// (a leader just elected may not have applied every write yet), until
// ctx is done. A deleted record is jetstream.ErrKeyNotFound.
func (rs *records) leaderGet(ctx context.Context, id int64, rev uint64) (value []byte, revision uint64, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, loadTimeout)
		defer cancel()
	}
	bucket := rs.bucket
	req, err := json.Marshal(map[string]string{"last_by_subj": KVSubject(bucket, RecordKey(id))})
	if err != nil {
		return nil, 0, err
	}
	subj := jsAPIPrefix(rs.js) + "STREAM.MSG.GET." + KVStream(bucket)
	for attempt := 1; ; attempt++ {
		msg, err := rs.js.Conn().RequestWithContext(ctx, subj, req)
		if err != nil {
			return nil, 0, fmt.Errorf("export record %d: %w", id, err)
		}
		var resp struct {
			Error *struct {
				Code        int    `json:"code"`
				ErrCode     int    `json:"err_code"`
				Description string `json:"description"`
			} `json:"error"`
			Message *struct {
				Seq  uint64 `json:"seq"`
				Hdrs []byte `json:"hdrs"`
				Data []byte `json:"data"`
			} `json:"message"`
		}
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return nil, 0, fmt.Errorf("export record %d: %w", id, err)
		}
		switch {
		case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
			return nil, 0, fmt.Errorf("export record %d: %w", id, jetstream.ErrKeyNotFound)
		case resp.Error != nil:
			return nil, 0, fmt.Errorf("export record %d: %s (%d)", id, resp.Error.Description, resp.Error.ErrCode)
		case resp.Message == nil:
			return nil, 0, fmt.Errorf("export record %d: %w", id, jetstream.ErrInvalidJetStreamResponse)
		}
		m := resp.Message
		if len(m.Hdrs) > 0 {
			if h, err := nats.DecodeHeadersMsg(m.Hdrs); err == nil && (h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "") {
				return nil, 0, fmt.Errorf("export record %d: %w", id, jetstream.ErrKeyNotFound)
			}
		}
		if m.Seq >= rev {
			return m.Data, m.Seq, nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("export record %d: the bucket answers revision %d, older than %d: %w", id, m.Seq, rev, context.Cause(ctx))
		case <-time.After(min(backoffDelay(attempt, rs.maxBackoff), time.Second)):
		}
	}
}

// jsAPIPrefix returns the JetStream API subject prefix js uses (ending in
// a dot).
func jsAPIPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// fill returns the page's records, reading those the index does not hold
// from the bucket, loadParallel at a time. A record that cannot be read
// is left out (and logged, unless it was deleted meanwhile).
func (rs *records) fill(items []pageItem) []Record {
	out := make([]*Record, len(items))
	var g errgroup.Group
	g.SetLimit(loadParallel)
	ctx, cancel := context.WithTimeout(rs.runCtx(), loadTimeout)
	defer cancel()
	for i, it := range items {
		if it.rec != nil {
			out[i] = it.rec
			continue
		}
		g.Go(func() error {
			r, err := rs.fetch(ctx, it.id, it.rev)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				rs.log.Warn("reading an export record failed; it is left out of the list", "export_id", it.id, "err", err)
			}
			out[i] = r
			return nil
		})
	}
	_ = g.Wait()
	recs := make([]Record, 0, len(out))
	for _, r := range out {
		if r != nil {
			recs = append(recs, *r)
		}
	}
	return recs
}

// lookup returns record id: the index's copy, or the bucket's. It returns
// nil when there is no such record (or it cannot be read: that is logged).
func (rs *records) lookup(id int64) *Record {
	if r := rs.index.held(id); r != nil {
		return r
	}
	ctx, cancel := context.WithTimeout(rs.runCtx(), loadTimeout)
	defer cancel()
	r, err := rs.fetch(ctx, id, rs.index.revOf(id))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			rs.log.Warn("reading an export record failed", "export_id", id, "err", err)
		}
		return nil
	}
	return r
}

// revOf returns the revision the index holds record id at (0: none).
func (x *recordIndex) revOf(id int64) uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i, ok := x.find(id); ok && !x.sums[i].gone {
		return x.sums[i].rev
	}
	return 0
}
