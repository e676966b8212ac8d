package s3

import (
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident returns how many bytes of buf's pages are in memory.
func resident(t *testing.T, buf []byte) int {
	t.Helper()
	buf = buf[:cap(buf)]
	page := unix.Getpagesize()
	vec := make([]byte, (len(buf)+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v&1) * page
	}
	return n
}

// TestPartBuffersOffHeap checks where part buffers live: outside the Go
// heap, their memory given back once the budget is idle, the same
// mappings reused afterwards, and unmapped by close.
func TestPartBuffersOffHeap(t *testing.T) {
	const size = 8 << 20
	b := newBudget(size, 2)
	ctx := t.Context()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	first, err := b.first(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := [][]byte{first}
	for range b.max - 1 {
		buf, ok, err := b.next(ctx)
		if err != nil || !ok {
			t.Fatalf("next: %v, %v", ok, err)
		}
		held = append(held, buf)
	}
	for i, buf := range held {
		buf = buf[:cap(buf)]
		for j := range buf {
			buf[j] = byte(i + 1)
		}
		held[i] = buf
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > size/2 {
		t.Errorf("%d part buffers of %d MiB grew the Go heap by %d bytes: they should be outside it", len(held), size>>20, grew)
	}
	for i, buf := range held {
		if got := resident(t, buf); got != size {
			t.Errorf("buffer %d, filled: %d bytes resident, want %d", i, got, size)
		}
	}

	// The last one given back leaves the budget idle: no memory kept.
	for i, buf := range held {
		b.release(buf, i > 0)
	}
	if len(b.free) != len(held) {
		t.Fatalf("idle budget keeps %d buffers mapped, want %d", len(b.free), len(held))
	}
	for i, buf := range b.free {
		if got := resident(t, buf); got != 0 {
			t.Errorf("idle budget: buffer %d still has %d bytes resident", i, got)
		}
		if buf[:cap(buf)][size-1] != 0 {
			t.Errorf("idle budget: buffer %d still holds its content", i)
		}
	}

	// Taken again: the same mappings, no new ones.
	again, err := b.first(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.mapped) != len(held) {
		t.Errorf("after reuse %d buffers are mapped, want %d", len(b.mapped), len(held))
	}
	b.close()
	if len(b.mapped) != 1 {
		t.Errorf("closed budget with one buffer held keeps %d mapped, want 1", len(b.mapped))
	}
	b.release(again, false)
	if len(b.mapped) != 0 || len(b.free) != 0 {
		t.Errorf("closed budget keeps %d buffers mapped, %d free; want none", len(b.mapped), len(b.free))
	}
}
