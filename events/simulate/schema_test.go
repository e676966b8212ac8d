package simulate_test

import (
	"testing"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/simulate"
)

// The simulator writes its events from structs of its own (the whole wire
// shape of each entity, as the platform sends it), not from the events
// package's, which hold only what the pipeline reads, some of it loosely
// typed to pass it through as received. That keeps the simulator an
// independent source of test input; this test keeps the two from
// drifting apart: every event of a long stream, of every kind and action
// the simulator plays, decodes with the service's own decoder, and the
// entity it decodes to is the one the envelope names (id and version
// read back through the kind table).
func TestStreamDecodesWithTheService(t *testing.T) {
	sim := simulate.New(simulate.Options{Seed: 7}, nil)
	seen := map[events.Kind]map[string]int{}
	for i := range 20000 {
		subject, body, msgID := sim.Next()
		ev, err := events.Decode(subject, body, 0)
		if err != nil {
			t.Fatalf("event %d (%s) does not decode with the service's decoder: %v\n%s", i, subject, err, body)
		}
		if ev.ID != msgID {
			t.Fatalf("event %d: Nats-Msg-Id %q, body id %q", i, msgID, ev.ID)
		}
		entity, ok := ev.Entity.(events.Entity)
		if !ev.Partial && (!ok || entity.EntityID() != ev.EntityID || entity.EntityVersion() != ev.Version) {
			t.Fatalf("event %d (%s): the decoded entity %+v is not the one the event names (id %d, version %d)", i, subject, ev.Entity, ev.EntityID, ev.Version)
		}
		if seen[ev.Kind] == nil {
			seen[ev.Kind] = map[string]int{}
		}
		seen[ev.Kind][ev.Type]++
	}
	for _, k := range events.Kinds() {
		if len(seen[k]) == 0 {
			t.Errorf("the simulator never sent a %s event: this test does not cover its struct", k)
		}
	}
	t.Logf("decoded: %v", seen)
}
