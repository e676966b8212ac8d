package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline"
)

// BenchmarkAPI measures the API's answer time with 10,000 export records
// in the store, over loopback HTTP:
//
//	go test ./cmd/exportstream/internal/service -run '^$' -bench API -benchtime 2000x
func BenchmarkAPI(b *testing.B) {
	const n = 10000
	cfg := config.Default()
	dir := b.TempDir()
	cfg.NATS.Embedded.Listen, cfg.NATS.Embedded.StoreDir = "127.0.0.1:0", filepath.Join(dir, "nats")
	cfg.State.Dir = filepath.Join(dir, "state")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Connections = []config.Connection{{Name: "disk", Type: "local", Local: &config.Local{Dir: filepath.Join(dir, "bucket")}}}
	svc := New(cfg, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-svc.Ready():
	case err := <-done:
		b.Fatal(err)
	}
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, cfg.NATS.StatePrefix+"_EXPORTS")
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for i := int64(1); i <= n; i++ {
		r := pipeline.Record{ID: i, Name: fmt.Sprintf("def-%d", i%20), Project: "street-scenes", Source: "directory",
			Ref: "Luckfrill", Completion: "complete", Status: pipeline.StatusComplete, PercentComplete: 100,
			CreatedTime: at.Add(time.Duration(i) * time.Second), FileListLength: 1000, InstanceCount: 10000,
			Connection: "disk", Key: fmt.Sprintf("exports/x/%d_diffgram_annotations.json", i), Trigger: "event"}
		data, _ := json.Marshal(r)
		if _, err := kv.Put(ctx, pipeline.RecordKey(i), data); err != nil {
			b.Fatal(err)
		}
	}
	base := "http://" + svc.HTTPAddr() + "/api/v1/"
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if svc.Pipeline().Records(pipeline.RecordFilter{}).Total == n {
			break
		}
		if time.Now().After(end) {
			b.Fatal("records not indexed")
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	fetch := func(b *testing.B, url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %s", url, resp.Status)
		}
	}
	for _, c := range []struct{ name, path string }{
		{"List50", "exports?limit=50"},
		{"List50ByDefinition", "exports?limit=50&definition=def-7"},
		{"ListLastPage", "exports?limit=50&before=51"},
		{"Get", "exports/5000"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				fetch(b, base+c.path)
			}
		})
	}
}
