package pipeline

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// feedPullBytes is how many bytes of entries the state feed asks the
// server for at once, and feedBuffer how many entries it holds ready for
// Store: what it holds in memory before Store takes them. Bytes, not
// entries: a chunk's entry holds up to 16 snapshots (a count of 4096
// entries held ~8 times the bytes once entries became chunks, and the
// rebuild's peak RSS doubled).
const (
	feedPullBytes = 4 << 20
	feedBuffer    = 256
)

// stateFeed loads the state bucket the way a key-value watch starts (the
// newest entry of every key, or every entry from a revision, deletions
// left out, then a nil entry), but through a pull consumer: the client
// holds at most feedPullBytes of messages. A key-value watch is a push consumer,
// and while a replica rebuilt its store from a bucket of 1.1 M entries
// the server pushed faster than the store took them: the entries waiting
// in the client raised the process ~100 MB above the drain's peak. Once
// loaded, the store follows the bucket with a key-value watch from the
// next revision: live, the push watch keeps up with a drain better (a
// pull feed fell ~2 s behind a 1.1 M-event drain).
//
// It is a jetstream.KeyWatcher: Updates closes after the nil entry, or
// when the feed ends early (Stop, or a consumer it could not keep going).
type stateFeed struct {
	updates chan jetstream.KeyValueEntry
	cancel  context.CancelFunc
	done    chan struct{}
	once    sync.Once
}

// loadState starts a feed of bucket's entries from revision from (0:
// the newest entry of every key).
func loadState(ctx context.Context, js jetstream.JetStream, bucket string, from uint64) (*stateFeed, error) {
	return loadKeys(ctx, js, bucket, from, []string{">"})
}

// loadKeys is loadState for the keys that match one of the filters
// (key-value key patterns, such as "<project>.>").
func loadKeys(ctx context.Context, js jetstream.JetStream, bucket string, from uint64, filters []string) (*stateFeed, error) {
	stream := KVStream(bucket)
	subjects := make([]string, len(filters))
	for i, f := range filters {
		subjects[i] = KVSubject(bucket, f)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	} else {
		cfg.DeliverPolicy = jetstream.DeliverLastPerSubjectPolicy
	}
	// A busy server (or a stream electing its leader) may not answer the
	// first request in time: ask again.
	var cons jetstream.Consumer
	var info *jetstream.ConsumerInfo
	err := events.AskAgain(ctx, func() (err error) {
		if cons, err = js.OrderedConsumer(ctx, stream, cfg); err != nil {
			return err
		}
		// What there is to load, as the server counts it for this consumer.
		info, err = cons.Info(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(feedPullBytes))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &stateFeed{updates: make(chan jetstream.KeyValueEntry, feedBuffer), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer close(f.updates)
		defer cancel() // ends the goroutine below when the feed ends on its own
		defer it.Stop()
		send := func(e jetstream.KeyValueEntry) bool {
			select {
			case f.updates <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if info.NumPending == 0 {
			send(nil)
			return // nothing to load
		}
		go func() { <-ctx.Done(); it.Stop() }()
		prefix := KVSubject(bucket, "")
		for {
			msg, err := it.Next()
			if err != nil {
				return // stopped, or the consumer is gone: Updates closes
			}
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			if msg.Headers().Get("KV-Operation") == "" {
				e := &feedEntry{bucket: bucket, key: strings.TrimPrefix(msg.Subject(), prefix), value: msg.Data(),
					rev: meta.Sequence.Stream, created: meta.Timestamp, delta: meta.NumPending}
				if !send(e) {
					return
				}
			}
			if meta.NumPending == 0 {
				send(nil)
				return // loaded
			}
		}
	}()
	return f, nil
}

// Updates delivers the entries; see stateFeed.
func (f *stateFeed) Updates() <-chan jetstream.KeyValueEntry { return f.updates }

// Stop ends the feed and waits for it.
func (f *stateFeed) Stop() error {
	f.once.Do(f.cancel)
	<-f.done
	return nil
}

// feedEntry is one state bucket entry read by a stateFeed.
type feedEntry struct {
	bucket, key string
	value       []byte
	rev, delta  uint64
	created     time.Time
}

func (e *feedEntry) Bucket() string                  { return e.bucket }
func (e *feedEntry) Key() string                     { return e.key }
func (e *feedEntry) Value() []byte                   { return e.value }
func (e *feedEntry) Revision() uint64                { return e.rev }
func (e *feedEntry) Created() time.Time              { return e.created }
func (e *feedEntry) Delta() uint64                   { return e.delta }
func (e *feedEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

var _ jetstream.KeyWatcher = (*stateFeed)(nil)
