package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Headers the consumer adds to a dead-lettered message. The original
// headers are kept, except the server's Nats-* headers, which move to
// Exportstream-Original-* (Nats-Msg-Id to Exportstream-Original-Msg-Id):
// the dead-letter copy gets its own id, derived from the stream sequence,
// so a redelivered bad event is stored once, and publish controls such as
// Nats-Expected-Stream, which held for the original, must not refuse the
// copy.
const (
	HeaderReason          = "Exportstream-Reason"
	HeaderOriginalSubject = "Exportstream-Original-Subject"
	HeaderOriginalStream  = "Exportstream-Original-Stream"
	HeaderOriginalSeq     = "Exportstream-Original-Sequence"
	HeaderOriginalMsgID   = "Exportstream-Original-Msg-Id"
)

// ConsumerConfig says which stream to read and how.
type ConsumerConfig struct {
	Stream       string
	Subjects     []string
	CreateStream bool // create the stream if missing; else it must exist
	Replicas     int
	Consumer     string // durable name, shared by all replicas
	DeadLetter   string // dead-letter stream
	// MaxEventBytes: a larger body is bad input (0: no limit).
	MaxEventBytes int
	// MaxEventDepth: a body nested deeper is bad input (0:
	// DefaultMaxDepth); see Limits.MaxDepth.
	MaxEventDepth int
	// MaxAckPending bounds the events delivered and not yet acked, across
	// all replicas: the batch size ceiling and the memory bound.
	MaxAckPending int
	// AckWait is how long the server waits for an ack before redelivering
	// to another replica (a crashed or stuck one).
	AckWait time.Duration
	// MaxBackoff caps the pause after consecutive failed batches (250 ms
	// doubling); 0: 30 s.
	MaxBackoff time.Duration
	// Partitions > 1 partitions the stream by project (see Partitioning):
	// the replicas read partitions through Consumer.Partition, and this
	// consumer only moves events stored unpartitioned into their
	// partition and dead-letters bad input.
	Partitions int
}

// Handler makes the effect of a batch of good events durable. It returns
// nil only once that is done; the events are then acked. An error is
// transient: the events are redelivered after a back-off.
type Handler func(ctx context.Context, batch []*Event) error

// Consumer reads the event stream through one durable pull consumer,
// decodes every message, dead-letters bad input and hands good events to
// a Handler in batches. It owns the ack policy:
//   - good event: acked after the handler returned nil for its batch;
//   - handler error: nak'd with a growing delay (redelivered, never lost);
//   - bad input: copied to the dead-letter stream, then terminated; if the
//     copy fails, nak'd (retried), never dropped.
type Consumer struct {
	js   jetstream.JetStream
	cfg  ConsumerConfig
	log  *slog.Logger
	cons jetstream.Consumer
	name string       // the durable consumer's name
	part Partitioning // N < 2: not partitioned
	// reroute: this is the shared consumer of a partitioned stream; its
	// good events go back into the stream, into their partition.
	reroute bool

	consumed, applied, dead *prometheus.CounterVec
	batchFailures           prometheus.Counter
}

// NewConsumer creates (or binds to) the stream, the dead-letter stream and
// the durable consumer. With CreateStream false, a missing stream is an
// error wrapping jetstream.ErrStreamNotFound.
func NewConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, log *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 20000
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	var pt Partitioning
	if cfg.Partitions > 1 {
		var err error
		if pt, err = NewPartitioning(cfg.Stream, cfg.Subjects, cfg.Partitions); err != nil {
			return nil, err
		}
	}
	var cons jetstream.Consumer
	err := AskAgain(ctx, func() (err error) {
		cons, err = ensureConsumer(ctx, js, cfg, pt)
		return err
	})
	if err != nil {
		return nil, err
	}
	c := &Consumer{js: js, cfg: cfg, log: log, cons: cons, name: cfg.Consumer, part: pt, reroute: pt.N > 1,
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_events_consumed_total", Help: "Events delivered to this replica, by type (bad input by the type its subject names; \"invalid\" when that is no known type).",
		}, []string{"type"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_events_acked_total", Help: "Good events made durable and acked, by type.",
		}, []string{"type"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_events_dead_lettered_total", Help: "Bad events copied to the dead-letter stream, by the type their subject names (\"invalid\" when that is no known type).",
		}, []string{"type"}),
		batchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exportstream_event_batch_failures_total", Help: "Batches whose handler failed (transient; redelivered).",
		}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{c.consumed, c.applied, c.dead, c.batchFailures} {
			if err := reg.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// ensureConsumer creates (or binds to) the stream, the dead-letter stream
// and the durable consumer; see NewConsumer.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, pt Partitioning) (jetstream.Consumer, error) {
	var transform *jetstream.SubjectTransformConfig
	if pt.N > 1 {
		transform = pt.Transform()
	}
	if s, err := js.Stream(ctx, cfg.Stream); err == nil && pt.N > 1 {
		if err := ensureTransform(ctx, js, s, pt, cfg.CreateStream); err != nil {
			return nil, err
		}
	} else if err != nil {
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %s: %w", cfg.Stream, err)
		}
		if !cfg.CreateStream {
			return nil, fmt.Errorf("stream %s does not exist and nats.create_stream is false: %w", cfg.Stream, err)
		}
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "annotation events (exportstream)",
			Subjects:    cfg.Subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  2 * time.Minute,
			// Partitioned: each event stored under its partition's
			// subject (see Partitioning).
			SubjectTransform: transform,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", cfg.Stream, err)
		}
	}
	if _, err := js.Stream(ctx, cfg.DeadLetter); errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.DeadLetter,
			Description: "bad input from " + cfg.Stream + ", with the reason in " + HeaderReason,
			Subjects:    []string{DeadLetterSubject(cfg.DeadLetter, ">")},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  2 * time.Minute,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create dead-letter stream %s: %w", cfg.DeadLetter, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", cfg.DeadLetter, err)
	}
	desc := "exportstream: every replica pulls from this one consumer"
	var filters []string
	if pt.N > 1 {
		// Partitioned: what the transform left under the stream's
		// subjects (events stored before, and bad input).
		desc = "exportstream: moves unpartitioned events into their partition; every replica pulls from it"
		filters = cfg.Subjects
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:        cfg.Consumer,
		Description:    desc,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckWait:        cfg.AckWait,
		// Never give up on an event: good events are only ever delayed
		// (bad input is terminated explicitly, not by running out of
		// deliveries).
		MaxDeliver:    -1,
		MaxAckPending: cfg.MaxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Consumer, cfg.Stream, err)
	}
	return cons, nil
}

// DeadLetterSubject is the subject a bad message from originalSubject is
// stored under in the dead-letter stream.
func DeadLetterSubject(deadLetterStream, originalSubject string) string {
	return "deadletter." + deadLetterStream + "." + originalSubject
}

// Info returns the consumer's current server-side state.
func (c *Consumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	return c.cons.Info(ctx)
}

// maxBatch bounds the events handed to the handler at once.
const maxBatch = 2048

// stopWait bounds how long Run, once its context is done, waits for the
// client to stop delivering (the consume context's Closed).
const stopWait = 5 * time.Second

// Run consumes until ctx is done, then stops taking messages, finishes the
// batch in hand and returns nil once the client no longer delivers to it
// (at most 5 s after the batch): no callback of Run's runs after it
// returns, and what it was handed and did not process is nak'd. It
// returns an error only if consuming cannot continue.
func (c *Consumer) Run(ctx context.Context, handle Handler) error {
	msgs := make(chan delivery, maxBatch)
	// Once Run returns nobody reads msgs: the callback must not block the
	// client's delivery goroutine forever (the message, unacked, is
	// redelivered).
	stopped := make(chan struct{})
	defer close(stopped)
	// Messages are decoded in the client's delivery goroutine, so that
	// decoding the next batch overlaps with applying this one.
	cc, err := c.cons.Consume(func(m jetstream.Msg) {
		d := delivery{msg: m}
		d.meta, _ = m.Metadata()
		d.ev, d.err = DecodeWith(m.Subject(), m.Data(), Limits{MaxBytes: c.cfg.MaxEventBytes, MaxDepth: c.cfg.MaxEventDepth})
		select {
		case msgs <- d:
		case <-stopped:
		}
	},
		jetstream.PullMaxMessages(maxBatch),
		// Short pulls, and heartbeats every second, so that a pull
		// request lost with a server (restarted, or stopped while the
		// consumer's leader moves to another) is noticed after two
		// missed heartbeats and re-issued within 2 s, not 5 (the
		// default heartbeat of a 5 s pull) or 30.
		jetstream.PullExpiry(5*time.Second),
		jetstream.PullHeartbeat(time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn("consume", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.name, err)
	}
	defer func() {
		cc.Stop()
		// Hand back what was delivered but not processed, for immediate
		// redelivery (to this replica when it restarts, or another one)
		// instead of after AckWait, until the client has stopped calling
		// the callback (Closed), which may be blocked on a full msgs with
		// one more in hand; at most stopWait.
		closed := cc.Closed()
		wait := time.NewTimer(stopWait)
		defer wait.Stop()
	handBack:
		for {
			select {
			case d := <-msgs:
				_ = d.msg.Nak()
			case <-closed:
				break handBack
			case <-wait.C:
				c.log.Warn("consume: the client still delivers; returning without waiting longer", "waited", stopWait)
				break handBack
			}
		}
		for {
			select {
			case d := <-msgs:
				_ = d.msg.Nak()
			default:
				return
			}
		}
	}()
	failures := 0
	batch := make([]delivery, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-msgs:
			batch = append(batch[:0], d)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case d := <-msgs:
				batch = append(batch, d)
			default:
				break fill
			}
		}
		if c.process(ctx, batch, handle) {
			failures = 0
		} else {
			failures++
			// Back off before taking more work; the nak'd events come
			// back after their delay.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(Backoff(failures, 250*time.Millisecond, c.cfg.MaxBackoff)):
			}
		}
	}
}

// delivery is one message with its decoding.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	ev   *Event
	err  error
}

// Backoff is the delay after n consecutive failures: first, doubling,
// at most maxWait. The consumer pauses 250 ms doubling after failed
// batches; the pipeline uses it for export retries and watches.
func Backoff(n int, first, maxWait time.Duration) time.Duration {
	d := first
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait)
}

// process handles one batch and reports whether the handler succeeded.
func (c *Consumer) process(ctx context.Context, batch []delivery, handle Handler) bool {
	good := make([]*Event, 0, len(batch))
	goodMsgs := make([]jetstream.Msg, 0, len(batch))
	for _, d := range batch {
		if d.err != nil {
			c.deadLetter(ctx, d.msg, d.meta, d.err)
			continue
		}
		if d.meta != nil {
			d.ev.Seq = d.meta.Sequence.Stream
			d.ev.Redelivered = d.meta.NumDelivered > 1
		}
		c.consumed.WithLabelValues(d.ev.Type).Inc()
		good = append(good, d.ev)
		goodMsgs = append(goodMsgs, d.msg)
	}
	if len(good) == 0 {
		return true
	}
	if c.reroute {
		moved := batch[:0:0]
		for _, d := range batch {
			if d.err == nil {
				moved = append(moved, d)
			}
		}
		if !c.rerouteBatch(ctx, moved) {
			c.batchFailures.Inc()
			for _, m := range goodMsgs {
				_ = m.NakWithDelay(2 * time.Second)
			}
			return false
		}
		for _, m := range goodMsgs {
			_ = m.Ack()
		}
		return true
	}
	if err := handle(ctx, good); err != nil {
		if ctx.Err() != nil {
			// Stopping: the batch in hand is handed back, for
			// redelivery now (to another replica, or this one when it
			// restarts). Not a failure.
			c.log.Info("stopping: a batch not applied is handed back for redelivery", "events", len(good))
			for _, m := range goodMsgs {
				_ = m.Nak()
			}
			return false
		}
		c.batchFailures.Inc()
		c.log.Error("applying events failed; they will be redelivered", "events", len(good), "err", err)
		for _, m := range goodMsgs {
			_ = m.NakWithDelay(2 * time.Second)
		}
		return false
	}
	for i, m := range goodMsgs {
		if err := m.Ack(); err != nil {
			// The effect is durable; a redelivery is harmless.
			c.log.Warn("ack", "seq", good[i].Seq, "err", err)
		}
		c.applied.WithLabelValues(good[i].Type).Inc()
	}
	return true
}

// deadLetter copies a bad message to the dead-letter stream with the
// reason, then terminates it; it counts the message by the type its
// subject names ("invalid" when that is no known type). If the copy fails the message is nak'd so
// it is tried again: bad input is never silently dropped.
func (c *Consumer) deadLetter(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error) {
	subject := c.part.Original(m.Subject())
	typ := subjectType(subject)
	if typ == "" {
		typ = "invalid"
	}
	var seq uint64
	if meta != nil {
		seq = meta.Sequence.Stream
	}
	reason := cause.Error()
	var b *BadInputError
	if errors.As(cause, &b) {
		reason = b.Reason
	}
	c.consumed.WithLabelValues(typ).Inc()
	dl := nats.NewMsg(DeadLetterSubject(c.cfg.DeadLetter, subject))
	dl.Data = m.Data()
	for k, v := range m.Headers() {
		if rest, ok := strings.CutPrefix(k, "Nats-"); ok {
			dl.Header["Exportstream-Original-"+rest] = v
			continue
		}
		dl.Header[k] = v
	}
	dl.Header.Set(HeaderReason, reason)
	dl.Header.Set(HeaderOriginalSubject, subject)
	dl.Header.Set(HeaderOriginalStream, c.cfg.Stream)
	dl.Header.Set(HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.js.PublishMsg(pctx, dl, jetstream.WithMsgID(c.cfg.Stream+"-"+strconv.FormatUint(seq, 10)))
	if err != nil {
		c.log.Error("dead-letter publish failed; will retry", "seq", seq, "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	c.dead.WithLabelValues(typ).Inc()
	c.log.Warn("bad event dead-lettered", "seq", seq, "subject", m.Subject(), "reason", reason, "dead_letter_stream", c.cfg.DeadLetter)
	if err := m.Term(); err != nil {
		c.log.Warn("term", "seq", seq, "err", err)
	}
}
