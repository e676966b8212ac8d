package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts bucket operations and their failures by connection and
// operation, for any provider: wrap each bucket with Instrument.
//
//	exportstream_bucket_operations_total{connection, op}
//	exportstream_bucket_errors_total{connection, op}
//	exportstream_bucket_last_write_ok{connection}   1 or 0
//
// op is write, read, attributes, list, delete, sign or abort. A write is
// one object: it counts once, when NewWriter fails, when a Write fails (a
// full disk, a part upload that failed: the caller then aborts, and
// nothing else would tell), or at Close; a write the caller aborts for a
// reason of its own, before anything failed, is not counted as a write.
// abort counts Aborts, and as errors those that failed (a multipart
// upload that could not be cancelled). Expected outcomes are not errors: ErrNotFound, ErrExists or
// ErrPrecondition from a conditional write, and a cancelled context.
type Metrics struct {
	ops, errs *prometheus.CounterVec
	lastWrite *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (if not
// nil). If reg refuses one (a metric of the same name is already
// registered), NewMetrics returns that error.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_bucket_operations_total", Help: "Bucket operations, by connection and operation.",
		}, []string{"connection", "op"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exportstream_bucket_errors_total", Help: "Bucket operations that failed, by connection and operation.",
		}, []string{"connection", "op"}),
		lastWrite: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exportstream_bucket_last_write_ok", Help: "1 if the connection's last write succeeded (or none was tried yet), 0 if it failed.",
		}, []string{"connection"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ops, m.errs, m.lastWrite} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("bucket metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Instrument returns b counted under connection. The result also reports
// how the last write went (LastWrite), for readiness checks.
func (m *Metrics) Instrument(connection string, b Bucket) *Instrumented {
	m.lastWrite.WithLabelValues(connection).Set(1)
	return &Instrumented{b: b, m: m, conn: connection}
}

// Instrumented is a Bucket whose operations are counted.
type Instrumented struct {
	b    Bucket
	m    *Metrics
	conn string

	mu       sync.Mutex
	lastErr  error
	lastTime time.Time
}

// Unwrap returns the instrumented bucket.
func (x *Instrumented) Unwrap() Bucket { return x.b }

// LastWrite reports when the last write finished and its error (nil when
// it succeeded or ended in an expected conditional outcome); a zero time
// when there was none yet.
func (x *Instrumented) LastWrite() (time.Time, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.lastTime, x.lastErr
}

func (x *Instrumented) count(op string, err error) {
	x.m.ops.WithLabelValues(x.conn, op).Inc()
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExists) && !errors.Is(err, ErrPrecondition) &&
		!errors.Is(err, context.Canceled) {
		x.m.errs.WithLabelValues(x.conn, op).Inc()
	}
}

func (x *Instrumented) NewWriter(ctx context.Context, key string, opts WriteOptions) (Writer, error) {
	w, err := x.b.NewWriter(ctx, key, opts)
	if err != nil {
		x.wrote(err)
		return nil, err
	}
	return &instrumentedWriter{Writer: w, x: x}, nil
}

func (x *Instrumented) wrote(err error) {
	x.count("write", err)
	if errors.Is(err, ErrExists) || errors.Is(err, ErrPrecondition) || errors.Is(err, context.Canceled) {
		err = nil
	}
	x.mu.Lock()
	x.lastErr, x.lastTime = err, time.Now()
	x.mu.Unlock()
	ok := 1.0
	if err != nil {
		ok = 0
	}
	x.m.lastWrite.WithLabelValues(x.conn).Set(ok)
}

type instrumentedWriter struct {
	Writer
	x    *Instrumented
	once sync.Once // the write's outcome is recorded once
}

// Write records a failed Write as the write's outcome: the caller aborts
// after it and never reaches Close.
func (w *instrumentedWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	if err != nil {
		w.once.Do(func() { w.x.wrote(err) })
	}
	return n, err
}

func (w *instrumentedWriter) Close() error {
	err := w.Writer.Close()
	w.once.Do(func() { w.x.wrote(err) })
	return err
}

// Abort counts as op abort (an error when the abort failed); the write
// itself counts only if a Write failed before.
func (w *instrumentedWriter) Abort() error {
	err := w.Writer.Abort()
	w.x.count("abort", err)
	return err
}

func (x *Instrumented) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := x.b.NewReader(ctx, key)
	x.count("read", err)
	return r, err
}

func (x *Instrumented) Attributes(ctx context.Context, key string) (Attributes, error) {
	a, err := x.b.Attributes(ctx, key)
	x.count("attributes", err)
	return a, err
}

func (x *Instrumented) List(ctx context.Context, prefix string, fn func(Attributes) bool) error {
	err := x.b.List(ctx, prefix, fn)
	x.count("list", err)
	return err
}

func (x *Instrumented) Delete(ctx context.Context, key string) error {
	err := x.b.Delete(ctx, key)
	x.count("delete", err)
	return err
}

func (x *Instrumented) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	u, err := x.b.SignedURL(ctx, key, expiry)
	x.count("sign", err)
	return u, err
}

func (x *Instrumented) Close() error { return x.b.Close() }
