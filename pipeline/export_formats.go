package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
)

// startFormats names the objects of export rec of d (whose Diffgram
// object is rec.Key, stem + ".json") in rec.Formats: one per format d
// writes. Nothing is written yet.
func startFormats(d *Definition, rec *Record, stem string) {
	rec.Formats = map[string]FormatObject{}
	for _, f := range NormalizeFormats(d.Formats) {
		rec.Formats[f] = FormatObject{Key: formatKey(stem, f)}
	}
}

// extraKeys are the keys of rec's objects other than the Diffgram
// document, in the order they are written.
func (r *Record) extraKeys() []string {
	var out []string
	for _, f := range formatOrder[1:] {
		if o, ok := r.Formats[f]; ok {
			out = append(out, o.Key)
		}
	}
	return out
}

// sameFormats reports whether the formats an export of d writes are those
// the definition's newest export (st) wrote.
func sameFormats(d *Definition, st *definitionState) bool {
	had := st.Formats
	if len(had) == 0 {
		had = []string{FormatDiffgram}
	}
	return slices.Equal(NormalizeFormats(d.Formats), had)
}

// errTaken marks a failure to commit an object because its key holds
// other content: the attempt's export id cannot be used again.
var errTaken = errors.New("already exists with different content; not overwritten")

// writeObjects renders the plan into export rec's objects in one pass
// (renderFormats: each file's entry is read once and handed to every
// format), each format streamed into a create-only bucket writer of its
// own as the pass goes: the Diffgram document (rec.Key) and every other
// format rec.Formats names. Once the pass is through, the objects are
// committed together. Every writer is open for the whole pass: with S3
// they share their connection's part buffers, (Concurrency+2) × PartSize
// or one each when there are more writers (docs/contract-decisions.md). It sets rec's bytes, sha256 and content
// hash, and each format's size, SHA-256 and skipped instances. On failure
// every writer not committed is aborted (nothing of it becomes visible)
// and rec is marked failed; the error wraps errTaken when a key held
// other content.
func (p *Pipeline) writeObjects(ctx context.Context, bucket connectors.Bucket, pl *plan, rec *Record) (err error) {
	formats, keys := []string{FormatDiffgram}, []string{rec.Key}
	for _, f := range formatOrder[1:] {
		if o, ok := rec.Formats[f]; ok {
			formats, keys = append(formats, f), append(keys, o.Key)
		}
	}
	var writers []connectors.Writer
	defer func() {
		if err != nil {
			for _, w := range writers {
				_ = w.Abort() // does nothing after a successful Close
			}
		}
	}()
	outs := make([]formatOut, len(formats))
	for i, f := range formats {
		w, err := bucket.NewWriter(ctx, keys[i], connectors.WriteOptions{ContentType: formatContentType(f), IfAbsent: true, Writers: len(formats)})
		if err != nil {
			return p.failed(ctx, rec, fmt.Errorf("open %s: %w", keys[i], err))
		}
		writers = append(writers, w)
		outs[i] = formatOut{format: f, w: &keyedWriter{w: w, key: keys[i]}}
	}
	pl.progress = p.progressFunc(ctx, rec)
	if pl.links, err = p.newMediaLinks(ctx, pl.def, rec.CreatedTime); err != nil {
		return p.failed(ctx, rec, err)
	}
	res, err := pl.renderFormats(outs, rec.ID, rec.CreatedTime)
	if err == nil {
		err = pl.links.done(rec) // media_links_expire_at, links signed
	}
	if err != nil {
		if !errors.As(err, new(*writeError)) {
			err = fmt.Errorf("write %s: %w", rec.Key, err)
		}
		return p.failed(ctx, rec, err)
	}
	// Committed side by side (a commit waits for the object's last
	// upload, or for its fsync); the first failure in format order is
	// the one reported.
	errs := make([]error, len(formats))
	var wg sync.WaitGroup
	for i := range formats {
		wg.Go(func() { errs[i] = commit(ctx, bucket, writers[i], keys[i], res[i].SHA256) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return p.failed(ctx, rec, err)
		}
	}
	rec.Bytes, rec.SHA256, rec.ContentHash = res[0].Bytes, res[0].SHA256, pl.content
	if rec.Formats == nil {
		return nil
	}
	// A new map: the record index holds a copy of rec that shares the
	// one putRecord stored, and the API reads it meanwhile.
	done := maps.Clone(rec.Formats)
	for i, f := range formats {
		res[i].Key = keys[i]
		done[f] = res[i]
	}
	rec.Formats = done
	return nil
}

// keyedWriter is a format's bucket writer in a pass: its write errors
// name its key (writeError).
type keyedWriter struct {
	w   io.Writer
	key string
}

func (k *keyedWriter) Write(b []byte) (int, error) {
	n, err := k.w.Write(b)
	if err != nil {
		err = &writeError{key: k.key, err: err}
	}
	return n, err
}

// writeError is a failed write to the object key.
type writeError struct {
	key string
	err error
}

func (e *writeError) Error() string { return "write " + e.key + ": " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// commit closes w, the create-only writer of key: a key that exists
// already is fine when it holds the same bytes (sum; a retry of this
// export wrote it), else the error wraps errTaken.
func commit(ctx context.Context, bucket connectors.Bucket, w connectors.Writer, key, sum string) error {
	err := w.Close()
	if err == nil {
		return nil
	}
	if !errors.Is(err, connectors.ErrExists) {
		return fmt.Errorf("commit %s: %w", key, err)
	}
	if got, herr := hashObject(ctx, bucket, key); herr != nil || got != sum {
		return fmt.Errorf("%s %w", key, errTaken)
	}
	return nil
}

// classes sets the plan's YOLO class map when d writes YOLO: the map kept
// in the records bucket (so that it survives restarts and is the same on
// every replica), with the plan's labels it lacks appended and stored
// first. A label's class id never changes.
func (p *Pipeline) classes(ctx context.Context, d *Definition, pl *plan) error {
	if !slices.Contains(d.Formats, FormatYOLO) {
		return nil
	}
	for range 10 {
		old, rev, err := p.records.classMap(ctx, d)
		if err != nil {
			return err
		}
		classes := mergeClasses(old, pl.labels)
		if len(classes) == len(old) && rev != 0 {
			pl.classes = classes
			return nil
		}
		err = p.records.putClassMap(ctx, d, classes, rev)
		if err == nil {
			pl.classes = classes
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("YOLO class map: %w", err)
		}
	}
	return errors.New("YOLO class map: too many concurrent updates")
}

// classesAsOf sets the YOLO class map of a point-in-time export's plan
// pl, the one the live exports had at that point, and leaves the stored
// map alone (a replay of the past never changes the ids of today's
// exports). The stored map only grows by appending, so the map at that
// point is a prefix of today's: the one that ends with the last label the
// state then held, removed labels included (an export before the label's
// removal appended it). A label today's map lacks (no live export with
// YOLO ever saw it) is appended in memory only. docs/contract-decisions.md
// says where this can differ from the live export.
func (p *Pipeline) classesAsOf(ctx context.Context, d *Definition, pl *plan) error {
	if !slices.Contains(d.Formats, FormatYOLO) {
		return nil
	}
	now, _, err := p.records.classMap(ctx, d)
	if err != nil {
		return err
	}
	n := 0
	for i, id := range now {
		if pl.allLbls[id] != nil {
			n = i + 1
		}
	}
	pl.classes = mergeClasses(now[:n:n], pl.labels)
	return nil
}
