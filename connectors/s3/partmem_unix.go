//go:build linux || darwin || freebsd

package s3

import "golang.org/x/sys/unix"

// mapPart returns size bytes of memory mapped outside the Go heap (an
// anonymous private mapping), or nil if the mapping fails. Part buffers
// live outside the heap so that the garbage collector's headroom (GOGC)
// is not spent on them: on the heap, 32 MiB of buffers held through an
// export let the heap grow by another 16 MiB at the service's GOGC of 50.
func mapPart(size int) []byte {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil
	}
	return b
}

// dropPages gives the pages of a mapped buffer back to the system; the
// buffer stays mapped and reads as zeros until it is written again. A
// request still reading it (an HTTP transport may finish sending a body
// after its response came) reads zeros instead of faulting.
func dropPages(b []byte) { _ = unix.Madvise(b[:cap(b)], unix.MADV_DONTNEED) }

// unmapPart unmaps a buffer from mapPart.
func unmapPart(b []byte) { _ = unix.Munmap(b[:cap(b)]) }
