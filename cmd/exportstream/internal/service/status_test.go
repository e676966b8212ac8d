package service

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// waitingDefinition is a definition added to the example's: the whole
// project, with a quiet period longer than any test, so it is never
// exported and every change of the project waits for it.
const waitingDefinition = "zz-never-exported"

func addWaitingDefinition(cfg *config.Config) {
	cfg.Exports = append(cfg.Exports, config.Export{
		Name: waitingDefinition, Project: cfg.Exports[0].Project, Completion: "complete",
		Source: config.Source{Project: true}, Connection: cfg.Exports[0].Connection, Path: "exports/" + waitingDefinition + "/",
		Coalesce: config.Coalesce{Quiet: time.Hour, MaxDelay: time.Hour},
	})
}

// apiStatus is the answer of GET /api/v1/status.
type apiStatus struct {
	Time   time.Time
	Events struct {
		Stream, Consumer    string
		LastAppliedSequence uint64     `json:"last_applied_sequence"`
		LastAppliedTime     *time.Time `json:"last_applied_time"`
		AppliedSinceStart   uint64     `json:"applied_since_start"`
		AckedThrough        uint64     `json:"acked_through"`
		Backlog             *uint64
		Waiting             *uint64
		InFlight            *uint64 `json:"in_flight"`
		ConsumerError       string  `json:"consumer_error"`
	}
	Definitions []struct {
		Name          string
		UpToDate      bool       `json:"up_to_date"`
		PendingEvents int        `json:"pending_events"`
		NewestEvent   uint64     `json:"newest_event"`
		MarkedTime    *time.Time `json:"marked_time"`
	}
}

func (s *apiStatus) freshness(name string) (upToDate bool, pending int, newest uint64, ok bool) {
	for _, d := range s.Definitions {
		if d.Name == name {
			return d.UpToDate, d.PendingEvents, d.NewestEvent, true
		}
	}
	return false, 0, 0, false
}

// streamJS connects to the service's NATS server.
func streamJS(t *testing.T, svc *Service) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishLabelChange publishes the scenario's first label event again as
// a newer version (a new event id): one change of the project, which
// touches every definition. It returns the event's stream sequence.
func publishLabelChange(t *testing.T, js jetstream.JetStream, n int) uint64 {
	t.Helper()
	f, err := os.Open(pipelinetest.EventsFile(apiScenario(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var subject string
	var body map[string]any
	err = events.ReadStream(f, func(subj string, b []byte, _ string) error {
		if body == nil && strings.HasSuffix(subj, ".label.upserted") {
			subject = subj
			return json.Unmarshal(b, &body)
		}
		return nil
	})
	if err != nil || body == nil {
		t.Fatalf("no label event in the scenario (%v)", err)
	}
	label := body["data"].(map[string]any)["label_file"].(map[string]any)
	label["version"] = label["version"].(float64) + 1000*float64(n)
	body["id"] = "label-change-" + strconv.Itoa(n)
	data, _ := json.Marshal(body)
	m := nats.NewMsg(subject)
	m.Data = data
	ack, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(body["id"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// apiScenario is the example startAPIService runs.
func apiScenario(t *testing.T) string {
	t.Helper()
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	return scenarios[0]
}

// TestAPIStatus: GET /api/v1/status says how current the exports are:
// the newest event applied is the stream's newest good event, nothing is
// left to apply, every exported definition is up to date and the one
// never exported counts its pending changes; one more change moves all
// of it.
func TestAPIStatus(t *testing.T) {
	svc, c, _, cfg := startAPIService(t, addWaitingDefinition)
	js := streamJS(t, svc)
	(apiClient{t: t, base: c.base}).wantError("GET", "/api/v1/status", nil, http.StatusUnauthorized, "unauthorized")

	// The stream's newest event that is not a dead letter.
	stream, err := js.Stream(t.Context(), cfg.NATS.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var dl struct {
		Count   int
		Entries []struct {
			OriginalSequence string `json:"original_sequence"`
		}
	}
	c.json("GET", "/api/v1/deadletters?limit=200", nil, http.StatusOK, &dl)
	dead := map[uint64]bool{}
	for _, e := range dl.Entries {
		n, _ := strconv.ParseUint(e.OriginalSequence, 10, 64)
		dead[n] = true
	}
	if len(dead) != dl.Count || dl.Count == 0 {
		t.Fatalf("dead letters: %d listed, %d counted", len(dead), dl.Count)
	}
	newestGood := info.State.LastSeq
	for dead[newestGood] {
		newestGood--
	}

	var st apiStatus
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
		if st.Events.Backlog != nil && *st.Events.Backlog == 0 && st.Events.AckedThrough == info.State.LastSeq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer did not catch up: %+v", st.Events)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev := st.Events
	if ev.Stream != cfg.NATS.Stream || ev.Consumer != cfg.NATS.Consumer || ev.ConsumerError != "" ||
		*ev.Waiting != 0 || *ev.InFlight != 0 {
		t.Errorf("events: %+v; want stream %s, consumer %s, nothing waiting", ev, cfg.NATS.Stream, cfg.NATS.Consumer)
	}
	if ev.LastAppliedSequence != newestGood || ev.LastAppliedTime == nil || time.Since(*ev.LastAppliedTime) > time.Minute ||
		ev.AppliedSinceStart < info.State.Msgs-uint64(dl.Count) {
		t.Errorf("last applied: #%d at %v, %d applied; want #%d (the newest good event), just now, at least %d",
			ev.LastAppliedSequence, ev.LastAppliedTime, ev.AppliedSinceStart, newestGood, info.State.Msgs-uint64(dl.Count))
	}
	if d := time.Since(st.Time); d < 0 || d > time.Minute {
		t.Errorf("the service's time %v is off by %v", st.Time, d)
	}

	var defs struct{ Definitions []struct{ Name string } }
	c.json("GET", "/api/v1/definitions", nil, http.StatusOK, &defs)
	if len(st.Definitions) != len(defs.Definitions) {
		t.Fatalf("status lists %d definitions, there are %d", len(st.Definitions), len(defs.Definitions))
	}
	for i, d := range defs.Definitions {
		f := st.Definitions[i]
		if f.Name != d.Name {
			t.Errorf("status definition %d is %q, want %q", i, f.Name, d.Name)
			continue
		}
		if d.Name == waitingDefinition {
			if f.UpToDate || f.PendingEvents < 1 || f.PendingEvents > int(newestGood) || f.NewestEvent < 1 || f.NewestEvent > newestGood ||
				f.MarkedTime == nil {
				t.Errorf("%s (never exported): %+v; want 1..%d events pending, the newest at most #%d", d.Name, f, newestGood, newestGood)
			}
			continue
		}
		if !f.UpToDate || f.PendingEvents != 0 || f.NewestEvent != 0 || f.MarkedTime != nil {
			t.Errorf("%s: %+v; want up to date", d.Name, f)
		}
	}
	_, before, _, _ := st.freshness(waitingDefinition)

	// One more change of the project.
	seq := publishLabelChange(t, js, 1)
	deadline = time.Now().Add(20 * time.Second)
	for {
		c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
		if st.Events.LastAppliedSequence == seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event #%d not applied: %+v", seq, st.Events)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if upToDate, pending, newest, _ := st.freshness(waitingDefinition); upToDate || pending != before+1 || newest != seq {
		t.Errorf("%s after one more change: up to date %v, %d pending, newest #%d; want %d pending, newest #%d",
			waitingDefinition, upToDate, pending, newest, before+1, seq)
	}
	// The others export it (or find it unchanged) and are up to date again.
	deadline = time.Now().Add(30 * time.Second)
	for {
		c.json("GET", "/api/v1/status", nil, http.StatusOK, &st)
		behind := []string{}
		for _, d := range st.Definitions {
			if d.Name != waitingDefinition && !d.UpToDate {
				behind = append(behind, d.Name)
			}
		}
		if len(behind) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not up to date after a change: %v", behind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
