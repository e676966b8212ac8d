// Package connectorstest is the conformance suite for connectors.Bucket.
// Every provider's test file calls Run against a real server (or folder);
// each check of the contract in package connectors is a named subtest, so a
// failure names the promise that was broken:
//
//   - RoundTrip, EmptyObject: what is written is read back, with its size
//     and ETag in Attributes and List.
//   - InvisibleUntilClose: readers see the previous object (or ErrNotFound)
//     while a write is in progress, small or large.
//   - IfAbsent, ConcurrentIfAbsent: create-only writes fail with ErrExists
//     and leave the existing object intact; of racing creators exactly one
//     wins.
//   - IfMatch, ConcurrentIfMatch: compare-and-swap on the ETag; a stale or
//     missing object fails with ErrPrecondition.
//   - ConditionChangedDuringWrite: the conditions are checked when Close
//     publishes, not only when the write starts.
//   - Abort, CancelledContext: discarded writes leave the previous object in
//     place and create nothing.
//   - NotFound, List, ListPagination, Delete, OddKeys: the read side.
//   - StreamBoundedMemory: a large object (512 MiB by default) streamed in
//     1 MiB chunks while the live Go heap is sampled; it must stay small.
//   - SharedWriters: four large objects written at once by one goroutine,
//     as an export writes its formats, with WriteOptions.Writers 4: each
//     arrives whole, and the heap grows by at most MaxSharedHeapGrowth; one
//     aborted after its first chunks creates nothing.
//   - ContentType: the content type written is the one Attributes returns
//     and the one a signed URL serves; application/json when not given.
//   - SignedURL: a signed URL is fetched over plain HTTP without
//     credentials and serves the object; a tampered or expired one is
//     refused (where the server verifies signatures).
//   - SignedURLMaxExpiry: a link signed for connectors.MaxSignedURLExpiry
//     (what media links in exports may ask for) serves a binary object
//     byte for byte, with its content type.
//   - Probe: connectors.Probe reports OK and leaves nothing behind.
//
// The suite uses only the Bucket interface, t.Context() and t.Cleanup. It
// never skips: a provider that cannot run it fails.
package connectorstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/exportstream/exportstream/connectors"
)

// Options tune the suite's sizes to the provider. The zero value is a fast
// run suitable for a local folder.
type Options struct {
	// ListObjects is how many objects ListPagination writes and lists.
	// Providers that page (S3 pages at 1000 keys) must set it above their
	// page size. Default 150.
	ListObjects int
	// LargeSize is the size of the "large" variants of the write checks,
	// chosen so that the provider switches to its multipart or block upload
	// (for S3: more than the part size). Default 12 MiB.
	LargeSize int64
	// StreamSize is the size of the object StreamBoundedMemory writes in
	// 1 MiB chunks. Default 512 MiB.
	StreamSize int64
	// MaxHeapGrowth is how much the live Go heap may grow above its baseline
	// while StreamBoundedMemory writes. In-process test servers count too.
	// Default 96 MiB.
	MaxHeapGrowth uint64
	// MaxSharedHeapGrowth is how much the live Go heap may grow while
	// SharedWriters writes four objects at once with
	// WriteOptions.Writers 4. Default MaxHeapGrowth: four writers that
	// share as they are told hold about what one does.
	MaxSharedHeapGrowth uint64
	// SignaturesUnverified says the test server serves signed URLs without
	// checking their signature or expiry (fake-gcs-server): SignedURL then
	// checks only that a fresh URL serves the object.
	SignaturesUnverified bool
}

func (o Options) withDefaults() Options {
	if o.ListObjects <= 0 {
		o.ListObjects = 150
	}
	if o.LargeSize <= 0 {
		o.LargeSize = 12 << 20
	}
	if o.StreamSize <= 0 {
		o.StreamSize = 512 << 20
	}
	if o.MaxHeapGrowth == 0 {
		o.MaxHeapGrowth = 96 << 20
	}
	if o.MaxSharedHeapGrowth == 0 {
		o.MaxSharedHeapGrowth = o.MaxHeapGrowth
	}
	return o
}

// Run runs the conformance suite. newBucket must return a fresh, empty
// bucket for the calling (sub)test; Run closes it when that subtest ends.
// At most one Options may be given.
func Run(t *testing.T, newBucket func(t *testing.T) connectors.Bucket, opts ...Options) {
	t.Helper()
	if len(opts) > 1 {
		t.Fatalf("connectorstest.Run: %d Options given, want at most one", len(opts))
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	s := &suite{opts: o.withDefaults(), newBucket: newBucket}
	checks := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"RoundTrip", s.roundTrip},
		{"EmptyObject", s.emptyObject},
		{"InvisibleUntilClose", s.invisibleUntilClose},
		{"IfAbsent", s.ifAbsent},
		{"ConcurrentIfAbsent", s.concurrentIfAbsent},
		{"IfMatch", s.ifMatch},
		{"ConcurrentIfMatch", s.concurrentIfMatch},
		{"ConditionChangedDuringWrite", s.conditionChangedDuringWrite},
		{"Abort", s.abort},
		{"CancelledContext", s.cancelledContext},
		{"NotFound", s.notFound},
		{"List", s.list},
		{"ListPagination", s.listPagination},
		{"Delete", s.delete},
		{"OddKeys", s.oddKeys},
		{"StreamBoundedMemory", s.streamBoundedMemory},
		{"SharedWriters", s.sharedWriters},
		{"ContentType", s.contentType},
		{"SignedURL", s.signedURL},
		{"SignedURLMaxExpiry", s.signedURLMaxExpiry},
		{"Probe", s.probe},
	}
	for _, c := range checks {
		t.Run(c.name, c.fn)
	}
}

type suite struct {
	opts      Options
	newBucket func(t *testing.T) connectors.Bucket
}

func (s *suite) bucket(t *testing.T) connectors.Bucket {
	t.Helper()
	b := s.newBucket(t)
	if b == nil {
		t.Fatal("newBucket returned nil")
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close bucket: %v", err)
		}
	})
	return b
}

// sizes are the variants of the write checks: one request, and enough for
// the provider's multipart or block upload.
func (s *suite) sizes() []struct {
	name string
	size int64
} {
	return []struct {
		name string
		size int64
	}{{"Small", 1 << 10}, {"Large", s.opts.LargeSize}}
}

// content returns n deterministic bytes that differ for every seed.
func content(seed uint64, n int64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0xc0}))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// write writes data to key and returns Close's error.
func write(t *testing.T, b connectors.Bucket, key string, data []byte, opts connectors.WriteOptions) error {
	t.Helper()
	w, err := b.NewWriter(t.Context(), key, opts)
	if err != nil {
		t.Fatalf("NewWriter(%q): %v", key, err)
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return fmt.Errorf("write: %w", err)
	}
	return w.Close()
}

func mustWrite(t *testing.T, b connectors.Bucket, key string, data []byte) connectors.Attributes {
	t.Helper()
	if err := write(t, b, key, data, connectors.WriteOptions{}); err != nil {
		t.Fatalf("write %q: %v", key, err)
	}
	a, err := b.Attributes(t.Context(), key)
	if err != nil {
		t.Fatalf("Attributes(%q) after write: %v", key, err)
	}
	return a
}

func read(t *testing.T, b connectors.Bucket, key string) ([]byte, error) {
	t.Helper()
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// wantContent fails unless key holds exactly want.
func wantContent(t *testing.T, b connectors.Bucket, key string, want []byte) {
	t.Helper()
	got, err := read(t, b, key)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q: got %d bytes (sha256 %x), want %d bytes (sha256 %x)",
			key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// wantNotFound fails unless key is absent for NewReader and Attributes.
func wantNotFound(t *testing.T, b connectors.Bucket, key string) {
	t.Helper()
	if r, err := b.NewReader(t.Context(), key); !errors.Is(err, connectors.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Fatalf("NewReader(%q): err = %v, want ErrNotFound", key, err)
	}
	if _, err := b.Attributes(t.Context(), key); !errors.Is(err, connectors.ErrNotFound) {
		t.Fatalf("Attributes(%q): err = %v, want ErrNotFound", key, err)
	}
}

// listAll returns every object under prefix, failing on an error.
func listAll(t *testing.T, b connectors.Bucket, prefix string) []connectors.Attributes {
	t.Helper()
	var got []connectors.Attributes
	err := b.List(t.Context(), prefix, func(a connectors.Attributes) bool {
		got = append(got, a)
		return true
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func keys(as []connectors.Attributes) []string {
	ks := make([]string, len(as))
	for i, a := range as {
		ks[i] = a.Key
	}
	return ks
}

func (s *suite) roundTrip(t *testing.T) {
	b := s.bucket(t)
	const key = "exports/p1/data.json"
	data := content(1, 100<<10)
	before := time.Now()
	a := mustWrite(t, b, key, data)
	wantContent(t, b, key, data)

	if a.Key != key {
		t.Errorf("Attributes.Key = %q, want %q", a.Key, key)
	}
	if a.Size != int64(len(data)) {
		t.Errorf("Attributes.Size = %d, want %d", a.Size, len(data))
	}
	if a.ETag == "" {
		t.Error("Attributes.ETag is empty")
	}
	// Servers may keep whole seconds and their clock may differ a little.
	if a.ModTime.Before(before.Add(-time.Minute)) || a.ModTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("Attributes.ModTime = %v, want about %v", a.ModTime, before)
	}

	listed := listAll(t, b, "")
	if len(listed) != 1 {
		t.Fatalf("List: got %q, want [%q]", keys(listed), key)
	}
	if l := listed[0]; l.Key != key || l.Size != a.Size || l.ETag != a.ETag {
		t.Errorf("List: got %+v, want key, size and ETag of %+v", l, a)
	}

	// Rewriting with other content changes the ETag.
	data2 := content(2, 100<<10)
	a2 := mustWrite(t, b, key, data2)
	wantContent(t, b, key, data2)
	if a2.ETag == a.ETag {
		t.Errorf("ETag unchanged after a rewrite: %q", a.ETag)
	}
}

func (s *suite) emptyObject(t *testing.T) {
	b := s.bucket(t)
	const key = "empty.json"
	a := mustWrite(t, b, key, nil)
	if a.Size != 0 {
		t.Errorf("Attributes.Size = %d, want 0", a.Size)
	}
	wantContent(t, b, key, []byte{})

	// A writer closed without any Write also creates an empty object.
	w, err := b.NewWriter(t.Context(), "empty2.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantContent(t, b, "empty2.json", []byte{})
}

func (s *suite) invisibleUntilClose(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			old := content(3, 1000)
			mustWrite(t, b, "replaced.json", old)

			data := content(4, sz.size)
			wNew, err := b.NewWriter(t.Context(), "new.json", connectors.WriteOptions{})
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			wRepl, err := b.NewWriter(t.Context(), "replaced.json", connectors.WriteOptions{})
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			for _, w := range []connectors.Writer{wNew, wRepl} {
				if _, err := w.Write(data); err != nil {
					t.Fatalf("Write: %v", err)
				}
			}

			wantNotFound(t, b, "new.json")
			wantContent(t, b, "replaced.json", old)
			if ks := keys(listAll(t, b, "")); !slices.Equal(ks, []string{"replaced.json"}) {
				t.Errorf("List during writes: got %q, want [replaced.json]", ks)
			}

			for _, w := range []connectors.Writer{wNew, wRepl} {
				if err := w.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
			wantContent(t, b, "new.json", data)
			wantContent(t, b, "replaced.json", data)

			// After Close, Abort does nothing and Write fails.
			if err := wNew.Abort(); err != nil {
				t.Errorf("Abort after Close: %v", err)
			}
			wantContent(t, b, "new.json", data)
			if _, err := wNew.Write([]byte("x")); err == nil {
				t.Error("Write after Close succeeded")
			}
		})
	}
}

func (s *suite) ifAbsent(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			const key = "once.json"
			v1 := content(5, sz.size)
			if err := write(t, b, key, v1, connectors.WriteOptions{IfAbsent: true}); err != nil {
				t.Fatalf("IfAbsent write of a new key: %v", err)
			}
			wantContent(t, b, key, v1)
			a1, err := b.Attributes(t.Context(), key)
			if err != nil {
				t.Fatalf("Attributes: %v", err)
			}

			v2 := content(6, sz.size)
			err = write(t, b, key, v2, connectors.WriteOptions{IfAbsent: true})
			if !errors.Is(err, connectors.ErrExists) {
				t.Fatalf("IfAbsent write of an existing key: err = %v, want ErrExists", err)
			}
			wantContent(t, b, key, v1)
			if a, err := b.Attributes(t.Context(), key); err != nil || a.ETag != a1.ETag {
				t.Errorf("Attributes after refused write: %+v, %v; want ETag %q", a, err, a1.ETag)
			}
		})
	}
}

// race has 6 writers write body(i) to key with opts at once, all of them
// closing together, and returns the one that won. Exactly one must win
// (verb: what it did); every other must fail with lost.
func race(t *testing.T, b connectors.Bucket, key string, opts connectors.WriteOptions, body func(i int) []byte, lost error, verb string) int {
	t.Helper()
	const writers = 6
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			w, err := b.NewWriter(t.Context(), key, opts)
			if err != nil {
				errs[i] = err
				return
			}
			if _, err := w.Write(body(i)); err != nil {
				w.Abort()
				errs[i] = err
				return
			}
			<-start
			errs[i] = w.Close()
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both %s %q", winner, i, verb, key)
		case err == nil:
			winner = i
		case !errors.Is(err, lost):
			t.Errorf("writer %d: err = %v, want nil or %v", i, err, lost)
		}
	}
	if winner < 0 {
		t.Fatalf("no writer %s the key", verb)
	}
	return winner
}

func (s *suite) concurrentIfAbsent(t *testing.T) {
	b := s.bucket(t)
	const key = "race.json"
	body := func(i int) []byte { return content(uint64(100+i), 4<<10) }
	winner := race(t, b, key, connectors.WriteOptions{IfAbsent: true}, body, connectors.ErrExists, "created")
	wantContent(t, b, key, body(winner))
}

func (s *suite) ifMatch(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			const key = "latest.json"
			a1 := mustWrite(t, b, key, content(7, 500))

			v2 := content(8, sz.size)
			if err := write(t, b, key, v2, connectors.WriteOptions{IfMatch: a1.ETag}); err != nil {
				t.Fatalf("IfMatch with the current ETag: %v", err)
			}
			wantContent(t, b, key, v2)
			a2, err := b.Attributes(t.Context(), key)
			if err != nil {
				t.Fatalf("Attributes: %v", err)
			}
			if a2.ETag == a1.ETag {
				t.Fatalf("ETag unchanged after a compare-and-swap: %q", a2.ETag)
			}

			err = write(t, b, key, content(9, sz.size), connectors.WriteOptions{IfMatch: a1.ETag})
			if !errors.Is(err, connectors.ErrPrecondition) {
				t.Fatalf("IfMatch with a stale ETag: err = %v, want ErrPrecondition", err)
			}
			wantContent(t, b, key, v2)

			err = write(t, b, "missing.json", content(10, sz.size), connectors.WriteOptions{IfMatch: a1.ETag})
			if !errors.Is(err, connectors.ErrPrecondition) {
				t.Fatalf("IfMatch on a missing key: err = %v, want ErrPrecondition", err)
			}
			wantNotFound(t, b, "missing.json")
		})
	}
}

func (s *suite) concurrentIfMatch(t *testing.T) {
	b := s.bucket(t)
	const key = "cas.json"
	a := mustWrite(t, b, key, []byte(`{"v":0}`))
	body := func(i int) []byte { return fmt.Appendf(nil, `{"v":%d}`, i+1) }
	winner := race(t, b, key, connectors.WriteOptions{IfMatch: a.ETag}, body, connectors.ErrPrecondition, "swapped")
	wantContent(t, b, key, body(winner))
}

func (s *suite) conditionChangedDuringWrite(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			a := mustWrite(t, b, "cas.json", content(15, 300))

			wAbsent, err := b.NewWriter(t.Context(), "created.json", connectors.WriteOptions{IfAbsent: true})
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			wMatch, err := b.NewWriter(t.Context(), "cas.json", connectors.WriteOptions{IfMatch: a.ETag})
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			for _, w := range []connectors.Writer{wAbsent, wMatch} {
				if _, err := w.Write(content(16, sz.size)); err != nil {
					t.Fatalf("Write: %v", err)
				}
			}

			// Meanwhile, someone else writes both keys.
			other := content(17, 400)
			mustWrite(t, b, "created.json", other)
			mustWrite(t, b, "cas.json", other)

			if err := wAbsent.Close(); !errors.Is(err, connectors.ErrExists) {
				t.Errorf("IfAbsent Close after the key was created: err = %v, want ErrExists", err)
			}
			if err := wMatch.Close(); !errors.Is(err, connectors.ErrPrecondition) {
				t.Errorf("IfMatch Close after the key changed: err = %v, want ErrPrecondition", err)
			}
			wantContent(t, b, "created.json", other)
			wantContent(t, b, "cas.json", other)
		})
	}
}

func (s *suite) abort(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			old := content(11, 700)
			mustWrite(t, b, "kept.json", old)

			for _, key := range []string{"kept.json", "never.json"} {
				w, err := b.NewWriter(t.Context(), key, connectors.WriteOptions{})
				if err != nil {
					t.Fatalf("NewWriter(%q): %v", key, err)
				}
				if _, err := w.Write(content(12, sz.size)); err != nil {
					t.Fatalf("Write: %v", err)
				}
				if err := w.Abort(); err != nil {
					t.Fatalf("Abort: %v", err)
				}
				if err := w.Abort(); err != nil {
					t.Errorf("second Abort: %v", err)
				}
				if err := w.Close(); err == nil {
					t.Errorf("Close after Abort of %q succeeded", key)
				}
			}
			wantContent(t, b, "kept.json", old)
			wantNotFound(t, b, "never.json")

			// Abort before any Write.
			w, err := b.NewWriter(t.Context(), "never.json", connectors.WriteOptions{IfAbsent: true})
			if err != nil {
				t.Fatalf("NewWriter: %v", err)
			}
			if err := w.Abort(); err != nil {
				t.Fatalf("Abort: %v", err)
			}
			wantNotFound(t, b, "never.json")
			if ks := keys(listAll(t, b, "")); !slices.Equal(ks, []string{"kept.json"}) {
				t.Errorf("List after aborts: got %q, want [kept.json]", ks)
			}
		})
	}
}

func (s *suite) cancelledContext(t *testing.T) {
	for _, sz := range s.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			b := s.bucket(t)
			old := content(13, 700)
			mustWrite(t, b, "kept.json", old)

			for _, key := range []string{"kept.json", "never.json"} {
				ctx, cancel := context.WithCancel(t.Context())
				w, err := b.NewWriter(ctx, key, connectors.WriteOptions{})
				if err != nil {
					cancel()
					t.Fatalf("NewWriter(%q): %v", key, err)
				}
				if _, err := w.Write(content(14, sz.size)); err != nil {
					cancel()
					t.Fatalf("Write: %v", err)
				}
				cancel()
				// Writes after the cancel may fail or not; Close must fail.
				w.Write([]byte("more"))
				if err := w.Close(); err == nil {
					t.Errorf("Close after cancel of %q succeeded", key)
				}
				if err := w.Abort(); err != nil {
					t.Errorf("Abort after a failed Close: %v", err)
				}
			}
			wantContent(t, b, "kept.json", old)
			wantNotFound(t, b, "never.json")

			// A context cancelled before NewWriter: either NewWriter or
			// Close fails.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if w, err := b.NewWriter(ctx, "never.json", connectors.WriteOptions{}); err == nil {
				w.Write([]byte("x"))
				if err := w.Close(); err == nil {
					t.Error("Close with a context cancelled before NewWriter succeeded")
				}
			}
			wantNotFound(t, b, "never.json")
		})
	}
}

func (s *suite) notFound(t *testing.T) {
	b := s.bucket(t)
	wantNotFound(t, b, "missing.json")
	wantNotFound(t, b, "no/such/deep/key.json")
	mustWrite(t, b, "dir/file.json", []byte("{}"))
	wantNotFound(t, b, "dir/other.json")
	wantNotFound(t, b, "dir/file.json/below")
}

func (s *suite) list(t *testing.T) {
	b := s.bucket(t)
	// Byte order puts '-' (0x2d) before '/' (0x2f) before letters; a walk
	// of directories that sorts "b" before "b-d" gets this wrong.
	all := []string{
		"lis",
		"list/a.json",
		"list/b-d.json",
		"list/b/c.json",
		"list/ba.json",
		"list/z/y/x.json",
		"other/x.json",
	}
	// Written out of order, so the bucket has to sort.
	attrs := map[string]connectors.Attributes{}
	for _, i := range []int{5, 2, 0, 6, 1, 4, 3} {
		attrs[all[i]] = mustWrite(t, b, all[i], content(uint64(20+i), int64(10+i)))
	}

	cases := []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"list/", all[1:6]},
		{"list", all[1:6]},
		{"lis", all[:6]},
		{"list/b", []string{"list/b-d.json", "list/b/c.json", "list/ba.json"}},
		{"list/b/", []string{"list/b/c.json"}},
		{"list/z/y/x.json", []string{"list/z/y/x.json"}},
		{"list/z/y/x.jsonx", nil},
		{"nope", nil},
		{"list/nope/", nil},
	}
	for _, c := range cases {
		got := listAll(t, b, c.prefix)
		if !slices.Equal(keys(got), c.want) {
			t.Errorf("List(%q): got %q, want %q", c.prefix, keys(got), c.want)
			continue
		}
		for _, a := range got {
			want := attrs[a.Key]
			if a.Size != want.Size || a.ETag != want.ETag || a.ModTime.IsZero() {
				t.Errorf("List(%q): %+v, want size and ETag of %+v and a ModTime", c.prefix, a, want)
			}
		}
	}

	// fn returning false stops the listing.
	var n int
	if err := b.List(t.Context(), "", func(connectors.Attributes) bool { n++; return n < 2 }); err != nil {
		t.Fatalf("List: %v", err)
	}
	if n != 2 {
		t.Errorf("List after fn returned false: fn called %d times, want 2", n)
	}

	// A cancelled context fails the listing.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.List(ctx, "", func(connectors.Attributes) bool { return true }); err == nil {
		t.Error("List with a cancelled context succeeded")
	}
}

func (s *suite) listPagination(t *testing.T) {
	b := s.bucket(t)
	n := s.opts.ListObjects
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("page/%05d.json", i)
	}
	var g errgroup.Group
	g.SetLimit(8)
	for _, key := range want {
		g.Go(func() error {
			w, err := b.NewWriter(t.Context(), key, connectors.WriteOptions{})
			if err != nil {
				return err
			}
			if _, err := io.WriteString(w, key); err != nil {
				w.Abort()
				return err
			}
			return w.Close()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("writing %d objects: %v", n, err)
	}
	mustWrite(t, b, "pagf.json", []byte("after the prefix"))

	got := keys(listAll(t, b, "page/"))
	if !slices.Equal(got, want) {
		t.Fatalf("List(%q): got %d keys, want %d in order (first difference at %d)",
			"page/", len(got), len(want), firstDiff(got, want))
	}

	// Stopping just after the first page boundary.
	stop := min(n, 1001)
	var calls int
	err := b.List(t.Context(), "page/", func(connectors.Attributes) bool { calls++; return calls < stop })
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if calls != stop {
		t.Errorf("List: fn called %d times after returning false at %d", calls, stop)
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func (s *suite) delete(t *testing.T) {
	b := s.bucket(t)
	const key = "gone/soon.json"
	mustWrite(t, b, key, []byte("{}"))
	mustWrite(t, b, "gone/stays.json", []byte("{}"))
	if err := b.Delete(t.Context(), key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, b, key)
	if err := b.Delete(t.Context(), key); err != nil {
		t.Errorf("Delete of a deleted key: %v", err)
	}
	if err := b.Delete(t.Context(), "never/existed.json"); err != nil {
		t.Errorf("Delete of a key that never existed: %v", err)
	}
	if ks := keys(listAll(t, b, "")); !slices.Equal(ks, []string{"gone/stays.json"}) {
		t.Errorf("List after Delete: got %q, want [gone/stays.json]", ks)
	}
	// The key can be created again, create-only.
	if err := write(t, b, key, []byte("again"), connectors.WriteOptions{IfAbsent: true}); err != nil {
		t.Fatalf("IfAbsent write after Delete: %v", err)
	}
	wantContent(t, b, key, []byte("again"))
}

func (s *suite) oddKeys(t *testing.T) {
	b := s.bucket(t)
	odd := []string{
		"a/b/c/d/e.json",
		"with space/file name.json",
		"unicode/ünïcödé/日本語 ✓.json",
		"chars/plus+equals=amp&comma,semi;at@.json",
		"chars/percent%20and%zz.json",
		"chars/quote'tilde~bang!star*(paren)[bracket].json",
		"chars/hash#question?dollar$.json",
		"x" + strings.Repeat("/long-segment-0123456789", 8) + ".json",
	}
	for i, key := range odd {
		data := content(uint64(40+i), int64(50+i))
		a := mustWrite(t, b, key, data)
		if a.Key != key {
			t.Errorf("Attributes(%q).Key = %q", key, a.Key)
		}
		wantContent(t, b, key, data)
		if got := keys(listAll(t, b, key)); !slices.Equal(got, []string{key}) {
			t.Errorf("List(%q): got %q", key, got)
		}
	}
	want := slices.Clone(odd)
	slices.Sort(want)
	if got := keys(listAll(t, b, "")); !slices.Equal(got, want) {
		t.Errorf("List: got %q, want %q", got, want)
	}
	for _, key := range odd {
		if err := b.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%q): %v", key, err)
		}
		wantNotFound(t, b, key)
	}
}

func (s *suite) streamBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skipf("writes %d MiB, left out by -short", s.opts.StreamSize>>20)
	}
	b := s.bucket(t)
	const key = "stream/big.json"
	const chunk = 1 << 20
	size := s.opts.StreamSize

	// One buffer, stamped per chunk: the generator itself holds 1 MiB.
	buf := content(60, chunk)
	sum := sha256.New()

	heap := watchHeap(20 * time.Millisecond)
	start := time.Now()
	w, err := b.NewWriter(t.Context(), key, connectors.WriteOptions{IfAbsent: true})
	if err != nil {
		heap.Stop()
		t.Fatalf("NewWriter: %v", err)
	}
	werr := writeStamped(io.MultiWriter(sum, w), buf, size)
	if werr == nil {
		werr = w.Close()
	} else {
		w.Abort()
	}
	elapsed := time.Since(start)
	growth, allocated := heap.Stop()
	if werr != nil {
		t.Fatalf("streaming %d bytes: %v", size, werr)
	}

	t.Logf("streamed %d MiB in %v: live heap grew by at most %.1f MiB (limit %.1f MiB); allocated %.1f MiB in total",
		size>>20, elapsed.Round(time.Millisecond), mib(growth), mib(s.opts.MaxHeapGrowth), mib(allocated))
	if growth > s.opts.MaxHeapGrowth {
		t.Errorf("live heap grew by %.1f MiB while streaming a %d MiB object; limit %.1f MiB",
			mib(growth), size>>20, mib(s.opts.MaxHeapGrowth))
	}

	a, err := b.Attributes(t.Context(), key)
	if err != nil {
		t.Fatalf("Attributes: %v", err)
	}
	if a.Size != size {
		t.Errorf("Attributes.Size = %d, want %d", a.Size, size)
	}
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer r.Close()
	got := sha256.New()
	n, err := io.Copy(got, r)
	if err != nil {
		t.Fatalf("reading back: %v", err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), sum.Sum(nil)) {
		t.Errorf("read back %d bytes with sha256 %x, want %d bytes with %x", n, got.Sum(nil), size, sum.Sum(nil))
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

func (s *suite) contentType(t *testing.T) {
	b := s.bucket(t)
	for _, c := range []struct{ key, set, want string }{
		{"types/default.json", "", "application/json"},
		{"types/ndjson.jsonl", "application/x-ndjson", "application/x-ndjson"},
		{"types/text.txt", "text/plain; charset=utf-8", "text/plain; charset=utf-8"},
	} {
		if err := write(t, b, c.key, []byte("{}"), connectors.WriteOptions{ContentType: c.set}); err != nil {
			t.Fatalf("write %q: %v", c.key, err)
		}
		a, err := b.Attributes(t.Context(), c.key)
		if err != nil {
			t.Fatalf("Attributes(%q): %v", c.key, err)
		}
		if a.ContentType != c.want {
			t.Errorf("Attributes(%q).ContentType = %q, want %q", c.key, a.ContentType, c.want)
		}
		u, err := b.SignedURL(t.Context(), c.key, time.Minute)
		if err != nil {
			t.Fatalf("SignedURL(%q): %v", c.key, err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET signed URL of %q: %v", c.key, err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || got != c.want {
			t.Errorf("GET signed URL of %q: %s, Content-Type %q, want 200 and %q", c.key, resp.Status, got, c.want)
		}
	}
}

func (s *suite) signedURL(t *testing.T) {
	b := s.bucket(t)
	keys := []string{"signed/plain.json", "signed/with space/ünï ✓+&=.json"}
	for i, key := range keys {
		data := content(uint64(70+i), 3000)
		mustWrite(t, b, key, data)
		u, err := b.SignedURL(t.Context(), key, 10*time.Minute)
		if err != nil {
			t.Fatalf("SignedURL(%q): %v", key, err)
		}
		status, got := httpGet(t, u)
		if status != http.StatusOK || !bytes.Equal(got, data) {
			t.Fatalf("GET signed URL of %q: status %d, %d bytes (want 200 and %d bytes)", key, status, len(got), len(data))
		}
		if s.opts.SignaturesUnverified {
			continue
		}
		// The signature covers the key: the same query on another key
		// is refused.
		other := "signed/other.json"
		mustWrite(t, b, other, []byte("other"))
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatalf("signed URL %q does not parse: %v", u, err)
		}
		pu.RawPath = ""
		pu.Path = pu.Path[:strings.LastIndex(pu.Path, "/signed/")] + "/" + other
		if status, _ := httpGet(t, pu.String()); status == http.StatusOK {
			t.Errorf("a signed URL moved to another key was served (status %d)", status)
		}
	}
	if s.opts.SignaturesUnverified {
		return
	}
	// An expired URL is refused.
	key := keys[0]
	u, err := b.SignedURL(t.Context(), key, time.Second)
	if err != nil {
		t.Fatalf("SignedURL(%q, 1s): %v", key, err)
	}
	time.Sleep(2500 * time.Millisecond)
	if status, _ := httpGet(t, u); status == http.StatusOK {
		t.Errorf("a signed URL was served after it expired (status %d)", status)
	}
}

// signedURLMaxExpiry: media links are signed for up to
// connectors.MaxSignedURLExpiry; every provider signs that long, and the
// link serves a binary object (every byte value) as written.
func (s *suite) signedURLMaxExpiry(t *testing.T) {
	b := s.bucket(t)
	key := "media/frame 0001.jpg"
	data := make([]byte, 0, 64<<10)
	for i := range cap(data) {
		data = append(data, byte(i*7+i/256))
	}
	if err := write(t, b, key, data, connectors.WriteOptions{ContentType: "image/jpeg"}); err != nil {
		t.Fatalf("write %q: %v", key, err)
	}
	u, err := b.SignedURL(t.Context(), key, connectors.MaxSignedURLExpiry)
	if err != nil {
		t.Fatalf("SignedURL(%q, %v): %v", key, connectors.MaxSignedURLExpiry, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("GET signed URL of %q: status %d, %d bytes (want 200 and the %d bytes written)", key, resp.StatusCode, len(got), len(data))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "image/jpeg" {
		t.Errorf("GET signed URL of %q: Content-Type %q, want image/jpeg", key, ct)
	}
}

func httpGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", u, err)
	}
	return resp.StatusCode, body
}

func (s *suite) probe(t *testing.T) {
	b := s.bucket(t)
	mustWrite(t, b, "probe/keep.json", []byte("{}"))
	if r := connectors.Probe(t.Context(), b, "probe/", 30*time.Second); !r.OK() {
		t.Fatalf("Probe: %v", r)
	}
	if got := keys(listAll(t, b, "")); !slices.Equal(got, []string{"probe/keep.json"}) {
		t.Errorf("after Probe the bucket holds %q, want only probe/keep.json", got)
	}
}

// sharedWriters writes four large objects at once, as an export writes its
// formats: WriteOptions.Writers 4, one goroutine feeding the writers in
// turn, 1 MiB at a time. Every object arrives whole, and the live heap
// grows by at most MaxSharedHeapGrowth.
func (s *suite) sharedWriters(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 4 large objects, left out by -short")
	}
	b := s.bucket(t)
	const writers, chunk = 4, 1 << 20
	size := max(s.opts.LargeSize, 3*chunk)
	heap := watchHeap(20 * time.Millisecond)
	ws := make([]connectors.Writer, writers)
	sums := make([]hash.Hash, writers)
	bufs := make([][]byte, writers)
	for i := range ws {
		w, err := b.NewWriter(t.Context(), fmt.Sprintf("shared/%d.json", i), connectors.WriteOptions{IfAbsent: true, Writers: writers})
		if err != nil {
			heap.Stop()
			t.Fatalf("NewWriter %d: %v", i, err)
		}
		defer w.Abort()
		ws[i], sums[i], bufs[i] = w, sha256.New(), content(uint64(70+i), chunk)
	}
	var werr error
	for off := int64(0); off < size && werr == nil; off += chunk {
		for i, w := range ws {
			binary.LittleEndian.PutUint64(bufs[i], uint64(off))
			p := bufs[i][:min(chunk, size-off)]
			sums[i].Write(p)
			if _, werr = w.Write(p); werr != nil {
				werr = fmt.Errorf("writer %d at %d: %w", i, off, werr)
				break
			}
		}
	}
	for i, w := range ws {
		if werr != nil {
			break
		}
		if err := w.Close(); err != nil {
			werr = fmt.Errorf("Close %d: %w", i, err)
		}
	}
	growth, _ := heap.Stop()
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("%d writers of %d MiB at once: live heap grew by at most %.1f MiB (limit %.1f MiB)",
		writers, size>>20, mib(growth), mib(s.opts.MaxSharedHeapGrowth))
	if growth > s.opts.MaxSharedHeapGrowth {
		t.Errorf("live heap grew by %.1f MiB with %d writers sharing; limit %.1f MiB",
			mib(growth), writers, mib(s.opts.MaxSharedHeapGrowth))
	}
	for i := range ws {
		key := fmt.Sprintf("shared/%d.json", i)
		r, err := b.NewReader(t.Context(), key)
		if err != nil {
			t.Fatalf("NewReader(%q): %v", key, err)
		}
		got := sha256.New()
		n, err := io.Copy(got, r)
		r.Close()
		if err != nil || n != size || !bytes.Equal(got.Sum(nil), sums[i].Sum(nil)) {
			t.Errorf("%q: read back %d bytes (%v), want %d bytes with the sha256 written", key, n, err, size)
		}
	}
	// A shared writer aborted after its first chunks creates nothing.
	const aborted = "shared/aborted.json"
	w, err := b.NewWriter(t.Context(), aborted, connectors.WriteOptions{IfAbsent: true, Writers: writers})
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if err := writeStamped(w, content(80, chunk), size); err != nil {
		t.Fatalf("write %q: %v", aborted, err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort: %v", err)
	}
	wantNotFound(t, b, aborted)
}
