package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A dirty mark reaches the definition's loop through the dirty-mark
// watch (watchDirty). A watch is an ordered consumer on one NATS node,
// and one can go quiet without ending (its node stopped; see watchStall):
// a mark it never delivers would wait for the next event of the
// definition. As a safety net, every markRescanEvery the marks of the
// definitions this replica holds are read, and a definition whose mark
// has not changed since the read before is kicked: either its export is
// failing and retrying (the kick changes nothing), or the watch missed
// it.
var markRescanEvery = 30 * time.Second

// rescanMarks kicks the definitions whose marks stay, every
// markRescanEvery, until ctx is done.
func (p *Pipeline) rescanMarks(ctx context.Context) {
	tick := time.NewTicker(markRescanEvery)
	defer tick.Stop()
	seen := map[string]uint64{} // definition → its mark's revision at the last read
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.rescanOnce(ctx, seen)
	}
}

// rescanOnce reads the mark of every definition this replica holds,
// kicks those whose mark has the revision seen holds for it, and records
// the revisions in seen.
func (p *Pipeline) rescanOnce(ctx context.Context, seen map[string]uint64) {
	for _, d := range p.defs {
		if !p.holds(d.Project) {
			delete(seen, d.Name)
			continue
		}
		e, err := p.dirty.Get(ctx, d.Name)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			delete(seen, d.Name)
			continue
		case err != nil:
			if ctx.Err() == nil {
				p.log.Debug("reading a dirty mark failed", "definition", d.Name, "err", err)
			}
			continue
		}
		if seen[d.Name] == e.Revision() {
			p.log.Debug("dirty mark still there after a rescan period; exporting", "definition", d.Name, "revision", e.Revision())
			p.kick(d.Name, TriggerEvent)
		}
		seen[d.Name] = e.Revision()
	}
}
