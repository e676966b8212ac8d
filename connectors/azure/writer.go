package azure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/exportstream/exportstream/connectors"
)

// NewWriter starts a streaming upload of key into a block blob. See
// connectors.Bucket.NewWriter for the contract, and the package
// documentation for how it is sent. The caller must call Close or Abort
// (or cancel ctx): until then a goroutine feeds the upload. IfAbsent
// together with IfMatch is refused. Close of an IfAbsent write on an
// existing key fails with an error wrapping ErrExists; of an IfMatch write
// with another ETag with ErrPrecondition, and on a missing key with both
// ErrPrecondition and ErrNotFound (Azure answers 412 to both: Close then
// asks for the blob's properties to tell them apart).
func (b *Bucket) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("azure: write %q: %w", key, err)
	}
	if opts.IfAbsent && opts.IfMatch != "" {
		return nil, fmt.Errorf("azure: write %q: IfAbsent and IfMatch cannot be combined", key)
	}
	upload := &blockblob.UploadStreamOptions{
		BlockSize:    b.blockSize,
		Concurrency:  b.conc,
		HTTPHeaders:  &blob.HTTPHeaders{BlobContentType: to.Ptr(cmp.Or(opts.ContentType, defaultContentType))},
		CPKScopeInfo: b.scope,
	}
	switch {
	case opts.IfAbsent:
		upload.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	case opts.IfMatch != "":
		upload.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(opts.IfMatch))}}
	}
	client := b.client.NewBlockBlobClient(key)
	pr, pw := io.Pipe()
	uctx, cancel := context.WithCancel(ctx)
	w := &writer{
		b:      b,
		key:    key,
		opts:   opts,
		ctx:    ctx,
		cancel: cancel,
		pw:     pw,
		done:   make(chan struct{}),
	}
	// A cancelled context must also unblock an upload waiting on the pipe
	// and a Write waiting for the upload.
	stop := context.AfterFunc(uctx, func() { pw.CloseWithError(context.Cause(uctx)) })
	go func() {
		defer close(w.done)
		_, err := client.UploadStream(uctx, pr, upload)
		stop()
		w.err = err
		if err == nil {
			err = errors.New("upload finished")
		}
		pr.CloseWithError(err) // a Write after the end fails with the cause
	}()
	return w, nil
}

// writer feeds one UploadStream through a pipe.
type writer struct {
	b      *Bucket
	key    string
	opts   connectors.WriteOptions
	ctx    context.Context // the caller's
	cancel context.CancelFunc
	pw     *io.PipeWriter

	done chan struct{} // closed when the upload goroutine has returned
	err  error         // the upload's result, valid after done

	mu       sync.Mutex
	state    int // stateOpen, stateClosed, stateAborted
	closeErr error
}

const (
	stateOpen = iota
	stateClosed
	stateAborted
)

var errAborted = errors.New("write aborted")

// Write hands p to the upload. It blocks while all block buffers are
// being uploaded.
func (w *writer) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	if err != nil {
		if cerr := w.ctx.Err(); cerr != nil {
			err = cerr
		} else if errors.Is(err, io.ErrClosedPipe) {
			err = errors.New("writer is closed")
		}
		return n, w.b.mapErr("write", w.key, err, &w.opts)
	}
	return n, nil
}

// Close ends the stream and waits for the commit. If the caller's context
// was cancelled before Close, nothing is committed and Close returns the
// context's error.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case stateClosed:
		return w.closeErr
	case stateAborted:
		return fmt.Errorf("azure: write %q: %w", w.key, errAborted)
	}
	w.state = stateClosed
	if err := w.ctx.Err(); err != nil {
		w.discard(err)
		w.closeErr = fmt.Errorf("azure: write %q: %w", w.key, err)
		return w.closeErr
	}
	w.pw.Close()
	<-w.done
	w.cancel()
	if w.err != nil {
		w.closeErr = w.b.mapErr("write", w.key, w.err, &w.opts)
		if errors.Is(w.closeErr, connectors.ErrPrecondition) && !errors.Is(w.closeErr, connectors.ErrNotFound) && w.missing() {
			w.closeErr = fmt.Errorf("%w: %w", connectors.ErrNotFound, w.closeErr)
		}
	}
	return w.closeErr
}

// missing reports whether the key is known not to exist. Azure answers a
// refused If-Match with 412 ConditionNotMet whether the blob changed or
// is missing; this tells the two apart after the fact.
func (w *writer) missing() bool {
	_, err := w.b.Attributes(context.WithoutCancel(w.ctx), w.key)
	return errors.Is(err, connectors.ErrNotFound)
}

// Abort discards the upload: the blocks staged so far are never committed.
func (w *writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return nil
	}
	w.state = stateAborted
	w.discard(errAborted)
	return nil
}

// discard stops the upload without committing it: UploadStream reads an
// error instead of EOF, so it never sends Put Blob or Put Block List.
func (w *writer) discard(cause error) {
	w.pw.CloseWithError(cause)
	w.cancel()
	<-w.done
}
