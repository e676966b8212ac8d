package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
)

// Point-in-time exports (EXPORTS.md, "Point in time"): the state that the
// event stream gives up to a point, rebuilt by replaying the stream from
// its first sequence into a scratch local store (a DiskState of its own,
// never the state bucket), then planned and rendered by the same code as
// every other export. The export records the stream sequence it reflects
// (Record.Watermark) and the point asked for (Record.AsOf).

// AsOf is a point in the event stream: a stream sequence (Seq > 0), or a
// time (Seq 0), which stands for the last sequence stored at or before it.
type AsOf struct {
	Seq  uint64
	Time time.Time
}

// IsZero reports whether a names no point (an export of the state now).
func (a AsOf) IsZero() bool { return a.Seq == 0 && a.Time.IsZero() }

// String is a as ParseAsOf reads it: the sequence, or the time in RFC 3339
// (UTC); "" for the zero AsOf.
func (a AsOf) String() string {
	switch {
	case a.Seq > 0:
		return strconv.FormatUint(a.Seq, 10)
	case a.Time.IsZero():
		return ""
	}
	return a.Time.UTC().Format(time.RFC3339Nano)
}

// ErrBadAsOf is returned (wrapped) by ParseAsOf for a value that is
// neither a stream sequence nor an RFC 3339 time.
var ErrBadAsOf = errors.New("bad as_of")

// ParseAsOf reads an as_of value: a stream sequence (a decimal integer,
// 1 or more) or an RFC 3339 time ("2026-03-01T12:00:00Z", fractions and
// offsets allowed). Anything else is an error wrapping ErrBadAsOf that
// says what is accepted.
func ParseAsOf(s string) (AsOf, error) {
	if s == "" {
		return AsOf{}, fmt.Errorf("%w: empty; give a stream sequence (1 or more) or an RFC 3339 time such as 2026-03-01T12:00:00Z", ErrBadAsOf)
	}
	if strings.Trim(s, "0123456789") == "" {
		n, err := strconv.ParseUint(s, 10, 64)
		switch {
		case err != nil:
			return AsOf{}, fmt.Errorf("%w: %q is too large for a stream sequence", ErrBadAsOf, s)
		case n == 0:
			return AsOf{}, fmt.Errorf("%w: %q: stream sequences start at 1", ErrBadAsOf, s)
		}
		return AsOf{Seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return AsOf{}, fmt.Errorf("%w: %q is neither a stream sequence (an integer, 1 or more) nor an RFC 3339 time such as 2026-03-01T12:00:00Z", ErrBadAsOf, s)
	}
	return AsOf{Time: t}, nil
}

// ErrAsOfUnavailable is returned (wrapped) for a point-in-time export
// whose events the stream no longer holds (its limits or retention
// removed them, or they were deleted); the message names the first
// sequence the stream still holds, or the sequences missing.
var ErrAsOfUnavailable = errors.New("the events stream no longer holds the events")

// ErrAsOfBeyond is returned (wrapped) for an as_of past the stream's last
// sequence, or a time in the future.
var ErrAsOfBeyond = errors.New("as_of is beyond the events stream")

// ErrAsOfNotConfigured is returned by GenerateAsOf when the pipeline was
// opened without Options.EventsStream.
var ErrAsOfNotConfigured = errors.New("point-in-time exports need the events stream (Options.EventsStream)")

// scratchDirName is the folder, inside the local state store's folder,
// that holds the scratch stores of point-in-time exports: one sub-folder
// per export, removed when it ends; Open removes the whole folder (what
// a crash left).
const scratchDirName = "asof-scratch"

// replayBatch is how many events a replay applies to its scratch store
// in one write transaction, and how many messages it asks for at once.
const replayBatch = 1024

// replayIdle is how long a replay waits for the next message before it
// gives up.
const replayIdle = 30 * time.Second

// stateDir is the local state store's folder.
func (p *Pipeline) stateDir() string {
	if p.opts.StateDir != "" {
		return p.opts.StateDir
	}
	return p.tmpDir
}

// sweepScratch removes the scratch stores a stopped process left behind.
// Open calls it once it holds the state folder's lock, so no other
// process's replay is running in it.
func (p *Pipeline) sweepScratch() {
	root := filepath.Join(p.stateDir(), scratchDirName)
	if _, err := os.Stat(root); err != nil {
		return
	}
	if err := os.RemoveAll(root); err != nil {
		p.log.Warn("could not remove the scratch stores of point-in-time exports left by an earlier run", "dir", root, "err", err)
		return
	}
	p.log.Info("removed the scratch stores of point-in-time exports left by an earlier run", "dir", root)
}

// resolveAsOf returns the stream sequence a stands for, after checking
// that the events stream still holds every event up to it. The errors
// wrap ErrAsOfUnavailable, ErrAsOfBeyond or ErrAsOfNotConfigured, or are
// the server's.
func (p *Pipeline) resolveAsOf(ctx context.Context, a AsOf) (uint64, error) {
	name := p.opts.EventsStream
	if name == "" {
		return 0, ErrAsOfNotConfigured
	}
	if a.IsZero() {
		return 0, fmt.Errorf("%w: no as_of", ErrBadAsOf)
	}
	s, err := p.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("events stream %s: %w", name, err)
	}
	info := s.CachedInfo()
	st := info.State
	// A stream created to start at a later sequence (FirstSeq) never
	// held the ones before.
	if need := max(info.Config.FirstSeq, 1); st.FirstSeq > need {
		return 0, fmt.Errorf("%w up to as_of %s: the first sequence stream %s still holds is %d (older events were removed by its limits or retention; a point-in-time export replays every event from sequence %d)",
			ErrAsOfUnavailable, a, name, st.FirstSeq, need)
	}
	if a.Seq > 0 {
		if a.Seq > st.LastSeq {
			return 0, fmt.Errorf("%w: as_of %d is past the last sequence of stream %s, %d", ErrAsOfBeyond, a.Seq, name, st.LastSeq)
		}
		return a.Seq, nil
	}
	if a.Time.After(time.Now()) {
		return 0, fmt.Errorf("%w: as_of %s is in the future", ErrAsOfBeyond, a)
	}
	return seqAt(ctx, s, a.Time)
}

// seqAt returns the last sequence of stream s stored at or before t (0
// when none is): the one before the first message stored after t, which
// a consumer starting at t+1ns reports as delivered already.
func seqAt(ctx context.Context, s jetstream.Stream, t time.Time) (uint64, error) {
	start := t.Add(time.Nanosecond)
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:   "exportstream: where a point-in-time export's time falls in the stream",
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		return 0, fmt.Errorf("events stream: find the sequence at %s: %w", t.UTC().Format(time.RFC3339Nano), err)
	}
	info := c.CachedInfo()
	_ = s.DeleteConsumer(context.WithoutCancel(ctx), info.Name)
	return info.Delivered.Stream, nil
}

// GenerateAsOf starts an export of d as of point at in the event stream
// and returns its record at once (status pending; follow it with
// WaitRecord). d is a configured definition (its name is kept in the
// document's export_info.export_name and in Record.Definition, so that the
// document equals the one the definition's export at that watermark had,
// apart from the export id and time) or an ad-hoc one (empty name).
// Either way the export is an ad-hoc one: Record.Name is AdhocName, its
// objects go under AdhocPath in d's connection, and latest.json is left
// alone (it never goes back in time).
//
// The point is checked before anything starts: the errors wrap
// ErrUnknownConnection, ErrAsOfUnavailable (naming the first sequence the
// stream still holds), ErrAsOfBeyond, ErrAsOfNotConfigured or
// ErrTooManyAdhoc. The export then replays the stream from its first
// sequence up to the point into a scratch store under the state folder,
// one replay at a time on a replica, and renders from it; events the
// stream lost in between (deleted) fail it, with a status_text naming
// them. A source that matches no file at that point ends it skipped. An
// identical request (same settings, same sequence) while one runs on this
// replica is served by that one.
func (p *Pipeline) GenerateAsOf(ctx context.Context, d Definition, at AsOf) (*Record, error) {
	bucket := p.opts.Buckets[d.Connection]
	if bucket == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownConnection, d.Connection)
	}
	seq, err := p.resolveAsOf(ctx, at)
	if err != nil {
		return nil, err
	}
	definition := d.Name
	if definition == AdhocName {
		definition = ""
	}
	if definition == "" {
		d.Name = AdhocName
	}
	d.Path = AdhocPath
	key := adhocKeyOf(&d)
	key.definition, key.asOf = definition, at.String()+"@"+strconv.FormatUint(seq, 10)
	return p.requests.shareAdhoc(ctx, key, func(sctx context.Context, done func()) (*Record, error) {
		return p.startAsOf(sctx, &d, definition, at, seq, bucket, done)
	})
}

// startAsOf stores the pending record of point-in-time export d at stream
// sequence seq and starts it in the background, which calls done when it
// ends. On error it never calls done.
func (p *Pipeline) startAsOf(ctx context.Context, d *Definition, definition string, at AsOf, seq uint64, bucket connectors.Bucket, done func()) (*Record, error) {
	id, err := p.records.nextID(ctx)
	if err != nil {
		return nil, fmt.Errorf("allocate export id: %w", err)
	}
	r := &Record{
		ID: id, Name: AdhocName, Definition: definition, Project: d.Project, Source: string(d.Source.Kind),
		Completion: d.Completion, IncludeRemoved: d.IncludeRemovedInstances, Status: StatusPending,
		CreatedTime: time.Now().UTC(), Connection: d.Connection, Trigger: TriggerManual, FormatVersion: FormatVersion,
		AsOf: at.String(), Watermark: seq,
	}
	if err := p.records.put(ctx, r); err != nil {
		return nil, fmt.Errorf("export record: %w", err)
	}
	c := *r
	p.requests.start(func() {
		defer done()
		ctx := p.runCtx()
		if err := p.runAsOf(ctx, d, bucket, r, seq); err != nil {
			p.log.Error("point-in-time export failed", "export_id", r.ID, "as_of", r.AsOf, "watermark", seq, "err", err)
		}
	})
	return &c, nil
}

// runAsOf replays the stream up to seq into a scratch store, then writes
// export r of d from it as runAdhoc writes any ad-hoc export. The scratch
// store is removed when it returns, whatever happened.
func (p *Pipeline) runAsOf(ctx context.Context, d *Definition, bucket connectors.Bucket, r *Record, seq uint64) error {
	// One replay at a time: each has a scratch store (its cache and
	// memtables) of its own, within the service's memory budget.
	// Waiting for the one before ends with ctx.
	select {
	case p.replaying <- struct{}{}:
	case <-ctx.Done():
		return p.failed(ctx, r, fmt.Errorf("stopped before the export ran: %w", context.Cause(ctx)))
	}
	defer func() { <-p.replaying }()
	if err := ctx.Err(); err != nil {
		return p.failed(ctx, r, fmt.Errorf("stopped before the export ran: %w", context.Cause(ctx)))
	}
	root := filepath.Join(p.stateDir(), scratchDirName)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return p.failed(ctx, r, fmt.Errorf("scratch store: %w", err))
	}
	dir, err := os.MkdirTemp(root, "export-"+strconv.FormatInt(r.ID, 10)+"-")
	if err != nil {
		return p.failed(ctx, r, fmt.Errorf("scratch store: %w", err))
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			p.log.Warn("could not remove a point-in-time export's scratch store", "dir", dir, "err", err)
		}
	}()
	st, err := OpenScratchState(dir, p.state)
	if err != nil {
		return p.failed(ctx, r, fmt.Errorf("scratch store: %w", err))
	}
	defer st.Close()
	r.Status = StatusGenerating
	if err := p.records.put(ctx, r); err != nil {
		return err
	}
	start := time.Now()
	n, bad, err := p.replay(ctx, st, seq, r)
	if err != nil {
		return p.failed(ctx, r, fmt.Errorf("replay of stream %s up to sequence %d: %w", p.opts.EventsStream, seq, err))
	}
	p.log.Info("point-in-time export: events replayed", "export_id", r.ID, "watermark", seq, "events", n,
		"bad_input", bad, "took", time.Since(start).Round(time.Millisecond).String())
	v := st.View()
	pl := buildPlan(v, d)
	pl.disk = v
	defer pl.close()
	if err := pl.check(); err != nil {
		return p.failed(ctx, r, fmt.Errorf("read the scratch store: %w", err))
	}
	// The scratch store's revisions are stream sequences, not state
	// bucket revisions: the record's state_revision stays 0.
	pl.rev = 0
	if pl.empty != "" {
		r.skipped(d, pl)
		if err := p.records.put(ctx, r); err != nil {
			return fmt.Errorf("export record: %w", err)
		}
		p.log.Warn("point-in-time export skipped: its source matches no file at that point; nothing written",
			"export_id", r.ID, "watermark", seq, "reason", pl.empty)
		return nil
	}
	return p.runAdhoc(ctx, d, bucket, r, pl)
}

// replay applies the events of the stream, from its first sequence up to
// seq, to the scratch store st with the live service's rules: each
// message decoded and checked as the consumer does (bad input, which the
// consumer dead-letters, is passed over), then snapFromEvent and Offer
// (the highest version wins), in write transactions of replayBatch
// events. It reads through an ordered consumer, replayBatch messages at a
// time, so memory does not grow with the stream. A sequence missing
// below seq (deleted from the stream) is an error wrapping
// ErrAsOfUnavailable. It returns how many messages it read and how many
// were bad input; st's Rev is seq after it.
func (p *Pipeline) replay(ctx context.Context, st *DiskState, seq uint64, r *Record) (n, bad int, err error) {
	if seq == 0 {
		return 0, 0, nil
	}
	c, err := p.js.OrderedConsumer(ctx, p.opts.EventsStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, 0, err
	}
	it, err := c.Messages(jetstream.PullMaxMessages(replayBatch))
	if err != nil {
		return 0, 0, err
	}
	defer it.Stop()
	// Next blocks: stop the iterator when ctx ends or nothing comes.
	var idle atomic.Bool
	watchdog := time.AfterFunc(replayIdle, func() { idle.Store(true); it.Stop() })
	defer watchdog.Stop()
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer stopOnCancel()

	logProgress := progressLogger(p.log, r)
	batch := make([]*events.Event, 0, replayBatch)
	flush := func() error {
		if err := st.Update(func(tx *DiskTx) error { return applyReplayed(tx, batch) }); err != nil {
			return fmt.Errorf("scratch store: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	next := uint64(1) // the sequence expected next
	for next <= seq {
		m, err := it.Next()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return n, bad, context.Cause(ctx)
			case idle.Load():
				return n, bad, fmt.Errorf("no event delivered for %v at sequence %d", replayIdle, next)
			}
			return n, bad, err
		}
		watchdog.Reset(replayIdle)
		meta, err := m.Metadata()
		if err != nil {
			return n, bad, err
		}
		got := meta.Sequence.Stream
		if got > next {
			return n, bad, fmt.Errorf("%w: sequences %d to %d are gone (deleted), and the state up to %d needs them", ErrAsOfUnavailable, next, min(got-1, seq), seq)
		}
		if got > seq {
			break
		}
		n++
		if ev, err := events.DecodeWith(m.Subject(), m.Data(), p.opts.EventLimits); err != nil {
			bad++
		} else {
			ev.Seq = got
			batch = append(batch, ev)
		}
		next = got + 1
		if len(batch) == replayBatch {
			if err := flush(); err != nil {
				return n, bad, err
			}
			logProgress(int(got*100/seq), int(got), int(seq))
		}
		if meta.NumPending == 0 && next <= seq {
			return n, bad, fmt.Errorf("%w: sequences %d to %d are gone (deleted), and the state up to %d needs them", ErrAsOfUnavailable, next, seq, seq)
		}
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return n, bad, err
		}
	}
	// The store reflects the stream up to seq (bad input included).
	return n, bad, st.NoteRev(seq)
}

// applyReplayed stores the snapshots a replay's events carry, in stream
// order, as Store.Apply decides for live events: an event not newer than
// the stored snapshot (or the one an earlier event of the batch offered)
// changes nothing; a partial removal merges into the snapshot held. The
// snapshots' revisions are the events' stream sequences.
func applyReplayed(tx *DiskTx, evs []*events.Event) error {
	// The batch's entities looked up in key order through one iterator,
	// as the live path does: a Get per event built an iterator stack
	// each, and a replay into a store larger than the block cache spent
	// most of its time reading the same index and filter blocks again.
	refs := make([]entityRef, len(evs))
	for i, ev := range evs {
		refs[i] = entityRef{ev.Project, ev.Kind, ev.EntityID}
	}
	if err := tx.Prefetch(refs); err != nil {
		return err
	}
	for _, ev := range evs {
		tx.NoteRev(ev.Seq)
		cur, err := tx.Current(ev.Project, ev.Kind, ev.EntityID)
		if err != nil {
			return err
		}
		if cur != nil && cur.version >= ev.Version {
			continue
		}
		sn, err := snapFromEvent(ev, cur)
		if err != nil {
			return fmt.Errorf("event %s (sequence %d): %w", ev.ID, ev.Seq, err)
		}
		sn.rev = ev.Seq
		if _, _, err := tx.Offer(ev.Project, sn); err != nil {
			return err
		}
	}
	return nil
}

// noteApplied records that this replica applied batch (Handle, holding
// viewMu shared): the watermark of the views taken after it.
//
// That watermark is exact on a single replica that applies the stream in
// order: a view taken with it holds every event up to it and none after
// (a batch is applied whole, between views). An export records the
// larger of it and its dirty mark's watermark. Where it is not exact: with
// several replicas (another replica's batches reach this one's store
// through the state watch, later or earlier than their sequences say), a
// batch redelivered after a failure while later ones were applied, and
// an export right after a restart (before this replica applied a batch,
// the dirty mark's watermark is all it knows; 0 without one).
func (p *Pipeline) noteApplied(batch []*events.Event) {
	var top uint64
	for _, ev := range batch {
		top = max(top, ev.Seq)
	}
	for {
		cur := p.appliedSeq.Load()
		if top <= cur || p.appliedSeq.CompareAndSwap(cur, top) {
			return
		}
	}
}
