package service

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline"
)

// writers follows the export records bucket and records, per definition,
// the most exports in progress (status generating or uploading) at once.
type writers struct {
	mu      sync.Mutex
	running map[string]map[string]bool // definition -> record keys in progress
	most    map[string]int
}

func watchWriters(t *testing.T, js jetstream.JetStream, bucket string) *writers {
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchFiltered(t.Context(), []string{pipeline.RecordKeyPrefix + ">"}, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	ws := &writers{running: map[string]map[string]bool{}, most: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			var r pipeline.Record
			if e == nil || e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
				continue
			}
			ws.mu.Lock()
			set := ws.running[r.Name]
			if set == nil {
				set = map[string]bool{}
				ws.running[r.Name] = set
			}
			if r.Status == pipeline.StatusGenerating || r.Status == pipeline.StatusUploading {
				set[e.Key()] = true
			} else {
				delete(set, e.Key())
			}
			ws.most[r.Name] = max(ws.most[r.Name], len(set))
			ws.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = w.Stop()
		<-done
	})
	return ws
}

// TestTwoReplicasOneHost: two services in one process have one host name
// and one process id, as two containers sharing a host name (both pid 1)
// do. On one NATS server and one bucket folder, each has its own lease
// identity (host/pid/random), and exports asked of both at the same
// moments are written one at a time per definition: the export records
// never show two exports of one definition in progress at once.
func TestTwoReplicasOneHost(t *testing.T) {
	dir, exp := exampleScenario(t, "street-scenes-ordered")
	ns := eventstest.StartServer(t)
	bucketDir := t.TempDir()
	conn := config.Connection{Name: "disk", Type: "local", Local: &config.Local{Dir: bucketDir}}
	var svcs []*Service
	var cfg *config.Config
	for range 2 {
		cfg = testConfig(t, exp, conn)
		cfg.NATS.URL = ns.ClientURL()
		svcs = append(svcs, startService(t, cfg))
	}
	host, _ := os.Hostname()
	prefix := host + "/" + strconv.Itoa(os.Getpid()) + "/"
	a, b := svcs[0].Pipeline().Owner(), svcs[1].Pipeline().Owner()
	if a == b || !strings.HasPrefix(a, prefix) || !strings.HasPrefix(b, prefix) {
		t.Errorf("lease owners %q and %q: want two identities, each %s<random>", a, b, prefix)
	}

	_, js := eventstest.Connect(t, ns)
	publishScenario(t, js, dir)
	bucket, err := local.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, bucket, exp)

	ws := watchWriters(t, js, cfg.NATS.StatePrefix+"_EXPORTS")
	var names []string
	for name, d := range exp.Definitions {
		if !d.NoExport {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	names = names[:2]
	const rounds = 3
	for round := range rounds {
		type request struct {
			p  *pipeline.Pipeline
			id int64
		}
		var mu sync.Mutex
		var reqs []request
		var wg sync.WaitGroup
		for _, name := range names {
			for _, svc := range svcs {
				wg.Go(func() {
					r, err := svc.Pipeline().Generate(t.Context(), name)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					reqs = append(reqs, request{svc.Pipeline(), r.ID})
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		for _, r := range reqs {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			rec, err := r.p.WaitRecord(ctx, r.id)
			cancel()
			if err != nil || rec.Status != pipeline.StatusComplete {
				t.Errorf("round %d: export %d: %+v, %v", round+1, r.id, rec, err)
			}
		}
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, name := range names {
		switch n := ws.most[name]; {
		case n == 0:
			t.Errorf("%s: no export seen in progress", name)
		case n > 1:
			t.Errorf("%s: %d exports in progress at once, want 1 (one writer per definition)", name, n)
		}
	}
}
