package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultLivenessTTL is Options.LivenessTTL when it is not set: a replica
// that stops heartbeating (killed, cut off from NATS) loses its leases to
// the other replicas this long after its last heartbeat.
const DefaultLivenessTTL = 10 * time.Second

// errNotLive: this replica's heartbeat is not confirmed, so it may not
// hold leases (the others may already consider it gone).
var errNotLive = errors.New("this replica's liveness heartbeat is not confirmed by NATS")

// liveness is this replica's heartbeat: a key in the replicas bucket, a
// key-value bucket whose entries expire ttl after they were last written.
// The replica writes its key every ttl/4 while it runs and deletes it
// when it stops. Every lease names its owner's key, so a lease whose
// owner's key is gone (and which has not been renewed for a ttl either)
// is taken over at once instead of after the lease expires: the owner is
// dead, or cut off from NATS.
//
// The key is random per pipeline start, never derived from host names or
// process ids, which containers share (every container's first process
// is pid 1, and many share a host name).
//
// A replica holds leases only while its own heartbeat is confirmed: a
// heartbeat that NATS acknowledged less than ttl/2 ago (see confirmed),
// so it stops exporting well before the others may take its leases.
type liveness struct {
	kv    jetstream.KeyValue
	log   *slog.Logger
	owner string // host/pid/key: what leases show, for humans
	key   string // random: the key in the replicas bucket
	ttl   time.Duration
	start time.Time             // monotonic base of last
	last  atomic.Int64          // nanoseconds since start at which the last confirmed heartbeat was sent; 0: none
	ok    atomic.Bool           // the last heartbeat succeeded, or none was tried (for logging changes)
	err   atomic.Pointer[error] // the last heartbeat's error (nil pointer: it succeeded)
}

// newLiveness returns the heartbeat of a replica named label (host/pid,
// for humans): its owner identity is label/<random>.
func newLiveness(kv jetstream.KeyValue, label string, ttl time.Duration, log *slog.Logger) (*liveness, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("replica id: %w", err)
	}
	key := hex.EncodeToString(rnd[:])
	lv := &liveness{kv: kv, log: log, owner: label + "/" + key, key: key, ttl: ttl, start: time.Now()}
	lv.ok.Store(true)
	return lv, nil
}

// beat writes the heartbeat once and records when it was sent if NATS
// acknowledged it.
func (lv *liveness) beat(ctx context.Context) error {
	sent := time.Since(lv.start)
	body, _ := json.Marshal(struct {
		Owner string    `json:"owner"`
		Time  time.Time `json:"time"`
	}{lv.owner, time.Now().UTC()})
	ctx, cancel := context.WithTimeout(ctx, lv.ttl/2)
	defer cancel()
	if _, err := lv.kv.Put(ctx, lv.key, body); err != nil {
		return err
	}
	lv.last.Store(max(int64(sent), 1))
	return nil
}

// confirmed reports whether a heartbeat sent less than ttl/2 ago was
// acknowledged: then the key is certainly still there for another ttl/2
// (it expires ttl after the server stored it, which was after it was
// sent).
func (lv *liveness) confirmed() bool {
	last := lv.last.Load()
	return last > 0 && time.Since(lv.start)-time.Duration(last) < lv.ttl/2
}

// run heartbeats every ttl/4 until ctx is done.
func (lv *liveness) run(ctx context.Context) {
	t := time.NewTicker(lv.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lv.beatLogged(ctx)
	}
}

// beatLogged heartbeats once, logging when heartbeats start or stop
// failing.
func (lv *liveness) beatLogged(ctx context.Context) {
	err := lv.beat(ctx)
	if err != nil && ctx.Err() == nil {
		lv.err.Store(&err)
	} else if err == nil {
		lv.err.Store(nil)
	}
	switch {
	case ctx.Err() != nil:
	case err != nil && lv.ok.Swap(false):
		lv.log.Warn("liveness heartbeat failed; this replica stops exporting until NATS answers again",
			"owner", lv.owner, "err", err)
	case err == nil && !lv.ok.Swap(true):
		lv.log.Info("liveness heartbeat confirmed", "owner", lv.owner)
	}
}

// remove deletes the heartbeat key: the replica stops, and the leases it
// may still name can be taken at once.
func (lv *liveness) remove(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = lv.kv.Delete(ctx, lv.key)
}

// alive reports whether the replica whose heartbeat key is key still
// heartbeats. An empty key (a lease written by a version without
// heartbeats) counts as alive: such a lease is taken when it expires.
func (lv *liveness) alive(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return true, nil
	}
	_, err := lv.kv.Get(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return true, err
}

// health is nil while the heartbeat is confirmed (or the first one has
// not been answered yet, at start); else it says since when
// it is not, and why. A replica whose heartbeat NATS does not take (cut
// off, or the JetStream store full) holds no lease and exports nothing.
func (lv *liveness) health() error {
	if lv.confirmed() {
		return nil
	}
	if lv.last.Load() == 0 && lv.err.Load() == nil {
		return nil // starting: the first heartbeat is on its way
	}
	why := errors.New("no heartbeat acknowledged yet")
	if e := lv.err.Load(); e != nil {
		why = *e
	}
	last := lv.last.Load()
	if last == 0 {
		return fmt.Errorf("liveness heartbeat in %s not confirmed: %w", lv.kv.Bucket(), why)
	}
	return fmt.Errorf("liveness heartbeat in %s not confirmed for %s (this replica holds no lease): %w",
		lv.kv.Bucket(), (time.Since(lv.start) - time.Duration(last)).Round(time.Second), why)
}
