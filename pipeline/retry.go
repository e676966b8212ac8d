package pipeline

import (
	"context"
	"errors"
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
			// Without a confirmed heartbeat no lease is taken: beat first.
			p.live.beatLogged(ctx)
			p.retryNow()
		}
	}
}
