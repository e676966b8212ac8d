package s3_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/s3"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
)

// budgetBuffers is the shared budget of a Bucket with the default
// concurrency: Concurrency+2 part buffers.
const budgetBuffers = s3.DefaultConcurrency + 2

// body is object i's content: n pseudo-random bytes of its own.
func body(i, n int) []byte {
	var seed [32]byte
	seed[0], seed[1] = byte(i), byte(i>>8)
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// wantObject reads key back and compares it with want.
func wantObject(t *testing.T, b *s3.Bucket, key string, want []byte) {
	t.Helper()
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		t.Errorf("NewReader(%q): %v", key, err)
		return
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Errorf("read %q: %v", key, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%q: read back %d bytes (sha256 %x), want %d bytes (sha256 %x)",
			key, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// noUploadsLeft fails t if the bucket has multipart uploads in progress.
func noUploadsLeft(t *testing.T, b *s3.Bucket, bucket string) {
	t.Helper()
	out, err := b.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	for _, u := range out.Uploads {
		t.Errorf("multipart upload left behind: key %q, id %s", aws.ToString(u.Key), aws.ToString(u.UploadId))
	}
}

// TestSharedPartBuffers has many writers, each in a goroutine of its own,
// write objects of several parts to one Bucket at once: they all complete
// with their content, and together they never hold more part buffers
// than the budget, or one each when there are more writers than that
// (each used to hold up to Concurrency+2 of its own).
func TestSharedPartBuffers(t *testing.T) {
	for _, writers := range []int{budgetBuffers, 2 * budgetBuffers} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) {
			if testing.Short() && writers > budgetBuffers {
				t.Skip("moves 100 MB, left out by -short")
			}
			o := s3test.NewBucket(t)
			b := open(t, o)
			size := 2*int(o.PartSize) + int(o.PartSize)/2
			var wg sync.WaitGroup
			errs := make([]error, writers)
			for i := range writers {
				wg.Go(func() {
					data := body(i, size+i)
					w, err := b.NewWriter(t.Context(), fmt.Sprintf("o%d.bin", i), connectors.WriteOptions{IfAbsent: true})
					if err != nil {
						errs[i] = err
						return
					}
					for c := range slices.Chunk(data, 1<<20) {
						if _, err := w.Write(c); err != nil {
							w.Abort()
							errs[i] = err
							return
						}
					}
					errs[i] = w.Close()
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
				}
			}
			held, peak := b.PartBuffers()
			t.Logf("%d writers of %d MiB objects in %d MiB parts: at most %d part buffers held at once (budget %d)",
				writers, size>>20, o.PartSize>>20, peak, budgetBuffers)
			if limit := max(budgetBuffers, writers); peak > limit {
				t.Errorf("writers held up to %d part buffers at once; limit %d", peak, limit)
			}
			if peak == 0 {
				t.Errorf("no part buffer was ever held for %d objects of %d bytes", writers, size)
			}
			if held != 0 {
				t.Errorf("%d part buffers still held after every writer closed", held)
			}
			for i := range writers {
				wantObject(t, b, fmt.Sprintf("o%d.bin", i), body(i, size+i))
			}
			noUploadsLeft(t, b, o.Bucket)
		})
	}
}

// TestWritersFedByOneGoroutine is the exporter's render pass: one
// goroutine feeds more writers than the budget has buffers, a chunk to
// each in turn, so every writer holds a partly filled part while the next
// one needs its first. None may wait for another (that would wait for
// ever): each gets a buffer, and all complete.
func TestWritersFedByOneGoroutine(t *testing.T) {
	o := s3test.NewBucket(t)
	b := open(t, o)
	const writers = 2*budgetBuffers + 1
	size := 2*int(o.PartSize) + 3<<20
	ws := make([]connectors.Writer, writers)
	datas := make([][]byte, writers)
	for i := range ws {
		datas[i] = body(100+i, size)
		w, err := b.NewWriter(t.Context(), fmt.Sprintf("f%d.json", i), connectors.WriteOptions{IfAbsent: true})
		if err != nil {
			t.Fatalf("NewWriter: %v", err)
		}
		ws[i] = w
	}
	const chunk = 1 << 20
	for off := 0; off < size; off += chunk {
		for i, w := range ws {
			if _, err := w.Write(datas[i][off:min(off+chunk, size)]); err != nil {
				for _, w := range ws {
					w.Abort()
				}
				t.Fatalf("writer %d at %d: %v", i, off, err)
			}
		}
	}
	for i, w := range ws {
		if err := w.Close(); err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
	}
	held, peak := b.PartBuffers()
	t.Logf("%d writers fed in turn: at most %d part buffers held at once (budget %d)", writers, peak, budgetBuffers)
	if peak > writers {
		t.Errorf("writers held up to %d part buffers at once; limit one each, %d", peak, writers)
	}
	if held != 0 {
		t.Errorf("%d part buffers still held after every writer closed", held)
	}
	for i := range ws {
		wantObject(t, b, fmt.Sprintf("f%d.json", i), datas[i])
	}
	noUploadsLeft(t, b, o.Bucket)
}

// TestAbortReleasesBuffers aborts one writer midway, with parts sent and
// a part being filled, and cancels another's context: their buffers go
// back to the budget and their multipart uploads are aborted, while a
// third writer goes on and completes.
func TestAbortReleasesBuffers(t *testing.T) {
	o := s3test.NewBucket(t)
	b := open(t, o)
	part := int(o.PartSize)

	kept, err := b.NewWriter(t.Context(), "kept.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	keptData := body(1, 2*part+10)
	if _, err := kept.Write(keptData[:part/2]); err != nil {
		t.Fatal(err)
	}
	if held, _ := b.PartBuffers(); held != 1 {
		t.Fatalf("one writer with half a part: %d part buffers held, want 1", held)
	}

	aborted, err := b.NewWriter(t.Context(), "aborted.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aborted.Write(body(2, 2*part+part/2)); err != nil {
		t.Fatal(err)
	}
	if held, _ := b.PartBuffers(); held < 2 {
		t.Fatalf("two writers with parts to fill: %d part buffers held, want at least 2", held)
	}
	if err := aborted.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if held, _ := b.PartBuffers(); held != 1 {
		t.Errorf("after Abort: %d part buffers held, want 1 (the other writer's)", held)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancelled, err := b.NewWriter(ctx, "cancelled.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cancelled.Write(body(3, part+part/2)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := cancelled.Close(); err == nil {
		t.Error("Close after cancel succeeded")
	}
	if held, _ := b.PartBuffers(); held != 1 {
		t.Errorf("after a cancelled write: %d part buffers held, want 1 (the other writer's)", held)
	}

	if _, err := kept.Write(keptData[part/2:]); err != nil {
		t.Fatal(err)
	}
	if err := kept.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if held, _ := b.PartBuffers(); held != 0 {
		t.Errorf("after every writer: %d part buffers held, want 0", held)
	}
	wantObject(t, b, "kept.bin", keptData)
	wantNotFound(t, b, "aborted.bin")
	wantNotFound(t, b, "cancelled.bin")
	noUploadsLeft(t, b, o.Bucket)
}

// TestDiscardWaitsForPartsInFlight checks that a discarded write (Abort,
// or its context cancelled) lets the parts it has in flight finish before
// it aborts the multipart upload. A part cut mid-request may be stored by
// the server after the abort, and versitygw then recreates the upload:
// an upload left behind that CI once saw. lateParts stands for such a
// server: it holds each part, and the writer's side of the request gives
// up on it at once when its context ends, as a real connection does.
func TestDiscardWaitsForPartsInFlight(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "") // the SDK refuses a CA bundle with a plain *http.Client
	for _, c := range []struct {
		name    string
		discard func(w connectors.Writer, cancel context.CancelFunc) error
	}{
		{"Abort", func(w connectors.Writer, _ context.CancelFunc) error { return w.Abort() }},
		{"cancelled context", func(w connectors.Writer, cancel context.CancelFunc) error {
			cancel()
			if err := w.Close(); err == nil {
				return errors.New("Close after cancel succeeded")
			}
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := s3test.NewBucket(t)
			lp := newLateParts()
			o.HTTPClient = &http.Client{Transport: lp}
			b := open(t, o)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w, err := b.NewWriter(ctx, "discarded.bin", connectors.WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(body(4, 2*int(o.PartSize)+10)); err != nil {
				t.Fatal(err)
			}
			select { // a part is in flight
			case <-lp.held:
			case <-t.Context().Done():
				t.Fatal("no part was sent")
			}
			errc := make(chan error, 1)
			go func() { errc <- c.discard(w, cancel) }()
			select { // a writer that does not wait sends its abort now
			case <-lp.aborting:
			case <-time.After(300 * time.Millisecond):
			}
			lp.letGo()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			lp.sent.Wait() // the parts let go have reached the server
			log := lp.events()
			abort := slices.Index(log, "abort")
			if abort < 0 || slices.Contains(log[abort:], "part stored") {
				t.Errorf("requests as the server saw them: %v; want every part stored before the abort", log)
			}
			wantNotFound(t, b, "discarded.bin")
			noUploadsLeft(t, b, o.Bucket)
		})
	}
}

// TestDiscardCutsPartsThatHang checks the other side of waiting: a part
// that never returns (a bucket that stopped answering) is cut after the
// Bucket's part drain, and Abort returns having sent the abort.
func TestDiscardCutsPartsThatHang(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "") // the SDK refuses a CA bundle with a plain *http.Client
	o := s3test.NewBucket(t)
	lp := newLateParts()
	defer lp.letGo()
	o.HTTPClient = &http.Client{Transport: lp}
	b := open(t, o)
	b.SetPartDrain(50 * time.Millisecond)
	w, err := b.NewWriter(t.Context(), "hung.bin", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body(5, 2*int(o.PartSize)+10)); err != nil {
		t.Fatal(err)
	}
	<-lp.held
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if log := lp.events(); !slices.Equal(log, []string{"abort"}) {
		t.Errorf("requests as the server saw them: %v; want only the abort (the parts still held)", log)
	}
	if held, _ := b.PartBuffers(); held != 0 {
		t.Errorf("after Abort: %d part buffers held, want 0", held)
	}
}

// lateParts is a transport that holds every UploadPart until letGo, while
// the request's context may end: then RoundTrip returns at once, and the
// part still reaches the server later. It logs "part stored" when the
// server has answered a part and "abort" when AbortMultipartUpload goes
// out.
type lateParts struct {
	held     chan struct{}  // gets a value when a part is held
	aborting chan struct{}  // closed when AbortMultipartUpload goes out
	release  chan struct{}  // closed by letGo
	aborted  sync.Once      // closes aborting
	released sync.Once      // closes release
	sent     sync.WaitGroup // the parts' sends to the server, once let go
	mu       sync.Mutex
	log      []string
}

func newLateParts() *lateParts {
	return &lateParts{held: make(chan struct{}, 100), aborting: make(chan struct{}), release: make(chan struct{})}
}

func (lp *lateParts) letGo() { lp.released.Do(func() { close(lp.release) }) }

func (lp *lateParts) note(e string) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.log = append(lp.log, e)
}

func (lp *lateParts) events() []string {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return slices.Clone(lp.log)
}

func (lp *lateParts) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		lp.note("abort")
		lp.aborted.Do(func() { close(lp.aborting) })
	case req.Method == http.MethodPut && q.Has("partNumber"):
		return lp.part(req)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// part sends a copy of the part once let go, whatever becomes of req.
func (lp *lateParts) part(req *http.Request) (*http.Response, error) {
	data, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	late := req.Clone(context.WithoutCancel(req.Context()))
	late.Body = io.NopCloser(bytes.NewReader(data))
	type answer struct {
		resp *http.Response
		err  error
	}
	done := make(chan answer, 1)
	lp.sent.Go(func() {
		lp.held <- struct{}{}
		<-lp.release
		resp, err := http.DefaultTransport.RoundTrip(late)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		lp.note("part stored")
		done <- answer{resp, err}
	})
	select {
	case a := <-done:
		return a.resp, a.err
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

func wantNotFound(t *testing.T, b *s3.Bucket, key string) {
	t.Helper()
	if _, err := b.Attributes(t.Context(), key); !errors.Is(err, connectors.ErrNotFound) {
		t.Errorf("Attributes(%q): err = %v, want ErrNotFound", key, err)
	}
}

// request is what recorder saw of one request to the server.
type request struct {
	op, key                          string
	crc32, sse, ifNoneMatch, ifMatch string
}

// recorder notes each request's operation and the headers the package
// promises, then sends it on to the server.
type recorder struct {
	mu   sync.Mutex
	reqs []request
}

func (rec *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	op := req.Method + " object"
	switch {
	case req.Method == http.MethodPut && q.Has("partNumber"):
		op = "UploadPart"
	case req.Method == http.MethodPut:
		op = "PutObject"
	case req.Method == http.MethodPost && q.Has("uploads"):
		op = "CreateMultipartUpload"
	case req.Method == http.MethodPost && q.Has("uploadId"):
		op = "CompleteMultipartUpload"
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		op = "AbortMultipartUpload"
	}
	crc := req.Header.Get("X-Amz-Checksum-Crc32")
	if crc == "" && strings.EqualFold(req.Header.Get("X-Amz-Trailer"), "x-amz-checksum-crc32") {
		crc = "trailer"
	}
	_, key, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, request{op: op, key: key, crc32: crc,
		sse: req.Header.Get("X-Amz-Server-Side-Encryption"), ifNoneMatch: req.Header.Get("If-None-Match"), ifMatch: req.Header.Get("If-Match")})
	rec.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// of returns the operations sent for key, in order.
func (rec *recorder) of(key string) []request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var rs []request
	for _, r := range rec.reqs {
		if r.key == key {
			rs = append(rs, r)
		}
	}
	return rs
}

// TestRequests checks, on the requests themselves, that an object up to
// one part goes out as one PutObject and a larger one as a multipart
// upload, with a CRC32 on every PutObject and UploadPart, the encryption
// asked for on every object, and the write's condition (If-Match,
// If-None-Match) on the request that publishes it.
func TestRequests(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "") // the SDK refuses a CA bundle with a plain *http.Client
	o := s3test.NewBucket(t)
	o.SSE = "AES256"
	rec := &recorder{}
	o.HTTPClient = &http.Client{Transport: rec}
	b := open(t, o)
	part := int(o.PartSize)
	for _, c := range []struct {
		name string
		size int
		ops  []string
	}{
		{"small", 1 << 10, []string{"PutObject"}},
		{"over the small buffer", s3.SmallSize + 1, []string{"PutObject"}},
		{"one part exactly", part, []string{"PutObject"}},
		{"one part and a byte", part + 1, []string{"CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload"}},
		{"three parts", 2*part + part/2, []string{"CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := strings.ReplaceAll(c.name, " ", "-") + ".bin"
			data := body(c.size, c.size)
			if err := put(t, b, key, 0, connectors.WriteOptions{}); err != nil { // an empty object first
				t.Fatal(err)
			}
			etag := mustETag(t, b, key)
			w, err := b.NewWriter(t.Context(), key, connectors.WriteOptions{IfMatch: etag})
			if err != nil {
				t.Fatal(err)
			}
			for c := range slices.Chunk(data, 64<<10) {
				if _, err := w.Write(c); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			wantObject(t, b, key, data)

			reqs := rec.of(key)
			var ops []string
			for _, r := range reqs[1:] { // after the empty object's PutObject
				if r.op == "GET object" || r.op == "HEAD object" {
					continue
				}
				ops = append(ops, r.op)
				if (r.op == "PutObject" || r.op == "UploadPart") && r.crc32 == "" {
					t.Errorf("%s without a CRC32", r.op)
				}
				if (r.op == "PutObject" || r.op == "CreateMultipartUpload") && r.sse != "AES256" {
					t.Errorf("%s with server-side encryption %q, want AES256", r.op, r.sse)
				}
				publishes := r.op == "PutObject" || r.op == "CompleteMultipartUpload"
				if publishes != (r.ifMatch == etag) {
					t.Errorf("%s with If-Match %q (the write's: %q)", r.op, r.ifMatch, etag)
				}
			}
			if !slices.Equal(ops, c.ops) {
				t.Errorf("requests: %q, want %q", ops, c.ops)
			}
		})
	}

	// If-None-Match goes on the request that publishes.
	for _, size := range []int{10, part + 1} {
		key := fmt.Sprintf("absent-%d.bin", size)
		if err := put(t, b, key, size, connectors.WriteOptions{IfAbsent: true}); err != nil {
			t.Fatal(err)
		}
		for _, r := range rec.of(key) {
			publishes := r.op == "PutObject" || r.op == "CompleteMultipartUpload"
			if publishes != (r.ifNoneMatch == "*") {
				t.Errorf("%s of %d bytes: If-None-Match %q", r.op, size, r.ifNoneMatch)
			}
		}
	}
}

func mustETag(t *testing.T, b *s3.Bucket, key string) string {
	t.Helper()
	a, err := b.Attributes(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return a.ETag
}
