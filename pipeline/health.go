package pipeline

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// What readiness needs from the pipeline: whether this replica's writes
// to JetStream succeed. A replica whose state writes fail cannot apply
// events (they are nak'd and redelivered until the writes work again),
// and one whose writes find the JetStream store full cannot do its work
// at all, whatever its buckets say.

// JetStream error codes of a store that refuses to grow.
const (
	jsAccountResourcesExceeded = 10002 // the account's JetStream limits
	jsInsufficientResources    = 10023 // the server's (max_file_store, max_memory_store)
	jsMemoryResourcesExceeded  = 10028
	jsStorageResourcesExceeded = 10047
	jsStreamStoreFailed        = 10077 // a stream at its own limits: "maximum bytes exceeded", …
)

// StoreFull reports whether err is JetStream refusing to store a message
// for want of room: the server, or the account, out of storage
// ("insufficient resources"), or a stream or key-value bucket at its own
// limits ("maximum bytes exceeded").
func StoreFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsAccountResourcesExceeded, jsInsufficientResources, jsMemoryResourcesExceeded,
		jsStorageResourcesExceeded, jsStreamStoreFailed:
		return true
	}
	return false
}

// writeHealth keeps the outcome of the latest state write (a batch of
// snapshots and its dirty marks) and of the latest export-record write.
type writeHealth struct {
	mu      sync.Mutex
	state   outcome
	records outcome
}

// outcome is how a kind of write went the last time, and since when it
// fails.
type outcome struct {
	err   error
	since time.Time // first failure of the current run of failures
}

func (o *outcome) note(err error) {
	switch {
	case err == nil:
		o.err, o.since = nil, time.Time{}
	case o.err == nil:
		o.err, o.since = err, time.Now()
	default:
		o.err = err
	}
}

// noteState records the outcome of a state write.
func (h *writeHealth) noteState(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state.note(err)
}

// noteRecord records the outcome of an export-record write.
func (h *writeHealth) noteRecord(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records.note(err)
}

// WriteHealth returns nil while this replica can write to JetStream: its
// latest state write (the snapshots and dirty marks of a batch of events)
// succeeded, or none was needed yet, and its latest export-record write
// did not find the store full. Otherwise the error says which writes
// fail, since when, and why; it clears with the next write of that kind
// that succeeds (a failed batch is redelivered within seconds; a failed
// export is retried).
func (p *Pipeline) WriteHealth() error {
	h := &p.health
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if err := h.state.err; err != nil {
		what := "state writes fail"
		if StoreFull(err) {
			what = "state writes fail, the JetStream store is full"
		}
		errs = append(errs, fmt.Errorf("%s (since %s): %w", what, h.state.since.UTC().Format(time.RFC3339), err))
	}
	if err := p.live.health(); err != nil {
		errs = append(errs, err)
	}
	if err := h.records.err; err != nil && StoreFull(err) {
		errs = append(errs, fmt.Errorf("export-record writes fail, the JetStream store is full (since %s): %w",
			h.records.since.UTC().Format(time.RFC3339), err))
	}
	return errors.Join(errs...)
}
