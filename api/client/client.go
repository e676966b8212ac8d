// Package client is the wire format of exportstream's HTTP API (package
// api), shared by the server and its clients (the CLI's exports
// command): the bodies of requests and answers, each declared once here.
// An export record is a pipeline.Record. The JSON of each type is the
// API's contract: field names and omissions do not change.
package client

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/exportstream/exportstream/pipeline"
)

// ErrorBody is the body of every error answer:
// {"error": {"code", "message"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is what went wrong: a code for scripts (bad_request,
// not_found, ...) and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ListPage is the answer of GET /api/v1/exports: R is pipeline.Record,
// or json.RawMessage for a client that keeps the records as sent.
type ListPage[R any] struct {
	Exports []R `json:"exports"`
	// Total is how many records match the filter, on all pages.
	Total int `json:"total"`
	// NextBefore, when not 0, is the "before" of the next page.
	NextBefore int64 `json:"next_before,omitempty"`
}

// GenerateRequest is the body of POST /api/v1/exports: a configured
// Definition, or an ad-hoc Project, Source and Connection (with
// Completion, IncludeRemovedInstances and Formats).
type GenerateRequest struct {
	Definition string  `json:"definition,omitempty"`
	Project    string  `json:"project,omitempty"`
	Source     *Source `json:"source,omitempty"`
	// Completion is complete (the server's default), all or incomplete;
	// a string, not a pipeline.Completion: the server checks it.
	Completion              string `json:"completion,omitempty"`
	IncludeRemovedInstances bool   `json:"include_removed_instances,omitempty"`
	Connection              string `json:"connection,omitempty"`
	// Formats are an ad-hoc export's formats beside the Diffgram
	// document (coco, yolo, jsonl; diffgram is always written).
	Formats []string `json:"formats,omitempty"`
	// Wait asks the answer to wait until the export is done; ReturnType
	// then says what it holds: the record (""), the data or a signed URL.
	Wait       bool   `json:"wait,omitempty"`
	ReturnType string `json:"return_type,omitempty"`
	// AsOf asks for the export as of a point in the event stream: a
	// stream sequence (a JSON number or string) or an RFC 3339 time (a
	// string); see pipeline.ParseAsOf.
	AsOf json.RawMessage `json:"as_of,omitempty"`
}

// Source is an ad-hoc export's source: exactly one field set, named as
// in the config file. An id counts as set when it is positive.
type Source struct {
	Directory   string `json:"directory,omitempty"`
	DirectoryID int64  `json:"directory_id,omitempty"`
	Job         string `json:"job,omitempty"`
	JobID       int64  `json:"job_id,omitempty"`
	TaskID      int64  `json:"task_id,omitempty"`
	Project     bool   `json:"project,omitempty"`
}

// Parse returns the source s names (pipeline.ParseSource). It is an
// error unless exactly one field is set.
func (s *Source) Parse() (pipeline.Source, error) {
	type field struct{ kind, value string }
	var set []field
	if s.Directory != "" {
		set = append(set, field{"directory", s.Directory})
	}
	if s.DirectoryID > 0 {
		set = append(set, field{"directory_id", strconv.FormatInt(s.DirectoryID, 10)})
	}
	if s.Job != "" {
		set = append(set, field{"job", s.Job})
	}
	if s.JobID > 0 {
		set = append(set, field{"job_id", strconv.FormatInt(s.JobID, 10)})
	}
	if s.TaskID > 0 {
		set = append(set, field{"task_id", strconv.FormatInt(s.TaskID, 10)})
	}
	if s.Project {
		set = append(set, field{"project", ""})
	}
	if len(set) != 1 {
		return pipeline.Source{}, fmt.Errorf("source: exactly one of directory, directory_id, job, job_id, task_id, project must be set (found %d)", len(set))
	}
	return pipeline.ParseSource(set[0].kind, set[0].value)
}

// SourceOf is src on the wire; Parse gives it back.
func SourceOf(src pipeline.Source) *Source {
	switch {
	case src.Kind == pipeline.SourceDirectory && src.Name != "":
		return &Source{Directory: src.Name}
	case src.Kind == pipeline.SourceDirectory:
		return &Source{DirectoryID: src.ID}
	case src.Kind == pipeline.SourceJob && src.Name != "":
		return &Source{Job: src.Name}
	case src.Kind == pipeline.SourceJob:
		return &Source{JobID: src.ID}
	case src.Kind == pipeline.SourceTask:
		return &Source{TaskID: src.ID}
	}
	return &Source{Project: true}
}

// SignedURL is the answer of GET /api/v1/exports/{id}/url, and part of
// the answer of a POST with "wait" and "return_type": "url" (beside the
// record, as "export").
type SignedURL struct {
	ExportID  int64     `json:"export_id"`
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}
