package pipeline

// The stages of a formats pass (renderFormats) that run beside the pass's
// own goroutine, so that a pass uses a second core when it has one: each
// format's output is hashed, counted and written by a goroutine of its
// own (outStage), and the picture formats (COCO, YOLO) walk the entries
// in another (pictureStage) while the pass reads the next files. Each
// stage holds two buffers of bounded size (one being filled, one being
// worked on), so memory does not grow with the export; renderFormats owns
// every stage and waits for each (stop) on every path.

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
)

// outStage hashes (SHA-256), counts and writes to w the pieces a sink's
// bufOut hands it, in order, in its own goroutine.
type outStage struct {
	w    io.Writer
	h    hash.Hash
	n    int64
	full chan []byte
	// free holds both buffers when neither is in use, so that giving one
	// back never blocks.
	free chan piece
	done chan struct{}
	// err is the first write error, set by the goroutine before done is
	// closed.
	err     error
	stopped bool
}

// piece is a buffer a stage gives back, with its first error so far.
type piece struct {
	b   []byte
	err error
}

// startOutStage starts the stage writing to w. Its caller must stop it.
func startOutStage(w io.Writer) *outStage {
	o := &outStage{w: w, h: sha256.New(), full: make(chan []byte, 1), free: make(chan piece, 2), done: make(chan struct{})}
	o.free <- piece{b: make([]byte, 0, flushSize+64<<10)}
	go o.run()
	return o
}

func (o *outStage) run() {
	var err error
	defer func() {
		o.err = err
		close(o.done)
	}()
	for p := range o.full {
		if err == nil {
			o.h.Write(p)
			o.n += int64(len(p))
			_, err = o.w.Write(p)
		}
		o.free <- piece{p[:0], err}
	}
}

// swap hands p over to be written and returns an empty buffer to fill
// next, once the stage has written the piece before p, with the stage's
// first write error so far.
func (o *outStage) swap(p []byte) ([]byte, error) {
	o.full <- p
	next := <-o.free
	return next.b, next.err
}

// stop waits until every piece handed over is written and ends the
// stage; it returns the first write error. Calling it again does
// nothing.
func (o *outStage) stop() error {
	if !o.stopped {
		o.stopped = true
		close(o.full)
		<-o.done
	}
	return o.err
}

// sum is the SHA-256 of what the stage wrote, in hex; valid after stop.
func (o *outStage) sum() string { return hex.EncodeToString(o.h.Sum(nil)) }

// batchSize is how much entry text a pictureStage batch gathers before
// it is handed over.
const batchSize = 256 << 10

// entryBatch is entries handed to a pictureStage: their text one after
// the other in data, each ending at its end.
type entryBatch struct {
	data []byte
	ents []batchEntry
}

type batchEntry struct {
	id    int64
	end   int
	child bool
}

// pictureStage feeds a sink (a picture format's, or bothPictures) in its
// own goroutine: the pass renders the entries into the stage's current
// batch (batch, add), which is handed over once it holds batchSize or
// more. add returns the fed sink's first error, a batch late; stop
// returns it, after the last entry is fed. The fed sink's own finish is
// called after stop.
type pictureStage struct {
	s    sink
	cur  *entryBatch
	full chan *entryBatch
	// free holds both batches when neither is in use, so that giving one
	// back never blocks.
	free chan batchBack
	done chan struct{}
	// err is the fed sink's first error, set by the goroutine before
	// done is closed.
	err     error
	stopped bool
}

// batchBack is a batch a pictureStage gives back, with the fed sink's
// first error so far.
type batchBack struct {
	b   *entryBatch
	err error
}

// startPictureStage starts feeding s. Its caller must stop it.
func startPictureStage(s sink) *pictureStage {
	newBatch := func() *entryBatch { return &entryBatch{data: make([]byte, 0, batchSize+64<<10)} }
	p := &pictureStage{s: s, cur: newBatch(), full: make(chan *entryBatch, 1), free: make(chan batchBack, 2), done: make(chan struct{})}
	p.free <- batchBack{b: newBatch()}
	go p.run()
	return p
}

func (p *pictureStage) run() {
	var err error
	defer func() {
		p.err = err
		close(p.done)
	}()
	for b := range p.full {
		start := 0
		for _, e := range b.ents {
			if err == nil {
				err = p.s.entry(e.id, b.data[start:e.end], e.child)
			}
			start = e.end
		}
		b.data, b.ents = b.data[:0], b.ents[:0]
		p.free <- batchBack{b, err}
	}
}

// batch is the current batch's text, for the pass to append the next
// entry to (then add).
func (p *pictureStage) batch() []byte { return p.cur.data }

// add takes the batch's text data, whose last entry, of file id, the
// pass has just appended, and hands the batch over once it holds
// batchSize or more.
func (p *pictureStage) add(id int64, data []byte, child bool) error {
	b := p.cur
	b.data = data
	b.ents = append(b.ents, batchEntry{id: id, end: len(data), child: child})
	if len(data) < batchSize {
		return nil
	}
	p.full <- b
	back := <-p.free
	p.cur = back.b
	return back.err
}

// stop feeds the entries not handed over yet, waits until the fed sink
// has taken every entry and ends the stage; it returns the fed sink's
// first error. Calling it again does nothing.
func (p *pictureStage) stop() error {
	if !p.stopped {
		p.stopped = true
		if len(p.cur.ents) > 0 {
			p.full <- p.cur
		}
		close(p.full)
		<-p.done
	}
	return p.err
}
