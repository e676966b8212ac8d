package s3

import (
	"context"
	"sync"
)

// budget is the part buffers a Bucket's writers share (the package doc,
// "Memory"): at most max buffers of size bytes, except that a writer that
// needs its first buffer while every buffer is being filled by another
// writer gets one beyond max. Buffers given back are kept for the next
// taker while fewer than max are held or kept, and dropped once none is
// held, so an idle Bucket keeps none.
type budget struct {
	size  int           // bytes per buffer: the part size
	max   int           // buffers shared: Concurrency+2
	slots chan struct{} // one per UploadPart in flight: Concurrency

	mu       sync.Mutex
	held     int           // buffers taken: being filled or being uploaded
	inFlight int           // of held, handed to an upload by their writer
	peak     int           // high-water mark of held
	changed  chan struct{} // closed and replaced when a buffer comes back
	free     [][]byte      // given back, for reuse; held+len(free) <= max unless held > max
}

func newBudget(size, concurrency int) *budget {
	return &budget{
		size:    size,
		max:     concurrency + 2,
		slots:   make(chan struct{}, concurrency),
		changed: make(chan struct{}),
	}
}

// first returns an empty buffer for a writer that holds none. It waits
// while all max buffers are taken and some of them are in flight (their
// uploads give them back without anyone's help); when all of them are
// being filled by writers, it does not wait (those writers may be waiting
// for this one's caller, which waits for this call) and goes beyond max.
func (b *budget) first(ctx context.Context) ([]byte, error) {
	for {
		b.mu.Lock()
		if b.held < b.max || b.inFlight == 0 {
			buf := b.take()
			b.mu.Unlock()
			return buf, nil
		}
		changed := b.changed
		b.mu.Unlock()
		if err := wait(ctx, changed); err != nil {
			return nil, err
		}
	}
}

// next is for a writer whose buffer is full, with more to write: it
// returns a new empty buffer and counts the full one as in flight (the
// writer uploads it in the background and gives it back with
// release(buf, true)), within max, waiting while buffers are in flight.
// When max buffers are taken and none is in flight, it returns false: the
// writer uploads its full buffer itself, then fills it again.
func (b *budget) next(ctx context.Context) ([]byte, bool, error) {
	for {
		b.mu.Lock()
		if b.held < b.max {
			buf := b.take()
			b.inFlight++
			b.mu.Unlock()
			return buf, true, nil
		}
		if b.inFlight == 0 {
			b.mu.Unlock()
			return nil, false, nil
		}
		changed := b.changed
		b.mu.Unlock()
		if err := wait(ctx, changed); err != nil {
			return nil, false, err
		}
	}
}

// take counts one more buffer held and returns it, empty: a free one or
// a new one. b.mu is held.
func (b *budget) take() []byte {
	b.held++
	b.peak = max(b.peak, b.held)
	if n := len(b.free); n > 0 {
		buf := b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
		return buf
	}
	return make([]byte, 0, b.size)
}

// release gives buf back; inFlight says it was counted as in flight.
func (b *budget) release(buf []byte, inFlight bool) {
	b.mu.Lock()
	b.held--
	if inFlight {
		b.inFlight--
	}
	switch {
	case b.held == 0:
		b.free = nil
	case b.held+len(b.free) < b.max:
		b.free = append(b.free, buf[:0])
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// slot waits for one of the Concurrency places for an UploadPart; the
// caller frees it with <-b.slots.
func (b *budget) slot(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// stats returns how many buffers are held now and the most held at once.
func (b *budget) stats() (held, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak
}

func wait(ctx context.Context, changed <-chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
