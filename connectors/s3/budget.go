package s3

import (
	"context"
	"sync"
)

// budget is the part buffers a Bucket's writers share (the package doc,
// "Memory"): at most max buffers of size bytes, except that a writer that
// needs its first buffer while every buffer is being filled by another
// writer gets one beyond max. The buffers are mapped outside the Go heap
// where the system allows it (mapPart), else allocated on it. Buffers
// given back are kept for the next taker; a Bucket keeps the memory of
// at most max of them while some are held and of none once none is held
// (the mapped ones stay mapped with their pages given back, dropPages;
// the others are left to the garbage collector), so an idle Bucket holds
// no part memory. close unmaps them.
type budget struct {
	size  int           // bytes per buffer: the part size
	max   int           // buffers shared: Concurrency+2
	slots chan struct{} // one per UploadPart in flight: Concurrency

	mu       sync.Mutex
	held     int            // buffers taken: being filled or being uploaded
	inFlight int            // of held, handed to an upload by their writer
	peak     int            // high-water mark of held
	changed  chan struct{}  // closed and replaced when a buffer comes back
	free     [][]byte       // given back, for reuse
	mapped   map[*byte]bool // the buffers from mapPart, by their first byte
	closed   bool           // close was called: buffers given back are unmapped
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
	if buf := mapPart(b.size); buf != nil {
		if b.mapped == nil {
			b.mapped = map[*byte]bool{}
		}
		b.mapped[&buf[0]] = true
		return buf[:0]
	}
	return make([]byte, 0, b.size)
}

// isMapped reports whether buf came from mapPart. b.mu is held.
func (b *budget) isMapped(buf []byte) bool { return b.mapped[&buf[:1][0]] }

// release gives buf back; inFlight says it was counted as in flight.
func (b *budget) release(buf []byte, inFlight bool) {
	b.mu.Lock()
	b.held--
	if inFlight {
		b.inFlight--
	}
	buf = buf[:0]
	switch mapped := b.isMapped(buf); {
	case b.closed:
		b.unmap(buf)
	case b.held == 0:
		// Idle: give every buffer's memory back.
		all := append(b.free, buf)
		b.free = nil
		for _, f := range all {
			if b.isMapped(f) {
				dropPages(f)
				b.free = append(b.free, f)
			}
		}
	case b.held+len(b.free) < b.max:
		b.free = append(b.free, buf)
	case mapped:
		// Beyond max: kept mapped for reuse, without its memory.
		dropPages(buf)
		b.free = append(b.free, buf)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// unmap unmaps buf if it came from mapPart. b.mu is held.
func (b *budget) unmap(buf []byte) {
	if b.isMapped(buf) {
		delete(b.mapped, &buf[:1][0])
		unmapPart(buf)
	}
}

// close unmaps the buffers given back, and those held when they are given
// back. No writer of the Bucket may be writing after that.
func (b *budget) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, f := range b.free {
		b.unmap(f)
	}
	b.free = nil
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
