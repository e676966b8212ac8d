package pipeline

import (
	"bytes"
	"testing"
	"time"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// FuzzRender feeds arbitrary events into a state holding a contract
// example: whatever the decoder accepts, every document rendered from the
// state is valid UTF-8 JSON in which no object names a key twice.
func FuzzRender(f *testing.F) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		f.Fatal(err)
	}
	base := readLines(f, scenarios[len(scenarios)-1])
	for _, l := range append(readLines(f, scenarios[0]), readLines(f, "testdata/render-cases.jsonl")...) {
		f.Add(l.subject, l.body)
	}
	f.Add("diffgram.events.street-scenes.instance.created",
		[]byte(`{"specversion":"1.0","id":"x","source":"s","type":"diffgram.instance.created","diffgramproject":"street-scenes","data":{"instance":{"id":1,"file_id":5001,"version":9,"type":"box","x_min":1,"x_min":2,"attribute_groups":{"a":1,"a":2}}}}`))
	defs := []*Definition{
		{Name: "p", Project: "street-scenes", Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: true},
		{Name: "d", Project: "street-scenes", Source: Source{Kind: SourceDirectory, Name: "Luckfrill"}, Completion: CompletionComplete},
		{Name: "j", Project: "street-scenes", Source: Source{Kind: SourceJob, ID: 12}, Completion: CompletionAll},
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		s := NewState()
		for _, l := range base {
			ev, err := events.Decode(l.subject, l.body, 1<<20)
			if err == nil {
				s.applyLocal(ev)
			}
		}
		ev, err := events.Decode(subject, body, 1<<20)
		if err != nil {
			return
		}
		if _, err := s.applyLocal(ev); err != nil {
			return
		}
		for _, d := range defs {
			var buf bytes.Buffer
			if _, err := s.Render(&buf, d, 1, time.Unix(0, 0)); err != nil {
				t.Fatal(err)
			}
			for _, p := range pipelinetest.StrictJSONCheck(buf.Bytes()) {
				t.Errorf("%s: %s\nevent: %s", d.Name, p, body)
			}
		}
	})
}
