package events

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Partitioning splits the events stream by project so that each replica
// of the service consumes, holds and exports only its share (config
// nats.partitions). The stream itself does it, on ingest, with a subject
// transform: an event published to <prefix>.<project>.<entity>.<action>
// is stored as
//
//	partitioned.<stream>.<partition>.<project>.<entity>.<action>
//
// where <partition> is NATS's partition(N, project): FNV-1a (32 bit) of
// the project's name, modulo N (PartitionOf computes the same). One
// durable consumer per partition (<consumer>-p<i>) reads it; a replica
// reads the partitions whose leases it holds. The stored subject is
// outside the stream's subjects on purpose: nothing published can land
// in a partition's subjects except through the transform.
//
// Whatever the transform does not match keeps its subject: events stored
// before the stream was partitioned, and bad input (a subject of another
// shape). The shared consumer (<consumer>, every replica pulls from it)
// reads those: it dead-letters bad input as before, and publishes good
// events again to their subject, so that the transform puts them into
// their partition.
type Partitioning struct {
	Stream string
	// Prefix is the subjects' common prefix: the stream's one subject
	// without its trailing ".>".
	Prefix string
	N      int
}

// NewPartitioning checks that subjects can be partitioned (exactly one
// subject, ending in ".>") and returns the partitioning of the stream
// into n.
func NewPartitioning(stream string, subjects []string, n int) (Partitioning, error) {
	if len(subjects) != 1 || !strings.HasSuffix(subjects[0], ".>") || strings.ContainsAny(strings.TrimSuffix(subjects[0], ".>"), "*>") {
		return Partitioning{}, fmt.Errorf("partitions need exactly one subject of the form <prefix>.> (got %q)", subjects)
	}
	if n < 2 {
		return Partitioning{}, fmt.Errorf("partitions: %d: want at least 2", n)
	}
	return Partitioning{Stream: stream, Prefix: strings.TrimSuffix(subjects[0], ".>"), N: n}, nil
}

// PartitionOf is the partition of a project among n: the same as NATS's
// subject transform function partition(n, <project token>).
func PartitionOf(project string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(project))
	return int(h.Sum32() % uint32(n))
}

func (pt Partitioning) stored() string { return "partitioned." + pt.Stream }

// Transform is the stream's subject transform.
func (pt Partitioning) Transform() *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source: pt.Prefix + ".*.*.*",
		Destination: fmt.Sprintf("%s.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}",
			pt.stored(), pt.N),
	}
}

// Filter is the subject filter of partition i's consumer.
func (pt Partitioning) Filter(i int) string {
	return pt.stored() + "." + strconv.Itoa(i) + ".*.*.*"
}

// ConsumerName is the durable name of partition i's consumer.
func (pt Partitioning) ConsumerName(shared string, i int) string {
	return shared + "-p" + strconv.Itoa(i)
}

// Original returns the subject an event was published to: a partition's
// subject mapped back, any other subject as it is.
func (pt Partitioning) Original(subject string) string {
	if pt.N < 2 {
		return subject
	}
	rest, ok := strings.CutPrefix(subject, pt.stored()+".")
	if !ok {
		return subject
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return subject
	}
	return pt.Prefix + "." + rest
}

// ensureTransform gives an existing stream the partitioning's subject
// transform when it has none (allowed only when the service may manage
// the stream), and refuses one that partitions differently: changing
// the number of partitions would strand the events stored under the
// old one.
func ensureTransform(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, pt Partitioning, manage bool) error {
	cfg := s.CachedInfo().Config
	want := pt.Transform()
	switch {
	case cfg.SubjectTransform != nil && *cfg.SubjectTransform == *want:
		return nil
	case cfg.SubjectTransform != nil:
		return fmt.Errorf("stream %s has the subject transform %s -> %s, not the one nats.partitions %d needs (%s -> %s): "+
			"the number of partitions cannot change on a stream that holds events; keep it, or drain the stream and create it again",
			pt.Stream, cfg.SubjectTransform.Source, cfg.SubjectTransform.Destination, pt.N, want.Source, want.Destination)
	case !manage:
		return fmt.Errorf("stream %s has no subject transform and nats.create_stream is false: "+
			"give it the transform %s -> %s, or set nats.partitions to 1", pt.Stream, want.Source, want.Destination)
	}
	cfg.SubjectTransform = want
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("stream %s: add the partitions' subject transform: %w", pt.Stream, err)
	}
	return nil
}

// ErrNotPartitioned is returned by Consumer.Partition on a consumer of a
// stream that is not partitioned.
var ErrNotPartitioned = errors.New("the events stream is not partitioned (nats.partitions is 1)")

// Partition returns the consumer of partition i (created if needed),
// with this consumer's configuration and metrics.
func (c *Consumer) Partition(ctx context.Context, i int) (*Consumer, error) {
	if c.part.N < 2 {
		return nil, ErrNotPartitioned
	}
	var cons jetstream.Consumer
	name := c.part.ConsumerName(c.cfg.Consumer, i)
	err := AskAgain(ctx, func() (err error) {
		cons, err = c.js.CreateOrUpdateConsumer(ctx, c.cfg.Stream, jetstream.ConsumerConfig{
			Durable:       name,
			Description:   fmt.Sprintf("exportstream: partition %d of %d, read by the replica holding its lease", i, c.part.N),
			FilterSubject: c.part.Filter(i),
			AckPolicy:     jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckWait:       c.cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: c.cfg.MaxAckPending,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", name, c.cfg.Stream, err)
	}
	pc := *c
	pc.cons = cons
	pc.name = name
	pc.reroute = false
	return &pc, nil
}

// PartitionsInfo returns the server-side state of each partition's
// consumer, by partition (nil for a partition whose consumer is not
// created yet), for the backlog metrics: any replica reads every
// partition's, whoever holds it. It returns nil on a stream that is not
// partitioned.
func (c *Consumer) PartitionsInfo(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	if c.part.N < 2 {
		return nil, nil
	}
	out := make([]*jetstream.ConsumerInfo, c.part.N)
	for i := range out {
		cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.part.ConsumerName(c.cfg.Consumer, i))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", i, err)
		}
		// The lookup fetched the consumer's info: no second request.
		out[i] = cons.CachedInfo()
	}
	return out, nil
}

// rerouteBatch publishes good events that the shared consumer of a
// partitioned stream received (stored before the stream was partitioned)
// to their subject again, so that they are stored in their partition,
// and reports whether every one was stored. The copy carries the
// original's headers but a Nats-Msg-Id of its own, derived from the
// stream sequence: a redelivered original is stored once within the
// de-duplication window, and the original's id, still in that window,
// does not make the server drop the copy.
func (c *Consumer) rerouteBatch(ctx context.Context, batch []delivery) bool {
	futs := make([]jetstream.PubAckFuture, 0, len(batch))
	for _, d := range batch {
		m := nats.NewMsg(c.part.Original(d.msg.Subject()))
		m.Data = d.msg.Data()
		for k, v := range d.msg.Headers() {
			if !strings.HasPrefix(k, "Nats-") {
				m.Header[k] = v
			}
		}
		var seq uint64
		if d.meta != nil {
			seq = d.meta.Sequence.Stream
		}
		m.Header.Set(jetstream.MsgIDHeader, "exportstream-partition-"+c.cfg.Stream+"-"+strconv.FormatUint(seq, 10))
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			c.log.Error("moving an event into its partition failed; it will be redelivered", "seq", seq, "err", err)
			return false
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			c.log.Error("moving an event into its partition failed; it will be redelivered", "err", err)
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}
