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
	out := deadLetters{Stream: s.o.DeadLetters.Stream(), Entries: []deadLetter{}}
	count, newest, err := s.o.DeadLetters.List(r.Context(), limit)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out.Count = count
	for _, e := range newest {
		out.Entries = append(out.Entries, viewDeadLetter(e))
	}
	s.writeJSON(w, http.StatusOK, out)
}

func viewDeadLetter(e events.DeadLetter) deadLetter {
	d := deadLetter{
		Sequence: e.Sequence, Time: e.Time.UTC(), Bytes: len(e.Data),
		Reason: e.Reason, OriginalSubject: e.OriginalSubject,
		OriginalStream: e.OriginalStream, OriginalSequence: e.OriginalSequence,
	}
	body := e.Data
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
// and removes them from the dead-letter stream (events.DeadLetters.Redrive).
// A sequence the stream does not hold fails with "no dead letter with
// sequence N"; when none of the sequences is there the answer is that
// 404.
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
	results, err := s.o.DeadLetters.Redrive(r.Context(), req.Sequences)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := struct {
		Redriven []redriven       `json:"redriven"`
		Failed   []redriveFailure `json:"failed"`
	}{Redriven: []redriven{}, Failed: []redriveFailure{}}
	var missing []uint64
	for _, res := range results {
		switch {
		case errors.Is(res.Err, events.ErrNoDeadLetter):
			missing = append(missing, res.Sequence)
			out.Failed = append(out.Failed, redriveFailure{res.Sequence, noDeadLetters([]uint64{res.Sequence})})
		case res.Err != nil:
			out.Failed = append(out.Failed, redriveFailure{res.Sequence, res.Err.Error()})
		default:
			out.Redriven = append(out.Redriven, redriven{Sequence: res.Sequence, Subject: res.Subject, StreamSequence: res.StreamSequence})
			s.o.Logger.Info("dead letter redriven", "seq", res.Sequence, "subject", res.Subject, "stream_seq", res.StreamSequence)
		}
	}
	if len(missing) == len(req.Sequences) {
		s.writeError(w, http.StatusNotFound, "not_found", noDeadLetters(missing))
		return
	}
	s.writeJSON(w, http.StatusOK, out)
}
