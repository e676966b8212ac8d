package client

import (
	"encoding/json"
	"testing"

	"github.com/exportstream/exportstream/pipeline"
)

func TestSourceRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		src  pipeline.Source
		wire string
	}{
		{pipeline.Source{Kind: pipeline.SourceDirectory, Name: "Train"}, `{"directory":"Train"}`},
		{pipeline.Source{Kind: pipeline.SourceDirectory, ID: 3}, `{"directory_id":3}`},
		{pipeline.Source{Kind: pipeline.SourceJob, Name: "cars"}, `{"job":"cars"}`},
		{pipeline.Source{Kind: pipeline.SourceJob, ID: 4}, `{"job_id":4}`},
		{pipeline.Source{Kind: pipeline.SourceTask, ID: 9002}, `{"task_id":9002}`},
		{pipeline.Source{Kind: pipeline.SourceProject}, `{"project":true}`},
	} {
		w := SourceOf(tc.src)
		b, err := json.Marshal(w)
		if err != nil || string(b) != tc.wire {
			t.Errorf("SourceOf(%+v) = %s (%v), want %s", tc.src, b, err, tc.wire)
		}
		if got, err := w.Parse(); err != nil || got != tc.src {
			t.Errorf("%s: Parse = %+v, %v; want %+v", tc.wire, got, err, tc.src)
		}
	}
}

func TestSourceParseExactlyOne(t *testing.T) {
	for _, tc := range []struct {
		s    Source
		want string
	}{
		{Source{}, "source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found 0)"},
		{Source{DirectoryID: -2}, "source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found 0)"},
		{Source{Job: "a", Project: true}, "source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found 2)"},
	} {
		if _, err := tc.s.Parse(); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
		}
	}
}

// TestWire: the bodies as the CLI sent them and the server answered
// before the types were shared.
func TestWire(t *testing.T) {
	asOf, _ := json.Marshal("2024-05-01T10:00:00Z")
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"definition request", GenerateRequest{Definition: "d"}, `{"definition":"d"}`},
		{"ad-hoc request", GenerateRequest{Project: "p", Source: &Source{TaskID: 9}, Completion: "all", IncludeRemovedInstances: true,
			Connection: "disk", Formats: []string{"coco"}, Wait: true, ReturnType: "url", AsOf: asOf},
			`{"project":"p","source":{"task_id":9},"completion":"all","include_removed_instances":true,"connection":"disk",` +
				`"formats":["coco"],"wait":true,"return_type":"url","as_of":"2024-05-01T10:00:00Z"}`},
		{"error", ErrorBody{Error: ErrorDetail{Code: "not_found", Message: "no export 7"}}, `{"error":{"code":"not_found","message":"no export 7"}}`},
		{"empty page", ListPage[pipeline.Record]{Exports: []pipeline.Record{}, Total: 0}, `{"exports":[],"total":0}`},
		{"raw page", ListPage[json.RawMessage]{Exports: []json.RawMessage{[]byte(`{"id":2}`)}, Total: 5, NextBefore: 2},
			`{"exports":[{"id":2}],"total":5,"next_before":2}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.name, b, err, tc.want)
		}
	}
}
