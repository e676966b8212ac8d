package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errBusy: another replica holds the definition's lease.
var errBusy = errors.New("another replica is exporting this definition")

// leaseTTL is how long a lease lasts without renewal: a crashed replica's
// definitions are taken over after at most this long (and as soon as its
// liveness heartbeat has expired, which is sooner: see liveness).
const leaseTTL = 30 * time.Second

type leaseValue struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	// Liveness is the owner's key in the replicas bucket; when it is gone
	// the lease is taken over before it expires (see acquire). Empty (a
	// lease written by a version without heartbeats): the lease is taken
	// when it expires.
	Liveness string `json:"liveness,omitempty"`
}

// lease is one replica's hold on a definition: one writer per export
// definition at a time, across replicas. It is a key in the leases bucket
// taken and renewed with compare-and-swap on the key's revision.
type lease struct {
	kv   jetstream.KeyValue
	key  string
	self *liveness
	rev  uint64
	// from is the owner the lease was taken over from because its
	// heartbeat had stopped ("" when the lease was free or expired).
	from string
}

// conflict reports whether err is a lost compare-and-swap on a key: the
// key was created, changed or deleted by someone else since it was read.
// Besides the sentinels of the key-value API this is the raw "wrong last
// sequence" API error, which Create returns when two replicas create a
// deleted key at once (code 10071, or 10164 on replicated buckets).
func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// acquire takes the definition's lease for self, or returns errBusy if
// another live owner holds it: one whose lease has not expired, and that
// renewed it less than a liveness TTL ago or whose liveness heartbeat is
// still there. It returns an error wrapping errNotLive when self's own
// heartbeat is not confirmed. Losing a race with another replica for the
// key is errBusy, never a failure.
func acquire(ctx context.Context, kv jetstream.KeyValue, key string, self *liveness) (*lease, error) {
	if !self.confirmed() {
		return nil, fmt.Errorf("lease %s: %w", key, errNotLive)
	}
	l := &lease{kv: kv, key: key, self: self}
	val, _ := json.Marshal(leaseValue{Owner: self.owner, Expires: time.Now().Add(leaseTTL), Liveness: self.key})
	rev, err := kv.Create(ctx, key, val)
	if err == nil {
		l.rev = rev
		return l, nil
	}
	if !conflict(err) {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, errBusy // raced with a release; try again later
		}
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	var cur leaseValue
	_ = json.Unmarshal(e.Value(), &cur)
	if cur.Owner != self.owner && time.Now().Before(cur.Expires) {
		// A read of the heartbeat may be a little behind (a clustered
		// bucket's reads are served by any of its replicas), but a live
		// owner renews its lease every renewEvery, which is well within a
		// liveness TTL: a lease written since then is not taken over.
		if time.Since(cur.Expires.Add(-leaseTTL)) < self.ttl {
			return nil, errBusy
		}
		alive, err := self.alive(ctx, cur.Liveness)
		if err != nil {
			return nil, fmt.Errorf("lease %s: heartbeat of its owner %s: %w", key, cur.Owner, err)
		}
		if alive {
			return nil, errBusy
		}
		l.from = cur.Owner
	}
	rev, err = kv.Update(ctx, key, val, e.Revision())
	if err != nil {
		if conflict(err) {
			return nil, errBusy
		}
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	l.rev = rev
	return l, nil
}

// renew extends the lease; it fails if the lease was lost.
func (l *lease) renew(ctx context.Context) error {
	val, _ := json.Marshal(leaseValue{Owner: l.self.owner, Expires: time.Now().Add(leaseTTL), Liveness: l.self.key})
	rev, err := l.kv.Update(ctx, l.key, val, l.rev)
	if err != nil {
		return fmt.Errorf("lease %s lost: %w", l.key, err)
	}
	l.rev = rev
	return nil
}

// renewEvery is how often a lease held for a liveness TTL ttl is renewed.
func renewEvery(ttl time.Duration) time.Duration { return min(leaseTTL/3, ttl/2) }

// keepAlive renews the lease every renewEvery until ctx is done; it calls
// lost if a renewal fails, or as soon as this replica's own heartbeat is
// no longer confirmed (the other replicas may then take the lease before
// it expires).
func (l *lease) keepAlive(ctx context.Context, lost func(error)) {
	t := time.NewTicker(l.self.ttl / 4)
	defer t.Stop()
	renewed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !l.self.confirmed() {
				if ctx.Err() == nil {
					lost(fmt.Errorf("lease %s given up: %w", l.key, errNotLive))
				}
				return
			}
			if time.Since(renewed) < renewEvery(l.self.ttl) {
				continue
			}
			if err := l.renew(ctx); err != nil {
				if ctx.Err() == nil {
					lost(err)
				}
				return
			}
			renewed = time.Now()
		}
	}
}

// release gives the lease up.
func (l *lease) release(ctx context.Context) {
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}
