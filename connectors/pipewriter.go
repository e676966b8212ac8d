package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ErrAborted is returned (wrapped) by Close after Abort.
var ErrAborted = errors.New("write aborted")

// PipeHooks adapt a PipeWriter to its provider.
type PipeHooks struct {
	// Name starts the errors the writer makes itself, e.g. `s3: write "k"`.
	Name string
	// MapErr translates an error of a Write, or of a failed upload, into
	// the connectors sentinels.
	MapErr func(err error) error
	// Failed, when set, is Close's error after the upload failed, given
	// the upload's error and its MapErr translation (a provider may look
	// further, or clean up). Without it Close returns the translation.
	Failed func(uploadErr, mapped error) error
	// Discarded, when set, runs after an aborted or cancelled upload has
	// returned, with the upload's error (nil if it completed after all);
	// Abort returns its error.
	Discarded func(uploadErr error) error
}

// PipeWriter is a Writer for providers whose SDK uploads from an
// io.Reader: Write feeds a pipe that upload reads in its own goroutine,
// Close ends the stream and waits for the upload to finish. Abort, or the
// caller's context being cancelled, ends the stream with an error instead
// of EOF, so the SDK never completes (commits) the upload.
type PipeWriter struct {
	ctx    context.Context // the caller's
	cancel context.CancelFunc
	pw     *io.PipeWriter
	hooks  PipeHooks

	done chan struct{} // closed when the upload goroutine has returned
	err  error         // the upload's result, valid after done

	mu       sync.Mutex
	state    int // pipeOpen, pipeClosed, pipeAborted
	closeErr error
}

const (
	pipeOpen = iota
	pipeClosed
	pipeAborted
)

// NewPipeWriter starts upload(uctx, r) in a goroutine and returns the
// writer that feeds r. uctx ends with ctx, Abort or Close. The caller must
// call Close or Abort (or cancel ctx).
func NewPipeWriter(ctx context.Context, upload func(ctx context.Context, r io.Reader) error, hooks PipeHooks) *PipeWriter {
	pr, pw := io.Pipe()
	uctx, cancel := context.WithCancel(ctx)
	w := &PipeWriter{ctx: ctx, cancel: cancel, pw: pw, hooks: hooks, done: make(chan struct{})}
	// A cancelled context must also unblock an upload waiting on the pipe
	// and a Write waiting for the upload.
	stop := context.AfterFunc(uctx, func() { pw.CloseWithError(context.Cause(uctx)) })
	go func() {
		defer close(w.done)
		err := upload(uctx, pr)
		stop()
		w.err = err
		if err == nil {
			err = errors.New("upload finished")
		}
		pr.CloseWithError(err) // a Write after the end fails with the cause
	}()
	return w
}

// Write hands p to the upload; it blocks while the upload's buffers are
// full.
func (w *PipeWriter) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	if err != nil {
		if cerr := w.ctx.Err(); cerr != nil {
			err = cerr
		} else if errors.Is(err, io.ErrClosedPipe) {
			err = errors.New("writer is closed")
		}
		return n, w.hooks.MapErr(err)
	}
	return n, nil
}

// Close ends the stream and waits for the upload. If the caller's context
// was cancelled before Close, the upload is discarded and Close returns
// the context's error. Later calls return the same result.
func (w *PipeWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case pipeClosed:
		return w.closeErr
	case pipeAborted:
		return fmt.Errorf("%s: %w", w.hooks.Name, ErrAborted)
	}
	w.state = pipeClosed
	if err := w.ctx.Err(); err != nil {
		_ = w.discard(err)
		w.closeErr = fmt.Errorf("%s: %w", w.hooks.Name, err)
		return w.closeErr
	}
	w.pw.Close()
	<-w.done
	w.cancel()
	if w.err != nil {
		w.closeErr = w.hooks.MapErr(w.err)
		if w.hooks.Failed != nil {
			w.closeErr = w.hooks.Failed(w.err, w.closeErr)
		}
	}
	return w.closeErr
}

// Abort discards the upload. It does nothing after Close or Abort.
func (w *PipeWriter) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != pipeOpen {
		return nil
	}
	w.state = pipeAborted
	return w.discard(ErrAborted)
}

// discard stops the upload without completing it: the SDK reads an error
// instead of EOF.
func (w *PipeWriter) discard(cause error) error {
	w.pw.CloseWithError(cause)
	w.cancel()
	<-w.done
	if w.hooks.Discarded != nil {
		return w.hooks.Discarded(w.err)
	}
	return nil
}
