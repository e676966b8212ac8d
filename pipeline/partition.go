package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// A partitioned pipeline (Options.Partitions > 1) holds, applies and
// exports only the projects of the partitions it leases: each replica
// does its share, and adding replicas adds capacity.
//
// Who should hold which partition follows from the live replicas (the
// heartbeat keys in the replicas bucket) by rendezvous hashing: partition
// i goes to the live replica whose key scores highest with i, so a
// replica that joins or leaves moves only its own share. Every replica
// computes the same assignment from the same keys; while their views
// differ (a heartbeat just appeared or expired), the partition's lease in
// the leases bucket (key partition.<i>, taken and renewed like a
// definition's, see lease.go) keeps it to one holder at a time. A replica
// that should no longer hold a partition stops its consumer, lets the
// batch in hand finish, drops the partition's projects from its local
// store and releases the lease; the new holder then takes it. A replica
// that dies stops heartbeating, and the others take its partitions once
// its heartbeat key has expired (a liveness TTL).
//
// Taking a partition: its projects are accepted by the local store
// (entries of the state watch are applied), loaded from the state bucket,
// and only then exported (held); then its consumer starts, and its
// definitions whose export is pending (a dirty mark, or settings changed)
// are kicked. Definitions of projects this replica does not hold are not
// exported here: their marks wait for the holder.
type partitions struct {
	n        int
	accepted atomic.Pointer[[]bool] // the local store applies these partitions' entries
	held     atomic.Pointer[[]bool] // and this replica exports and consumes them
}

func newPartitions(n int) *partitions {
	pt := &partitions{n: n}
	none := make([]bool, n)
	pt.accepted.Store(&none)
	pt.held.Store(&none)
	return pt
}

func (pt *partitions) of(project string) int { return events.PartitionOf(project, pt.n) }

// set returns a copy of *cur with partition i set to v.
func set(cur *atomic.Pointer[[]bool], i int, v bool) {
	next := slices.Clone(*cur.Load())
	next[i] = v
	cur.Store(&next)
}

// accepts reports whether the local store applies the project's entries
// (always, when the pipeline is not partitioned).
func (p *Pipeline) accepts(project string) bool {
	if p.parts == nil {
		return true
	}
	return (*p.parts.accepted.Load())[p.parts.of(project)]
}

// holds reports whether this replica exports the project (always, when
// the pipeline is not partitioned).
func (p *Pipeline) holds(project string) bool {
	if p.parts == nil {
		return true
	}
	return (*p.parts.held.Load())[p.parts.of(project)]
}

// HeldPartitions returns the partitions this replica holds (nil when
// the pipeline is not partitioned).
func (p *Pipeline) HeldPartitions() []int {
	if p.parts == nil {
		return nil
	}
	var out []int
	for i, h := range *p.parts.held.Load() {
		if h {
			out = append(out, i)
		}
	}
	return out
}

// score is the rendezvous score of replica r for partition i.
func score(i int, r string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(r))
	_, _ = h.Write([]byte{'/'})
	_, _ = h.Write(strconv.AppendInt(nil, int64(i), 10))
	return h.Sum64()
}

// assign gives each of n partitions to one of the replicas: by
// rendezvous, each partition to the replica that scores highest with it,
// but none more than its fair share (n / replicas, rounded up), so that
// the shares stay even with few partitions. The pairs are taken best
// score first, so a replica that joins or leaves moves few partitions
// between the others. The same replicas give the same assignment on
// every replica.
func assign(n int, replicas []string) []string {
	out := make([]string, n)
	if len(replicas) == 0 {
		return out
	}
	type pair struct {
		i     int
		r     string
		score uint64
	}
	pairs := make([]pair, 0, n*len(replicas))
	for i := range n {
		for _, r := range replicas {
			pairs = append(pairs, pair{i, r, score(i, r)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		switch {
		case a.score != b.score:
			return cmp.Compare(b.score, a.score)
		case a.r != b.r:
			return strings.Compare(a.r, b.r)
		}
		return cmp.Compare(a.i, b.i)
	})
	fair := (n + len(replicas) - 1) / len(replicas)
	load := map[string]int{}
	for _, p := range pairs {
		if out[p.i] == "" && load[p.r] < fair {
			out[p.i] = p.r
			load[p.r]++
		}
	}
	return out
}

// liveKeys lists the heartbeat keys in the replicas bucket.
func (p *Pipeline) liveKeys(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, p.live.ttl/4)
	defer cancel()
	lister, err := p.live.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return map[string]bool{}, nil
		}
		return nil, err
	}
	out := map[string]bool{}
	for k := range lister.Keys() {
		out[k] = true
	}
	return out, nil
}

// heldPartition is a partition this replica holds: its lease and its
// running consumer.
type heldPartition struct {
	lease   *lease
	serve   *nats.Subscription // requests forwarded by the other replicas (forward.go)
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // the consumer's, once done is closed
	renewed time.Time
}

// balance takes and gives up partitions as the live replicas come and go,
// until ctx is done; then it gives up every partition it holds.
func (p *Pipeline) balance(ctx context.Context) error {
	held := map[int]*heldPartition{}
	defer func() {
		for i, h := range held {
			p.giveUp(context.WithoutCancel(ctx), i, h, "")
		}
	}()
	live := map[string]bool{}
	var watch jetstream.KeyWatcher
	defer func() {
		if watch != nil {
			_ = watch.Stop()
		}
	}()
	tick := time.NewTicker(p.live.ttl / 4)
	defer tick.Stop()
	first := true
	for {
		// The watch only wakes the loop when a replica appears (so that
		// it gets its share at once); heartbeats that expire leave no
		// trace in it (the bucket's age limit removes them), so the keys
		// are listed every round. A failed listing keeps the last one.
		if watch == nil {
			w, err := p.live.kv.WatchAll(ctx)
			if err == nil {
				watch = w
			} else if ctx.Err() == nil {
				p.log.Warn("watching the replicas' heartbeats failed; trying again", "err", err)
			}
		}
		if keys, err := p.liveKeys(ctx); err == nil {
			live = keys
		} else if ctx.Err() == nil {
			p.log.Warn("listing the replicas' heartbeats failed", "err", err)
		}
		var replicas []string
		for k := range live {
			if k != p.live.key {
				replicas = append(replicas, k)
			}
		}
		alive := p.live.confirmed()
		if alive {
			replicas = append(replicas, p.live.key)
		}
		owners := assign(p.parts.n, replicas)
		for i := range p.parts.n {
			want := alive && owners[i] == p.live.key
			h := held[i]
			switch {
			case h != nil && !want:
				p.giveUp(ctx, i, h, "another replica should hold it")
				delete(held, i)
			case h != nil && h.finished():
				p.giveUp(ctx, i, h, "its consumer stopped")
				delete(held, i)
			case h != nil && time.Since(h.renewed) >= renewEvery(p.live.ttl):
				if err := h.lease.renew(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					p.log.Warn("partition lease lost", "partition", i, "err", err)
					p.giveUp(ctx, i, h, "its lease was lost")
					delete(held, i)
					continue
				}
				h.renewed = time.Now()
			case h == nil && want:
				h, err := p.take(ctx, i)
				switch {
				case err == nil:
					held[i] = h
				case ctx.Err() != nil:
					return nil
				case errors.Is(err, errBusy) || errors.Is(err, errNotLive):
				default:
					p.log.Warn("taking a partition failed; trying again", "partition", i, "err", err)
				}
			}
		}
		if first && alive {
			// What the store kept of partitions it does not hold (from
			// before a restart) is dropped: it would be stale by the
			// time it is held again, and is loaded again then.
			first = false
			p.dropUnheld()
		}
		if !p.waitRound(ctx, tick.C, &watch, live) {
			return nil
		}
	}
}

// waitRound waits for the next balancing round: the tick, or a heartbeat
// of a replica not in live (one that joined). It reports false when ctx
// is done; a watch that ended is set to nil (opened again next round).
func (p *Pipeline) waitRound(ctx context.Context, tick <-chan time.Time, watch *jetstream.KeyWatcher, live map[string]bool) bool {
	var updates <-chan jetstream.KeyValueEntry
	if *watch != nil {
		updates = (*watch).Updates()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			return true
		case e, ok := <-updates:
			switch {
			case !ok:
				*watch = nil
				return true
			case e != nil && e.Operation() == jetstream.KeyValuePut && !live[e.Key()]:
				return true
			}
		}
	}
}

func (h *heldPartition) finished() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// take takes partition i's lease, loads its projects and starts its
// consumer.
func (p *Pipeline) take(ctx context.Context, i int) (*heldPartition, error) {
	l, err := acquire(ctx, p.leases, "partition."+strconv.Itoa(i), p.live)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	set(&p.parts.accepted, i, true)
	projects := p.projectsOf(i)
	n, err := p.store.LoadProjects(ctx, projects)
	if err != nil {
		set(&p.parts.accepted, i, false)
		l.release(context.WithoutCancel(ctx))
		return nil, err
	}
	set(&p.parts.held, i, true)
	serve, err := p.serveForward(i)
	if err != nil {
		set(&p.parts.held, i, false)
		set(&p.parts.accepted, i, false)
		l.release(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("answer requests for partition %d: %w", i, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	h := &heldPartition{lease: l, serve: serve, cancel: cancel, done: make(chan struct{}), renewed: time.Now()}
	go func() {
		defer close(h.done)
		h.err = p.opts.RunPartition(cctx, i, p.Handle)
	}()
	p.m.partitions.Inc()
	p.log.Info("partition taken", "partition", i, "projects", len(projects), "entries", n,
		"took", time.Since(start).Round(time.Millisecond).String(), "from", l.from)
	for _, d := range p.defs {
		if p.parts.of(d.Project) == i {
			p.pendingKick(ctx, d)
		}
	}
	return h, nil
}

// giveUp stops partition i's consumer (the batch in hand finishes),
// drops its projects from the local store and releases its lease. When
// the replica stops (why is empty) the projects stay: a restart that gets
// the partition again loads only what changed meanwhile, and one that
// does not drops them then (see balance).
func (p *Pipeline) giveUp(ctx context.Context, i int, h *heldPartition, why string) {
	_ = h.serve.Unsubscribe()
	h.cancel()
	<-h.done
	set(&p.parts.held, i, false)
	set(&p.parts.accepted, i, false)
	if why != "" {
		p.handOver(i) // handover.go
		if err := p.state.DropProjects(p.projectsOf(i)); err != nil {
			p.log.Error("dropping a partition's projects from the local store", "partition", i, "err", err)
		}
	}
	h.lease.release(ctx)
	p.m.partitions.Dec()
	if why == "" {
		why = "stopping"
	}
	p.log.Info("partition given up", "partition", i, "why", why, "consumer_err", h.err)
}

// dropUnheld drops the projects of every partition this replica does
// not hold from the local store.
func (p *Pipeline) dropUnheld() {
	var drop []string
	for _, name := range p.state.Names() {
		if !p.accepts(name) {
			drop = append(drop, name)
		}
	}
	if err := p.state.DropProjects(drop); err != nil {
		p.log.Error("dropping projects this replica does not hold from the local store", "err", err)
	}
}

// projectsOf returns the projects the local store knows in partition i.
func (p *Pipeline) projectsOf(i int) []string {
	var out []string
	for _, name := range p.state.Names() {
		if p.parts.of(name) == i {
			out = append(out, name)
		}
	}
	return out
}

// pendingKick kicks the definition if its export is pending: a dirty
// mark waits for it, or it has no export yet, or its settings changed
// since its last one (what startupKicks does for every definition).
func (p *Pipeline) pendingKick(ctx context.Context, d *Definition) {
	if _, err := p.dirty.Get(ctx, d.Name); err == nil || !errors.Is(err, jetstream.ErrKeyNotFound) {
		p.kick(d.Name, TriggerStartup)
		return
	}
	st, err := p.records.definitionState(ctx, d.Name)
	if err != nil || st == nil || st.Fingerprint != d.fingerprint() {
		p.kick(d.Name, TriggerStartup)
	}
}
