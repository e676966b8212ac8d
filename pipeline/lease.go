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
// definitions are taken over after at most this long.
const leaseTTL = 30 * time.Second

type leaseValue struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// lease is one replica's hold on a definition: one writer per export
// definition at a time, across replicas. It is a key in the leases bucket
// taken and renewed with compare-and-swap on the key's revision.
type lease struct {
	kv    jetstream.KeyValue
	key   string
	owner string
	rev   uint64
}

// acquire takes the definition's lease, or returns errBusy if another
// live owner holds it. dead, when not nil, tells an owner known to be gone
// (a crashed process on this host): its lease is taken over at once
// instead of after it expires.
func acquire(ctx context.Context, kv jetstream.KeyValue, key, owner string, dead func(owner string) bool) (*lease, error) {
	l := &lease{kv: kv, key: key, owner: owner}
	val, _ := json.Marshal(leaseValue{Owner: owner, Expires: time.Now().Add(leaseTTL)})
	rev, err := kv.Create(ctx, key, val)
	if err == nil {
		l.rev = rev
		return l, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
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
	if cur.Owner != owner && time.Now().Before(cur.Expires) && (dead == nil || !dead(cur.Owner)) {
		return nil, errBusy
	}
	rev, err = kv.Update(ctx, key, val, e.Revision())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return nil, errBusy
		}
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	l.rev = rev
	return l, nil
}

// renew extends the lease; it fails if the lease was lost.
func (l *lease) renew(ctx context.Context) error {
	val, _ := json.Marshal(leaseValue{Owner: l.owner, Expires: time.Now().Add(leaseTTL)})
	rev, err := l.kv.Update(ctx, l.key, val, l.rev)
	if err != nil {
		return fmt.Errorf("lease %s lost: %w", l.key, err)
	}
	l.rev = rev
	return nil
}

// keepAlive renews the lease every third of its TTL until ctx is done; it
// calls lost if a renewal fails.
func (l *lease) keepAlive(ctx context.Context, lost func(error)) {
	t := time.NewTicker(leaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.renew(ctx); err != nil {
				if ctx.Err() == nil {
					lost(err)
				}
				return
			}
		}
	}
}

// release gives the lease up.
func (l *lease) release(ctx context.Context) {
	_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
}
