package api

import (
	"net/http"
	"time"
)

// statusView is the answer of GET /api/v1/status: how current the
// exports are.
type statusView struct {
	// Time is the service's clock, for the page's "x ago".
	Time   time.Time  `json:"time"`
	Events eventsView `json:"events"`
	// Definitions are in the order of GET /api/v1/definitions.
	Definitions []freshnessView `json:"definitions"`
	// Ready, Checks and Connections: what /readyz?verbose says (when the
	// service gives Options.Health).
	Ready       *bool   `json:"ready,omitempty"`
	Checks      []Check `json:"checks,omitempty"`
	Connections []Check `json:"connections,omitempty"`
}

// Health is this replica's readiness and the health of each of its
// connections, as /readyz reports them.
type Health struct {
	// Ready: every check in Checks passes, so the replica can do its
	// work (NATS connected, consumer bound, state writes succeed).
	Ready  bool
	Checks []Check
	// Connections are one check per connection (its latest write), by
	// name; they do not make the replica unready: a bucket that is down
	// delays its own exports only.
	Connections []Check
}

// Check is one named check: ok, or what is wrong.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// eventsView is how far the event consumer got.
type eventsView struct {
	Stream   string `json:"stream,omitempty"`
	Consumer string `json:"consumer,omitempty"`
	// LastAppliedSequence and LastAppliedTime: the newest event this
	// replica applied to the state, and when (0 and null: none since it
	// started).
	LastAppliedSequence uint64     `json:"last_applied_sequence"`
	LastAppliedTime     *time.Time `json:"last_applied_time"`
	// AppliedSinceStart counts the events this replica applied.
	AppliedSinceStart uint64 `json:"applied_since_start"`
	// AckedThrough: every event up to this stream sequence is applied or
	// dead-lettered (all replicas).
	AckedThrough uint64 `json:"acked_through"`
	// Backlog is the events not applied yet: Waiting (not delivered) plus
	// InFlight (delivered, not yet acknowledged). Null when the consumer
	// cannot be asked (ConsumerError says why).
	Backlog       *uint64 `json:"backlog"`
	Waiting       *uint64 `json:"waiting"`
	InFlight      *uint64 `json:"in_flight"`
	ConsumerError string  `json:"consumer_error,omitempty"`
}

// freshnessView is how current one definition's export is.
type freshnessView struct {
	Name string `json:"name"`
	// UpToDate: no applied event waits for an export of the definition.
	// Events still in the backlog are not counted here.
	UpToDate bool `json:"up_to_date"`
	// PendingEvents, when not up to date, counts the changes of the
	// definition's project that this replica applied in batches touching
	// it since its newest export (an upper bound; 0 when not known here:
	// applied by another replica or before a restart).
	PendingEvents int `json:"pending_events"`
	// NewestEvent is the stream sequence of the newest event waiting for
	// the export, and MarkedTime when it arrived.
	NewestEvent uint64     `json:"newest_event,omitempty"`
	MarkedTime  *time.Time `json:"marked_time,omitempty"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	out := statusView{Time: time.Now().UTC(), Definitions: []freshnessView{}}
	last := s.o.Pipeline.LastApplied()
	out.Events.LastAppliedSequence, out.Events.AppliedSinceStart = last.Seq, last.Events
	if !last.Time.IsZero() {
		out.Events.LastAppliedTime = &last.Time
	}
	if s.o.Consumer != nil {
		info, err := s.o.Consumer(r.Context())
		if err != nil {
			out.Events.ConsumerError = err.Error()
			if s.o.Redact != nil {
				out.Events.ConsumerError = s.o.Redact(out.Events.ConsumerError)
			}
		} else {
			out.Events.Stream, out.Events.Consumer = info.Stream, info.Name
			out.Events.AckedThrough = info.AckFloor.Stream
			waiting, inFlight := info.NumPending, uint64(max(info.NumAckPending, 0))
			backlog := waiting + inFlight
			out.Events.Backlog, out.Events.Waiting, out.Events.InFlight = &backlog, &waiting, &inFlight
		}
	}
	if s.o.Health != nil {
		h := s.o.Health()
		out.Ready, out.Checks, out.Connections = &h.Ready, h.Checks, h.Connections
	}
	for _, d := range s.o.Pipeline.Definitions() {
		f, err := s.o.Pipeline.Freshness(r.Context(), d.Name)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		v := freshnessView{Name: d.Name, UpToDate: f.Current, PendingEvents: f.PendingEvents, NewestEvent: f.NewestEvent}
		if !f.MarkedTime.IsZero() {
			at := f.MarkedTime.UTC()
			v.MarkedTime = &at
		}
		out.Definitions = append(out.Definitions, v)
	}
	s.writeJSON(w, http.StatusOK, out)
}
