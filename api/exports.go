package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/exportstream/exportstream/api/client"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/pipeline"
)

// listPage is the answer of GET /api/v1/exports.
type listPage = client.ListPage[pipeline.Record]

func (s *Server) listExports(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := pipeline.RecordFilter{Definition: q.Get("definition"), Project: q.Get("project"), Status: pipeline.Status(q.Get("status"))}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("before=%q is not an export id", v))
			return
		}
		f.Before = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit=%q is not in 1..1000", v))
			return
		}
		f.Limit = n
	}
	switch f.Status {
	case "", pipeline.StatusPending, pipeline.StatusGenerating, pipeline.StatusUploading, pipeline.StatusComplete, pipeline.StatusFailed, pipeline.StatusSkipped:
	case statusDeleted, statusExisting:
		s.writeJSON(w, http.StatusOK, s.listRetained(f))
		return
	default:
		s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("status=%q is not one of pending, generating, uploading, complete, failed, skipped, deleted, existing", f.Status))
		return
	}
	pg := s.o.Pipeline.Records(f)
	page := listPage{Exports: pg.Records, Total: pg.Total}
	if page.Exports == nil {
		page.Exports = []pipeline.Record{}
	}
	if pg.More {
		page.NextBefore = pg.Records[len(pg.Records)-1].ID
	}
	s.writeJSON(w, http.StatusOK, page)
}

// The list's filters on what retention did: complete exports whose
// objects it deleted since (deleted_time set), or whose objects are still
// in the bucket.
const (
	statusDeleted  pipeline.Status = "deleted"
	statusExisting pipeline.Status = "existing"
)

// listRetained answers a list filtered on status deleted or existing: the
// complete records that match the rest of f, read page by page, keeping
// those retention deleted (or did not); Total and NextBefore as for any
// other filter.
func (s *Server) listRetained(f pipeline.RecordFilter) listPage {
	wantDeleted := f.Status == statusDeleted
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	scan := f
	scan.Status, scan.Before, scan.Limit = pipeline.StatusComplete, 0, 1000
	page := listPage{Exports: []pipeline.Record{}}
	more := false
	for {
		pg := s.o.Pipeline.Records(scan)
		for _, r := range pg.Records {
			if (r.DeletedTime != nil) != wantDeleted {
				continue
			}
			page.Total++
			if f.Before > 0 && r.ID >= f.Before {
				continue
			}
			if len(page.Exports) < limit {
				page.Exports = append(page.Exports, r)
			} else {
				more = true
			}
		}
		if !pg.More || len(pg.Records) == 0 {
			break
		}
		scan.Before = pg.Records[len(pg.Records)-1].ID
	}
	if more {
		page.NextBefore = page.Exports[len(page.Exports)-1].ID
	}
	return page
}

// record looks up the {id} of the request's path, answering 400 or 404
// itself when there is none.
func (s *Server) record(w http.ResponseWriter, r *http.Request) (*pipeline.Record, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%q is not an export id", r.PathValue("id")))
		return nil, false
	}
	rec, _ := s.o.Pipeline.RecordByID(id)
	if rec == nil {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no export %d", id))
		return nil, false
	}
	return rec, true
}

func (s *Server) getExport(w http.ResponseWriter, r *http.Request) {
	if rec, ok := s.record(w, r); ok {
		s.writeJSON(w, http.StatusOK, rec)
	}
}

// ready answers for an export that cannot be downloaded (yet) and
// reports whether it can.
func (s *Server) ready(w http.ResponseWriter, rec *pipeline.Record) bool {
	switch {
	case rec.DeletedTime != nil:
		s.writeError(w, http.StatusGone, "deleted", fmt.Sprintf("export %d was deleted from the bucket by retention (keep_last) at %s",
			rec.ID, rec.DeletedTime.Format(time.RFC3339)))
	case rec.Status == pipeline.StatusFailed:
		s.writeError(w, http.StatusConflict, "export_failed", fmt.Sprintf("export %d failed: %s", rec.ID, rec.StatusText))
	case rec.Status == pipeline.StatusSkipped:
		s.writeError(w, http.StatusConflict, "empty_source", fmt.Sprintf("export %d wrote nothing: %s", rec.ID, rec.StatusText))
	case rec.Status != pipeline.StatusComplete:
		s.writeError(w, http.StatusConflict, "not_ready", fmt.Sprintf("export not ready yet: export %d is %s (%d%%)", rec.ID, rec.Status, rec.PercentComplete))
	default:
		return true
	}
	return false
}

func (s *Server) exportData(w http.ResponseWriter, r *http.Request) {
	if rec, ok := s.record(w, r); ok && s.ready(w, rec) {
		s.streamData(w, r, rec)
	}
}

// streamData copies the export's data object from its bucket.
func (s *Server) streamData(w http.ResponseWriter, r *http.Request, rec *pipeline.Record) {
	b := s.o.Pipeline.Bucket(rec.Connection)
	if b == nil {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("export %d is in connection %q, which is not configured", rec.ID, rec.Connection))
		return
	}
	body, err := b.NewReader(r.Context(), rec.Key)
	if errors.Is(err, connectors.ErrNotFound) {
		s.writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("export %d: %s is not in the bucket", rec.ID, rec.Key))
		return
	}
	if err != nil {
		s.internal(w, r, fmt.Errorf("read export %d: %w", rec.ID, err))
		return
	}
	defer body.Close()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.FormatInt(rec.Bytes, 10))
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", path.Base(rec.Key)))
	h.Set("X-Export-Id", strconv.FormatInt(rec.ID, 10))
	h.Set("X-Export-Sha256", rec.SHA256)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, body); err != nil {
		s.o.Logger.Warn("export download cut short", "export_id", rec.ID, "err", err)
	}
}

func (s *Server) exportURL(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok || !s.ready(w, rec) {
		return
	}
	u, err := s.sign(r.Context(), rec)
	if err != nil {
		s.signError(w, r, rec, err)
		return
	}
	writeJSONUnfiltered(w, http.StatusOK, u) // the secret filter must not touch the signed URL
}

func (s *Server) sign(ctx context.Context, rec *pipeline.Record) (*client.SignedURL, error) {
	b := s.o.Pipeline.Bucket(rec.Connection)
	if b == nil {
		return nil, fmt.Errorf("connection %q is not configured: %w", rec.Connection, connectors.ErrNotFound)
	}
	expiry := s.o.SignedURLExpiry[rec.Connection]
	if expiry <= 0 {
		expiry = time.Hour
	}
	at := time.Now().UTC()
	u, err := b.SignedURL(ctx, rec.Key, expiry)
	if err != nil {
		return nil, err
	}
	return &client.SignedURL{ExportID: rec.ID, URL: u, ExpiresAt: at.Add(expiry).Truncate(time.Second)}, nil
}

func (s *Server) signError(w http.ResponseWriter, r *http.Request, rec *pipeline.Record, err error) {
	if errors.Is(err, connectors.ErrNotSupported) {
		s.writeError(w, http.StatusNotImplemented, "not_supported", fmt.Sprintf("export %d: connection %q cannot sign download links: %v", rec.ID, rec.Connection, err))
		return
	}
	s.internal(w, r, fmt.Errorf("sign a URL for export %d: %w", rec.ID, err))
}

// createRequest is the body of POST /api/v1/exports, decoded strictly.
// A type of its own (not an alias) so that the decoder's messages name
// it as they always have ("Go struct field createRequest.wait").
type createRequest client.GenerateRequest

func (s *Server) createExport(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeBody(r, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "bad_request", "request body: "+err.Error())
		return
	}
	switch req.ReturnType {
	case "", "data", "url":
	default:
		s.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("return_type %q is not data or url", req.ReturnType))
		return
	}
	asOf, msg := asOfField(req.AsOf)
	if msg != "" {
		s.writeError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	var rec *pipeline.Record
	var err error
	if !asOf.IsZero() {
		// A point in time: for a definition or an ad-hoc source alike.
		var d pipeline.Definition
		if req.Definition != "" {
			if req.Project != "" || req.Source != nil || req.Connection != "" || req.Completion != "" || req.IncludeRemovedInstances || len(req.Formats) > 0 {
				s.writeError(w, http.StatusBadRequest, "bad_request", "give either a definition or an ad-hoc project, source and connection, not both")
				return
			}
		} else if d, msg = adhocDefinition(&req); msg != "" {
			s.writeError(w, http.StatusBadRequest, "bad_request", msg)
			return
		}
		var ok bool
		if rec, ok, err = s.generateAsOf(w, r, req.Definition, d, asOf); !ok && err == nil {
			return
		}
	} else if req.Definition != "" {
		if req.Project != "" || req.Source != nil || req.Connection != "" || req.Completion != "" || req.IncludeRemovedInstances || len(req.Formats) > 0 {
			s.writeError(w, http.StatusBadRequest, "bad_request", "give either a definition or an ad-hoc project, source and connection, not both")
			return
		}
		rec, err = s.o.Pipeline.Generate(r.Context(), req.Definition)
		if errors.Is(err, pipeline.ErrUnknownDefinition) {
			s.writeError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
	} else {
		d, msg := adhocDefinition(&req)
		if msg != "" {
			s.writeError(w, http.StatusBadRequest, "bad_request", msg)
			return
		}
		rec, err = s.o.Pipeline.GenerateAdhoc(r.Context(), d)
		if errors.Is(err, pipeline.ErrUnknownConnection) {
			s.writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		if errors.Is(err, pipeline.ErrTooManyAdhoc) {
			w.Header().Set("Retry-After", strconv.Itoa(adhocRetryAfter))
			s.writeError(w, http.StatusTooManyRequests, "too_many_requests",
				fmt.Sprintf("%v (http.max_adhoc_exports); ask again in %d s", err, adhocRetryAfter))
			return
		}
		var empty *pipeline.EmptySourceError
		if errors.As(err, &empty) {
			s.writeError(w, http.StatusUnprocessableEntity, "empty_source",
				fmt.Sprintf("export %d skipped: %s", empty.Record.ID, empty.Record.StatusText))
			return
		}
	}
	if errors.Is(err, pipeline.ErrNotHeld) {
		// Partitioned: another replica has this project's state.
		w.Header().Set("Retry-After", "1")
		s.writeError(w, http.StatusServiceUnavailable, "not_held", err.Error()+"; ask again")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !req.Wait {
		w.Header().Set("Location", "/api/v1/exports/"+strconv.FormatInt(rec.ID, 10))
		s.writeJSON(w, http.StatusAccepted, rec)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.MaxWait)
	defer cancel()
	done, err := s.o.Pipeline.WaitRecord(ctx, rec.ID)
	if err != nil {
		s.writeError(w, http.StatusGatewayTimeout, "timeout", fmt.Sprintf("export %d did not finish in time (%v); poll GET /api/v1/exports/%d", rec.ID, err, rec.ID))
		return
	}
	if done.Status == pipeline.StatusFailed {
		s.writeError(w, http.StatusInternalServerError, "export_failed", fmt.Sprintf("export %d failed: %s", done.ID, done.StatusText))
		return
	}
	if done.Status == pipeline.StatusSkipped {
		s.writeError(w, http.StatusUnprocessableEntity, "empty_source", fmt.Sprintf("export %d skipped: %s", done.ID, done.StatusText))
		return
	}
	switch req.ReturnType {
	case "data":
		s.streamData(w, r, done)
	case "url":
		u, err := s.sign(r.Context(), done)
		if err != nil {
			s.signError(w, r, done, err)
			return
		}
		// Unfiltered: the secret filter must not touch the signed URL.
		rec := *done
		if s.o.Redact != nil {
			rec.StatusText = s.o.Redact(rec.StatusText)
		}
		writeJSONUnfiltered(w, http.StatusOK, struct {
			*client.SignedURL
			Export *pipeline.Record `json:"export"`
		}{u, &rec})
	default:
		s.writeJSON(w, http.StatusOK, done)
	}
}

// adhocRetryAfter is the Retry-After (seconds) of an ad-hoc request
// refused because too many run.
const adhocRetryAfter = 5

// adhocDefinition checks an ad-hoc request; msg says what is wrong. The
// project is checked as the config checks exports[].project: it becomes
// a token of the completion event's subject.
func adhocDefinition(req *createRequest) (pipeline.Definition, string) {
	if req.Project == "" || req.Source == nil || req.Connection == "" {
		return pipeline.Definition{}, `give "definition", or an ad-hoc "project", "source" and "connection"`
	}
	if err := config.CheckProject(req.Project); err != nil {
		return pipeline.Definition{}, "project: " + err.Error()
	}
	src, err := req.Source.Parse()
	if err != nil {
		return pipeline.Definition{}, err.Error()
	}
	completion := pipeline.Completion(req.Completion)
	switch completion {
	case "":
		completion = pipeline.CompletionComplete
	case pipeline.CompletionComplete, pipeline.CompletionAll, pipeline.CompletionIncomplete:
	default:
		return pipeline.Definition{}, fmt.Sprintf("completion %q is not complete, all or incomplete", completion)
	}
	if err := config.CheckFormats(req.Formats); err != nil {
		return pipeline.Definition{}, "formats: " + err.Error()
	}
	return pipeline.Definition{Project: req.Project, Source: src, Completion: completion,
		IncludeRemovedInstances: req.IncludeRemovedInstances, Connection: req.Connection,
		Formats: pipeline.NormalizeFormats(req.Formats)}, ""
}

// definitionView is one entry of GET /api/v1/definitions.
type definitionView struct {
	Name                    string              `json:"name"`
	Project                 string              `json:"project"`
	Source                  string              `json:"source"`
	Ref                     string              `json:"ref"`
	Completion              pipeline.Completion `json:"completion"`
	IncludeRemovedInstances bool                `json:"include_removed_instances"`
	Connection              string              `json:"connection"`
	Path                    string              `json:"path"`
	Quiet                   string              `json:"quiet"`
	MaxDelay                string              `json:"max_delay"`
	KeepLast                int                 `json:"keep_last"`
	Formats                 []string            `json:"formats"`
	Latest                  *pipeline.Record    `json:"latest"`
	// Skipped is the newest attempt when it wrote nothing because the
	// source matched no file; its status_text says why.
	Skipped *pipeline.Record `json:"skipped,omitempty"`
	// Media is the definition's media setting: its links are signed by
	// that connection, valid that long (null: copied as received). The
	// latest export's media_links_expire_at says when they expire.
	Media *mediaView `json:"media"`
}

// mediaView is a definition's media setting.
type mediaView struct {
	Connection string `json:"connection"`
	Expiry     string `json:"expiry"`
}

func (s *Server) listDefinitions(w http.ResponseWriter, r *http.Request) {
	out := []definitionView{}
	for _, d := range s.o.Pipeline.Definitions() {
		ref := d.Source.Name
		if ref == "" && d.Source.ID > 0 {
			ref = strconv.FormatInt(d.Source.ID, 10)
		}
		out = append(out, definitionView{
			Name: d.Name, Project: d.Project, Source: string(d.Source.Kind), Ref: ref, Completion: d.Completion,
			IncludeRemovedInstances: d.IncludeRemovedInstances, Connection: d.Connection, Path: d.Path,
			Quiet: d.Quiet.String(), MaxDelay: d.MaxDelay.String(), KeepLast: d.KeepLast,
			Formats: pipeline.NormalizeFormats(d.Formats),
			Latest:  s.o.Pipeline.LatestRecord(d.Name), Skipped: s.o.Pipeline.SkippedRecord(d.Name),
		})
		if m := d.Media; m != nil {
			out[len(out)-1].Media = &mediaView{Connection: m.Connection, Expiry: m.Expiry.String()}
		}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"definitions": out})
}
