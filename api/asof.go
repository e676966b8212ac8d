package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/exportstream/exportstream/pipeline"
)

// asOfField reads the as_of of POST /api/v1/exports: absent or null (an
// export of the state now), a stream sequence as a JSON number or string,
// or an RFC 3339 time as a string. msg says what is wrong.
func asOfField(raw json.RawMessage) (at pipeline.AsOf, msg string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return pipeline.AsOf{}, ""
	}
	var s string
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return pipeline.AsOf{}, "as_of: " + err.Error()
		}
	default:
		// A number: its digits as written (1e3 or 12.0 are not sequences).
		s = string(raw)
	}
	at, err := pipeline.ParseAsOf(s)
	if err != nil {
		return pipeline.AsOf{}, "as_of: " + err.Error()
	}
	return at, ""
}

// generateAsOf starts the point-in-time export of a request: of the
// configured definition name, or of the ad-hoc d when name is empty. It
// answers the errors that are the request's (unknown definition or
// connection, a point the stream cannot give, too many ad-hoc exports)
// and reports ok false then; any other error is returned.
func (s *Server) generateAsOf(w http.ResponseWriter, r *http.Request, name string, d pipeline.Definition, at pipeline.AsOf) (rec *pipeline.Record, ok bool, err error) {
	if name != "" {
		def := s.definition(name)
		if def == nil {
			s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%v: %q", pipeline.ErrUnknownDefinition, name))
			return nil, false, nil
		}
		d = *def
	}
	rec, err = s.o.Pipeline.GenerateAsOf(r.Context(), d, at)
	switch {
	case err == nil:
		return rec, true, nil
	case errors.Is(err, pipeline.ErrUnknownConnection):
		s.writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, pipeline.ErrAsOfUnavailable):
		s.writeError(w, http.StatusUnprocessableEntity, "as_of_unavailable", err.Error())
	case errors.Is(err, pipeline.ErrAsOfBeyond):
		s.writeError(w, http.StatusUnprocessableEntity, "as_of_out_of_range", err.Error())
	case errors.Is(err, pipeline.ErrAsOfNotConfigured):
		s.writeError(w, http.StatusNotImplemented, "not_supported", err.Error())
	case errors.Is(err, pipeline.ErrTooManyAdhoc):
		w.Header().Set("Retry-After", strconv.Itoa(adhocRetryAfter))
		s.writeError(w, http.StatusTooManyRequests, "too_many_requests",
			fmt.Sprintf("%v (http.max_adhoc_exports); ask again in %d s", err, adhocRetryAfter))
	default:
		return nil, false, err
	}
	return nil, false, nil
}

// definition returns the configured definition name, or nil.
func (s *Server) definition(name string) *pipeline.Definition {
	for _, d := range s.o.Pipeline.Definitions() {
		if d.Name == name {
			return d
		}
	}
	return nil
}
