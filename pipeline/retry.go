package pipeline

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/exportstream/exportstream/connectors"
)

// probeEvery is how often a definition waiting to retry a failed export
// checks whether its bucket answers.
const probeEvery = time.Second

// waitRetry waits before the next attempt of a failed export of d: for
// wait, or less when something that may have caused the failure is back.
// It returns why it ended early ("" after wait, or when ctx is done):
//   - the NATS connection came back (retryNow, from the reconnect
//     listener);
//   - d's bucket answers again: a probe (the attributes of d's
//     latest.json, a read) every probeEvery failed, then one succeeded.
//
// A bucket that answers reads but refuses writes (a full disk) is retried
// after wait, which Options.MaxBackoff bounds.
func (p *Pipeline) waitRetry(ctx context.Context, d *Definition, wait time.Duration) string {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	probe := time.NewTicker(min(probeEvery, wait))
	defer probe.Stop()
	wake := p.wakeChan()
	bucket := p.opts.Buckets[d.Connection]
	down := false
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-timer.C:
			return ""
		case <-wake:
			return "the NATS connection is back"
		case <-probe.C:
			if bucketAnswers(ctx, bucket, d.Path+"latest.json") {
				if down {
					return "its bucket answers again"
				}
			} else {
				down = true
			}
		}
	}
}

// bucketAnswers reports whether the bucket answered a read of key (not
// found is an answer).
func bucketAnswers(ctx context.Context, b connectors.Bucket, key string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeEvery)
	defer cancel()
	_, err := b.Attributes(ctx, key)
	return err == nil || errors.Is(err, connectors.ErrNotFound)
}

// wakeChan returns the channel the next retryNow closes.
func (p *Pipeline) wakeChan() <-chan struct{} {
	p.wakeMu.Lock()
	defer p.wakeMu.Unlock()
	return p.wake
}

// retryNow ends every wait between failed export attempts: what failed
// may work now.
func (p *Pipeline) retryNow() {
	p.wakeMu.Lock()
	defer p.wakeMu.Unlock()
	close(p.wake)
	p.wake = make(chan struct{})
}

// retryOnReconnect heartbeats and calls retryNow whenever the NATS
// connection comes back, until ctx is done.
func (p *Pipeline) retryOnReconnect(ctx context.Context) {
	nc := p.js.Conn()
	if nc == nil {
		return
	}
	ch := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			// What waits for an answer sent before is asked again now.
			p.reconnected()
			// Without a confirmed heartbeat no lease is taken: beat first.
			p.live.beatLogged(ctx)
			p.retryNow()
		}
	}
}

// errReconnected is the cause of a context that untilReconnect ended.
var errReconnected = errors.New("the NATS connection came back, or a stream elected a new leader: requests sent before may never be answered")

// untilReconnect returns a context that also ends, with the cause
// errReconnected, when the NATS connection comes back after a drop, or
// when a stream of the account elects a new leader. A request, or a
// publish's acknowledgement, in flight to a server that went away is
// never answered: without this, the write waits for its timeout (5 s),
// and the batch or the export behind it with it. stop releases the
// context.
func (p *Pipeline) untilReconnect(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	p.wakeMu.Lock()
	gen := p.reconn
	p.wakeMu.Unlock()
	unhook := context.AfterFunc(gen, func() { cancel(errReconnected) })
	return ctx, func() {
		unhook()
		cancel(nil)
	}
}

// reconnected ends the contexts untilReconnect returned so far.
func (p *Pipeline) reconnected() {
	p.wakeMu.Lock()
	defer p.wakeMu.Unlock()
	p.reconnCancel()
	p.reconn, p.reconnCancel = context.WithCancel(context.Background())
}

// leaderElected is the advisory JetStream publishes when a stream
// elected a leader (the stream's name follows).
const (
	leaderElectedPrefix = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."
	leaderElected       = leaderElectedPrefix + ">"
)

// ownStream reports whether the stream is one the pipeline writes or
// reads: the events stream, or one of its key-value buckets'.
func (p *Pipeline) ownStream(stream string) bool {
	return stream == p.opts.EventsStream || strings.HasPrefix(stream, "KV_"+p.opts.StatePrefix+"_")
}

// askAgainOnElection calls reconnected whenever one of its streams
// (ownStream) elects a new leader, until ctx is done: a NATS node stopped, and what was sent to
// the streams it led (a state write, a dirty mark) is lost in the route
// even when this replica's connection was to another node. Without the
// permission to subscribe to the advisories, such a write waits for its
// timeout as before.
func (p *Pipeline) askAgainOnElection(ctx context.Context) {
	nc := p.js.Conn()
	if nc == nil {
		return
	}
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(leaderElected, ch)
	if err != nil {
		p.log.Warn("stream leader elections not followed; a write lost with a NATS node waits for its timeout", "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-ch:
			if !p.ownStream(strings.TrimPrefix(m.Subject, leaderElectedPrefix)) {
				continue // another application's stream: nothing of ours waits on it
			}
			p.log.Debug("stream leader elected: asking again what waits for an answer", "subject", m.Subject)
			p.reconnected()
		}
	}
}
