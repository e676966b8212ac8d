package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// How current the exports are, for the API and the page: the newest event
// this replica applied, and per definition whether an applied event waits
// for its export (a dirty mark) and how many.

// Applied is the newest event this replica applied: its state and the
// dirty marks it caused are stored (the consumer acknowledges it next).
type Applied struct {
	// Seq is the highest event stream sequence applied (0: none since
	// the process started).
	Seq uint64
	// Time is when the newest batch was applied.
	Time time.Time
	// Events counts the events applied since the process started.
	Events uint64
}

// LastApplied returns the newest event this replica applied (good events
// only: stale ones count, dead-lettered ones do not).
func (p *Pipeline) LastApplied() Applied {
	p.fresh.mu.Lock()
	defer p.fresh.mu.Unlock()
	return p.fresh.last
}

// Freshness says how current a definition's export is.
type Freshness struct {
	// Current: no applied event waits for an export of the definition
	// (it has no dirty mark). Events not applied yet (the consumer's
	// backlog) are not known here.
	Current bool
	// PendingEvents counts, when not Current, the state changes of the
	// definition's project that this replica applied, in batches that
	// touched the definition, since its newest export was rendered: an
	// upper bound of the events its export does not hold yet (a batch
	// may also change files outside the definition's source). It is 0
	// when another replica applied them, or this process restarted since.
	PendingEvents int
	// NewestEvent is the stream sequence of the newest event that marked
	// the definition (not Current), and MarkedTime when it did.
	NewestEvent uint64
	MarkedTime  time.Time
}

// Freshness returns how current the named definition's export is. For a
// name that is not configured, an error wrapping ErrUnknownDefinition is
// returned.
func (p *Pipeline) Freshness(ctx context.Context, name string) (Freshness, error) {
	if p.byName[name] == nil {
		return Freshness{}, fmt.Errorf("%w: %q", ErrUnknownDefinition, name)
	}
	// The state revision before the mark: with no mark, every change
	// applied up to it is in an export (its mark was written before it
	// was counted, and an export cleared that mark).
	rev := p.state.Rev()
	e, err := p.dirty.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		p.fresh.covered(name, rev)
		return Freshness{Current: true}, nil
	}
	if err != nil {
		return Freshness{}, fmt.Errorf("dirty mark %s: %w", name, err)
	}
	var mark dirtyMark
	_ = json.Unmarshal(e.Value(), &mark)
	var exported uint64
	for _, r := range []*Record{p.LatestRecord(name), p.SkippedRecord(name)} {
		if r != nil {
			exported = max(exported, r.StateRevision)
		}
	}
	p.fresh.covered(name, exported)
	return Freshness{PendingEvents: p.fresh.pending(name), NewestEvent: mark.Watermark, MarkedTime: mark.Time}, nil
}

// freshness is what Handle notes for LastApplied and Freshness.
type freshness struct {
	mu   sync.Mutex
	last Applied
	// marked holds per definition the changes counted since its newest
	// export, by the state revision that holds them, oldest first.
	marked map[string][]markedChanges
}

type markedChanges struct {
	rev     uint64
	changes int
}

// maxMarked bounds the entries kept per definition: older ones merge
// (under the newer revision, so they count until that one is exported).
const maxMarked = 64

// applied notes a batch of events applied (Handle succeeded).
func (f *freshness) applied(batch []*events.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range batch {
		f.last.Seq = max(f.last.Seq, ev.Seq)
	}
	f.last.Events += uint64(len(batch))
	f.last.Time = time.Now().UTC()
}

// mark notes, once the definitions' dirty marks are stored, the changes
// of each touched definition's project at state revision rev.
func (f *freshness) mark(defs map[string]*Definition, touched []string, changes []change, rev uint64) {
	byProject := map[string]int{}
	for _, c := range changes {
		byProject[c.project]++
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.marked == nil {
		f.marked = map[string][]markedChanges{}
	}
	for _, name := range touched {
		d := defs[name]
		if d == nil || byProject[d.Project] == 0 {
			continue
		}
		m := append(f.marked[name], markedChanges{rev: rev, changes: byProject[d.Project]})
		if len(m) > maxMarked {
			m[1].changes += m[0].changes
			m = m[1:]
		}
		f.marked[name] = m
	}
}

// covered drops the definition's changes at or before revision rev.
func (f *freshness) covered(name string, rev uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var kept []markedChanges
	for _, m := range f.marked[name] {
		if m.rev > rev {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		delete(f.marked, name)
		return
	}
	f.marked[name] = kept
}

// pending sums the definition's changes not yet covered.
func (f *freshness) pending(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.marked[name] {
		n += m.changes
	}
	return n
}
