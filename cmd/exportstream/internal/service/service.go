// Package service wires exportstream together from a config: NATS
// (embedded or remote), the event consumer, the pipeline, the buckets and
// the HTTP endpoints. It owns the start-up and shutdown order.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exportstream/exportstream/api"
	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline"
)

// Service is one running exportstream replica.
type Service struct {
	cfg *config.Config
	log *slog.Logger
	reg *prometheus.Registry

	natsURL  atomic.Value // string
	httpAddr atomic.Value // string
	ready    chan struct{}
	isReady  atomic.Bool
	pipe     atomic.Pointer[pipeline.Pipeline]
	js       atomic.Value // jetstream.JetStream

	redact      func(string) string    // blanks the config's secrets (health.go, the API)
	consumerErr atomic.Pointer[errBox] // the latest consumer info error (watchConsumer)
}

// New returns a service for cfg (already validated).
func New(cfg *config.Config, log *slog.Logger) *Service {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Service{cfg: cfg, log: log, reg: reg, ready: make(chan struct{}), redact: RedactString(cfg.SecretValues())}
}

// Ready is closed once the service consumes events.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// NATSURL is the URL of the NATS server in use (the embedded one's
// actual address when embedded), known once Ready is closed.
func (s *Service) NATSURL() string { v, _ := s.natsURL.Load().(string); return v }

// HTTPAddr is the address the HTTP server listens on, known once Ready is
// closed.
func (s *Service) HTTPAddr() string { v, _ := s.httpAddr.Load().(string); return v }

// Pipeline returns the running pipeline (nil before Ready).
func (s *Service) Pipeline() *pipeline.Pipeline { return s.pipe.Load() }

// Bucket returns the bucket of the connection named name, as the
// pipeline uses it (counted in the bucket metrics); nil before Ready or
// if there is no such connection.
func (s *Service) Bucket(name string) connectors.Bucket {
	if p := s.pipe.Load(); p != nil {
		return p.Bucket(name)
	}
	return nil
}

// Run starts everything and blocks until ctx is done or a part fails.
// Shutdown order, each step once the one before has ended: stop consuming
// (the batch in hand finishes), stop the pipeline (its exports end or are
// aborted), close NATS, stop the embedded server.
func (s *Service) Run(ctx context.Context) (err error) {
	defer func() {
		// Last, once everything is shut down: a clean stop says so, and why.
		if err == nil && ctx.Err() != nil {
			s.log.Info("exportstream stopped", "reason", context.Cause(ctx).Error())
		}
	}()
	cfg := s.cfg
	var ns *server.Server
	url := cfg.NATS.URL
	if url == "" {
		if err := os.MkdirAll(cfg.NATS.Embedded.StoreDir, 0o755); err != nil {
			return fmt.Errorf("nats.embedded.store_dir: %w", err)
		}
		var err error
		ns, err = events.StartEmbedded(cfg.NATS.Embedded.Listen, cfg.NATS.Embedded.StoreDir)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		url = ns.ClientURL()
		s.log.Info("embedded NATS started", "url", url, "store_dir", cfg.NATS.Embedded.StoreDir)
	}
	s.natsURL.Store(url)
	nc, err := events.Connect(events.ConnectOptions{
		URL: url, Name: "exportstream", CredentialsFile: cfg.NATS.CredentialsFile,
		User: cfg.NATS.User, Password: cfg.NATS.Password.Reveal(), Token: cfg.NATS.Token.Reveal(),
		CAFile: cfg.NATS.TLS.CAFile, CertFile: cfg.NATS.TLS.CertFile, KeyFile: cfg.NATS.TLS.KeyFile,
	}, func(msg string, err error) { s.log.Warn(msg, "err", err) })
	if err != nil {
		return NATSConnectError(url, err, "start it, or correct nats.url in the config "+
			"(leave nats.url out to have the service run its own NATS server)")
	}
	defer nc.Close()
	// An async publish whose acknowledgement never comes (the server that
	// took it went down before storing it) fails after 5 s instead of
	// holding a batch of events forever; the batch is then redelivered.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	s.js.Store(js)

	// Listen first: local connections sign links for this address.
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	defer ln.Close()
	s.httpAddr.Store(ln.Addr().String())
	publicURL := cfg.HTTP.PublicURL
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	buckets, err := OpenBuckets(ctx, cfg.Connections, publicURL)
	if err != nil {
		return err
	}
	defer buckets.Close()
	// Every bucket counted by connection; the pipeline and the API use
	// these, the /files/ routes the providers themselves.
	bm, err := connectors.NewMetrics(s.reg)
	if err != nil {
		return err
	}
	counted := Buckets{}
	for name, b := range buckets {
		counted[name] = bm.Instrument(name, b)
	}
	uploads := map[string]int{}
	for _, c := range cfg.Connections {
		uploads[c.Name] = c.Uploads
	}

	cons, err := events.NewConsumer(ctx, js, events.ConsumerConfig{
		Stream: cfg.NATS.Stream, Subjects: cfg.NATS.Subjects, CreateStream: cfg.NATS.CreateStream,
		Replicas: cfg.NATS.Replicas, Consumer: cfg.NATS.Consumer, DeadLetter: cfg.NATS.DeadLetterStream,
		MaxEventBytes: cfg.NATS.MaxEventBytes, MaxEventDepth: cfg.NATS.MaxEventDepth,
		MaxAckPending: cfg.NATS.MaxAckPending, AckWait: cfg.NATS.AckWait, MaxBackoff: cfg.Retry.MaxBackoff,
		Partitions: cfg.NATS.Partitions,
	}, s.log.With("part", "consumer"), s.reg)
	if err != nil {
		return err
	}
	defs, err := Definitions(cfg.Exports)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	pipe, err := pipeline.Open(ctx, js, pipeline.Options{
		Definitions:   defs,
		Buckets:       counted,
		Uploads:       uploads,
		StatePrefix:   cfg.NATS.StatePrefix,
		Replicas:      cfg.NATS.Replicas,
		ExportsStream: exportsStream(cfg),
		Deployment:    cfg.Deployment,
		Owner:         host + "/" + strconv.Itoa(os.Getpid()), // for humans: the pipeline adds a random id per start
		Logger:        s.log.With("part", "pipeline"),
		Registerer:    s.reg,
		// Export record retention (config records).
		RecordsKeepLast: cfg.Records.KeepLast, RecordsMaxAge: cfg.Records.MaxAge,
		StateDir:   cfg.State.Dir,
		MaxBackoff: cfg.Retry.MaxBackoff,
		MaxAdhoc:   cfg.HTTP.MaxAdhocExports,
		// Point-in-time exports replay the consumer's stream, decoded as
		// the consumer decodes it.
		EventsStream: cfg.NATS.Stream,
		EventLimits:  events.Limits{MaxBytes: cfg.NATS.MaxEventBytes, MaxDepth: cfg.NATS.MaxEventDepth},
		// Partitioned: the pipeline runs the consumers of the partitions
		// it holds.
		Partitions: cfg.NATS.Partitions,
		RunPartition: func(ctx context.Context, i int, handle events.Handler) error {
			pc, err := cons.Partition(ctx, i)
			if err != nil {
				return err
			}
			return pc.Run(ctx, handle)
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := pipe.Close(); err != nil {
			s.log.Error("closing the local state store", "err", err)
		}
	}()
	s.pipe.Store(pipe)

	expiry := map[string]time.Duration{}
	for _, c := range cfg.Connections {
		expiry[c.Name] = c.SignedURLExpiry
	}
	apiServer := api.New(api.Options{
		Pipeline: pipe, DeadLetters: events.NewDeadLetters(js, cfg.NATS.DeadLetterStream), Consumer: cons.Info,
		Token: cfg.HTTP.Token.Reveal(), SignedURLExpiry: expiry, Logger: s.log.With("part", "api"),
		Redact: s.redact, Health: func() api.Health { return s.health(nc, counted) },
	})
	srv := &http.Server{Handler: s.routes(nc, buckets, counted, apiServer), ReadHeaderTimeout: 10 * time.Second}

	gauges, err := newConsumerGauges(s.reg)
	if err != nil {
		return err
	}
	// Shutdown in order: first the consumer (its batch in hand ends:
	// applied, or handed back), the consumer gauges and HTTP; then the
	// pipeline (its running exports end or are aborted, its partitions'
	// consumers stop before it; see Pipeline.Run); NATS closes once Run
	// returns (the defers above).
	var parts stages
	parts.add(0, func(ctx context.Context) error { return cons.Run(ctx, pipe.Handle) })
	parts.add(0, func(ctx context.Context) error { s.watchConsumer(ctx, cons, gauges); return nil })
	parts.add(0, func(context.Context) error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	parts.add(0, func(ctx context.Context) error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	parts.add(1, pipe.Run)
	s.isReady.Store(true)
	close(s.ready)
	s.log.Info("exportstream running", "nats", RedactNATSURL(url), "http", ln.Addr().String(), "exports", len(cfg.Exports),
		"owner", pipe.Owner())
	err = parts.run(ctx)
	s.isReady.Store(false)
	return err
}

func exportsStream(cfg *config.Config) string {
	if !cfg.NATS.CreateStream {
		return ""
	}
	return cfg.NATS.ExportsStream
}

func (s *Service) routes(nc *nats.Conn, buckets, counted Buckets, apiServer *api.Server) http.Handler {
	mux := http.NewServeMux()
	buckets.fileRoutes(mux)
	apiServer.Register(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	// Profiles for ops (http.listen is loopback by default).
	// Profiles ask for the API's token when there is one.
	mux.Handle("GET /debug/pprof/", apiServer.Auth(pprof.Index))
	mux.Handle("GET /debug/pprof/profile", apiServer.Auth(pprof.Profile))
	mux.Handle("GET /debug/pprof/trace", apiServer.Auth(pprof.Trace))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReadyz(nc, counted))
	return mux
}

// consumerGauges are the backlog gauges that watchConsumer keeps:
// exportstream_consumer_pending and _ack_pending (the shared consumer and
// every partition's, summed) and, partitioned, exportstream_partition_pending
// and _ack_pending by partition.
type consumerGauges struct {
	pending, ackPending         prometheus.Gauge
	partPending, partAckPending *prometheus.GaugeVec
}

// newConsumerGauges creates the consumer gauges and registers them with
// reg; a gauge reg refuses (already registered) is an error.
func newConsumerGauges(reg prometheus.Registerer) (consumerGauges, error) {
	g := consumerGauges{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exportstream_consumer_pending", Help: "Events in the stream not yet delivered to a consumer: the shared one and every partition's (all replicas).",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exportstream_consumer_ack_pending", Help: "Events delivered and not yet acked: the shared consumer and every partition's (all replicas).",
		}),
		partPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exportstream_partition_pending", Help: "Events in a partition not yet delivered to its consumer (whichever replica holds it).",
		}, []string{"partition"}),
		partAckPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exportstream_partition_ack_pending", Help: "Events of a partition delivered and not yet acked.",
		}, []string{"partition"}),
	}
	for _, c := range []prometheus.Collector{g.pending, g.ackPending, g.partPending, g.partAckPending} {
		if err := reg.Register(c); err != nil {
			return consumerGauges{}, fmt.Errorf("consumer metrics: %w", err)
		}
	}
	return g, nil
}

// watchConsumer keeps the consumers' pending and ack-pending counts in
// the gauges, every 5 s. A partition whose consumer does not exist yet
// counts nothing.
func (s *Service) watchConsumer(ctx context.Context, cons *events.Consumer, gauges consumerGauges) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		if ctx.Err() == nil {
			s.consumerErr.Store(&errBox{err})
		}
		var parts []*jetstream.ConsumerInfo
		var perr error
		if err == nil {
			parts, perr = cons.PartitionsInfo(ictx)
		}
		if err == nil && perr == nil {
			pending, ackPending := info.NumPending, uint64(info.NumAckPending)
			for i, pi := range parts {
				if pi == nil {
					continue
				}
				pending += pi.NumPending
				ackPending += uint64(pi.NumAckPending)
				gauges.partPending.WithLabelValues(strconv.Itoa(i)).Set(float64(pi.NumPending))
				gauges.partAckPending.WithLabelValues(strconv.Itoa(i)).Set(float64(pi.NumAckPending))
			}
			gauges.pending.Set(float64(pending))
			gauges.ackPending.Set(float64(ackPending))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Definitions converts the configured exports, which Validate checked.
func Definitions(exports []config.Export) ([]*pipeline.Definition, error) {
	out := make([]*pipeline.Definition, 0, len(exports))
	for i, e := range exports {
		d := &pipeline.Definition{
			Name: e.Name, Project: e.Project, Completion: pipeline.Completion(e.Completion),
			IncludeRemovedInstances: e.IncludeRemovedInstances, Connection: e.Connection,
			Path: e.Path, Quiet: e.Coalesce.Quiet, MaxDelay: e.Coalesce.MaxDelay, KeepLast: e.KeepLast,
			Formats: pipeline.NormalizeFormats(e.Formats),
		}
		if m := e.Media; m != nil {
			d.Media = &pipeline.Media{Connection: m.Connection, Expiry: m.Expiry}
		}
		src, err := pipeline.ParseSource(sourceField(e.Source))
		if err != nil {
			return nil, fmt.Errorf("exports[%d] (%s).source: %w", i, e.Name, err)
		}
		d.Source = src
		out = append(out, d)
	}
	return out, nil
}

// sourceField names the config's source (its one field, which Validate
// checked) as pipeline.ParseSource reads it.
func sourceField(src config.Source) (kind, value string) {
	switch {
	case src.Directory != "":
		return "directory", src.Directory
	case src.DirectoryID != nil:
		return "directory_id", strconv.FormatInt(*src.DirectoryID, 10)
	case src.Job != "":
		return "job", src.Job
	case src.JobID != nil:
		return "job_id", strconv.FormatInt(*src.JobID, 10)
	case src.TaskID != nil:
		return "task_id", strconv.FormatInt(*src.TaskID, 10)
	}
	return "project", ""
}
