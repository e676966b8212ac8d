// Package api is exportstream's HTTP API (JSON under /api/v1) and its
// export page (/, assets embedded in the binary).
//
// Routes (fixed: scripts and runbooks rely on them):
//
//	GET  /api/v1/exports                 records, newest first: ?definition= &project= &status= &before=<id> &limit=
//	GET  /api/v1/exports/{id}            one record
//	POST /api/v1/exports                 export now: {"definition": name} or an ad-hoc
//	                                     {"project", "source", "completion", "include_removed_instances",
//	                                     "connection"}, with "wait" and "return_type" (data | url)
//	GET  /api/v1/exports/{id}/data       the export document, streamed from the bucket
//	GET  /api/v1/exports/{id}/url        a signed download URL and its expiry
//	GET  /api/v1/definitions             the definitions, each with its latest export
//	GET  /api/v1/status                  how current the exports are: the newest event applied, the
//	                                     consumer's backlog, per definition up to date or events pending;
//	                                     the replica's readiness and each connection's health
//	GET  /api/v1/deadletters             dead-letter count and the newest entries with their reasons
//	POST /api/v1/deadletters/redrive     re-publish chosen entries: {"sequences": [..]}
//
// Errors are JSON {"error": {"code", "message"}} with a fitting status:
// 400 bad_request, 401 unauthorized, 404 not_found, 409 not_ready (an
// export asked for its data or URL before it is complete) / export_failed
// / empty_source, 410 deleted (the export was removed by keep_last), 422
// empty_source / as_of_unavailable / as_of_out_of_range, 429
// too_many_requests (more ad-hoc exports than http.max_adhoc_exports; with
// Retry-After), 500 export_failed / internal, 501 not_supported (a
// connection that cannot sign links; point-in-time exports not
// configured), 503 unavailable (NATS did not answer in time) / not_held (the
// project's partition is being handed over; with Retry-After), 504
// timeout (a waited-for export did not finish in time). With a
// token configured, every /api/ request needs "Authorization: Bearer
// <token>" (the scheme in any case); the page
// itself is public and asks for the token. Secrets never appear in an
// answer: records hold none, and provider errors pass through the
// service's secret filter before they are logged; answers (but signed
// URLs) pass it too.
//
// The API reaches the export pipeline and the dead-letter stream through
// two interfaces, Pipeline and DeadLetters, so its handlers can be tested
// on their own; the bodies it reads and writes are declared in
// api/client.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/api/client"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline"
)

// Pipeline is what the API asks of the export pipeline:
// *pipeline.Pipeline, whose methods these are (their contracts are
// there), or a fake in tests.
type Pipeline interface {
	// Definitions returns the configured definitions, by name.
	Definitions() []*pipeline.Definition
	// Records returns a page of the records that match f, newest first;
	// RecordByID one record, and whether it exists.
	Records(f pipeline.RecordFilter) pipeline.RecordPage
	RecordByID(id int64) (*pipeline.Record, bool)
	// LatestRecord returns a definition's newest complete export, and
	// SkippedRecord its newest attempt when that one wrote nothing
	// (nil when there is none).
	LatestRecord(name string) *pipeline.Record
	SkippedRecord(name string) *pipeline.Record
	// Generate starts an export of a definition now (an error wrapping
	// pipeline.ErrUnknownDefinition if there is none by that name);
	// GenerateAdhoc one of an ad-hoc definition (errors wrapping
	// pipeline.ErrUnknownConnection or pipeline.ErrTooManyAdhoc, or a
	// *pipeline.EmptySourceError); GenerateAsOf one as of a point in
	// the event stream (also pipeline.ErrAsOfUnavailable,
	// ErrAsOfBeyond, ErrAsOfNotConfigured). Each returns the pending
	// record.
	Generate(ctx context.Context, name string) (*pipeline.Record, error)
	GenerateAdhoc(ctx context.Context, d pipeline.Definition) (*pipeline.Record, error)
	GenerateAsOf(ctx context.Context, d pipeline.Definition, at pipeline.AsOf) (*pipeline.Record, error)
	// WaitRecord waits until export id is complete, failed or skipped
	// and returns its record, or ctx's error.
	WaitRecord(ctx context.Context, id int64) (*pipeline.Record, error)
	// Bucket returns a connection's bucket, or nil.
	Bucket(connection string) connectors.Bucket
	// LastApplied returns the newest event this replica applied, and
	// Freshness how current a definition's export is.
	LastApplied() pipeline.Applied
	Freshness(ctx context.Context, name string) (pipeline.Freshness, error)
}

// DeadLetters is the dead-letter stream as the API lists and redrives
// it: *events.DeadLetters, whose methods these are, or a fake in tests.
type DeadLetters interface {
	// Stream returns the stream's name.
	Stream() string
	// List returns how many entries there are and the newest limit,
	// newest first.
	List(ctx context.Context, limit int) (count uint64, newest []events.DeadLetter, err error)
	// Redrive re-publishes the entries seqs and removes them: one
	// result per sequence (an error wrapping events.ErrNoDeadLetter for
	// one the stream does not hold); an error when the stream cannot be
	// reached.
	Redrive(ctx context.Context, seqs []uint64) ([]events.Redriven, error)
}

var (
	_ Pipeline    = (*pipeline.Pipeline)(nil)
	_ DeadLetters = (*events.DeadLetters)(nil)
)

// Options configure the API.
type Options struct {
	Pipeline    Pipeline
	DeadLetters DeadLetters
	// Consumer, when set, returns the event consumer's state (its
	// backlog, for GET /api/v1/status).
	Consumer func(context.Context) (*jetstream.ConsumerInfo, error)
	// Health, when set, returns the replica's readiness and its
	// connections' health, for GET /api/v1/status.
	Health func() Health
	// Token, when not empty, is required as a bearer token on /api/.
	Token string
	// SignedURLExpiry is the download links' lifetime per connection
	// (default one hour).
	SignedURLExpiry map[string]time.Duration
	// MaxWait bounds how long a POST with "wait": true waits (default
	// 15 minutes).
	MaxWait time.Duration
	// Redact, when set, blanks secrets in every JSON answer but signed
	// URLs (raw and JSON-escaped: it is applied to the encoded answer).
	Redact func(string) string
	Logger *slog.Logger
}

// Server serves the API and the page.
type Server struct {
	o Options
}

// New returns the API server.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 15 * time.Minute
	}
	return &Server{o: o}
}

// Register adds the API routes and the page to mux.
func (s *Server) Register(mux *http.ServeMux) {
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.Auth(h)) }
	api("GET /api/v1/exports", s.listExports)
	api("POST /api/v1/exports", s.createExport)
	api("GET /api/v1/exports/{id}", s.getExport)
	api("GET /api/v1/exports/{id}/data", s.exportData)
	api("GET /api/v1/exports/{id}/url", s.exportURL)
	api("GET /api/v1/definitions", s.listDefinitions)
	api("GET /api/v1/status", s.status)
	api("GET /api/v1/deadletters", s.listDeadLetters)
	api("POST /api/v1/deadletters/redrive", s.redrive)
	api("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, http.StatusNotFound, "not_found", "no such API route: "+r.Method+" "+r.URL.Path)
	})
	s.registerPage(mux)
}

// Auth wraps h with the bearer-token check, when a token is configured
// (401 JSON error otherwise). The scheme is case-insensitive (RFC 7235:
// "bearer", "BEARER"); the token is compared exactly.
func (s *Server) Auth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.o.Token != "" {
			got, ok := bearerToken(r.Header.Get("Authorization"))
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="exportstream"`)
				s.writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <http.token>)")
				return
			}
		}
		h(w, r)
	})
}

// bearerToken returns the token of an Authorization header value
// "Bearer <token>", the scheme in any case, with one or more spaces
// before the token (RFC 7235, RFC 6750).
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// writeError answers with an error; the message passes the secret
// filter (a provider's error text may quote a request).
func (s *Server) writeError(w http.ResponseWriter, status int, code, msg string) {
	s.writeJSON(w, status, client.ErrorBody{Error: client.ErrorDetail{Code: code, Message: msg}})
}

// writeJSON answers with v as JSON, passed through the secret filter
// (Options.Redact): a record's status_text, a dead letter's reason or a
// health check's error may quote a provider's error, which may hold a
// URL with a password. Signed URLs must not be filtered (a session token
// is part of an S3 presigned URL): answer them with writeJSONUnfiltered.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	if s.o.Redact == nil {
		writeJSONUnfiltered(w, status, v)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		writeJSONUnfiltered(w, http.StatusInternalServerError,
			client.ErrorBody{Error: client.ErrorDetail{Code: "internal", Message: "the answer cannot be encoded"}})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, s.o.Redact(buf.String()))
}

// writeJSONUnfiltered answers with v as JSON as it is.
func writeJSONUnfiltered(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeBody reads a JSON request body strictly (unknown fields are
// errors), at most 1 MiB.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// internal answers 500 for an unexpected error, logging it.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.o.Logger.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	status, code := http.StatusInternalServerError, "internal"
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, jetstream.ErrNoHeartbeat) {
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	s.writeError(w, status, code, err.Error())
}
