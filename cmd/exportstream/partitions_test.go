package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/events/simulate"
	"github.com/exportstream/exportstream/pipeline"
)

// The partitioned deployment the scale-out test runs: 12 projects, each
// with the three definitions of the crash test, over 12 partitions.
// partitionLeaseTTL is the pipeline's lease TTL (pipeline.leaseTTL).
const partitionLeaseTTL = 30 * time.Second

const (
	partProjects   = 12
	partPartitions = 12
	partFiles      = 30
	partPerProject = 400 // events per project and phase
)

// partitionProjects returns n project names that fall into n different
// partitions of n (names chosen so, in order: with one project per
// partition, the replicas' even shares of partitions are even shares of
// projects, and the test can say "at most half").
func partitionProjects(n int) []string {
	var out []string
	used := map[int]bool{}
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("scenes-%02d", i)
		if p := events.PartitionOf(name, n); !used[p] {
			used[p] = true
			out = append(out, name)
		}
	}
	return out
}

// partitionedStream returns phase's events of every project, interleaved
// (project by project, one event each in turn); sims keep each project's
// simulator across phases.
func partitionedStream(sims []*simulate.Simulator, perProject int) []simulate.Event {
	out := make([]simulate.Event, 0, len(sims)*perProject)
	for range perProject {
		for _, sim := range sims {
			subj, body, id := sim.Next()
			out = append(out, simulate.Event{Subject: subj, Body: body, ID: id})
		}
	}
	return out
}

// partitionConfig writes a replica's config: the cluster, the bucket, the
// projects' definitions, and extra NATS keys.
func partitionConfig(t *testing.T, dir, natsURL, bucketDir string, projects []string, natsExtra string) string {
	t.Helper()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "nats:\n  url: %q\n  replicas: 3\n  ack_wait: %s\n%s", natsURL, faultAckWait, natsExtra)
	fmt.Fprintf(&cfg, "connections:\n  - name: bucket\n    type: local\n    local: {dir: %s}\n", bucketDir)
	fmt.Fprintf(&cfg, "exports:\n")
	for _, project := range projects {
		for _, d := range crashDefs {
			name := project + "-" + d.name
			fmt.Fprintf(&cfg, "  - name: %s\n    project: %s\n    source: %s\n    completion: all\n    connection: bucket\n"+
				"    path: exports/%s/\n    coalesce: %s\n", name, project, d.source, name, d.coalesce)
		}
	}
	fmt.Fprintf(&cfg, "state:\n  dir: %s\nhttp:\n  listen: 127.0.0.1:0\nlog:\n  level: debug\n  format: json\n", filepath.Join(dir, "state"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPartitionsScaleOut runs three replicas of a partitioned deployment
// on a 3-node cluster (R3): each holds and exports its share of the
// projects. Then one is killed (its partitions are taken over once its
// heartbeat expired) and a fourth started (the partitions rebalance).
// Then one NATS node of three is stopped while events flow.
// Throughout, no definition is written by two replicas at once and
// latest.json never goes back; at the end every definition's export
// equals the one a single unpartitioned replica writes from the same
// stream, and no replica's local store held more than half of the state.
func TestPartitionsScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite: about a minute per test; runs without -short")
	}
	bin := faultBinary(t)
	projects := partitionProjects(partProjects)
	var defs []string
	for _, p := range projects {
		for _, d := range crashDefs {
			defs = append(defs, p+"-"+d.name)
		}
	}
	sims := make([]*simulate.Simulator, len(projects))
	for i, p := range projects {
		sims[i] = simulate.New(simulate.Options{Project: p, Rate: -1, Files: partFiles, Seed: crashSeed + int64(i)}, nil)
	}

	cluster := eventstest.NewCluster(t, 3, nil)
	nc, err := nats.Connect(cluster.URLs(), nats.Name("partition-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(15*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if d := os.Getenv("PARTITION_TEST_DIR"); d != "" {
		dir = d
	}
	bucketDir := filepath.Join(dir, "bucket")
	bucket, err := local.New(bucketDir)
	if err != nil {
		t.Fatal(err)
	}
	w := &faultWorld{t: t, bin: bin, name: t.Name(), dir: dir, cluster: cluster, nc: nc, js: js, bucketDir: bucketDir, bucket: bucket}
	w.temps = watchTemps(t, filepath.Join(bucketDir, ".tmp"))
	newReplica := func(name string) *faultProc {
		p := &faultProc{name: name, dir: filepath.Join(dir, name), bin: bin}
		p.config = partitionConfig(t, p.dir, cluster.URLs(), bucketDir, projects, fmt.Sprintf("  partitions: %d\n", partPartitions))
		w.procs = append(w.procs, p)
		return p
	}
	t.Cleanup(w.stopAll)
	for i := range 3 {
		p := newReplica(fmt.Sprintf("replica-%d", i+1))
		p.start(t)
		p.waitRunning(t)
	}
	w.latest = watchLatestOf(t, bucket, defs)

	// held waits until the running replicas hold every partition between
	// them, each its share, and returns how long that took.
	held := func(what string, replicas int) time.Duration {
		start := time.Now()
		fair := (partPartitions + replicas - 1) / replicas
		for {
			w.checkAlive()
			shares := map[string]float64{}
			sum, n, most := 0.0, 0, 0.0
			for _, p := range w.procs {
				if p.cur != nil {
					v, found := (&faultWorld{procs: []*faultProc{p}}).metric("exportstream_partitions_held")
					if found > 0 {
						shares[p.name] = v
						sum, n, most = sum+v, n+1, max(most, v)
					}
				}
			}
			if n == replicas && sum == partPartitions && most <= float64(fair) {
				t.Logf("%s: the %d replicas hold the %d partitions (%v) %v after", what, replicas, partPartitions, shares,
					time.Since(start).Round(time.Millisecond))
				return time.Since(start)
			}
			if time.Since(start) > 60*time.Second {
				t.Fatalf("%s: partitions not held within 60s: %v (sum %v over %d replicas)", what, shares, sum, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// converged waits until every definition has a latest.json that has
	// not changed for 3 s, every partition consumer has acked everything,
	// and no dirty mark is left.
	converged := func(what string) map[string]string {
		start := time.Now()
		var last map[string]string
		var since time.Time
		for {
			w.checkAlive()
			cur := map[string]string{}
			for _, d := range defs {
				if m, ok := w.latest.current(d); ok {
					cur[d] = m.ContentHash
				}
			}
			idle := partitionsIdle(t, js) == ""
			switch {
			case len(cur) < len(defs) || !idle:
				last = nil
			case last == nil || !maps.Equal(last, cur):
				last, since = cur, time.Now()
			case time.Since(since) >= 3*time.Second:
				t.Logf("%s: converged %v after", what, time.Since(start).Round(time.Millisecond))
				return cur
			}
			if time.Since(start) > 120*time.Second {
				t.Fatalf("%s: not converged within 120s: %d of %d definitions exported; %s", what, len(cur), len(defs), partitionsIdle(t, js))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	held("three replicas", 3)
	publishAll(t, js, partitionedStream(sims, partPerProject))
	converged("three replicas")
	// Every replica reports every partition's backlog, whoever holds it;
	// once converged, nothing is pending anywhere (refreshed every 5 s).
	backlogReported := func() bool {
		for i := range partPartitions {
			v, n := w.metric(fmt.Sprintf(`exportstream_partition_pending{partition="%d"}`, i))
			if n != 3 || v != 0 {
				return false
			}
		}
		v, n := w.metric("exportstream_consumer_pending")
		return n == 3 && v == 0
	}
	for start := time.Now(); !backlogReported(); time.Sleep(200 * time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			v, n := w.metric(`exportstream_partition_pending{partition="0"}`)
			t.Fatalf("the replicas' backlog gauges: partition 0 reported by %d replicas (sum %v), want 3 × 0, and every partition", n, v)
		}
	}

	// Any replica serves any project: a request for a definition or an
	// ad-hoc export of a project another replica holds is asked of that
	// replica, and answered as if it had come to it.
	asked := w.procs[0]
	for i, project := range projects {
		body := fmt.Sprintf(`{"definition": %q, "wait": true}`, project+"-project-all")
		if i%2 == 1 {
			body = fmt.Sprintf(`{"project": %q, "source": {"project": true}, "connection": "bucket", "wait": true}`, project)
		}
		resp, err := http.Post("http://"+asked.http+"/api/v1/exports", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var rec pipeline.Record
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(raw, &rec); err != nil || resp.StatusCode != http.StatusOK || rec.Status != pipeline.StatusComplete {
			t.Errorf("%s: POST %s: %d %s, want 200 and a complete export", asked.name, body, resp.StatusCode, raw)
		}
	}
	t.Logf("%s served a manual or ad-hoc export of each of the %d projects (%d partitions held elsewhere)",
		asked.name, len(projects), partPartitions-4)

	// Kill one: its partitions are taken over once its heartbeat expired.
	victim := w.procs[1]
	killed := time.Now()
	victim.kill(t)
	publishAll(t, js, partitionedStream(sims, partPerProject))
	took := held("after the kill", 2)
	t.Logf("the killed replica's partitions held again %v after the kill (liveness TTL %v)",
		time.Since(killed).Round(time.Millisecond), pipeline.DefaultLivenessTTL)
	// Within the lease TTL (30 s), as the issue asks; typically the
	// heartbeat TTL plus a balancing tick (7-12 s here), longer on a
	// loaded machine (20 s beside a full CI run), where taking four
	// partitions means loading their projects one after another.
	if d := time.Since(killed); d > partitionLeaseTTL {
		t.Errorf("partitions taken over %v after the kill (%v after the check began), want within the lease TTL %v",
			d.Round(time.Millisecond), took.Round(time.Millisecond), partitionLeaseTTL)
	}
	converged("after the kill")

	// A fourth: the partitions rebalance.
	fourth := newReplica("replica-4")
	fourth.start(t)
	fourth.waitRunning(t)
	publishAll(t, js, partitionedStream(sims, partPerProject))
	held("with a fourth replica", 3)
	converged("with a fourth replica")

	// One NATS node of three stopped while events flow: nothing lost, the
	// exports go on once the streams have new leaders.
	nodeFeed := &feeder{events: partitionedStream(sims, partPerProject)}
	pub := nodeFeed.start(t, js, partProjects*partPerProject)
	time.Sleep(300 * time.Millisecond)
	gone := cluster.Nodes[0].Name()
	cluster.Stop(0)
	stopped := time.Now()
	elected := make(chan time.Duration, 1)
	go func() { elected <- leadersElected(t, js, gone, stopped) }()
	// The test's own connection may have been to the stopped node:
	// publish what is left once it has reconnected.
	for err := pub.wait(); err != nil; err = pub.wait() {
		if time.Since(stopped) > time.Minute {
			t.Fatalf("publish while a NATS node is down: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		pub = nodeFeed.start(t, js, partProjects*partPerProject)
	}
	// No project stalls: its whole-project definition, which every event
	// of the project changes (and events of every project are published
	// in turn), writes an export after the stop. (A definition of a
	// directory or job may see no change for a while.)
	var slowest time.Duration
	var slowestDef string
	for _, project := range projects {
		d := project + "-project-all"
		for {
			if at, _, _, ok := w.latest.firstAfter(stopped, d); ok {
				if at.Sub(stopped) > slowest {
					slowest, slowestDef = at.Sub(stopped), d
				}
				break
			}
			if time.Since(stopped) > 60*time.Second {
				t.Fatalf("%s: no export within 60s after a NATS node stopped", d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	election := <-elected
	t.Logf("with one NATS node down: the streams and consumers had leaders %v after the stop; every project's whole-project definition exported again within %v (slowest %s)",
		election.Round(time.Millisecond), slowest.Round(time.Millisecond), slowestDef)
	// The aim: the leader election + 5 s + the definition's 4 s
	// max delay. Before the fixes of 2026-12-01 (docs/performance.md) runs
	// took 1-17 s: the state watch's consumer lost with the node, and
	// writes in flight to it waiting for their 5 s timeout.
	if bound := election + 5*time.Second + 4*time.Second; slowest > bound {
		t.Errorf("%s first exported %v after a NATS node stopped, want <= %v (the leader election, 5 s, and its 4 s max delay)",
			slowestDef, slowest.Round(time.Millisecond), bound.Round(time.Millisecond))
	}
	final := converged("with one NATS node of three down")
	t.Logf("with one NATS node down: every export current %v after the node stopped", time.Since(stopped).Round(time.Millisecond))
	cluster.Restart(0)

	if err := w.latest.err(); err != nil {
		t.Error(err)
	}
	if o := overlaps(writeIntervals(t, bucketDir, w.temps)); len(o) > 0 {
		t.Errorf("%d exports of one definition written at the same time:\n%s", len(o), strings.Join(o, "\n"))
	}
	if problems := checkManifests(t.Context(), bucket); len(problems) > 0 {
		t.Errorf("bucket:\n%s", strings.Join(problems, "\n"))
	}

	// What each replica's local store holds (SIGKILLed: nothing given up).
	for _, p := range w.procs {
		if p.cur != nil {
			p.kill(t)
		}
	}
	total := map[string]int{}
	held2 := map[string]map[string]int{}
	for _, p := range w.procs {
		d, err := pipeline.OpenDiskState(filepath.Join(p.dir, "state"))
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		keys, err := d.KeysByProject()
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		held2[p.name] = keys
		for project, n := range keys {
			total[project] = max(total[project], n)
		}
	}
	all := 0
	for _, n := range total {
		all += n
	}
	for _, p := range w.procs {
		n := 0
		for _, k := range held2[p.name] {
			n += k
		}
		t.Logf("%s's local store: %d keys of %d projects (%.0f%% of all %d)", p.name, n, len(held2[p.name]), 100*float64(n)/float64(all), all)
		if 2*n > all {
			t.Errorf("%s's local store holds %d of %d keys: more than half", p.name, n, all)
		}
	}

	// The same stream through one unpartitioned replica: the same exports.
	refBucket := filepath.Join(dir, "ref-bucket")
	ref := &faultProc{name: "reference", dir: filepath.Join(dir, "reference"), bin: bin}
	ref.config = partitionConfig(t, ref.dir, cluster.URLs(), refBucket, projects,
		"  consumer: reference\n  state_prefix: REFERENCE\n")
	w.procs = append(w.procs, ref)
	ref.start(t)
	ref.waitRunning(t)
	rb, err := local.New(refBucket)
	if err != nil {
		t.Fatal(err)
	}
	refLatest := watchLatestOf(t, rb, defs)
	start := time.Now()
	for {
		w.checkAlive()
		same := 0
		var diff []string
		for _, d := range defs {
			if m, ok := refLatest.current(d); ok && m.ContentHash == final[d] {
				same++
			} else if ok {
				diff = append(diff, d)
			}
		}
		if same == len(defs) {
			t.Logf("one unpartitioned replica wrote the same %d exports (content_sha256) %v after it started", same, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("the unpartitioned reference differs after 90s: %d of %d definitions the same; different: %v", same, len(defs), diff)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// publishAll publishes the events, each with its id, and waits for every
// acknowledgement.
func publishAll(t *testing.T, js jetstream.JetStream, evs []simulate.Event) {
	t.Helper()
	if err := (&feeder{events: evs}).start(t, js, len(evs)).wait(); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// partitionsIdle says what is not done yet: a partition consumer with
// events not acked, or a dirty mark left ("" when all is done).
func partitionsIdle(t *testing.T, js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "DIFFGRAM_EVENTS")
	if err != nil {
		return err.Error()
	}
	for name := range s.ConsumerNames(ctx).Name() {
		if !strings.HasPrefix(name, "exportstream") {
			continue
		}
		c, err := s.Consumer(ctx, name)
		if err != nil {
			return err.Error()
		}
		info := c.CachedInfo()
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return fmt.Sprintf("consumer %s: %d pending, %d not acked", name, info.NumPending, info.NumAckPending)
		}
	}
	kv, err := js.KeyValue(ctx, "EXPORTSTREAM_DIRTY")
	if err != nil {
		return err.Error()
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return err.Error()
	}
	for k := range keys.Keys() {
		return "dirty mark " + k + " left"
	}
	return ""
}

// leadersElected waits until the events stream, the state bucket's stream
// and every consumer of the events stream have a leader other than the
// NATS node gone, stopped at stopped, and returns how long after that was.
func leadersElected(t *testing.T, js jetstream.JetStream, gone string, stopped time.Time) time.Duration {
	for time.Since(stopped) < time.Minute {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		ok := true
		for _, name := range []string{"DIFFGRAM_EVENTS", "KV_EXPORTSTREAM_STATE", "KV_EXPORTSTREAM_DIRTY", "KV_EXPORTSTREAM_EXPORTS"} {
			s, err := js.Stream(ctx, name)
			if err != nil || s.CachedInfo().Cluster == nil || s.CachedInfo().Cluster.Leader == "" || s.CachedInfo().Cluster.Leader == gone {
				ok = false
				break
			}
			if name != "DIFFGRAM_EVENTS" {
				continue
			}
			for info := range s.ListConsumers(ctx).Info() {
				if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == gone {
					ok = false
				}
			}
		}
		cancel()
		if ok {
			return time.Since(stopped)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Minute
}
