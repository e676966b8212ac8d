package service

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
)

// Buckets are the opened connections, by name.
type Buckets map[string]connectors.Bucket

// OpenBuckets opens every configured connection. publicURL is the base
// URL the service's HTTP server is reached at; local connections sign
// their download links for <publicURL>/files/<name>/ ("" when nothing
// will serve them, as in check-config). No network I/O happens here.
func OpenBuckets(ctx context.Context, conns []config.Connection, publicURL string) (Buckets, error) {
	out := Buckets{}
	for i, c := range conns {
		b, err := openBucket(ctx, c, publicURL)
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("connections[%d] (%s): %w", i, c.Name, err)
		}
		out[c.Name] = b
	}
	return out, nil
}

func openBucket(ctx context.Context, c config.Connection, publicURL string) (connectors.Bucket, error) {
	return connectors.Open(ctx, c, connectors.Env{PublicURL: publicURL})
}

// Close closes every bucket.
func (bs Buckets) Close() {
	for _, b := range bs {
		_ = b.Close()
	}
}

// fileRoutes serves the signed download links of the local connections
// under /files/<name>/.
func (bs Buckets) fileRoutes(mux *http.ServeMux) {
	for name, b := range bs {
		if lb, ok := b.(*local.Bucket); ok {
			prefix := "/files/" + name
			mux.Handle("GET "+prefix+"/", http.StripPrefix(prefix, lb.Handler()))
		}
	}
}

// ProbeResult is what check-config --probe found for one connection.
type ProbeResult struct {
	Connection string
	Type       string
	connectors.ProbeResult
}

// Probe opens every connection and writes, reads and deletes a probe
// object in each (under the path of the first export using it, so that a
// policy limited to that prefix is what is tested), at most timeout per
// connection, all at once.
func Probe(ctx context.Context, cfg *config.Config, timeout time.Duration) []ProbeResult {
	out := make([]ProbeResult, len(cfg.Connections))
	done := make(chan struct{}, len(cfg.Connections))
	for i, c := range cfg.Connections {
		out[i] = ProbeResult{Connection: c.Name, Type: c.Type}
		prefix := ""
		for _, e := range cfg.Exports {
			if e.Connection == c.Name {
				prefix = e.Path
				break
			}
		}
		go func() {
			defer func() { done <- struct{}{} }()
			b, err := openBucket(ctx, c, "")
			if err != nil {
				out[i].ProbeResult = connectors.ProbeResult{Outcome: connectors.Classify(err), Step: "open", Err: err.Error()}
				return
			}
			defer b.Close()
			out[i].ProbeResult = connectors.Probe(ctx, b, prefix, timeout)
		}()
	}
	for range cfg.Connections {
		<-done
	}
	return out
}
