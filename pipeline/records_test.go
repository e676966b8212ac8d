package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
)

// sampleRecord is a realistic complete export record, decoded from JSON
// as the records watch decodes it (every string its own allocation).
func sampleRecord(t testing.TB, id int64) *Record {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(id) * time.Minute)
	done := at.Add(3 * time.Second)
	name := fmt.Sprintf("definition-%02d", id%20)
	stem := "exports/" + name + "/" + strconv.FormatInt(id, 10) + "_diffgram_annotations__source_directory_Luckfrill_datetime_" + at.Format("2006-01-02T15-04-05.000000")
	r := Record{
		ID: id, Name: name, Project: "street-scenes", Source: "directory", Ref: "Luckfrill", Completion: "complete",
		Status: StatusComplete, PercentComplete: 100, CreatedTime: at, CompletedTime: &done,
		FileListLength: 1200, InstanceCount: 48000, Bytes: 73 << 20,
		SHA256:      fmt.Sprintf("%064x", id*7919),
		ContentHash: fmt.Sprintf("%064x", id*104729),
		Connection:  "training-s3", Key: stem + ".json", ManifestKey: stem + ".manifest.json",
		Watermark: uint64(id) * 1000, StateRevision: uint64(id) * 900, Trigger: TriggerEvent, FormatVersion: FormatVersion,
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestIndexBytesPerRecord measures what the in-memory record index holds
// per record: heap in use after 100,000 complete records of 20
// definitions went in, minus before. (It was 928 bytes when the index
// held every full record.)
func TestIndexBytesPerRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 records, left out by -short")
	}
	const n = 100_000
	before := heapInUse()
	x := newRecordIndex()
	for i := int64(1); i <= n; i++ {
		x.put(sampleRecord(t, i), uint64(i))
	}
	after := heapInUse()
	runtime.KeepAlive(x)
	per := float64(after-before) / n
	t.Logf("record index: %.0f bytes per record (%d records, HeapAlloc %d -> %d)", per, n, before, after)
	if per > 100 {
		t.Errorf("record index holds %.0f bytes per record, want at most 100 (a summary, not the record)", per)
	}
}

// at returns a record of name with the given status that ended (or, not
// final, was created) ago before now.
func rec(id int64, name string, status Status, ago time.Duration) *Record {
	t := time.Now().UTC().Add(-ago)
	r := &Record{ID: id, Name: name, Project: "p", Status: status, CreatedTime: t.Add(-time.Second), Trigger: TriggerEvent}
	if Final(status) && status != StatusFailed {
		r.CompletedTime = &t
	}
	if status == StatusFailed {
		r.CreatedTime = t // failed records have no completed_time
	}
	return r
}

// TestRecordIndexNewest: the index knows each name's newest complete and
// newest skipped record through writes, a record moving back (failed,
// then retried), deletes and a sweep; retention picks the right records.
func TestRecordIndexNewest(t *testing.T) {
	x := newRecordIndex()
	rev := uint64(0)
	put := func(r *Record) { rev++; x.store(r, rev) }
	put(rec(1, "a", StatusComplete, 0))
	put(rec(2, "a", StatusSkipped, 0))
	put(rec(3, "a", StatusComplete, 0))
	put(rec(4, "a", StatusGenerating, 0))
	if id, r := x.latest("a"); id != 3 || r == nil || r.ID != 3 {
		t.Errorf("latest(a) = %d, %v; want 3, held", id, r)
	}
	if id, _ := x.skipped("a"); id != 0 {
		t.Errorf("skipped(a) = %d; want none (complete 3 is newer than skipped 2)", id)
	}
	if x.held(1) != nil || x.held(4) == nil {
		t.Errorf("held: an older complete record kept in full, or a running one not")
	}
	// Export 3's completion event failed: shown as failed, then retried.
	put(rec(3, "a", StatusFailed, 0))
	if id, r := x.latest("a"); id != 1 || r != nil {
		t.Errorf("latest(a) after 3 failed = %d, %v; want 1, not held (read from the bucket)", id, r)
	}
	put(rec(3, "a", StatusComplete, 0))
	if id, _ := x.latest("a"); id != 3 {
		t.Errorf("latest(a) after 3 completed again = %d, want 3", id)
	}
	put(rec(5, "a", StatusSkipped, 0))
	if id, r := x.skipped("a"); id != 5 || r == nil {
		t.Errorf("skipped(a) = %d, %v; want 5, held", id, r)
	}
	rev++
	x.remove(5, rev, time.Now())
	if id, _ := x.skipped("a"); id != 0 {
		t.Errorf("skipped(a) after 5 was deleted = %d, want none", id)
	}
	if id, _ := x.latest("a"); id != 3 {
		t.Errorf("latest(a) = %d, want 3", id)
	}
	// A late write older than the delete does not bring 5 back.
	x.store(rec(5, "a", StatusSkipped, 0), rev-1)
	if found, _, _ := x.state(5); found {
		t.Error("a write older than the delete marker brought record 5 back")
	}
	// A watch opened again lists 1, 3 and 4 only: 2 was deleted and its
	// marker purged meanwhile.
	x.sweep(map[int64]bool{1: true, 3: true, 4: true}, rev)
	items, total, _ := x.page(RecordFilter{Limit: 10})
	var ids []int64
	for _, it := range items {
		ids = append(ids, it.id)
	}
	if !slices.Equal(ids, []int64{4, 3, 1}) || total != 3 {
		t.Errorf("page after the sweep: %v (total %d), want [4 3 1]", ids, total)
	}
	if items, total, more := x.page(RecordFilter{Definition: "a", Status: StatusComplete, Limit: 1}); len(items) != 1 || items[0].id != 3 || total != 2 || !more {
		t.Errorf("page of complete records, one per page: %v, total %d, more %t", items, total, more)
	}
	if items, total, _ := x.page(RecordFilter{Status: "bogus", Limit: 10}); len(items) != 0 || total != 0 {
		t.Errorf("an unknown status matched %d records", total)
	}

	for _, tc := range []struct {
		name     string
		keepLast int
		maxAge   time.Duration
		want     []int64 // deleted, newest first; b's newest complete (17), c's newest skipped (15) and the running 16 never are
	}{
		{"off", 0, 0, nil},
		{"keep 1", 1, 0, []int64{14, 13, 12, 11, 10}},
		{"keep 3", 3, 0, []int64{11, 10}},
		{"keep 4", 4, 0, []int64{10}},
		{"age 1h", 0, time.Hour, []int64{14, 13, 12, 11, 10}},
		{"age 150m", 0, 150 * time.Minute, []int64{11, 10}},
		{"keep 4 or age 150m", 4, 150 * time.Minute, []int64{11, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newRecordIndex()
			for i, r := range []*Record{
				rec(10, "b", StatusComplete, 3*time.Hour),
				rec(11, "b", StatusFailed, 3*time.Hour),
				rec(12, "b", StatusComplete, 2*time.Hour),
				rec(13, "c", StatusSkipped, 2*time.Hour),
				rec(14, "c", StatusFailed, 2*time.Hour),
				rec(15, "c", StatusSkipped, 2*time.Hour),
				rec(16, "b", StatusGenerating, 5*time.Hour),
				rec(17, "b", StatusComplete, 0),
				rec(18, "d", StatusComplete, 5*time.Hour), // d's newest complete: kept however old
			} {
				x.store(r, uint64(i+1))
			}
			var got []int64
			for _, v := range x.expired(tc.keepLast, tc.maxAge, time.Now()) {
				got = append(got, v.id)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("expired = %v, want %v", got, tc.want)
			}
		})
	}
}

// openRecords opens a pipeline without definitions on js with retention
// options, its retention rounds 20 ms apart and delete markers purged
// after 50 ms, and runs it until the test ends.
func openRecords(t *testing.T, js jetstream.JetStream, keepLast int, maxAge time.Duration) *Pipeline {
	t.Helper()
	p, err := openTest(t, t.Context(), js, Options{StatePrefix: "R", Owner: "test", RecordsKeepLast: keepLast, RecordsMaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	p.records.index.every, p.records.index.grace = 20*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

// bucketRecords returns the ids of the export records in the bucket, and
// how many messages its stream holds for them (delete markers included).
// It lists the stream's subjects rather than the keys: a key listing (a
// watch) whose last expected message is purged waits for the next write.
func bucketRecords(t *testing.T, js jetstream.JetStream, p *Pipeline) ([]int64, uint64) {
	t.Helper()
	bucket := BucketName(p.opts.StatePrefix, BucketExports)
	s, err := js.Stream(t.Context(), KVStream(bucket))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(KVSubject(bucket, RecordKeyPrefix+">")))
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	var msgs uint64
	for subj, n := range info.State.Subjects {
		msgs += n
		key := strings.TrimPrefix(subj, KVSubject(bucket, ""))
		if _, err := p.records.kv.Get(t.Context(), key); err == nil {
			id, _ := recordID(key)
			ids = append(ids, id)
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatal(err)
		}
	}
	slices.Sort(ids)
	return ids, msgs
}

func indexIDs(p *Pipeline) []int64 {
	var ids []int64
	for _, r := range p.Records(RecordFilter{Limit: 1000}).Records {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	return ids
}

// writeRecords writes records of the given names and statuses under new
// ids, each ended ago before now, and returns their ids.
func writeRecords(t *testing.T, p *Pipeline, ago time.Duration, specs ...string) []int64 {
	t.Helper()
	var ids []int64
	for _, s := range specs {
		name, status, _ := strings.Cut(s, ":")
		id, err := p.records.nextID(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := p.records.put(t.Context(), rec(id, name, Status(status), ago)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// waitRecords waits until the bucket holds exactly the records want, its
// stream no delete marker, and each pipeline's index the same records.
func waitRecords(t *testing.T, js jetstream.JetStream, want []int64, ps ...*Pipeline) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	var got []int64
	var msgs uint64
	var index [][]int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, msgs = bucketRecords(t, js, ps[0])
		index = index[:0]
		same := slices.Equal(got, want) && msgs == uint64(len(want))
		for _, p := range ps {
			ids := indexIDs(p)
			index = append(index, ids)
			same = same && slices.Equal(ids, want)
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket holds records %v in %d messages, indexes %v; want %v and no delete marker", got, msgs, index, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRecordRetentionByCount: with keep_last 3, each definition keeps its
// three newest records plus its newest complete and newest skipped ones
// and every record not final; the others leave the bucket, their delete
// markers are purged, and they leave the index of both replicas (both
// prune).
func TestRecordRetentionByCount(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	p1 := openRecords(t, js, 3, 0)
	p2 := openRecords(t, js, 3, 0)

	a := writeRecords(t, p1, 0, "a:complete", "a:skipped", "a:generating", "a:failed", "a:failed", "a:failed", "a:failed", "a:failed", "a:failed")
	s := writeRecords(t, p2, 0, "s:complete", "s:skipped", "s:skipped", "s:skipped", "s:skipped", "s:skipped")
	ad := writeRecords(t, p1, 0, "adhoc:complete", "adhoc:complete", "adhoc:complete", "adhoc:complete", "adhoc:complete")
	keep := []int64{a[0], a[1], a[2], a[6], a[7], a[8], s[0], s[3], s[4], s[5], ad[2], ad[3], ad[4]}
	waitRecords(t, js, keep, p1, p2)

	for _, p := range []*Pipeline{p1, p2} {
		if r := p.LatestRecord("a"); r == nil || r.ID != a[0] {
			t.Errorf("LatestRecord(a) = %v, want %d", r, a[0])
		}
		if r := p.LatestRecord("s"); r == nil || r.ID != s[0] || r.Status != StatusComplete {
			t.Errorf("LatestRecord(s) = %v, want %d", r, s[0])
		}
		if r := p.SkippedRecord("s"); r == nil || r.ID != s[5] {
			t.Errorf("SkippedRecord(s) = %v, want %d", r, s[5])
		}
		if r := p.LatestRecord(AdhocName); r == nil || r.ID != ad[4] {
			t.Errorf("LatestRecord(adhoc) = %v, want %d", r, ad[4])
		}
		for _, id := range []int64{a[3], s[1], ad[0]} {
			if r, ok := p.RecordByID(id); ok {
				t.Errorf("RecordByID(%d) = %+v after retention deleted it", id, r)
			}
		}
		if r, ok := p.RecordByID(a[6]); !ok || r.Status != StatusFailed {
			t.Errorf("RecordByID(%d) = %+v, %t; want the failed record", a[6], r, ok)
		}
		if pg := p.Records(RecordFilter{Definition: "a", Status: StatusFailed, Limit: 2}); pg.Total != 3 || !pg.More ||
			len(pg.Records) != 2 || pg.Records[0].ID != a[8] || pg.Records[1].ID != a[7] {
			t.Errorf("failed records of a, two per page: %+v", pg)
		}
	}
}

// TestRecordRetentionByAge: with max_age 1s, records that ended longer
// ago leave the bucket and the index without further writes, except each
// definition's newest complete and newest skipped record and the records
// not final (however old); a failed record is aged by its created_time.
func TestRecordRetentionByAge(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	p := openRecords(t, js, 0, time.Second)

	old := writeRecords(t, p, 2*time.Hour, "a:failed", "a:generating")
	now := writeRecords(t, p, 0, "a:complete", "a:complete", "a:complete", "a:failed", "a:failed", "a:skipped", "a:skipped", "a:pending")
	// The old failed one goes at once; the rest are younger than 1s.
	waitRecords(t, js, append([]int64{old[1]}, now...), p)
	if r, err := p.WaitRecord(t.Context(), now[4]); err != nil || r.Status != StatusFailed {
		t.Errorf("WaitRecord(%d) = %+v, %v", now[4], r, err)
	}
	waitRecords(t, js, []int64{old[1], now[2], now[6], now[7]}, p)
	if r := p.LatestRecord("a"); r == nil || r.ID != now[2] {
		t.Errorf("LatestRecord(a) = %v, want %d", r, now[2])
	}
	if r := p.SkippedRecord("a"); r == nil || r.ID != now[6] {
		t.Errorf("SkippedRecord(a) = %v, want %d", r, now[6])
	}
}

// TestRecordsBoundedWhileExporting: while 200 exports run (a definition's
// manual exports and ad-hoc ones, one after the other), the records
// bucket never holds more than keep_last per definition plus the few
// written since the last retention round, and ends with exactly
// keep_last each.
func TestRecordsBoundedWhileExporting(t *testing.T) {
	const keepLast = 5
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	scenario, exp := orderedExample(t)
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := definitionFor(t, "luckfrill-complete", exp.Project, exp.Definitions["luckfrill-complete"])
	d.Connection, d.Quiet, d.MaxDelay = "disk", 5*time.Millisecond, time.Second
	p := startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: map[string]connectors.Bucket{"disk": b},
		RecordsKeepLast: keepLast, RecordsMaxAge: 720 * time.Hour,
		ExportsStream: "EXPORTS", // a stream for the completion events: publishing them without one waits for retries
	}, func(p *Pipeline) {
		p.records.index.every, p.records.index.grace = 20*time.Millisecond, 50*time.Millisecond
	}).p
	publishLines(t, js, readLines(t, scenario))
	waitFor(t, "the first export", 30*time.Second, func() bool { return p.LatestRecord(d.Name) != nil })

	const limit = 2*keepLast + 20 // and those written since the last round
	most := 0
	for i := range 200 {
		var r *Record
		if i%2 == 0 {
			r, err = p.Generate(t.Context(), d.Name)
		} else {
			r, err = p.GenerateAdhoc(t.Context(), Definition{Project: exp.Project, Source: d.Source, Completion: "all", Connection: "disk"})
		}
		if err != nil {
			t.Fatal(err)
		}
		if done, err := p.WaitRecord(t.Context(), r.ID); err != nil || done.Status != StatusComplete {
			t.Fatalf("export %d: %+v, %v", i, done, err)
		}
		ids, msgs := bucketRecords(t, js, p)
		most = max(most, len(ids))
		if len(ids) > limit || msgs > 2*limit {
			t.Fatalf("after %d exports the bucket holds %d records in %d messages, want at most %d records", i+1, len(ids), msgs, limit)
		}
	}
	t.Logf("at most %d records in the bucket during 200 exports (keep_last %d, 2 definitions)", most, keepLast)
	// Left: keep_last records of each definition, and the definition's
	// newest skipped one if its first attempt ran before the events came.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids, msgs := bucketRecords(t, js, p)
		index := p.Records(RecordFilter{Limit: 1000}).Records
		complete, skipped := map[string]int{}, map[string]int{}
		var got []int64
		for _, r := range index {
			got = append(got, r.ID)
			switch r.Status {
			case StatusComplete:
				complete[r.Name]++
			case StatusSkipped:
				skipped[r.Name]++
			}
		}
		slices.Sort(got)
		if slices.Equal(got, ids) && msgs == uint64(len(ids)) && complete[d.Name] == keepLast && complete[AdhocName] == keepLast &&
			len(index) == 2*keepLast+skipped[d.Name] && skipped[d.Name] <= 1 {
			break
		}
		if time.Now().After(deadline) {
			var recs []string
			for _, r := range index {
				recs = append(recs, fmt.Sprintf("%d %s %s", r.ID, r.Name, r.Status))
			}
			t.Fatalf("bucket holds records %v in %d messages, the index %q; want %d of each definition", ids, msgs, recs, keepLast)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := p.LatestRecord(d.Name); r == nil || r.Status != StatusComplete {
		t.Errorf("LatestRecord = %+v", r)
	}
}
