package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderRedrivenFrom marks an event Redrive re-published: the sequence it
// had in the dead-letter stream.
const HeaderRedrivenFrom = "Exportstream-Redriven-From"

// ErrNoDeadLetter is returned (wrapped) for a sequence the dead-letter
// stream does not hold: never written, redriven since, or removed.
var ErrNoDeadLetter = errors.New("no such dead letter")

// DeadLetter is a bad event as the consumer stored it in the dead-letter
// stream (see the Header* constants).
type DeadLetter struct {
	// Sequence is the entry's sequence in the dead-letter stream, and
	// Time when it was stored there.
	Sequence uint64
	Time     time.Time
	// Reason says why the event is bad (HeaderReason).
	Reason string
	// OriginalSubject, OriginalStream and OriginalSequence say where the
	// event was received (HeaderOriginalSubject, HeaderOriginalStream,
	// HeaderOriginalSeq, as recorded).
	OriginalSubject  string
	OriginalStream   string
	OriginalSequence string
	// Data is the event's body as received, whole.
	Data []byte
}

// DeadLetters reads the dead-letter stream a Consumer writes
// (ConsumerConfig.DeadLetter) and re-publishes its entries. It is safe
// for concurrent use.
type DeadLetters struct {
	js     jetstream.JetStream
	stream string
}

// NewDeadLetters returns the dead letters of stream, reached through js.
// The stream need not exist: the consumer creates it, and until then
// nothing was dead-lettered.
func NewDeadLetters(js jetstream.JetStream, stream string) *DeadLetters {
	return &DeadLetters{js: js, stream: stream}
}

// Stream returns the dead-letter stream's name.
func (d *DeadLetters) Stream() string { return d.stream }

// listIdle bounds the wait for each entry List reads.
const listIdle = 10 * time.Second

// List returns how many entries the dead-letter stream holds and the
// newest limit of them, newest first. It reads them in one pass through
// an ordered consumer that starts at the oldest of them (found from the
// stream's state and its deleted sequences), not one request per
// sequence; an entry removed while List reads is left out, and one
// stored after List looked at the stream is not counted or returned. If
// the stream does not exist, nothing was dead-lettered: List returns 0
// and no entries, and no error. Other errors name the stream; an entry
// that takes longer than 10 s to arrive ends List with an error wrapping
// context.DeadlineExceeded.
func (d *DeadLetters) List(ctx context.Context, limit int) (count uint64, newest []DeadLetter, err error) {
	stream, err := d.js.Stream(ctx, d.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("dead-letter stream %s: %w", d.stream, err)
	}
	info, err := stream.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return 0, nil, fmt.Errorf("dead-letter stream %s: %w", d.stream, err)
	}
	st := info.State
	if st.Msgs == 0 || limit <= 0 {
		return st.Msgs, nil, nil
	}
	start, want := newestFrom(st, limit)
	if want == 0 {
		return st.Msgs, nil, nil
	}
	entries, err := d.read(ctx, start, st.LastSeq, want)
	if err != nil {
		return 0, nil, fmt.Errorf("dead-letter stream %s: %w", d.stream, err)
	}
	slices.Reverse(entries)
	return st.Msgs, entries, nil
}

// newestFrom returns the first sequence of the newest limit entries of a
// stream in state st, and how many entries there are from it to the
// last: counted down from the last sequence, passing over the deleted
// ones.
func newestFrom(st jetstream.StreamState, limit int) (start uint64, n int) {
	deleted := make(map[uint64]bool, len(st.Deleted))
	for _, seq := range st.Deleted {
		deleted[seq] = true
	}
	for seq := st.LastSeq; seq >= st.FirstSeq && seq > 0 && n < limit; seq-- {
		if !deleted[seq] {
			start, n = seq, n+1
		}
	}
	return start, n
}

// read returns the entries from start up to last, at most n, oldest
// first, through an ordered consumer it deletes afterwards.
func (d *DeadLetters) read(ctx context.Context, start, last uint64, n int) ([]DeadLetter, error) {
	cons, err := d.js.OrderedConsumer(ctx, d.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
		InactiveThreshold: time.Minute, // if the delete below does not reach the server
	})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(n, 64)))
	if err != nil {
		return nil, err
	}
	defer func() {
		it.Stop()
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = d.js.DeleteConsumer(dctx, d.stream, ci.Name)
			cancel()
		}
	}()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil, nil // removed since the stream's state was read
	}
	out := make([]DeadLetter, 0, n)
	for len(out) < n {
		// Each entry within listIdle (context.DeadlineExceeded otherwise).
		nctx, cancel := context.WithTimeout(ctx, listIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return nil, err
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		if meta.Sequence.Stream > last {
			break // stored after List looked
		}
		h := m.Headers()
		out = append(out, DeadLetter{
			Sequence: meta.Sequence.Stream, Time: meta.Timestamp, Data: m.Data(),
			Reason:           h.Get(HeaderReason),
			OriginalSubject:  h.Get(HeaderOriginalSubject),
			OriginalStream:   h.Get(HeaderOriginalStream),
			OriginalSequence: h.Get(HeaderOriginalSeq),
		})
		if meta.Sequence.Stream == last || meta.NumPending == 0 {
			break
		}
	}
	return out, nil
}

// Redriven is what became of one sequence given to Redrive.
type Redriven struct {
	Sequence uint64
	// Subject and StreamSequence: where the event was re-published, and
	// its new sequence in that stream (when Err is nil).
	Subject        string
	StreamSequence uint64
	// Err says why the entry was not redriven, or not removed after it
	// was re-published: an error wrapping ErrNoDeadLetter when the
	// stream does not hold it.
	Err error
}

// Redrive re-publishes the dead-letter entries seqs, in order, on their
// original subjects, body and headers as received (without the
// Exportstream-* headers the consumer added, and without the Nats-*
// ones, Nats-Msg-Id among them, which the stream would take for a
// duplicate), marked with HeaderRedrivenFrom; then removes each from the
// dead-letter stream. An event that is still bad comes back with a new
// sequence. It returns one Redriven per sequence; an error only when the
// dead-letter stream cannot be reached (if it does not exist, every
// sequence fails with ErrNoDeadLetter).
func (d *DeadLetters) Redrive(ctx context.Context, seqs []uint64) ([]Redriven, error) {
	out := make([]Redriven, 0, len(seqs))
	stream, err := d.js.Stream(ctx, d.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		for _, seq := range seqs {
			out = append(out, Redriven{Sequence: seq, Err: noDeadLetter(seq)})
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", d.stream, err)
	}
	for _, seq := range seqs {
		out = append(out, d.redrive(ctx, stream, seq))
	}
	return out, nil
}

func noDeadLetter(seq uint64) error { return fmt.Errorf("%w: sequence %d", ErrNoDeadLetter, seq) }

func (d *DeadLetters) redrive(ctx context.Context, stream jetstream.Stream, seq uint64) Redriven {
	r := Redriven{Sequence: seq}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		r.Err = noDeadLetter(seq)
		return r
	}
	if err != nil {
		r.Err = err
		return r
	}
	subject := m.Header.Get(HeaderOriginalSubject)
	if subject == "" {
		r.Err = errors.New("no original subject recorded")
		return r
	}
	msg := nats.NewMsg(subject)
	msg.Data = m.Data
	for k, vs := range m.Header {
		if strings.HasPrefix(k, "Exportstream-") || strings.HasPrefix(k, "Nats-") {
			continue
		}
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	msg.Header.Set(HeaderRedrivenFrom, strconv.FormatUint(seq, 10))
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		r.Err = fmt.Errorf("publish: %w", err)
		return r
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		r.Err = fmt.Errorf("re-published as %d but not removed: %w", ack.Sequence, err)
		return r
	}
	r.Subject, r.StreamSequence = subject, ack.Sequence
	return r
}
