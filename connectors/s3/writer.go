package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/exportstream/exportstream/connectors"
)

const (
	// smallSize is how much a writer keeps in a buffer of its own before
	// it takes a part buffer from the budget: objects up to this size
	// (manifests, latest.json) never wait for one.
	smallSize = 256 << 10
	// maxParts is S3's limit on the parts of one multipart upload.
	maxParts = 10000
	// partDrain is how long a part upload in flight may go on after the
	// writer's requests ended (Abort, a cancelled context, a failure)
	// before it is cut. A part cut mid-request may still be stored by the
	// server after the multipart upload is aborted (S3 documents this;
	// versitygw even recreates the aborted upload for it), leaving an
	// upload behind; a part that is let finish is removed by the abort.
	partDrain = 5 * time.Second
)

// errClosed ends the requests' context of a writer that Close finished.
var errClosed = errors.New("writer is closed")

// writer is a connectors.Writer that buffers the object in part buffers
// from its Bucket's budget: one PutObject when the object ends within its
// first part, else a multipart upload whose parts go out in the
// background while the budget allows, and from Write itself otherwise.
type writer struct {
	d    *driver
	ctx  context.Context // the caller's
	uctx context.Context // the requests': ends with ctx, Abort, Close or the first failure
	stop context.CancelCauseFunc
	// pctx is the UploadPart requests': it ends partDrain after uctx, or
	// when cleanup has waited for them, so that a part in flight is
	// finished before the multipart upload is aborted.
	pctx context.Context
	pcut context.CancelFunc
	key  string
	opts connectors.WriteOptions

	hook     func() bool   // stops the cleanup that runs when ctx ends
	hookDone chan struct{} // closed when that cleanup has run
	settled  sync.Once
	closing  atomic.Bool // Close was called (read without mu by Abort)

	// mu serializes Write, Close, Abort and the cleanup when ctx ends, and
	// guards what follows.
	mu        sync.Mutex
	small     []byte // the object so far, before it takes a part buffer
	buf       []byte // the part being filled, from d.budget; nil before
	uploadID  string // the multipart upload, once started
	partNum   int32  // parts handed out so far
	completed bool   // the object is written (PutObject or completion)
	closed    bool   // Close was called
	aborted   bool   // Abort was called
	cleaned   bool   // cleanup has run
	result    error  // Close's result
	cleanErr  error  // cleanup's result
	uploads   sync.WaitGroup

	pmu   sync.Mutex // guards parts
	parts []types.CompletedPart
}

// NewWriter starts a write of key. See connectors.Bucket.NewWriter for the
// contract (connectors.Portable has checked ctx and opts). The caller must
// call Close or Abort, or cancel ctx: until then the writer may hold part
// buffers of the Bucket's budget and a multipart upload. An IfMatch write
// on a missing key fails with an error wrapping both ErrPrecondition and
// ErrNotFound (S3 answers 404 NoSuchKey).
func (b *driver) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	uctx, stop := context.WithCancelCause(ctx)
	pctx, pcut := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(uctx, func() { time.AfterFunc(b.partDrain, pcut) })
	w := &writer{d: b, ctx: ctx, uctx: uctx, stop: stop, pctx: pctx, pcut: pcut, key: key, opts: opts, hookDone: make(chan struct{})}
	w.hook = context.AfterFunc(ctx, func() {
		defer close(w.hookDone)
		w.mu.Lock()
		defer w.mu.Unlock()
		_ = w.cleanup() // Close or Abort reports it
	})
	return w, nil
}

// Write buffers p, handing each full part to an upload once more follows
// it. It blocks while the Bucket's budget has no buffer to spare and parts
// are in flight, and while it uploads a part itself.
func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.broken(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			if len(w.small)+len(p) <= smallSize {
				w.small = append(w.small, p...)
				return n + len(p), nil
			}
			buf, err := w.d.budget.first(w.uctx)
			if err != nil {
				return n, w.fail(err)
			}
			w.buf, w.small = append(buf, w.small...), nil
		}
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n, err
			}
		}
		c := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

// broken returns Write's error for a writer that cannot take more: its
// context ended, it was closed or aborted, or an upload failed.
func (w *writer) broken() error {
	switch {
	case w.ctx.Err() != nil:
		return w.mapErr(w.ctx.Err())
	case w.closed || w.aborted:
		return w.mapErr(errClosed)
	case w.uctx.Err() != nil:
		return w.mapErr(context.Cause(w.uctx))
	}
	return nil
}

// flush hands out the full part buffer: to an upload in the background
// when the budget has another buffer for the writer, else it uploads the
// part itself and keeps the buffer.
func (w *writer) flush() error {
	if w.uploadID == "" {
		out, err := w.d.client.CreateMultipartUpload(w.uctx, &s3.CreateMultipartUploadInput{
			Bucket:               aws.String(w.d.bucket),
			Key:                  aws.String(w.key),
			ContentType:          aws.String(w.opts.ContentType),
			ServerSideEncryption: w.d.sse(),
			SSEKMSKeyId:          w.d.kmsKeyID(),
			ChecksumAlgorithm:    types.ChecksumAlgorithmCrc32,
		})
		if err != nil {
			return w.fail(err)
		}
		w.uploadID = aws.ToString(out.UploadId)
	}
	num, err := w.nextPart()
	if err != nil {
		return w.fail(err)
	}
	full := w.buf
	buf, ok, err := w.d.budget.next(w.uctx)
	if err != nil {
		return w.fail(err)
	}
	if !ok {
		if err := w.uploadPart(num, full); err != nil {
			return w.fail(err)
		}
		w.buf = full[:0]
		return nil
	}
	w.buf = buf
	w.uploads.Go(func() {
		defer w.d.budget.release(full, true)
		if err := w.uploadPart(num, full); err != nil {
			w.stop(err) // the first failure is the cause
		}
	})
	return nil
}

// nextPart numbers the next part, within S3's limit of maxParts.
func (w *writer) nextPart() (int32, error) {
	if w.partNum == w.d.maxParts {
		return 0, fmt.Errorf("more than %d parts of %d bytes: the object needs a larger part size (the connection's part_size)", w.d.maxParts, w.d.budget.size)
	}
	w.partNum++
	return w.partNum, nil
}

// uploadPart sends part num, once one of the Bucket's upload slots is
// free, and records it for the completion. Once sent, the request is not
// cut when the writer's requests end, only partDrain later (see pctx).
func (w *writer) uploadPart(num int32, part []byte) error {
	if err := w.d.budget.slot(w.uctx); err != nil {
		return err
	}
	if w.uctx.Err() != nil { // the slot and the end were both ready
		<-w.d.budget.slots
		return context.Cause(w.uctx)
	}
	out, err := w.d.client.UploadPart(w.pctx, &s3.UploadPartInput{
		Bucket:            aws.String(w.d.bucket),
		Key:               aws.String(w.key),
		UploadId:          aws.String(w.uploadID),
		PartNumber:        aws.Int32(num),
		Body:              bytes.NewReader(part),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	<-w.d.budget.slots
	if err != nil {
		return err
	}
	w.pmu.Lock()
	w.parts = append(w.parts, types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32})
	w.pmu.Unlock()
	return nil
}

// fail ends the writer's requests with err as their cause (unless an
// earlier one is) and returns Write's error for it.
func (w *writer) fail(err error) error {
	w.stop(err)
	if w.ctx.Err() != nil {
		return w.mapErr(w.ctx.Err())
	}
	return w.mapErr(context.Cause(w.uctx))
}

// Close sends what is buffered, waits for the parts in flight and
// completes the upload (or sends the one PutObject), with the write's
// conditions. If the caller's context was cancelled before Close, the
// write is discarded and Close returns the context's error. On any
// failure the multipart upload is aborted. Later calls return the same
// result.
func (w *writer) Close() error {
	defer w.settle()
	w.closing.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return w.result
	case w.aborted:
		return fmt.Errorf("s3: write %q: %w", w.key, connectors.ErrAborted)
	}
	w.closed = true
	if err := w.ctx.Err(); err != nil {
		w.result = errors.Join(fmt.Errorf("s3: write %q: %w", w.key, err), w.cleanup())
		return w.result
	}
	err := w.commit()
	if err != nil {
		w.stop(err)
		err = w.mapErr(context.Cause(w.uctx))
		if w.ctx.Err() != nil {
			err = fmt.Errorf("s3: write %q: %w", w.key, w.ctx.Err())
		}
	}
	w.stop(errClosed)
	w.result = errors.Join(err, w.cleanup())
	return w.result
}

// commit writes the object: one PutObject if it never outgrew its first
// part, else its last part and the completion of the multipart upload.
func (w *writer) commit() error {
	if w.uploadID == "" {
		body := w.small
		if w.buf != nil {
			body = w.buf
		}
		in := &s3.PutObjectInput{
			Bucket:               aws.String(w.d.bucket),
			Key:                  aws.String(w.key),
			ContentType:          aws.String(w.opts.ContentType),
			Body:                 bytes.NewReader(body),
			ServerSideEncryption: w.d.sse(),
			SSEKMSKeyId:          w.d.kmsKeyID(),
			ChecksumAlgorithm:    types.ChecksumAlgorithmCrc32,
		}
		in.IfNoneMatch, in.IfMatch = w.conditions()
		if _, err := w.d.client.PutObject(w.uctx, in); err != nil {
			return err
		}
		w.completed = true
		return nil
	}
	// The buffer holds the last part: a part is handed out only when
	// more follows it.
	num, err := w.nextPart()
	if err != nil {
		return err
	}
	err = w.uploadPart(num, w.buf)
	w.uploads.Wait()
	if err != nil {
		return err
	}
	if err := w.uctx.Err(); err != nil {
		return context.Cause(w.uctx) // a part in the background failed
	}
	slices.SortFunc(w.parts, func(a, b types.CompletedPart) int {
		return int(aws.ToInt32(a.PartNumber) - aws.ToInt32(b.PartNumber))
	})
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(w.d.bucket),
		Key:             aws.String(w.key),
		UploadId:        aws.String(w.uploadID),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: w.parts},
	}
	in.IfNoneMatch, in.IfMatch = w.conditions()
	if _, err := w.d.client.CompleteMultipartUpload(w.uctx, in); err != nil {
		return err
	}
	w.completed = true
	return nil
}

// conditions are the write's If-None-Match and If-Match headers.
func (w *writer) conditions() (ifNoneMatch, ifMatch *string) {
	if w.opts.IfAbsent {
		ifNoneMatch = aws.String("*")
	}
	if w.opts.IfMatch != "" {
		ifMatch = aws.String(w.opts.IfMatch)
	}
	return ifNoneMatch, ifMatch
}

// Abort discards the write: nothing becomes visible, the multipart upload
// (if any) is aborted and the writer's buffers go back to the budget. It
// does nothing after Close or Abort.
func (w *writer) Abort() error {
	defer w.settle()
	if !w.closing.Load() {
		// Before taking mu: a Write may hold it, waiting for the budget
		// or an upload.
		w.stop(connectors.ErrAborted)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.aborted {
		return nil
	}
	w.aborted = true
	return w.cleanup()
}

// cleanup ends the writer's requests, waits for its parts in flight, gives
// its buffers back and aborts its multipart upload unless it completed.
// It runs once (w.mu is held); later calls return its first result.
func (w *writer) cleanup() error {
	if w.cleaned {
		return w.cleanErr
	}
	w.cleaned = true
	w.stop(errClosed)
	w.uploads.Wait()
	w.pcut()
	if w.buf != nil {
		w.d.budget.release(w.buf, false)
		w.buf = nil
	}
	w.small = nil
	if w.uploadID != "" && !w.completed {
		w.cleanErr = w.d.abortUpload(w.ctx, w.key, w.uploadID)
	}
	return w.cleanErr
}

// settle stops the cleanup that would run when ctx ends or, if it has
// started, waits for it, so that it is not left running.
func (w *writer) settle() {
	w.settled.Do(func() {
		if !w.hook() {
			<-w.hookDone
		}
	})
}

func (w *writer) mapErr(err error) error { return mapErr("write", w.key, err, &w.opts) }

// sse and kmsKeyID are the encryption headers of every object written.
func (b *driver) sse() types.ServerSideEncryption { return types.ServerSideEncryption(b.opts.SSE) }

func (b *driver) kmsKeyID() *string {
	if b.opts.KMSKeyID == "" {
		return nil
	}
	return aws.String(b.opts.KMSKeyID)
}

// abortUpload aborts the multipart upload id of key, with a context of its
// own: the write's may have ended (Abort, a cancelled ctx).
func (b *driver) abortUpload(ctx context.Context, key, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(b.bucket),
		Key:      aws.String(key),
		UploadId: aws.String(id),
	})
	var ae smithy.APIError
	if err != nil && !(errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload") {
		return fmt.Errorf("s3: abort multipart upload %s of %q: %w", id, key, mapErr("abort", key, err, nil))
	}
	return nil
}
