package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"

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

// writeObjects renders the plan into export rec's objects and commits
// each before the next is started: the Diffgram document (rec.Key), then
// every other format rec.Formats names, each in its own pass over the
// plan, so that one bucket writer is open at a time (an S3 writer holds
// tens of MiB). It sets rec's bytes, sha256 and content hash, and each
// format's size, SHA-256 and skipped instances. On failure rec is marked
// failed; the error wraps errTaken when a key held other content.
func (p *Pipeline) writeObjects(ctx context.Context, bucket connectors.Bucket, pl *plan, rec *Record) error {
	w, res, err := p.render(ctx, bucket, pl, rec)
	if err != nil {
		return err
	}
	rec.Bytes, rec.SHA256, rec.ContentHash = res.Bytes, res.SHA256, res.ContentHash
	if err := p.commit(ctx, bucket, w, rec, rec.Key, res.SHA256); err != nil {
		return err
	}
	if rec.Formats == nil {
		return nil
	}
	rec.Formats[FormatDiffgram] = FormatObject{Key: rec.Key, SHA256: res.SHA256, Bytes: res.Bytes}
	pl.progress = nil
	for _, f := range formatOrder[1:] {
		o, ok := rec.Formats[f]
		if !ok {
			continue
		}
		w, err := bucket.NewWriter(ctx, o.Key, connectors.WriteOptions{ContentType: formatContentType(f), IfAbsent: true})
		if err != nil {
			return p.failed(ctx, rec, fmt.Errorf("open %s: %w", o.Key, err))
		}
		out, err := pl.renderFormats([]formatOut{{format: f, w: w}}, rec.ID, rec.CreatedTime)
		if err != nil {
			_ = w.Abort()
			return p.failed(ctx, rec, fmt.Errorf("write %s: %w", o.Key, err))
		}
		if err := p.commit(ctx, bucket, w, rec, o.Key, out[0].SHA256); err != nil {
			return err
		}
		out[0].Key = o.Key
		rec.Formats[f] = out[0]
	}
	return nil
}

// commit closes w, the create-only writer of key: a key that exists
// already is fine when it holds the same bytes (sum; a retry of this
// export wrote it), else the error wraps errTaken.
func (p *Pipeline) commit(ctx context.Context, bucket connectors.Bucket, w connectors.Writer, rec *Record, key, sum string) error {
	err := w.Close()
	if err == nil {
		return nil
	}
	if !errors.Is(err, connectors.ErrExists) {
		return p.failed(ctx, rec, fmt.Errorf("commit %s: %w", key, err))
	}
	if got, herr := hashObject(ctx, bucket, key); herr != nil || got != sum {
		return p.failed(ctx, rec, fmt.Errorf("%s %w", key, errTaken))
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
