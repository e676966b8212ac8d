package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
)

// What the API and the CLI steer the pipeline with: the export records,
// exports on demand (for a definition or an ad-hoc source), and waiting
// for an export to finish.

// ErrUnknownDefinition is returned (wrapped) for a definition name that
// is not configured.
var ErrUnknownDefinition = errors.New("no such export definition")

// ErrUnknownConnection is returned (wrapped) for an ad-hoc export to a
// connection that is not configured.
var ErrUnknownConnection = errors.New("no such connection")

// EmptySourceError is returned by GenerateAdhoc when the source matches no
// file: nothing is written, and Record (status skipped) says why in its
// StatusText, which is also the error's text.
type EmptySourceError struct {
	Record *Record
}

func (e *EmptySourceError) Error() string { return e.Record.StatusText }

// AdhocName is the Record.Name of ad-hoc exports; they are written under
// AdhocPath in their connection, with a manifest and no latest.json.
const (
	AdhocName = "adhoc"
	AdhocPath = "exports/adhoc/"
)

// Definitions returns the configured definitions, by name.
func (p *Pipeline) Definitions() []*Definition {
	return slices.SortedFunc(slices.Values(p.defs), func(a, b *Definition) int { return strings.Compare(a.Name, b.Name) })
}

// Definition returns the named definition, or nil.
func (p *Pipeline) Definition(name string) *Definition { return p.byName[name] }

// Bucket returns the named connection's bucket, or nil.
func (p *Pipeline) Bucket(connection string) connectors.Bucket { return p.opts.Buckets[connection] }

// Generate asks for an export of the definition now, whatever changed,
// and returns its record (status pending; its id is the export's). A
// request made while another one of the same definition still waits
// returns that one: both are served by one export. The export runs on
// this replica as soon as it holds the definition's lease.
//
// On a partitioned pipeline, a definition of a project another replica
// holds is asked of that replica (forward.go).
func (p *Pipeline) Generate(ctx context.Context, name string) (*Record, error) {
	return p.generate(ctx, name, true)
}

// generate is Generate; forward says whether a request for a project held
// elsewhere is forwarded (else the error wraps ErrNotHeld).
func (p *Pipeline) generate(ctx context.Context, name string, forward bool) (*Record, error) {
	d := p.byName[name]
	if d == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownDefinition, name)
	}
	if err := p.checkHeld(d.Project); err != nil {
		if forward {
			return p.forward(ctx, d.Project, forwardRequest{Definition: name})
		}
		return nil, err
	}
	return p.requests.manual(name, func() (*Record, error) { return p.newRequest(ctx, d) },
		func() { p.kick(name, TriggerManual) })
}

// newRequest allocates an export id and stores the pending record of a
// manual export of d.
func (p *Pipeline) newRequest(ctx context.Context, d *Definition) (*Record, error) {
	id, err := p.records.nextID(ctx)
	if err != nil {
		return nil, fmt.Errorf("allocate export id: %w", err)
	}
	r := &Record{
		ID: id, Name: d.Name, Project: d.Project, Source: string(d.Source.Kind),
		Completion: d.Completion, IncludeRemoved: d.IncludeRemovedInstances, Status: StatusPending,
		CreatedTime: time.Now().UTC(), Connection: d.Connection, Trigger: TriggerManual, FormatVersion: FormatVersion,
	}
	if err := p.records.put(ctx, r); err != nil {
		return nil, fmt.Errorf("export record: %w", err)
	}
	return r, nil
}

// ErrNotHeld is returned (wrapped) by Generate and GenerateAdhoc on a
// partitioned pipeline for a project of a partition no replica holds at
// the moment (it is being handed over; a partition another replica holds
// is asked of it). Ask again.
var ErrNotHeld = errors.New("another replica holds this project")

// checkHeld returns an error wrapping ErrNotHeld unless this replica
// holds the project.
func (p *Pipeline) checkHeld(project string) error {
	if p.holds(project) {
		return nil
	}
	return fmt.Errorf("%w: %q is in partition %d of %d, which this replica (%s) does not hold (it holds %v)",
		ErrNotHeld, project, p.parts.of(project), p.parts.n, p.live.owner, p.HeldPartitions())
}

// ErrTooManyAdhoc is returned (wrapped) by GenerateAdhoc when
// Options.MaxAdhoc ad-hoc exports already run on this replica: ask again
// later.
var ErrTooManyAdhoc = errors.New("too many ad-hoc exports running")

// DefaultMaxAdhoc is Options.MaxAdhoc when it is not set.
const DefaultMaxAdhoc = 4

// adhocStartTimeout bounds the start of an ad-hoc export (its export id,
// pending record and plan), which other identical requests wait for.
const adhocStartTimeout = 15 * time.Second

// GenerateAdhoc starts an export of an ad-hoc source (d's project,
// source, completion, removed-instances choice, formats and connection;
// its name and path are set here) and returns its record at once (status
// pending). The export runs in the background on this replica; follow it
// with WaitRecord. It renders the state as it is at the call (for a
// request served by a running export, at that export's call). When the
// source matches no file, nothing is written and the error is
// an *EmptySourceError. It writes the data object and its manifest under
// AdhocPath, and no latest.json.
//
// A request identical to one whose export is still starting or running
// on this replica (same project, source, completion, removed-instances
// choice, formats and connection) is served by that export: it returns the same
// record (or the same error) and starts nothing. Beyond Options.MaxAdhoc
// different ad-hoc exports at once, the error wraps ErrTooManyAdhoc. The
// caller checks d.Project (a NATS subject token of the completion event).
//
// On a partitioned pipeline, a project another replica holds is asked of
// that replica (forward.go).
func (p *Pipeline) GenerateAdhoc(ctx context.Context, d Definition) (*Record, error) {
	return p.generateAdhoc(ctx, d, true)
}

// generateAdhoc is GenerateAdhoc; forward as for generate.
func (p *Pipeline) generateAdhoc(ctx context.Context, d Definition, forward bool) (*Record, error) {
	bucket := p.opts.Buckets[d.Connection]
	if bucket == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownConnection, d.Connection)
	}
	if err := p.checkHeld(d.Project); err != nil {
		if forward {
			return p.forward(ctx, d.Project, forwardRequest{Adhoc: &d})
		}
		return nil, err
	}
	d.Name, d.Path = AdhocName, AdhocPath
	return p.requests.shareAdhoc(ctx, adhocKeyOf(&d), func(sctx context.Context, done func()) (*Record, error) {
		return p.startAdhoc(sctx, &d, bucket, done)
	})
}

// startAdhoc allocates the export id and the pending record of ad-hoc
// export d, plans it and starts it in the background, which calls done
// when it ends. It returns the pending record, or the error (an
// *EmptySourceError when the source matches no file) and then never
// calls done.
func (p *Pipeline) startAdhoc(ctx context.Context, d *Definition, bucket connectors.Bucket, done func()) (*Record, error) {
	r, err := p.newRequest(ctx, d)
	if err != nil {
		return nil, err
	}
	pl := p.plan(d)
	if err := pl.check(); err != nil {
		_ = pl.close()
		return nil, p.failed(ctx, r, fmt.Errorf("read the local state store: %w", err))
	}
	if pl.empty != "" {
		_ = pl.close()
		r.skipped(d, pl)
		if err := p.records.put(ctx, r); err != nil {
			return nil, fmt.Errorf("export record: %w", err)
		}
		p.log.Warn("ad-hoc export skipped: its source matches no file; nothing written", "export_id", r.ID, "reason", pl.empty)
		c := *r
		return nil, &EmptySourceError{Record: &c}
	}
	c := *r
	p.requests.start(func() {
		defer done()
		ctx := p.runCtx()
		defer pl.close()
		if err := p.runAdhoc(ctx, d, bucket, r, pl); err != nil {
			p.log.Error("ad-hoc export failed", "export_id", r.ID, "err", err)
		}
	})
	return &c, nil
}

// runAdhoc renders and writes one ad-hoc export of the plan pl: data
// object, manifest, record, completion event.
func (p *Pipeline) runAdhoc(ctx context.Context, d *Definition, bucket connectors.Bucket, r *Record, pl *plan) error {
	slot := p.slots[d.Connection]
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return p.failed(ctx, r, fmt.Errorf("stopped before the export ran: %w", context.Cause(ctx)))
	}
	defer func() { <-slot }()
	start := time.Now()
	r.StateRevision = pl.rev
	r.Watermark = max(r.Watermark, pl.watermark)
	r.Ref = d.ref(pl)
	stem := d.objectStem(r.ID, r.Ref, r.CreatedTime)
	r.Key, r.ManifestKey = stem+".json", stem+".manifest.json"
	r.FileListLength, r.InstanceCount, r.Status = pl.ids.Len(), pl.nInst, StatusGenerating
	startFormats(d, r, stem)
	classes := p.classes
	if r.AsOf != "" {
		classes = p.classesAsOf
	}
	if err := classes(ctx, d, pl); err != nil {
		return p.failed(ctx, r, err)
	}
	if err := p.records.put(ctx, r); err != nil {
		return err
	}
	if err := p.writeObjects(ctx, bucket, pl, r); err != nil {
		return err
	}
	done, body, err := completed(r)
	if err != nil {
		return err
	}
	if err := putBytes(ctx, bucket, r.ManifestKey, body, connectors.WriteOptions{IfAbsent: true}); err != nil {
		return p.failed(ctx, r, fmt.Errorf("manifest %s: %w", r.ManifestKey, err))
	}
	*r = done
	if err := p.records.put(ctx, r); err != nil {
		return err
	}
	if err := p.publishCompleted(ctx, r); err != nil {
		// The export is complete and in the bucket; only the event is
		// missing, and nothing retries an ad-hoc export.
		p.log.Warn("ad-hoc export written but its completion event was not published", "export_id", r.ID, "err", err)
	}
	p.log.Info("ad-hoc export written", "export_id", r.ID, "key", r.Key, "files", r.FileListLength,
		"instances", r.InstanceCount, "bytes", r.Bytes, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// completionEvent is the CloudEvents 1.0 structured event a completed
// export is published as (EVENTS.md, "What the connector publishes back").
type completionEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	DiffgramProject string    `json:"diffgramproject"`
	Data            *Record   `json:"data"`
}

// CompletedType is the CloudEvents type of the completion event.
const CompletedType = "diffgram.export.completed"

// publishCompleted publishes the export's completion event, a CloudEvent
// whose data is the record, on diffgram.exports.<project>.<name>.completed,
// with id and Nats-Msg-Id export-<id> so that a retry is not a second
// event. Without a stream keeping it, core subscribers still got it: that
// is not an error.
func (p *Pipeline) publishCompleted(ctx context.Context, r *Record) error {
	at := r.CreatedTime
	if r.CompletedTime != nil {
		at = *r.CompletedTime
	}
	id := "export-" + strconv.FormatInt(r.ID, 10)
	ev, err := json.Marshal(completionEvent{
		SpecVersion: "1.0", ID: id, Source: "exportstream/" + p.opts.Deployment, Type: CompletedType,
		Subject: r.Name, Time: at.UTC(), DataContentType: "application/json", DiffgramProject: r.Project, Data: r,
	})
	if err != nil {
		return fmt.Errorf("completion event: %w", err)
	}
	msg := nats.NewMsg("diffgram.exports." + r.Project + "." + r.Name + ".completed")
	msg.Data = ev
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil &&
		!errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("completion event: %w", err)
	}
	return nil
}

// progressLogAfter is how long an export renders before its progress is
// logged: a quick one logs "export written" alone.
const progressLogAfter = 5 * time.Second

// progressFunc returns the render progress callback of export r: it
// moves the record's percent_complete (0..90 while rendering) at every
// 10 %, and logs a line then once the export has been rendering for
// progressLogAfter.
func (p *Pipeline) progressFunc(ctx context.Context, r *Record) func(done, total int) {
	last := 0
	logProgress := progressLogger(p.log, r)
	return func(done, total int) {
		if total <= 0 {
			return
		}
		tenth := done * 10 / total
		if tenth <= last {
			return
		}
		last = tenth
		r.PercentComplete = tenth * 9
		_ = p.records.put(ctx, r)
		logProgress(tenth*10, done, total)
	}
}

// progressLogger returns the progress log of export r, which starts now:
// a call logs a line only once progressLogAfter has passed.
func progressLogger(log *slog.Logger, r *Record) func(percent, done, total int) {
	start := time.Now()
	return func(percent, done, total int) {
		elapsed := time.Since(start)
		if elapsed < progressLogAfter {
			return
		}
		log.Info("export progress", "definition", r.Name, "export_id", r.ID, "percent", percent,
			"files_done", done, "files", total, "elapsed", elapsed.Round(time.Second).String())
	}
}

// RecordFilter selects export records; empty fields select all.
type RecordFilter struct {
	Definition string
	Project    string
	Status     Status
	// Before, when > 0, keeps ids below it (the next page after a page
	// whose last id was Before).
	Before int64
	// Limit bounds the page (default 50, at most 1000).
	Limit int
}

// RecordPage is one page of export records.
type RecordPage struct {
	Records []Record
	// Total is how many records match the filter, on all pages.
	Total int
	// More says that records older than the page's last one match too.
	More bool
}

// Records returns a page of the records that match f, newest (highest
// id) first. It selects the page in the in-memory index the records watch
// keeps, then reads from the records bucket the page's records the index
// does not hold in full (at most Limit reads, 16 at a time, within 10 s);
// a record that cannot be read is left out of the page and logged.
func (p *Pipeline) Records(f RecordFilter) RecordPage {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 1000)
	items, total, more := p.records.index.page(f)
	return RecordPage{Records: p.records.fill(items), Total: total, More: more}
}

// WaitRecord waits until export id is complete, failed or skipped and
// returns its record, or ctx's error (with the record as it stands, if
// known). If the record is deleted from the records bucket before it is
// read, an error wrapping jetstream.ErrKeyNotFound is returned.
func (p *Pipeline) WaitRecord(ctx context.Context, id int64) (*Record, error) {
	for {
		found, final, changed := p.records.index.state(id)
		if found && final {
			if r := p.records.index.held(id); r != nil && Final(r.Status) {
				return r, nil
			}
			r, err := p.records.fetch(ctx, id, p.records.index.revOf(id))
			if err != nil {
				return nil, err
			}
			if Final(r.Status) {
				return r, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return p.records.index.held(id), context.Cause(ctx)
		}
	}
}

// LatestRecord returns the newest complete export of the definition, or
// nil. Retention never deletes it.
func (p *Pipeline) LatestRecord(name string) *Record {
	id, r := p.records.index.latest(name)
	if r == nil && id != 0 {
		r = p.records.lookup(id)
	}
	return r
}

// SkippedRecord returns the definition's newest attempt when it was
// skipped because its source matched no file (its StatusText says why),
// or nil when the newest finished attempt wrote an export (or failed).
// Retention never deletes it.
func (p *Pipeline) SkippedRecord(name string) *Record {
	id, r := p.records.index.skipped(name)
	if r == nil && id != 0 {
		r = p.records.lookup(id)
	}
	return r
}

// RecordByID returns export id's record, and whether it exists: from the
// index, or read from the records bucket when the index holds only its
// summary. A record the index does not know does not exist.
func (p *Pipeline) RecordByID(id int64) (*Record, bool) {
	if found, _, _ := p.records.index.state(id); !found {
		return nil, false
	}
	r := p.records.lookup(id)
	return r, r != nil
}
