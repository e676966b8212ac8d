package pipeline

import (
	"testing"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events/eventstest"
)

// TestRescanMarks: a dirty mark that stays unchanged from one rescan to
// the next kicks its definition (the watch may have missed it); a mark
// just written, or written again since, or gone, does not.
func TestRescanMarks(t *testing.T) {
	_, js := eventstest.Connect(t, eventstest.StartServer(t))
	d, _, bucket := diskDefinition(t)
	p, err := openTest(t, t.Context(), js, Options{StatePrefix: "T", Owner: "test",
		Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": bucket}})
	if err != nil {
		t.Fatal(err)
	}
	kicked := func() bool {
		select {
		case <-p.kicks[d.Name]:
			return true
		default:
			return false
		}
	}
	mark := func() {
		if _, err := p.dirty.Put(t.Context(), d.Name, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]uint64{}
	steps := []struct {
		what   string
		before func()
		kick   bool
	}{
		{"no mark", func() {}, false},
		{"a new mark", mark, false},
		{"the same mark a period later", func() {}, true},
		{"the mark written again", mark, false},
		{"unchanged again", func() {}, true},
		{"the mark cleared", func() {
			if err := p.dirty.Delete(t.Context(), d.Name); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"still none", func() {}, false},
	}
	for _, s := range steps {
		s.before()
		p.rescanOnce(t.Context(), seen)
		if got := kicked(); got != s.kick {
			t.Errorf("%s: kicked %v, want %v", s.what, got, s.kick)
		}
	}
}
