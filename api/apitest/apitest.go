// Package apitest has in-memory fakes of the API's interfaces
// (api.Pipeline, api.DeadLetters), for testing the handlers on their own
// with httptest. A fake does what its fields say and records what it was
// asked; it checks nothing a real pipeline would check.
package apitest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline"
)

// Pipeline is a fake api.Pipeline. Set its fields before the first call;
// it is then safe for concurrent use.
type Pipeline struct {
	// Defs are the definitions, Recs the records (any order), and
	// Buckets the connections' buckets.
	Defs    []*pipeline.Definition
	Recs    []pipeline.Record
	Buckets map[string]connectors.Bucket
	// Latest and Skipped are LatestRecord's and SkippedRecord's answers
	// by definition name.
	Latest, Skipped map[string]*pipeline.Record
	// Generated is the pending record Generate, GenerateAdhoc and
	// GenerateAsOf return, unless GenerateErr is set.
	Generated   *pipeline.Record
	GenerateErr error
	// Waited is what WaitRecord returns, unless WaitErr is set.
	Waited  *pipeline.Record
	WaitErr error
	// Applied is LastApplied's answer; Fresh Freshness's by definition
	// name, unless FreshnessErr is set.
	Applied      pipeline.Applied
	Fresh        map[string]pipeline.Freshness
	FreshnessErr error

	mu    sync.Mutex
	calls []Call
}

// Call is one Generate* call the fake got.
type Call struct {
	// Method is Generate, GenerateAdhoc or GenerateAsOf.
	Method string
	// Name is Generate's definition; Definition is GenerateAdhoc's and
	// GenerateAsOf's, At GenerateAsOf's point.
	Name       string
	Definition pipeline.Definition
	At         pipeline.AsOf
}

// Calls returns the Generate* calls so far, in order.
func (p *Pipeline) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func (p *Pipeline) called(c Call) (*pipeline.Record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, c)
	if p.GenerateErr != nil {
		return nil, p.GenerateErr
	}
	if p.Generated == nil {
		return nil, fmt.Errorf("apitest: no Generated record")
	}
	r := *p.Generated
	return &r, nil
}

// Definitions returns Defs sorted by name.
func (p *Pipeline) Definitions() []*pipeline.Definition {
	return slices.SortedFunc(slices.Values(p.Defs), func(a, b *pipeline.Definition) int { return cmp.Compare(a.Name, b.Name) })
}

// Records filters Recs as pipeline.Pipeline does: newest (highest id)
// first, Limit 50 by default and at most 1000, Before excluding.
func (p *Pipeline) Records(f pipeline.RecordFilter) pipeline.RecordPage {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 1000)
	var match []pipeline.Record
	for _, r := range p.Recs {
		if (f.Definition == "" || r.Name == f.Definition) && (f.Project == "" || r.Project == f.Project) &&
			(f.Status == "" || r.Status == f.Status) {
			match = append(match, r)
		}
	}
	slices.SortFunc(match, func(a, b pipeline.Record) int { return cmp.Compare(b.ID, a.ID) })
	page := pipeline.RecordPage{Total: len(match)}
	for _, r := range match {
		if f.Before > 0 && r.ID >= f.Before {
			continue
		}
		if len(page.Records) == f.Limit {
			page.More = true
			break
		}
		page.Records = append(page.Records, r)
	}
	return page
}

// RecordByID returns the record of Recs with that id.
func (p *Pipeline) RecordByID(id int64) (*pipeline.Record, bool) {
	for _, r := range p.Recs {
		if r.ID == id {
			return &r, true
		}
	}
	return nil, false
}

// LatestRecord returns Latest[name].
func (p *Pipeline) LatestRecord(name string) *pipeline.Record { return p.Latest[name] }

// SkippedRecord returns Skipped[name].
func (p *Pipeline) SkippedRecord(name string) *pipeline.Record { return p.Skipped[name] }

// Generate records the call and returns Generated or GenerateErr.
func (p *Pipeline) Generate(_ context.Context, name string) (*pipeline.Record, error) {
	return p.called(Call{Method: "Generate", Name: name})
}

// GenerateAdhoc records the call and returns Generated or GenerateErr.
func (p *Pipeline) GenerateAdhoc(_ context.Context, d pipeline.Definition) (*pipeline.Record, error) {
	return p.called(Call{Method: "GenerateAdhoc", Definition: d})
}

// GenerateAsOf records the call and returns Generated or GenerateErr.
func (p *Pipeline) GenerateAsOf(_ context.Context, d pipeline.Definition, at pipeline.AsOf) (*pipeline.Record, error) {
	return p.called(Call{Method: "GenerateAsOf", Definition: d, At: at})
}

// WaitRecord returns Waited, or WaitErr.
func (p *Pipeline) WaitRecord(context.Context, int64) (*pipeline.Record, error) {
	if p.WaitErr != nil {
		return nil, p.WaitErr
	}
	return p.Waited, nil
}

// Bucket returns Buckets[connection].
func (p *Pipeline) Bucket(connection string) connectors.Bucket { return p.Buckets[connection] }

// LastApplied returns Applied.
func (p *Pipeline) LastApplied() pipeline.Applied { return p.Applied }

// Freshness returns Fresh[name], or FreshnessErr.
func (p *Pipeline) Freshness(_ context.Context, name string) (pipeline.Freshness, error) {
	if p.FreshnessErr != nil {
		return pipeline.Freshness{}, p.FreshnessErr
	}
	return p.Fresh[name], nil
}

// DeadLetters is a fake api.DeadLetters holding its entries in memory.
// Set its fields before the first call; it is then safe for concurrent
// use.
type DeadLetters struct {
	// Name is the stream's name; Entries the entries, oldest first.
	Name    string
	Entries []events.DeadLetter
	// Err, when set, is what List and Redrive return.
	Err error

	mu     sync.Mutex
	limits []int
}

// Stream returns Name.
func (d *DeadLetters) Stream() string { return d.Name }

// List returns the newest limit entries, newest first, and records limit.
func (d *DeadLetters) List(_ context.Context, limit int) (uint64, []events.DeadLetter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.limits = append(d.limits, limit)
	if d.Err != nil {
		return 0, nil, d.Err
	}
	newest := slices.Clone(d.Entries[max(0, len(d.Entries)-limit):])
	slices.Reverse(newest)
	return uint64(len(d.Entries)), newest, nil
}

// Redrive removes the entries seqs it holds, as if re-published on
// their original subjects at stream sequence 1000+seq; a sequence it
// does not hold fails with events.ErrNoDeadLetter.
func (d *DeadLetters) Redrive(_ context.Context, seqs []uint64) ([]events.Redriven, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Err != nil {
		return nil, d.Err
	}
	var out []events.Redriven
	for _, seq := range seqs {
		i := slices.IndexFunc(d.Entries, func(e events.DeadLetter) bool { return e.Sequence == seq })
		if i < 0 {
			out = append(out, events.Redriven{Sequence: seq, Err: fmt.Errorf("%w: sequence %d", events.ErrNoDeadLetter, seq)})
			continue
		}
		out = append(out, events.Redriven{Sequence: seq, Subject: d.Entries[i].OriginalSubject, StreamSequence: 1000 + seq})
		d.Entries = slices.Delete(d.Entries, i, i+1)
	}
	return out, nil
}

// Limits returns the limits List was called with, in order.
func (d *DeadLetters) Limits() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.limits)
}
