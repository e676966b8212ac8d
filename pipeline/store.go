package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// Store keeps State durable in a JetStream key-value bucket, one key per
// entity (<project>.<kind>.<id>), and keeps the in-memory State current
// with every replica's writes through a watch on that bucket.
//
// Writes are compare-and-swap on the key's revision, so the highest
// version wins even when replicas race on the same entity.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	state  *State
	log    *slog.Logger
	watch  jetstream.KeyWatcher
}

// OpenStore creates (or binds to) the state bucket and loads it into
// state; it returns once every stored entity has been loaded.
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, state *State, log *slog.Logger) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "exportstream: newest snapshot of every entity",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("state bucket %s: %w", bucket, err)
	}
	s := &Store{js: js, kv: kv, bucket: bucket, state: state, log: log}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch state bucket %s: %w", bucket, err)
	}
	s.watch = w
	start, n := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			w.Stop()
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("state watch closed while loading")
			}
			if e == nil {
				log.Info("state loaded", "bucket", bucket, "entities", n, "took", time.Since(start).Round(time.Millisecond).String())
				return s, nil
			}
			s.take(e)
			n++
		}
	}
}

// take applies one key-value entry to the in-memory state.
func (s *Store) take(e jetstream.KeyValueEntry) {
	project, kind, id, ok := parseStateKey(e.Key())
	if !ok {
		s.log.Warn("state bucket holds a foreign key; ignored", "key", e.Key())
		s.state.noteRev(e.Revision())
		return
	}
	if cur := s.state.current(project, kind, id); cur != nil && cur.rev >= e.Revision() {
		s.state.noteRev(e.Revision())
		return
	}
	sn, err := decodeSnap(project, kind, e.Value())
	if err != nil {
		s.log.Error("state bucket holds an undecodable snapshot; ignored", "key", e.Key(), "err", err)
		s.state.noteRev(e.Revision())
		return
	}
	sn.rev = e.Revision()
	s.state.offer(project, sn)
}

// Run follows the state bucket (other replicas' writes) until ctx is done.
// If the watch ends on its own (the client gave up on its ordered
// consumer), it is opened again from the next revision.
func (s *Store) Run(ctx context.Context) error {
	defer func() { s.watch.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-s.watch.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil // closed because we are stopping
				}
				s.state.mu.RLock()
				next := s.state.rev + 1
				s.state.mu.RUnlock()
				s.log.Warn("state watch ended; watching again", "from_revision", next)
				w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes(), jetstream.ResumeFromRevision(next))
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("watch state bucket %s again: %w", s.bucket, err)
				}
				s.watch = w
				continue
			}
			if e != nil {
				s.take(e)
			}
		}
	}
}

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

type write struct {
	key    string
	old    *snap // what the write replaces: the compare-and-swap on expect guarantees it
	sn     *snap
	expect uint64
	fut    jetstream.PubAckFuture
}

// Apply stores the newest snapshot each event carries, durably, and
// returns the changes it made, the highest state revision written, and the
// projects of events whose exact version was already stored. Stale events
// (not newer than what is stored) change nothing.
func (s *Store) Apply(ctx context.Context, evs []*events.Event) (applied, error) {
	var res applied
	pendingEvs := evs
	for attempt := 0; len(pendingEvs) > 0; attempt++ {
		if attempt == 5 {
			return res, fmt.Errorf("state writes kept conflicting with another replica")
		}
		writes, order := map[string]*write{}, []string{}
		for _, ev := range pendingEvs {
			key := stateKey(ev.Project, ev.Kind, ev.EntityID)
			cur := s.state.current(ev.Project, ev.Kind, ev.EntityID)
			base := cur
			w := writes[key]
			if w != nil {
				if ev.Version <= w.sn.version {
					res.countStale(ev)
					continue
				}
				base = w.sn
			} else if cur != nil && cur.version >= ev.Version {
				if attempt == 0 && cur.version == ev.Version {
					if res.again == nil {
						res.again = map[string]bool{}
					}
					res.again[ev.Project] = true
				}
				res.countStale(ev)
				continue
			}
			sn, err := snapFromEvent(ev, base)
			if err != nil {
				return res, fmt.Errorf("event %s: %w", ev.ID, err)
			}
			if w == nil {
				w = &write{key: key, old: cur}
				if cur != nil {
					w.expect = cur.rev
				}
				writes[key] = w
				order = append(order, key)
			}
			w.sn = sn
		}
		if len(order) == 0 {
			break
		}
		for _, key := range order {
			w := writes[key]
			// The compare-and-swap header, set directly (the same as
			// jetstream.WithExpectLastSequencePerSubject, without its
			// per-message option processing).
			msg := &nats.Msg{Subject: "$KV." + s.bucket + "." + key, Data: w.sn.raw,
				Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: []string{strconv.FormatUint(w.expect, 10)}}}
			fut, err := s.js.PublishMsgAsync(msg, stallWait)
			if err != nil {
				return res, fmt.Errorf("state write %s: %w", key, err)
			}
			w.fut = fut
		}
		var retry []*events.Event
		conflicted := map[string]bool{}
		var firstErr error
		for _, key := range order {
			w := writes[key]
			select {
			case ack := <-w.fut.Ok():
				w.sn.rev = ack.Sequence
				res.rev = max(res.rev, ack.Sequence)
				project, _, _, _ := parseStateKey(key)
				// The watch may have offered this very entry first; the
				// change is ours either way.
				s.state.offer(project, w.sn)
				res.changes = append(res.changes, change{project: project, kind: w.sn.kind, old: w.old, new: w.sn})
			case err := <-w.fut.Err():
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
					apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
					conflicted[key] = true
					continue
				}
				if firstErr == nil {
					firstErr = fmt.Errorf("state write %s: %w", key, err)
				}
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		if firstErr != nil {
			return res, firstErr
		}
		if len(conflicted) == 0 {
			break
		}
		// Another replica wrote these keys: load what it wrote, then
		// decide again for the events that touched them.
		for key := range conflicted {
			e, err := s.kv.Get(ctx, key)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return res, fmt.Errorf("state read %s: %w", key, err)
			}
			if e != nil {
				s.take(e)
			}
		}
		for _, ev := range pendingEvs {
			if conflicted[stateKey(ev.Project, ev.Kind, ev.EntityID)] {
				retry = append(retry, ev)
			}
		}
		pendingEvs = retry
	}
	return res, nil
}
