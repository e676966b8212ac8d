package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// maxBodyShown bounds the event body shown per dead letter.
const maxBodyShown = 4 << 10

// deadLetter is one entry of GET /api/v1/deadletters.
type deadLetter struct {
	Sequence         uint64    `json:"sequence"`
	Time             time.Time `json:"time"`
	Reason           string    `json:"reason"`
	OriginalSubject  string    `json:"original_subject"`
	OriginalStream   string    `json:"original_stream"`
	OriginalSequence string    `json:"original_sequence"`
	Bytes            int       `json:"bytes"`
	// Body is the event as received (at most 4 KiB of it, as text).
	Body          string `json:"body"`
	BodyTruncated bool   `json:"body_truncated,omitempty"`
}

// deadLetters is the answer of GET /api/v1/deadletters.
type deadLetters struct {
	Stream  string       `json:"stream"`
	Count   uint64       `json:"count"`
	Entries []deadLetter `json:"entries"`
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit=%q is not in 1..200", v))
			return
		}
		limit = n
	}
	out := deadLetters{Stream: s.o.DeadLetterStream, Entries: []deadLetter{}}
	stream, err := s.o.JetStream.Stream(r.Context(), s.o.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s.writeJSON(w, http.StatusOK, out) // nothing dead-lettered yet
		return
	}
	if err != nil {
		s.internal(w, r, fmt.Errorf("dead-letter stream %s: %w", s.o.DeadLetterStream, err))
		return
	}
	info, err := stream.Info(r.Context())
	if err != nil {
		s.internal(w, r, fmt.Errorf("dead-letter stream %s: %w", s.o.DeadLetterStream, err))
		return
	}
	out.Count = info.State.Msgs
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out.Entries) < limit; seq-- {
		m, err := stream.GetMsg(r.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // redriven or removed
		}
		if err != nil {
			s.internal(w, r, fmt.Errorf("dead letter %d: %w", seq, err))
			return
		}
		out.Entries = append(out.Entries, viewDeadLetter(m))
	}
	s.writeJSON(w, http.StatusOK, out)
}

func viewDeadLetter(m *jetstream.RawStreamMsg) deadLetter {
	d := deadLetter{
		Sequence: m.Sequence, Time: m.Time.UTC(), Bytes: len(m.Data),
		Reason:           m.Header.Get(events.HeaderReason),
		OriginalSubject:  m.Header.Get(events.HeaderOriginalSubject),
		OriginalStream:   m.Header.Get(events.HeaderOriginalStream),
		OriginalSequence: m.Header.Get(events.HeaderOriginalSeq),
	}
	body := m.Data
	if len(body) > maxBodyShown {
		body, d.BodyTruncated = body[:maxBodyShown], true
	}
	d.Body = strings.ToValidUTF8(string(body), string(utf8.RuneError))
	return d
}

// redriveRequest is the body of POST /api/v1/deadletters/redrive.
type redriveRequest struct {
	Sequences []uint64 `json:"sequences"`
}

type redriven struct {
	Sequence uint64 `json:"sequence"`
	Subject  string `json:"subject"`
	// StreamSequence is the event's new sequence in the event stream.
	StreamSequence uint64 `json:"stream_sequence"`
}

type redriveFailure struct {
	Sequence uint64 `json:"sequence"`
	Error    string `json:"error"`
}

// noDeadLetters says that the dead-letter stream holds none of seqs.
func noDeadLetters(seqs []uint64) string {
	var nums []string
	for i, seq := range seqs {
		if !slices.Contains(seqs[:i], seq) {
			nums = append(nums, strconv.FormatUint(seq, 10))
		}
	}
	what := "no dead letter with sequence "
	if len(nums) > 1 {
		what = "no dead letters with sequences "
	}
	return what + strings.Join(nums, ", ") + "; list them with GET /api/v1/deadletters"
}

// redrive re-publishes the chosen dead letters on their original subjects
// (body and headers as received, without the dead-letter headers and
// without Nats-Msg-Id, which the stream would take for a duplicate), then
// removes them from the dead-letter stream. A redriven event that is
// still bad comes back with a new sequence. A sequence the stream does
// not hold fails with "no dead letter with sequence N"; when none of the
// sequences is there the answer is that 404.
func (s *Server) redrive(w http.ResponseWriter, r *http.Request) {
	var req redriveRequest
	if err := decodeBody(r, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "bad_request", "request body: "+err.Error())
		return
	}
	if len(req.Sequences) == 0 || len(req.Sequences) > 1000 {
		s.writeError(w, http.StatusBadRequest, "bad_request", `give 1..1000 dead-letter sequences: {"sequences": [12, 13]}`)
		return
	}
	stream, err := s.o.JetStream.Stream(r.Context(), s.o.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Nothing was ever dead-lettered.
		s.writeError(w, http.StatusNotFound, "not_found", noDeadLetters(req.Sequences))
		return
	}
	if err != nil {
		s.internal(w, r, fmt.Errorf("dead-letter stream %s: %w", s.o.DeadLetterStream, err))
		return
	}
	out := struct {
		Redriven []redriven       `json:"redriven"`
		Failed   []redriveFailure `json:"failed"`
	}{Redriven: []redriven{}, Failed: []redriveFailure{}}
	var missing []uint64
	for _, seq := range req.Sequences {
		m, err := stream.GetMsg(r.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			missing = append(missing, seq)
			out.Failed = append(out.Failed, redriveFailure{seq, noDeadLetters([]uint64{seq})})
			continue
		}
		if err != nil {
			out.Failed = append(out.Failed, redriveFailure{seq, err.Error()})
			continue
		}
		subject := m.Header.Get(events.HeaderOriginalSubject)
		if subject == "" {
			out.Failed = append(out.Failed, redriveFailure{seq, "no original subject recorded"})
			continue
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
		msg.Header.Set("Exportstream-Redriven-From", strconv.FormatUint(seq, 10))
		ack, err := s.o.JetStream.PublishMsg(r.Context(), msg)
		if err != nil {
			out.Failed = append(out.Failed, redriveFailure{seq, "publish: " + err.Error()})
			continue
		}
		if err := stream.DeleteMsg(r.Context(), seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			out.Failed = append(out.Failed, redriveFailure{seq, fmt.Sprintf("re-published as %d but not removed: %v", ack.Sequence, err)})
			continue
		}
		out.Redriven = append(out.Redriven, redriven{Sequence: seq, Subject: subject, StreamSequence: ack.Sequence})
		s.o.Logger.Info("dead letter redriven", "seq", seq, "subject", subject, "stream_seq", ack.Sequence)
	}
	if len(missing) == len(req.Sequences) {
		s.writeError(w, http.StatusNotFound, "not_found", noDeadLetters(missing))
		return
	}
	s.writeJSON(w, http.StatusOK, out)
}
