package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
)

// exportOnce exports the definition if its content changed, and clears
// the dirty mark it covered. resume, when not nil, is the record of an
// earlier attempt whose data object is committed: the attempt goes on
// from there. It returns the record to resume with after a failure.
func (p *Pipeline) exportOnce(ctx context.Context, d *Definition, trigger Trigger, resume *Record) (*Record, error) {
	// An attempt whose request went to a server that went away is made
	// again at once, not after the request's timeout.
	rctx, stop := p.untilReconnect(ctx)
	defer stop()
	rec, err := p.exportAttempt(rctx, d, trigger, resume)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(rctx), errReconnected) {
		err = fmt.Errorf("%w (%w)", errReconnected, err)
	}
	return rec, err
}

// exportAttempt is exportOnce without the reconnect's end.
func (p *Pipeline) exportAttempt(ctx context.Context, d *Definition, trigger Trigger, resume *Record) (*Record, error) {
	l, err := acquire(ctx, p.leases, d.Name, p.live)
	if err != nil {
		return resume, err
	}
	if l.from != "" {
		p.log.Info("lease taken over from a replica whose heartbeat stopped", "definition", d.Name, "from", l.from)
	}
	lctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { l.keepAlive(lctx, func(err error) { cancel(err) }) })
	defer func() {
		cancel(nil)
		wg.Wait()
		l.release(context.WithoutCancel(ctx))
	}()
	ctx = lctx
	p.failInterrupted(ctx, d, resume)
	resume = p.dropSuperseded(ctx, d, resume)

	// The dirty mark this export will clear, and the state it needs.
	var markRev uint64
	var mark dirtyMark
	if e, err := p.dirty.Get(ctx, d.Name); err == nil {
		markRev = e.Revision()
		_ = json.Unmarshal(e.Value(), &mark)
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return resume, fmt.Errorf("dirty mark: %w", err)
	}
	p.store.Expect(mark.StateRevision)
	waitCtx, waitCancel := context.WithTimeout(ctx, 30*time.Second)
	waitStart := time.Now()
	ok := p.state.WaitRev(mark.StateRevision, waitCtx.Done())
	waitCancel()
	if waited := time.Since(waitStart); waited >= time.Second {
		p.log.Info("export waited for the local store to catch up with the state bucket", "definition", d.Name,
			"revision", mark.StateRevision, "waited", waited.Round(time.Millisecond).String())
	}
	if !ok {
		return resume, fmt.Errorf("state did not catch up with revision %d", mark.StateRevision)
	}

	bucket := p.opts.Buckets[d.Connection]
	slot := p.slots[d.Connection]
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return resume, context.Cause(ctx)
	}
	defer func() { <-slot }()

	rec := resume
	committed := resume != nil && resume.Status == StatusUploading
	if !committed {
		var skipped bool
		rec, skipped, err = p.writeData(ctx, d, bucket, trigger, mark, resume)
		if err != nil {
			return rec, err
		}
		if skipped {
			return nil, p.clearMark(ctx, d, markRev)
		}
	}
	if err := p.finish(ctx, d, bucket, rec); err != nil {
		shown := *rec
		shown.Status, shown.StatusText = StatusFailed, err.Error()
		_ = p.records.put(context.WithoutCancel(ctx), &shown)
		return rec, err // still StatusUploading: the retry resumes here
	}
	if !mark.Time.IsZero() {
		p.m.latency.WithLabelValues(d.Name).Observe(time.Since(mark.Time).Seconds())
	}
	if committed {
		// The resumed export was rendered before the mark read above:
		// leave the mark and look again with a fresh render.
		p.kick(d.Name, trigger)
		return nil, nil
	}
	return nil, p.clearMark(ctx, d, markRev)
}

// dropSuperseded returns resume, this replica's earlier attempt to
// retry under its export id and key, or nil when a newer export of the
// definition completed meanwhile (another replica took the lease between
// this one's attempts): the retry would render the newest state under an
// id below latest.json's, which never points at it, and clear the mark.
// The dropped attempt is recorded as failed; the export starts afresh
// with a new id. An attempt whose data object is committed
// (StatusUploading) is kept: finishing it changes nothing downstream and
// it leaves the mark alone.
func (p *Pipeline) dropSuperseded(ctx context.Context, d *Definition, resume *Record) *Record {
	if resume == nil || resume.Status == StatusUploading {
		return resume
	}
	st, err := p.records.definitionState(ctx, d.Name)
	if err != nil || st == nil || st.LastID <= resume.ID {
		return resume
	}
	shown := *resume
	shown.Status = StatusFailed
	shown.StatusText = fmt.Sprintf("superseded: export %d was written while this one waited to be retried", st.LastID)
	_ = p.records.put(context.WithoutCancel(ctx), &shown)
	p.log.Info("dropping a retry superseded by a newer export", "definition", d.Name, "export_id", resume.ID, "newer", st.LastID)
	return nil
}

// failInterrupted marks the definition's unfinished export record, left
// by a replica that stopped mid-export, as failed. (Its data object, if it
// was committed, stays; nothing points at it.) resume is this replica's
// own unfinished export, which is not interrupted.
func (p *Pipeline) failInterrupted(ctx context.Context, d *Definition, resume *Record) {
	id, rev, err := p.records.pending(ctx, d.Name)
	if err != nil || resume != nil && resume.ID == id {
		return
	}
	rec, err := p.Record(ctx, id)
	if err == nil && (rec.Status == StatusGenerating || rec.Status == StatusUploading || rec.Status == StatusPending) {
		rec.Status, rec.StatusText = StatusFailed, "interrupted: the exporting replica stopped before the export was complete"
		if p.records.put(ctx, rec) == nil {
			p.log.Warn("export interrupted by a stopped replica; exporting again", "definition", d.Name, "export_id", id)
		}
	}
	_ = p.records.clearPending(ctx, d.Name, rev)
}

// clearMark deletes the dirty mark if it is still the one the export
// covered; a newer mark stays (and its watch kick exports again).
func (p *Pipeline) clearMark(ctx context.Context, d *Definition, rev uint64) error {
	if rev == 0 {
		return nil
	}
	err := p.dirty.Delete(ctx, d.Name, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("clear dirty mark: %w", err)
	}
	return nil
}

// writeData renders the export into its data object. It reports skipped
// when the content equals the last export's, or when the source matches
// no file (then nothing is written).
// retry, when not nil, is an earlier attempt that failed before its data
// object was committed: its export id and time are kept, so the retry
// writes the same key. On failure the returned record is the one to retry.
func (p *Pipeline) writeData(ctx context.Context, d *Definition, bucket connectors.Bucket, trigger Trigger, mark dirtyMark, retry *Record) (*Record, bool, error) {
	st, err := p.records.definitionState(ctx, d.Name)
	if err != nil {
		return retry, false, fmt.Errorf("definition state: %w", err)
	}
	if retry == nil {
		// A waiting manual request is served by this export, under its id.
		if m := p.requests.takeManual(d.Name); m != nil {
			retry, trigger = m, TriggerManual
		}
	}
	start := time.Now()
	pl := p.plan(d)
	defer pl.close()
	if err := pl.check(); err != nil {
		return retry, false, fmt.Errorf("read the local state store: %w", err)
	}
	if pl.empty != "" {
		if err := p.skip(ctx, d, st, retry, trigger, pl, mark); err != nil {
			return retry, false, err
		}
		return nil, true, nil
	}
	// Decide "unchanged" before uploading anything: the plan's content
	// hash comes from its measure pass (the upload below renders the same
	// bytes from the same view). A manual request always writes.
	// Signed media links are not content (media.go): an export whose
	// links are due is written again all the same.
	if trigger != TriggerManual && st != nil && st.Fingerprint == d.fingerprint() && pl.content == st.ContentHash && sameFormats(d, st) &&
		!d.linksStale(st, time.Now()) {
		if retry != nil {
			// An earlier attempt of this export failed; the content it
			// was to write is the last export's after all.
			_ = p.records.delete(context.WithoutCancel(ctx), retry.ID)
			_ = p.records.clearPending(context.WithoutCancel(ctx), d.Name, 0)
		}
		p.m.skipped.WithLabelValues(d.Name).Inc()
		p.log.Debug("export unchanged; nothing uploaded", "definition", d.Name, "last_export_id", st.LastID)
		return nil, true, nil
	}
	var id int64
	var at time.Time
	if retry != nil {
		id, at = retry.ID, retry.CreatedTime
	} else {
		if id, err = p.records.nextID(ctx); err != nil {
			return nil, false, fmt.Errorf("allocate export id: %w", err)
		}
		at = start.UTC()
	}
	ref := d.ref(pl)
	stem := d.objectStem(id, ref, at)
	rec := &Record{
		ID: id, Name: d.Name, Project: d.Project, Source: string(d.Source.Kind), Ref: ref,
		Completion: d.Completion, IncludeRemoved: d.IncludeRemovedInstances,
		Status: StatusGenerating, CreatedTime: at, FileListLength: pl.ids.Len(), InstanceCount: pl.nInst,
		Connection: d.Connection, Key: stem + ".json", ManifestKey: stem + ".manifest.json",
		Watermark: max(mark.Watermark, pl.watermark), StateRevision: pl.rev, Trigger: trigger, FormatVersion: FormatVersion,
	}
	startFormats(d, rec, stem)
	if err := p.classes(ctx, d, pl); err != nil {
		return retry, false, err
	}
	if err := p.records.put(ctx, rec); err != nil {
		return rec, false, fmt.Errorf("export record: %w", err)
	}
	if err := p.records.setPending(ctx, d.Name, id); err != nil {
		return rec, false, fmt.Errorf("export record: %w", err)
	}
	// Every object is committed before the manifest names it (finish). A
	// retry finding its own object is a success; anything else under a
	// key is never overwritten.
	if err := p.writeObjects(ctx, bucket, pl, rec); err != nil {
		if errors.Is(err, errTaken) {
			return nil, false, err // the next attempt starts a new export
		}
		return rec, false, err
	}
	rec.Status, rec.PercentComplete = StatusUploading, 90
	if err := p.records.put(ctx, rec); err != nil {
		return rec, false, fmt.Errorf("export record: %w", err)
	}
	p.m.duration.WithLabelValues(d.Name).Observe(time.Since(start).Seconds())
	p.m.bytes.WithLabelValues(d.Name).Add(float64(rec.Bytes))
	return rec, false, nil
}

// skip records that the definition's source matched no file: nothing is
// written and latest.json stays as it is. The attempt's record (req, a
// waiting manual request or an earlier failed attempt, or a new one) is
// skipped, with the reason. Without req, a new record is kept only when
// the reason (or the definition) changed since the last skip, so a source
// that stays empty does not add a record per event.
func (p *Pipeline) skip(ctx context.Context, d *Definition, st *definitionState, req *Record, trigger Trigger, pl *plan, mark dirtyMark) error {
	fp := d.fingerprint()
	if req == nil && st != nil && st.Skipped != nil && st.Skipped.Reason == pl.empty && st.Skipped.Fingerprint == fp {
		return nil
	}
	rec := req
	if rec == nil {
		id, err := p.records.nextID(ctx)
		if err != nil {
			return fmt.Errorf("allocate export id: %w", err)
		}
		rec = &Record{ID: id, Name: d.Name, Project: d.Project, Source: string(d.Source.Kind),
			Completion: d.Completion, IncludeRemoved: d.IncludeRemovedInstances, CreatedTime: time.Now().UTC(),
			Connection: d.Connection, Trigger: trigger, FormatVersion: FormatVersion}
	}
	rec.skipped(d, pl)
	rec.Watermark = max(mark.Watermark, pl.watermark)
	if err := p.records.put(ctx, rec); err != nil {
		return fmt.Errorf("export record: %w", err)
	}
	next := definitionState{}
	if st != nil {
		next = *st
	}
	next.Skipped = &skippedAttempt{ID: rec.ID, Reason: pl.empty, Fingerprint: fp}
	if err := p.records.putDefinitionState(ctx, d.Name, next); err != nil {
		return fmt.Errorf("definition state: %w", err)
	}
	p.m.empty.WithLabelValues(d.Name).Inc()
	p.log.Warn("export skipped: its source matches no file; nothing written", "definition", d.Name,
		"export_id", rec.ID, "reason", pl.empty, "trigger", trigger)
	return nil
}

// plan selects the definition's files from a view of the local state
// store that stays open until the plan is closed.
func (p *Pipeline) plan(d *Definition) *plan {
	// The view and the watermark of the batches this replica applied
	// before it, taken together (asof.go, Pipeline.watermark).
	p.viewMu.Lock()
	v := p.state.View()
	seen := p.appliedSeq.Load()
	p.viewMu.Unlock()
	pl := buildPlan(v, d)
	pl.disk = v
	pl.watermark = seen
	return pl
}

// completed returns rec as complete, now, and the manifest that says so.
func completed(rec *Record) (Record, []byte, error) {
	now := time.Now().UTC()
	done := *rec
	done.Status, done.StatusText, done.PercentComplete, done.CompletedTime = StatusComplete, "", 100, &now
	body, err := json.MarshalIndent(manifest{Record: done, DataKey: rec.Key}, "", "  ")
	return done, body, err
}

func (p *Pipeline) failed(ctx context.Context, rec *Record, err error) error {
	rec.Status, rec.StatusText = StatusFailed, err.Error()
	_ = p.records.put(context.WithoutCancel(ctx), rec)
	return err
}

func hashObject(ctx context.Context, b connectors.Bucket, key string) (string, error) {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// manifest is what <stem>.manifest.json and latest.json hold.
type manifest struct {
	Record
	DataKey string `json:"data_key"`
}

// finish writes the manifest, moves latest.json forward, stores the
// record and the definition's state, and publishes the completion event.
func (p *Pipeline) finish(ctx context.Context, d *Definition, bucket connectors.Bucket, rec *Record) error {
	done, body, err := completed(rec)
	if err != nil {
		return err
	}
	if err := putBytes(ctx, bucket, rec.ManifestKey, body, connectors.WriteOptions{IfAbsent: true}); err != nil {
		if !errors.Is(err, connectors.ErrExists) {
			return fmt.Errorf("manifest %s: %w", rec.ManifestKey, err)
		}
		// Written by an earlier attempt of this export: fine if it is
		// this export's manifest.
		var prev manifest
		if err := readJSON(ctx, bucket, rec.ManifestKey, &prev); err != nil || prev.ID != rec.ID || prev.SHA256 != rec.SHA256 {
			return fmt.Errorf("manifest %s exists with other content; not overwritten", rec.ManifestKey)
		}
		done = prev.Record
	}
	if err := p.advanceLatest(ctx, d, bucket, done, body); err != nil {
		return err
	}
	*rec = done
	if err := p.records.put(ctx, rec); err != nil {
		return fmt.Errorf("export record: %w", err)
	}
	var kept []keptExport
	if prev, err := p.records.definitionState(ctx, d.Name); err == nil && prev != nil {
		kept = prev.Kept
	}
	if len(kept) == 0 || kept[len(kept)-1].ID != rec.ID {
		kept = append(kept, keptExport{ID: rec.ID, Key: rec.Key, ManifestKey: rec.ManifestKey, Extra: rec.extraKeys()})
	}
	kept = p.prune(ctx, d, bucket, kept)
	st := definitionState{LastID: rec.ID, ContentHash: rec.ContentHash, Key: rec.Key, Fingerprint: d.fingerprint(), Kept: kept,
		Formats: NormalizeFormats(d.Formats), Media: d.mediaSetting(), LinksSignedAt: signedAt(rec)}
	if err := p.records.putDefinitionState(ctx, d.Name, st); err != nil {
		return fmt.Errorf("definition state: %w", err)
	}
	_ = p.records.clearPending(ctx, d.Name, 0)
	// A failure here fails the attempt: the retry resumes from the
	// manifest (all idempotent) and publishes again.
	if err := p.publishCompleted(ctx, rec); err != nil {
		return err
	}
	p.m.exports.WithLabelValues(d.Name).Inc()
	p.m.files.WithLabelValues(d.Name).Add(float64(rec.FileListLength))
	p.m.lastGood.WithLabelValues(d.Name).Set(float64(time.Now().Unix()))
	p.log.Info("export written", "definition", d.Name, "export_id", rec.ID, "key", rec.Key,
		"files", rec.FileListLength, "instances", rec.InstanceCount, "bytes", rec.Bytes, "trigger", rec.Trigger)
	return nil
}

// prune applies the definition's keep_last to kept (its exports in the
// bucket, oldest first) and returns what is left: it deletes the manifest,
// then the other formats' objects, then the data object, of every export
// but the newest KeepLast, and marks
// their records deleted. Only keys this definition wrote (kept) are ever
// deleted, so other objects under its path survive. An export whose
// objects could not be deleted stays in the list and is tried again after
// the next export.
func (p *Pipeline) prune(ctx context.Context, d *Definition, bucket connectors.Bucket, kept []keptExport) []keptExport {
	if d.KeepLast <= 0 || len(kept) <= d.KeepLast {
		return kept
	}
	old, left := kept[:len(kept)-d.KeepLast], kept[len(kept)-d.KeepLast:]
	var failed []keptExport
	for _, k := range old {
		err := bucket.Delete(ctx, k.ManifestKey)
		for _, key := range append(slices.Clone(k.Extra), k.Key) {
			if err == nil {
				err = bucket.Delete(ctx, key)
			}
		}
		if err != nil {
			p.log.Warn("retention could not delete an old export; trying again after the next export",
				"definition", d.Name, "export_id", k.ID, "key", k.Key, "err", err)
			failed = append(failed, k)
			continue
		}
		if rec, err := p.Record(ctx, k.ID); err == nil {
			now := time.Now().UTC()
			rec.DeletedTime = &now
			_ = p.records.put(ctx, rec)
		}
		p.m.pruned.WithLabelValues(d.Name).Inc()
		p.log.Info("old export deleted (keep_last)", "definition", d.Name, "export_id", k.ID, "key", k.Key, "keep_last", d.KeepLast)
	}
	return append(failed, left...)
}

// advanceLatest replaces latest.json with body unless it already names
// an export at least as new: latest.json never rolls back. The swap is a
// compare-and-swap on the object's ETag.
func (p *Pipeline) advanceLatest(ctx context.Context, d *Definition, bucket connectors.Bucket, rec Record, body []byte) error {
	key := d.Path + "latest.json"
	for range 10 {
		attrs, err := bucket.Attributes(ctx, key)
		opts := connectors.WriteOptions{}
		switch {
		case errors.Is(err, connectors.ErrNotFound):
			opts.IfAbsent = true
		case err != nil:
			return fmt.Errorf("latest.json: %w", err)
		default:
			var cur manifest
			if err := readJSON(ctx, bucket, key, &cur); err == nil && cur.ID >= rec.ID {
				return nil
			}
			opts.IfMatch = attrs.ETag
		}
		err = putBytes(ctx, bucket, key, body, opts)
		if err == nil {
			return nil
		}
		if !errors.Is(err, connectors.ErrExists) && !errors.Is(err, connectors.ErrPrecondition) {
			return fmt.Errorf("latest.json: %w", err)
		}
	}
	return errors.New("latest.json: too many concurrent updates")
}

func putBytes(ctx context.Context, b connectors.Bucket, key string, body []byte, opts connectors.WriteOptions) error {
	if opts.ContentType == "" {
		opts.ContentType = "application/json"
	}
	w, err := b.NewWriter(ctx, key, opts)
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Close()
}

func readJSON(ctx context.Context, b connectors.Bucket, key string, v any) error {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return err
	}
	return json.NewDecoder(bytes.NewReader(data)).Decode(v)
}
