package connectors_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/connectors/s3"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

// bucketMetrics reads the bucket metrics of one connection from reg.
type bucketMetrics struct {
	t    *testing.T
	reg  *prometheus.Registry
	conn string
}

// value is the metric's value for the connection (and op, when not
// empty); 0 when the series does not exist.
func (m bucketMetrics) value(name, op string) float64 {
	m.t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["connection"] != m.conn || labels["op"] != op {
				continue
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return 0
}

// wantFailedWrite checks that the connection's last write failed and was
// counted: errors{op=write} went up by one from before, and both the
// gauge and LastWrite say so.
func (m bucketMetrics) wantFailedWrite(x *connectors.Instrumented, before float64) {
	m.t.Helper()
	if got := m.value("exportstream_bucket_errors_total", "write"); got != before+1 {
		m.t.Errorf("exportstream_bucket_errors_total{op=write} = %v, want %v", got, before+1)
	}
	if got := m.value("exportstream_bucket_last_write_ok", ""); got != 0 {
		m.t.Errorf("exportstream_bucket_last_write_ok = %v after a failed write, want 0", got)
	}
	if at, err := x.LastWrite(); err == nil || at.IsZero() {
		m.t.Errorf("LastWrite() = %v, %v after a failed write, want its error", at, err)
	}
}

// wantGoodWrite checks that the last write succeeded.
func (m bucketMetrics) wantGoodWrite(x *connectors.Instrumented) {
	m.t.Helper()
	if got := m.value("exportstream_bucket_last_write_ok", ""); got != 1 {
		m.t.Errorf("exportstream_bucket_last_write_ok = %v after a good write, want 1", got)
	}
	if _, err := x.LastWrite(); err != nil {
		m.t.Errorf("LastWrite() error %v after a good write", err)
	}
}

func instrument(t *testing.T, conn string, b connectors.Bucket) (*connectors.Instrumented, bucketMetrics) {
	reg := prometheus.NewRegistry()
	m, err := connectors.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m.Instrument(conn, b), bucketMetrics{t: t, reg: reg, conn: conn}
}

// TestMetricsRegisteredTwice: a registry that already has the bucket
// metrics refuses them again, and NewMetrics says so.
func TestMetricsRegisteredTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := connectors.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	_, err := connectors.NewMetrics(reg)
	if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
		t.Errorf("NewMetrics on a registry that has them: %v, want a prometheus.AlreadyRegisteredError", err)
	}
}

// writeAsPipeline writes data the way the pipeline does: Write, and on a
// failed Write Abort instead of Close. It returns the first error.
func writeAsPipeline(ctx context.Context, b connectors.Bucket, key string, data []byte, chunk int) error {
	w, err := b.NewWriter(ctx, key, connectors.WriteOptions{IfAbsent: true})
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			_ = w.Abort()
			return err
		}
		data = data[n:]
	}
	return w.Close()
}

// TestInstrumentedLocalPublishFails: a local bucket where a file stands
// where a folder must be (this fails for root too): the write fails at
// Close, and is counted.
func TestInstrumentedLocalPublishFails(t *testing.T) {
	dir := t.TempDir()
	lb, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	x, m := instrument(t, "disk", lb)
	if err := writeAsPipeline(t.Context(), x, "exports/a/ok.json", []byte(`{}`), 1<<10); err != nil {
		t.Fatal(err)
	}
	m.wantGoodWrite(x)
	if err := os.WriteFile(filepath.Join(dir, "exports", "b"), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeAsPipeline(t.Context(), x, "exports/b/1.json", []byte(`{"a":1}`), 1<<10); err == nil {
		t.Fatal("a write under a file succeeded")
	}
	m.wantFailedWrite(x, 0)
	if got := m.value("exportstream_bucket_operations_total", "write"); got != 2 {
		t.Errorf("exportstream_bucket_operations_total{op=write} = %v, want 2", got)
	}
}

// TestInstrumentedAbortIsNoWriteError: a write the caller aborts for its
// own reasons is neither a failed write nor a failed abort.
func TestInstrumentedAbortIsNoWriteError(t *testing.T) {
	lb, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	x, m := instrument(t, "disk", lb)
	w, err := x.NewWriter(t.Context(), "a.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("{")); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := m.value("exportstream_bucket_errors_total", "write") + m.value("exportstream_bucket_errors_total", "abort"); got != 0 {
		t.Errorf("errors after a plain abort: %v, want 0", got)
	}
	if got := m.value("exportstream_bucket_operations_total", "abort"); got != 1 {
		t.Errorf("exportstream_bucket_operations_total{op=abort} = %v, want 1", got)
	}
	m.wantGoodWrite(x)
}

// proxy forwards TCP connections to target until stopped; stopping it
// closes the listener and every connection, so the port refuses
// connections as a stopped server's does. start listens again on the
// same address.
type proxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, addr: "127.0.0.1:0", target: target}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestInstrumentedS3Stopped: the S3 server (versitygw, reached through a
// proxy that is stopped) goes away. A small write fails at Close
// (PutObject), a large one when a part upload fails, at Write, after
// which the caller aborts: both are counted, the gauge says 0, and a
// good write after the server is back says 1 again.
func TestInstrumentedS3Stopped(t *testing.T) {
	srv := s3test.Start(t)
	opts := srv.NewBucket(t)
	target := opts.Endpoint[len("http://"):]
	px := startProxy(t, target)
	opts.Endpoint = "http://" + px.addr
	sb, err := s3.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	x, m := instrument(t, "s3", sb)
	if err := writeAsPipeline(t.Context(), x, "ok.json", []byte(`{}`), 1<<10); err != nil {
		t.Fatal(err)
	}
	m.wantGoodWrite(x)

	px.stop()
	if err := writeAsPipeline(t.Context(), x, "small.json", []byte(`{"a":1}`), 1<<10); err == nil {
		t.Fatal("a write with the server stopped succeeded")
	}
	m.wantFailedWrite(x, 0)

	// More than one part: the first part's upload fails while the
	// caller still writes.
	big := bytes.Repeat([]byte("0123456789abcdef"), (2*int(s3.MinPartSize)+1<<20)/16)
	err = writeAsPipeline(t.Context(), x, "big.json", big, 256<<10)
	if err == nil {
		t.Fatal("a multipart write with the server stopped succeeded")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatalf("multipart write: %v, want the upload's failure", err)
	}
	m.wantFailedWrite(x, 1)

	px.start()
	if err := writeAsPipeline(t.Context(), x, "again.json", []byte(`{}`), 1<<10); err != nil {
		t.Fatal(err)
	}
	m.wantGoodWrite(x)
}
