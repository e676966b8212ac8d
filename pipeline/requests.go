package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// requests are the exports asked for on this replica rather than
// started by changes: per definition the manual request (Generate) that
// waits for its export, and the ad-hoc and point-in-time exports
// (GenerateAdhoc, GenerateAsOf) starting or running, identical ones
// shared, at most maxAdhoc at once. The Pipeline starts and runs the
// exports; requests only keeps track of them.
type requests struct {
	maxAdhoc int // Options.MaxAdhoc, or DefaultMaxAdhoc

	mu      sync.Mutex
	waiting map[string]*Record // per definition: a manual request waiting for its export

	adhocRuns adhocRuns      // the ad-hoc exports in flight, by request
	running   sync.WaitGroup // the ad-hoc exports running in the background
}

func newRequests(maxAdhoc int) *requests {
	if maxAdhoc <= 0 {
		maxAdhoc = DefaultMaxAdhoc
	}
	return &requests{maxAdhoc: maxAdhoc, waiting: map[string]*Record{}}
}

// manual returns a copy of the definition's manual request waiting for
// its export, or, when none waits, makes one with create, keeps it and
// calls made (both under the lock, so that two calls make one request).
func (q *requests) manual(name string, create func() (*Record, error), made func()) (*Record, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r := q.waiting[name]; r != nil {
		c := *r
		return &c, nil
	}
	r, err := create()
	if err != nil {
		return nil, err
	}
	q.waiting[name] = r
	made()
	c := *r
	return &c, nil
}

// start runs f, an ad-hoc export, in the background (wait waits for it).
func (q *requests) start(f func()) { q.running.Go(f) }

// wait waits for the ad-hoc exports started to end.
func (q *requests) wait() { q.running.Wait() }

// takeManual hands the definition's waiting manual request, if any, to
// the export about to start.
func (q *requests) takeManual(name string) *Record {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.waiting[name]
	delete(q.waiting, name)
	return r
}

// shareAdhoc serves the ad-hoc request key: by the identical export still
// starting or running on this replica if there is one (its record or
// error), else by start, which returns the pending record (or the error)
// and calls done when the export it started in the background ends (never
// when it returns an error). Beyond maxAdhoc different requests at once
// the error wraps ErrTooManyAdhoc.
func (q *requests) shareAdhoc(ctx context.Context, key adhocKey, start func(ctx context.Context, done func()) (*Record, error)) (*Record, error) {
	run, first, err := q.adhocRuns.join(key, q.maxAdhoc)
	if err != nil {
		return nil, err
	}
	if !first {
		select {
		case <-run.ready:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		return run.result()
	}
	// The start is shared: a caller that goes away must not fail the
	// others waiting for it.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adhocStartTimeout)
	defer cancel()
	r, err := start(sctx, func() { q.adhocRuns.leave(key) })
	if r != nil {
		c := *r
		run.rec = &c
	}
	run.err = err
	close(run.ready)
	if err != nil {
		q.adhocRuns.leave(key)
	}
	return run.result()
}

// adhocKey identifies an ad-hoc request: identical requests share one
// export while it runs.
type adhocKey struct {
	project, connection string
	completion          Completion
	source              Source
	includeRemoved      bool
	formats             string // NormalizeFormats, joined
	// A point-in-time export's (asof.go): the definition it reproduces
	// ("" for an ad-hoc source), and the point as asked for with the
	// stream sequence it resolved to.
	definition string
	asOf       string
}

// adhocKeyOf is the key of an ad-hoc request for d's settings.
func adhocKeyOf(d *Definition) adhocKey {
	return adhocKey{project: d.Project, source: d.Source, completion: d.Completion,
		includeRemoved: d.IncludeRemovedInstances, connection: d.Connection,
		formats: strings.Join(NormalizeFormats(d.Formats), ",")}
}

// adhocRuns are the ad-hoc exports starting or running on this replica,
// by request.
type adhocRuns struct {
	mu   sync.Mutex
	runs map[adhocKey]*adhocRun
}

// adhocRun is one ad-hoc export in flight. ready is closed once its
// pending record (or the error that ended its start) is set; neither
// changes after.
type adhocRun struct {
	ready chan struct{}
	rec   *Record
	err   error
}

// join returns the run of an identical request in flight (first false),
// or registers a new one for the caller to start (first true), unless
// limit runs are in flight already.
func (a *adhocRuns) join(key adhocKey, limit int) (run *adhocRun, first bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if run := a.runs[key]; run != nil {
		return run, false, nil
	}
	if len(a.runs) >= limit {
		return nil, false, fmt.Errorf("%w: %d of at most %d are running on this replica", ErrTooManyAdhoc, len(a.runs), limit)
	}
	if a.runs == nil {
		a.runs = map[adhocKey]*adhocRun{}
	}
	run = &adhocRun{ready: make(chan struct{})}
	a.runs[key] = run
	return run, true, nil
}

// leave removes the run of key: an identical request starts a new export.
func (a *adhocRuns) leave(key adhocKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.runs, key)
}

// result is what each request the run serves gets: a copy of the pending
// record, or the error (an *EmptySourceError with its own copy).
func (r *adhocRun) result() (*Record, error) {
	var empty *EmptySourceError
	if errors.As(r.err, &empty) {
		c := *empty.Record
		return nil, &EmptySourceError{Record: &c}
	}
	if r.err != nil {
		return nil, r.err
	}
	c := *r.rec
	return &c, nil
}
