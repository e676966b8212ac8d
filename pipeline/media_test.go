package pipeline

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
	"github.com/exportstream/exportstream/events/eventstest"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// mediaBucket is a local folder holding the media files of
// pipelinetest.MediaFiles, whose signed links a test server serves.
func mediaBucket(t *testing.T) *local.Bucket {
	t.Helper()
	var b *local.Bucket
	srv := httptest.NewServer(http.StripPrefix("/files/media", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Handler().ServeHTTP(w, r)
	})))
	t.Cleanup(srv.Close)
	b, err := local.NewWithOptions(t.TempDir(), local.Options{BaseURL: srv.URL + "/files/media", SignKey: []byte("media test key")})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range pipelinetest.MediaFiles() {
		if f.BlobPath != "" {
			if err := putBytes(t.Context(), b, f.BlobPath, f.Data, connectors.WriteOptions{ContentType: "application/octet-stream"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b
}

func publishEvents(t *testing.T, js jetstream.JetStream, evs []pipelinetest.Event) {
	t.Helper()
	for _, e := range evs {
		m := nats.NewMsg(e.Subject)
		m.Data = e.Body
		if _, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

// mediaDefinition exports directory "all" of project media, every file.
func mediaDefinition(name string, media *Media) *Definition {
	return &Definition{Name: name, Project: "media", Source: Source{Kind: SourceDirectory, Name: "all"},
		Completion: CompletionAll, Connection: "disk", Path: name + "/", Quiet: 20 * time.Millisecond,
		MaxDelay: time.Second, Media: media}
}

func linksOf(t *testing.T, entry json.RawMessage, typ string) pipelinetest.EntryLinks {
	t.Helper()
	l, err := pipelinetest.LinksOf(entry, typ)
	if err != nil {
		t.Fatalf("%v: %s", err, entry)
	}
	return l
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// checkSigned checks the document of an export with media signed at
// created for expiry: every file with blob_path shows one signed link
// (blob_url and the media block's url) that fetches its media object,
// with the expiry created + expiry; the others show their links as
// received. It returns the links it fetched. With expiry 0 (an export
// without media) every file shows its links as received.
func checkSigned(t *testing.T, doc []byte, created time.Time, expiry time.Duration) []string {
	t.Helper()
	var d map[string]json.RawMessage
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("document: %v", err)
	}
	var fetched []string
	check := func(f pipelinetest.MediaFile, entry json.RawMessage, where string) {
		l := linksOf(t, entry, f.Type)
		if f.BlobPath == "" || expiry == 0 {
			if f.URL != "" && (l.BlobURL != f.URL || l.URL != f.URL || l.Expiry != f.Expiry) {
				t.Errorf("%s: links %+v, want those received (%s, %d)", where, l, f.URL, f.Expiry)
			}
			return
		}
		if l.BlobURL == f.URL || l.BlobURL == "" {
			t.Errorf("%s: blob_url %q is not a signed link", where, l.BlobURL)
			return
		}
		if _, ok := mediaLinkFields[f.Type]; ok && (l.URL != l.BlobURL || l.Expiry != created.Add(expiry).Unix()) {
			t.Errorf("%s: media block url %q expiry %d, want blob_url %q and %d (created %s + %s)",
				where, l.URL, l.Expiry, l.BlobURL, created.Add(expiry).Unix(), created, expiry)
		}
		status, body := get(t, l.BlobURL)
		if status != http.StatusOK || !bytes.Equal(body, f.Data) {
			t.Errorf("%s: GET %s: %d, %d bytes, want 200 and the %d bytes of %s", where, l.BlobURL, status, len(body), len(f.Data), f.BlobPath)
		}
		fetched = append(fetched, l.BlobURL)
	}
	files := pipelinetest.MediaFiles()
	for _, f := range files {
		entry, ok := d[strconv.FormatInt(f.ID, 10)]
		if !ok {
			t.Errorf("file %d missing from the document", f.ID)
			continue
		}
		check(f, entry, "file "+strconv.FormatInt(f.ID, 10))
		if f.Type != "compound" {
			continue
		}
		var members map[string]json.RawMessage
		_ = json.Unmarshal(entry, &members)
		for _, c := range files {
			if c.Parent == f.ID {
				check(c, members[strconv.FormatInt(c.ID, 10)], "child "+strconv.FormatInt(c.ID, 10)+" in compound "+strconv.FormatInt(f.ID, 10))
			}
		}
	}
	return fetched
}

func readDoc(t *testing.T, b connectors.Bucket, key string) []byte {
	t.Helper()
	r, err := b.NewReader(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	doc, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// gauge returns the value of exportstream_media_links_expire_at_seconds
// for the definition, and whether it is there.
func gauge(t *testing.T, g prometheus.Gatherer, def string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "exportstream_media_links_expire_at_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "definition" && l.GetValue() == def {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestMediaLinks: a definition with media writes, for every file with
// blob_path (a compound file's child too, where it is nested), a link
// signed by the media connection that fetches the media object, in
// blob_url and the media block, expiring expiry after the export's time;
// files without blob_path keep their links. Its manifest says the
// earliest expiry (the signed links'); a definition without media copies
// every link and its manifest says the earliest copied expiry. The
// metric says both.
func TestMediaLinks(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	disk, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	media := mediaBucket(t)
	signed := mediaDefinition("signed", &Media{Connection: "media", Expiry: time.Hour})
	signed.Formats = []string{FormatDiffgram, FormatJSONL}
	copied := mediaDefinition("copied", nil)
	reg := prometheus.NewRegistry()
	h := startHarnessWith(t, js, Options{Definitions: []*Definition{signed, copied},
		Buckets: map[string]connectors.Bucket{"disk": disk, "media": media}, Registerer: reg}, nil)
	files := pipelinetest.MediaFiles()
	publishEvents(t, js, pipelinetest.MediaEvents("media", files))
	for _, d := range []*Definition{signed, copied} {
		waitFor(t, d.Name+" export", 30*time.Second, func() bool {
			m := latestRecord(t, disk, d.Path)
			return m != nil && m.FileListLength == len(files)
		})
	}

	m := latestRecord(t, disk, signed.Path)
	fetched := checkSigned(t, readDoc(t, disk, m.Key), m.CreatedTime, time.Hour)
	if len(fetched) != 5 || m.MediaLinksSigned != 5 {
		t.Errorf("%d signed links fetched, media_links_signed %d; want 5 each (4 files with blob_path, one of them also nested in its compound file)", len(fetched), m.MediaLinksSigned)
	}
	// The other formats show the same links: signed.
	jl, ok := m.Formats[FormatJSONL]
	if !ok {
		t.Fatalf("signed: no jsonl object in the manifest: %+v", m.Formats)
	}
	asDoc := map[string]json.RawMessage{}
	for line := range bytes.Lines(readDoc(t, disk, jl.Key)) {
		var l struct {
			FileID int64           `json:"file_id"`
			Entry  json.RawMessage `json:"entry"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("jsonl line %q: %v", line, err)
		}
		asDoc[strconv.FormatInt(l.FileID, 10)] = l.Entry
	}
	joined, _ := json.Marshal(asDoc)
	if n := len(checkSigned(t, joined, m.CreatedTime, time.Hour)); n != 5 {
		t.Errorf("jsonl: %d signed links fetched, want 5", n)
	}
	want := time.Unix(m.CreatedTime.Add(time.Hour).Unix(), 0)
	if m.MediaLinksExpireAt == nil || !m.MediaLinksExpireAt.Equal(want) {
		t.Errorf("signed: media_links_expire_at %v, want %v (created_time + 1h, earlier than every copied link)", m.MediaLinksExpireAt, want)
	}
	if v, ok := gauge(t, reg, signed.Name); !ok || int64(v) != want.Unix() {
		t.Errorf("signed: metric %v (present %t), want %d", v, ok, want.Unix())
	}

	m = latestRecord(t, disk, copied.Path)
	checkSigned(t, readDoc(t, disk, m.Key), m.CreatedTime, 0)
	earliest := files[0].Expiry
	for _, f := range files {
		if f.Expiry > 0 && f.Expiry < earliest {
			earliest = f.Expiry
		}
	}
	if m.MediaLinksExpireAt == nil || m.MediaLinksExpireAt.Unix() != earliest || m.MediaLinksSigned != 0 {
		t.Errorf("copied: media_links_expire_at %v, signed %d; want %d (the earliest copied expiry) and 0", m.MediaLinksExpireAt, m.MediaLinksSigned, earliest)
	}
	if v, ok := gauge(t, reg, copied.Name); !ok || int64(v) != earliest {
		t.Errorf("copied: metric %v (present %t), want %d", v, ok, earliest)
	}
	_ = h
}

// TestMediaLinksRefresh: signed links are not content, so nothing is
// exported again while they are fresh; once the newest export's links
// have used half their validity it is written again with fresh links
// (trigger refresh, same content_sha256, other bytes), with no event.
// The old links die at their expiry; the new ones fetch the media.
func TestMediaLinksRefresh(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out real link expiries, left out by -short")
	}
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	disk, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const expiry = 4 * time.Second
	d := mediaDefinition("refresh", &Media{Connection: "media", Expiry: expiry})
	startHarness(t, js, []*Definition{d}, map[string]connectors.Bucket{"disk": disk, "media": mediaBucket(t)})
	files := pipelinetest.MediaFiles()
	publishEvents(t, js, pipelinetest.MediaEvents("media", files))
	var first *manifest
	waitFor(t, "the first export", 30*time.Second, func() bool {
		first = latestRecord(t, disk, d.Path)
		return first != nil && first.FileListLength == len(files)
	})
	oldLinks := checkSigned(t, readDoc(t, disk, first.Key), first.CreatedTime, expiry)

	var next *manifest
	waitFor(t, "the export that refreshes the links", 30*time.Second, func() bool {
		next = latestRecord(t, disk, d.Path)
		return next != nil && next.ID != first.ID
	})
	if next.Trigger != TriggerRefresh || next.ContentHash != first.ContentHash || next.SHA256 == first.SHA256 {
		t.Errorf("second export: trigger %q, content_sha256 %s, sha256 %s; want %q, the first's content_sha256 %s and other bytes than %s",
			next.Trigger, next.ContentHash, next.SHA256, TriggerRefresh, first.ContentHash, first.SHA256)
	}
	if gap := next.CreatedTime.Sub(first.CreatedTime); gap < expiry/2 {
		t.Errorf("links refreshed %v after the first export, before half their validity (%v)", gap, expiry/2)
	}
	checkSigned(t, readDoc(t, disk, next.Key), next.CreatedTime, expiry)

	// The first export's links die at their expiry.
	time.Sleep(time.Until(first.CreatedTime.Add(expiry + 1500*time.Millisecond)))
	for _, u := range oldLinks {
		if status, _ := get(t, u); status == http.StatusOK {
			t.Errorf("a link of the first export still served after its expiry: %s", u)
		}
	}
}

// TestMediaSettingChange: adding media to a definition whose newest
// export copied its links exports it again at the next start, with
// signed links, though nothing else changed; without media nothing is
// exported again.
func TestMediaSettingChange(t *testing.T) {
	ns := eventstest.StartServer(t)
	_, js := eventstest.Connect(t, ns)
	disk, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	media := mediaBucket(t)
	buckets := map[string]connectors.Bucket{"disk": disk, "media": media}
	d := mediaDefinition("change", nil)
	h := startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: buckets}, nil)
	files := pipelinetest.MediaFiles()
	publishEvents(t, js, pipelinetest.MediaEvents("media", files))
	var first *manifest
	waitFor(t, "the first export", 30*time.Second, func() bool {
		first = latestRecord(t, disk, d.Path)
		return first != nil && first.FileListLength == len(files)
	})
	// Every event applied and exported (an export of all the files may
	// come before the last events' export): no dirty mark left.
	settle(t, h, []*Definition{d})
	first = latestRecord(t, disk, d.Path)
	h.stop()

	// Same setting: nothing new. An attempt asked for at start (its
	// refresh check kicks at once, before this one's quiet period ends:
	// they are one attempt) finds the export unchanged.
	h = startHarnessWith(t, js, Options{Definitions: []*Definition{d}, Buckets: buckets}, nil)
	h.p.kick(d.Name, TriggerStartup)
	waitFor(t, "the attempt after the restart", 10*time.Second, func() bool {
		m := latestRecord(t, disk, d.Path)
		return testutil.ToFloat64(h.p.m.skipped.WithLabelValues(d.Name)) > 0 || m != nil && m.ID != first.ID
	})
	if m := latestRecord(t, disk, d.Path); m.ID != first.ID {
		t.Fatalf("export %d (trigger %s) written after a restart with the same setting", m.ID, m.Trigger)
	}
	h.stop()

	signed := mediaDefinition("change", &Media{Connection: "media", Expiry: time.Hour})
	startHarnessWith(t, js, Options{Definitions: []*Definition{signed}, Buckets: buckets}, nil)
	var next *manifest
	waitFor(t, "the export with signed links", 30*time.Second, func() bool {
		next = latestRecord(t, disk, d.Path)
		return next != nil && next.ID != first.ID
	})
	if next.Trigger != TriggerRefresh || next.ContentHash != first.ContentHash || next.MediaLinksSigned != 5 {
		t.Errorf("export after adding media: trigger %q, content_sha256 %s (first %s), %d links signed; want %q, the same content hash, 5",
			next.Trigger, next.ContentHash, first.ContentHash, next.MediaLinksSigned, TriggerRefresh)
	}
	checkSigned(t, readDoc(t, disk, next.Key), next.CreatedTime, time.Hour)
}

// TestLinkExpiry reads the earliest link expiry from rendered entries.
func TestLinkExpiry(t *testing.T) {
	for _, c := range []struct {
		name  string
		entry string
		want  int64
	}{
		{"image", `{"file":{"id":1,"blob_url":"u"},"image":{"width":1,"image_signed_expiry":1900000000,"image_signed_url":"u"},"instance_list":[]}`, 1900000000},
		{"video float", `{"file":{"id":1},"video":{"mp4_video_signed_url":"u","mp4_video_signed_expiry":1800000000.5},"parent_instance_list":[],"sequence_list":[]}`, 1800000000},
		{"text RFC 3339", `{"file":{"id":1},"text":{"signed_expiry":"2030-01-01T00:00:00Z","signed_url":"u","tokens":{}},"instance_list":[]}`, 1893456000},
		{"null expiry", `{"file":{"id":1},"image":{"image_signed_expiry":null},"instance_list":[]}`, 0},
		{"no media block", `{"file":{"id":1},"instance_list":[{"id":2,"image_signed_expiry":5}]}`, 0},
		{"geo assets", `{"file":{"id":1},"geo_assets":[{"signed_expiry":1700000002},{"signed_expiry":1700000001}],"instance_list":[]}`, 1700000001},
		{"point cloud", `{"file":{"id":1},"point_cloud":{"image_signed_expiry":1600000000},"instance_list":[]}`, 1600000000},
		{"compound", `{"file":{"id":1},"instance_list":[],"2":{"file":{"id":2},"image":{"image_signed_expiry":1900000000}},"3":null,"4":{"file":{"id":4},"text":{"signed_expiry":1890000000}}}`, 1890000000},
		{"null entry", `null`, 0},
	} {
		if got := linkExpiry([]byte(c.entry)); got != c.want {
			t.Errorf("%s: linkExpiry = %d, want %d", c.name, got, c.want)
		}
	}
}

// TestBlobPath: only keys a bucket can hold are signed.
func TestBlobPath(t *testing.T) {
	for raw, want := range map[string]string{
		`{"blob_path":"a/b.jpg"}`: "a/b.jpg", `{"blob_path":"a b/ü.jpg"}`: "a b/ü.jpg",
		`{"blob_path":""}`: "", `{"blob_path":null}`: "", `{}`: "", `{"blob_path":7}`: "",
		`{"blob_path":"/abs"}`: "", `{"blob_path":"a/../b"}`: "", `{"blob_path":"../b"}`: "",
		`{"blob_path":"a//b"}`: "", `{"blob_path":"a/"}`: "", `{"blob_path":"./a"}`: "",
	} {
		got, ok := blobPath([]byte(raw))
		if got != want || ok != (want != "") {
			t.Errorf("blobPath(%s) = %q, %t; want %q", raw, got, ok, want)
		}
	}
}
