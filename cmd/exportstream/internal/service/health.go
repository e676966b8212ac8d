package service

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/api"
	"github.com/exportstream/exportstream/connectors"
)

// Readiness is whether this replica can do its work: NATS connected, the
// event consumer bound, and the writes to JetStream succeeding (state,
// and no store found full). A bucket that is down is not part of it: it
// delays its own connection's exports only, and a replica taken out of a
// Service for it would take the API, the page and the downloads of the
// healthy connections with it. Each connection's health is reported
// beside it (/readyz?verbose, GET /api/v1/status,
// exportstream_bucket_last_write_ok).

// errBox holds an error in an atomic.Pointer.
type errBox struct{ err error }

// health checks the replica now. Every text passes the secret filter.
func (s *Service) health(nc *nats.Conn, counted Buckets) api.Health {
	h := api.Health{Ready: true}
	check := func(name string, err error) {
		c := api.Check{Name: name, OK: err == nil}
		if err != nil {
			h.Ready = false
			c.Error = s.redact(err.Error())
		}
		h.Checks = append(h.Checks, c)
	}
	if nc.IsConnected() {
		check("nats", nil)
	} else {
		check("nats", fmt.Errorf("not connected (%s)", strings.ToLower(nc.Status().String())))
	}
	check("consumer", s.consumerBound())
	if p := s.pipe.Load(); p == nil {
		check("state", errors.New("the pipeline is not open yet"))
	} else {
		check("state", p.WriteHealth())
	}
	for _, name := range slices.Sorted(maps.Keys(counted)) {
		x, ok := counted[name].(*connectors.Instrumented)
		if !ok {
			continue
		}
		c := api.Check{Name: name, OK: true}
		if at, err := x.LastWrite(); err != nil {
			c.OK = false
			c.Error = s.redact(fmt.Sprintf("last write at %s failed: %v", at.UTC().Format(time.RFC3339), err))
		}
		h.Connections = append(h.Connections, c)
	}
	return h
}

// consumerBound is nil once the consumer is bound and the server still
// knows it (its info is read every 5 s: watchConsumer). Other failures to
// read the info (a slow answer) do not count: NATS's own check covers a
// lost connection.
func (s *Service) consumerBound() error {
	if !s.isReady.Load() {
		return errors.New("not bound yet (starting)")
	}
	b := s.consumerErr.Load()
	if b == nil || b.err == nil {
		return nil
	}
	switch {
	case errors.Is(b.err, jetstream.ErrConsumerNotFound), errors.Is(b.err, jetstream.ErrConsumerDoesNotExist):
		return fmt.Errorf("not bound: durable consumer %s of stream %s is gone (deleted?); restart the replica to create it again: %w",
			s.cfg.NATS.Consumer, s.cfg.NATS.Stream, b.err)
	case errors.Is(b.err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("not bound: stream %s is gone: %w", s.cfg.NATS.Stream, b.err)
	case errors.Is(b.err, jetstream.ErrJetStreamNotEnabled), errors.Is(b.err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("not bound: %w", b.err)
	}
	return nil
}

// serveReadyz answers /readyz: one line per readiness check, "name: ok"
// or "name: what is wrong", 200 when all pass, else 503. With ?verbose,
// one line per connection follows, "connection <name>: ok" or
// "connection <name>: unhealthy: …", which never changes the status.
func (s *Service) serveReadyz(nc *nats.Conn, counted Buckets) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := s.health(nc, counted)
		var lines []string
		for _, c := range h.Checks {
			if c.OK {
				lines = append(lines, c.Name+": ok")
			} else {
				lines = append(lines, c.Name+": "+c.Error)
			}
		}
		if r.URL.Query().Has("verbose") {
			for _, c := range h.Connections {
				if c.OK {
					lines = append(lines, "connection "+c.Name+": ok")
				} else {
					lines = append(lines, "connection "+c.Name+": unhealthy: "+c.Error)
				}
			}
		}
		status := http.StatusOK
		if !h.Ready {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		io.WriteString(w, strings.Join(lines, "\n")+"\n")
	}
}
