package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// A partitioned pipeline serves a request for a definition or an ad-hoc
// export of a project another replica holds by asking that replica: the
// holder of partition i answers requests on forwardSubject(i) (a NATS
// request, not stored), starts the export as if the request had reached
// it, and answers the pending record. The record and the export's
// progress are in the records bucket, which every replica follows, so the
// replica that was asked can wait for the export and answer as usual.
// Only when no replica holds the partition (it is being handed over) is
// the answer ErrNotHeld: ask again.

// forwardTimeout bounds one forwarded request: the holder answers once
// the export has its id and pending record (an ad-hoc export's start is
// bounded by adhocStartTimeout).
const forwardTimeout = adhocStartTimeout + 5*time.Second

// forwardRequest is one request for the holder: a definition's name
// (Generate) or an ad-hoc definition (GenerateAdhoc).
type forwardRequest struct {
	Definition string      `json:"definition,omitempty"`
	Adhoc      *Definition `json:"adhoc,omitempty"`
}

// forwardReply is the holder's answer: the pending record, or the error
// with its kind (so that the sentinel errors survive the trip).
type forwardReply struct {
	Record *Record `json:"record,omitempty"`
	Error  string  `json:"error,omitempty"`
	Kind   string  `json:"kind,omitempty"`
}

// Error kinds of a forwardReply.
const (
	forwardEmpty      = "empty_source"
	forwardTooMany    = "too_many"
	forwardNotHeld    = "not_held"
	forwardUnknownDef = "unknown_definition"
	forwardUnknownCon = "unknown_connection"
)

func (p *Pipeline) forwardSubject(i int) string {
	return "exportstream." + p.opts.StatePrefix + ".forward." + strconv.Itoa(i)
}

// forward asks the replica holding the project's partition to serve req.
func (p *Pipeline) forward(ctx context.Context, project string, req forwardRequest) (*Record, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	msg, err := p.js.Conn().RequestWithContext(ctx, p.forwardSubject(p.parts.of(project)), body)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%w, and no replica holds its partition right now (handed over)", p.checkHeld(project))
	}
	if err != nil {
		return nil, fmt.Errorf("asking the replica that holds project %q: %w", project, err)
	}
	var rep forwardReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("the replica that holds project %q answered %q: %w", project, msg.Data, err)
	}
	switch rep.Kind {
	case "":
		if rep.Error != "" {
			return nil, errors.New(rep.Error)
		}
		if rep.Record == nil {
			return nil, fmt.Errorf("the replica that holds project %q answered no record", project)
		}
		return rep.Record, nil
	case forwardEmpty:
		if rep.Record == nil {
			return nil, errors.New(rep.Error)
		}
		return nil, &EmptySourceError{Record: rep.Record}
	case forwardTooMany:
		return nil, fmt.Errorf("%w on the replica that holds project %q", ErrTooManyAdhoc, project)
	case forwardNotHeld:
		return nil, fmt.Errorf("%w: %s", ErrNotHeld, rep.Error)
	case forwardUnknownDef:
		return nil, fmt.Errorf("%w: %s", ErrUnknownDefinition, rep.Error)
	case forwardUnknownCon:
		return nil, fmt.Errorf("%w: %s", ErrUnknownConnection, rep.Error)
	}
	return nil, errors.New(rep.Error)
}

// serveForward answers requests for partition i until the subscription
// ends (the partition is given up).
func (p *Pipeline) serveForward(i int) (*nats.Subscription, error) {
	return p.js.Conn().Subscribe(p.forwardSubject(i), func(m *nats.Msg) {
		// Starting an export may wait: answer each request on its own.
		go p.answerForward(m)
	})
}

func (p *Pipeline) answerForward(m *nats.Msg) {
	var req forwardRequest
	var rep forwardReply
	ctx, cancel := context.WithTimeout(p.runCtx(), forwardTimeout)
	defer cancel()
	var rec *Record
	err := json.Unmarshal(m.Data, &req)
	switch {
	case err != nil:
	case req.Adhoc != nil:
		rec, err = p.generateAdhoc(ctx, *req.Adhoc, false)
	default:
		rec, err = p.generate(ctx, req.Definition, false)
	}
	rep.Record = rec
	if err != nil {
		rep.Error = err.Error()
		var empty *EmptySourceError
		switch {
		case errors.As(err, &empty):
			rep.Kind, rep.Record = forwardEmpty, empty.Record
		case errors.Is(err, ErrTooManyAdhoc):
			rep.Kind = forwardTooMany
		case errors.Is(err, ErrNotHeld):
			rep.Kind = forwardNotHeld
		case errors.Is(err, ErrUnknownDefinition):
			rep.Kind = forwardUnknownDef
		case errors.Is(err, ErrUnknownConnection):
			rep.Kind = forwardUnknownCon
		}
	}
	body, _ := json.Marshal(rep)
	if err := m.Respond(body); err != nil {
		p.log.Warn("answering a forwarded request", "err", err)
	}
}
