package gcs

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cloud.google.com/go/storage"

	"github.com/exportstream/exportstream/connectors"
)

// writer is one upload through a storage.Writer.
//
// Why a cancelled context is enough to discard the upload: the SDK streams
// Write's data through a pipe to a goroutine that sends it in chunks, and
// it only finalizes the object (sends the last chunk, or the single request
// of a small object) once it reads the end of the stream. Close ends the
// stream; discard cancels the upload's context first, so every request the
// SDK makes after that, the finalizing one included, fails before it is
// sent, and the SDK's own cancel watcher closes the pipe with the error.
type writer struct {
	b      *driver
	key    string
	opts   connectors.WriteOptions
	ctx    context.Context // the caller's
	cancel context.CancelFunc
	sw     *storage.Writer

	mu       sync.Mutex
	state    int // stateOpen, stateClosed, stateAborted
	closeErr error
}

const (
	stateOpen = iota
	stateClosed
	stateAborted
)

var errClosed = errors.New("writer is closed")

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	state := w.state
	w.mu.Unlock()
	switch state {
	case stateClosed:
		return 0, fmt.Errorf("gcs: write %q: %w", w.key, errClosed)
	case stateAborted:
		return 0, fmt.Errorf("gcs: write %q: %w", w.key, connectors.ErrAborted)
	}
	n, err := w.sw.Write(p)
	if err != nil {
		if cerr := w.ctx.Err(); cerr != nil {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		return n, w.b.mapErr(w.ctx, opWrite, w.key, err, &w.opts)
	}
	return n, nil
}

// Close ends the stream and waits for the upload to be finalized. If the
// caller's context was cancelled before Close, the upload is discarded and
// Close returns the context's error.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case stateClosed:
		return w.closeErr
	case stateAborted:
		return fmt.Errorf("gcs: write %q: %w", w.key, connectors.ErrAborted)
	}
	w.state = stateClosed
	if err := w.ctx.Err(); err != nil {
		w.discard()
		w.closeErr = fmt.Errorf("gcs: write %q: %w", w.key, err)
		return w.closeErr
	}
	err := w.sw.Close()
	w.cancel()
	if err != nil {
		w.closeErr = w.b.mapErr(w.ctx, opWrite, w.key, err, &w.opts)
	}
	return w.closeErr
}

// Abort discards the upload; nothing is created or replaced.
func (w *writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateOpen {
		return nil
	}
	w.state = stateAborted
	w.discard()
	return nil
}

// discard cancels the upload before its stream ends, then waits for the
// SDK's upload goroutine to return. The SDK's Close reports the
// cancellation, which is the expected outcome here.
func (w *writer) discard() {
	w.cancel()
	_ = w.sw.Close()
}
