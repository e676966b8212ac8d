package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Export records left unfinished by a replica that stopped: a manual or
// ad-hoc request lives only in the memory of the replica that took it, and
// an export's record is finished only by the replica that runs it. The
// records bucket keeps, beside each record, its writer's identity (owner,
// the replica's lease identity; see storedRecord); a sweep marks failed
// every unfinished record whose owner no longer heartbeats, so that it
// does not stay pending (or generating) for ever. A replica that is alive,
// this one included, is never swept: whatever it still holds, it
// finishes.
//
// A record written by a version without owners is swept only while no
// other replica heartbeats (then nobody works on it). A record younger
// than the liveness TTL is left for the next round: its writer's first
// heartbeat may still be on its way. A replica that crashed heartbeats
// for up to the liveness TTL after: its records are swept by a later
// round, on this replica or another one. Rounds run once the records are
// loaded and every liveness TTL after.

// storedRecord is a record as the records bucket keeps it: the record and
// its writer's owner identity (Pipeline.Owner). Only the sweep reads the
// owner; the API, the manifests and the completion events show the
// record alone.
type storedRecord struct {
	*Record
	Owner string `json:"owner,omitempty"`
}

// abandonedText is the status text of a record the sweep marks failed.
const abandonedText = "abandoned: the replica that took it (%s) stopped before the export was complete"

// sweepRecords sweeps once the records are loaded, then every liveness
// TTL, until ctx is done.
func (p *Pipeline) sweepRecords(ctx context.Context, loaded <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return nil
	case <-loaded:
	}
	t := time.NewTicker(p.opts.LivenessTTL)
	defer t.Stop()
	for {
		p.sweepAbandoned(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweepAbandoned marks failed every unfinished record the index knows
// whose owner no longer heartbeats; it returns how many it marked. A
// record written meanwhile (its owner is alive after all, or another
// replica swept it) is left as written.
func (p *Pipeline) sweepAbandoned(ctx context.Context) int {
	ids := p.records.index.unfinished()
	if len(ids) == 0 {
		return 0
	}
	live, err := p.liveKeys(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("sweeping abandoned export records: listing the replicas' heartbeats failed", "err", err)
		}
		return 0
	}
	others := false
	for k := range live {
		others = others || k != p.live.key
	}
	n := 0
	for _, id := range ids {
		sr, rev, err := p.records.stored(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, errBadRecord) {
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("sweeping abandoned export records: reading a record failed", "export_id", id, "err", err)
			}
			return n
		}
		if Final(sr.Status) {
			continue
		}
		if !p.abandoned(sr, live, others) {
			continue
		}
		r, was := sr.Record, sr.Status
		owner := sr.Owner
		if owner == "" {
			owner = "unknown"
		}
		r.Status, r.StatusText = StatusFailed, fmt.Sprintf(abandonedText, owner)
		if err := p.records.update(ctx, r, rev); err != nil {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				p.log.Warn("sweeping abandoned export records: marking a record failed failed", "export_id", id, "err", err)
			}
			continue
		}
		p.m.abandoned.Inc()
		p.log.Warn("export record abandoned by a stopped replica marked failed", "export_id", id, "definition", r.Name,
			"owner", owner, "was", was)
		n++
	}
	return n
}

// abandoned reports whether nobody works on the unfinished record sr any
// more (see the top of this file); live are the heartbeat keys, others
// says whether one is another replica's.
func (p *Pipeline) abandoned(sr storedRecord, live map[string]bool, others bool) bool {
	if time.Since(sr.CreatedTime) < p.opts.LivenessTTL {
		return false
	}
	if sr.Owner == "" {
		return !others
	}
	key := sr.Owner[strings.LastIndexByte(sr.Owner, '/')+1:]
	return key != p.live.key && !live[key]
}

// unfinished returns the ids of the records the index holds that are not
// final.
func (x *recordIndex) unfinished() []int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []int64
	for _, s := range x.sums {
		if !s.gone && !s.status.final() {
			out = append(out, s.id)
		}
	}
	return out
}
