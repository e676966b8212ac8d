package service

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// runMedia runs the service with two definitions of project media
// exporting to a local folder: "signed" signs media links with the
// connection media (the type under test, holding the media objects of
// pipelinetest.MediaFiles), "copied" copies the links as received. Each
// signed link in the export fetches its media object, byte for byte,
// without credentials; the manifests say the earliest expiry, and so
// does /metrics.
func runMedia(t *testing.T, media config.Connection) {
	const expiry = 24 * time.Hour
	media.Name = "media"
	cfg := config.Default()
	cfg.NATS.Embedded.Listen = "127.0.0.1:0"
	cfg.NATS.Embedded.StoreDir = filepath.Join(t.TempDir(), "nats")
	cfg.State.Dir = filepath.Join(t.TempDir(), "state")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Connections = []config.Connection{
		{Name: "disk", Type: config.TypeLocal, Local: &config.Local{Dir: t.TempDir()}},
		media,
	}
	for _, name := range []string{"signed", "copied"} {
		e := config.Export{Name: name, Project: "media", Source: config.Source{Directory: "all"},
			Completion: config.CompletionAll, Connection: "disk", Path: "exports/" + name + "/",
			Coalesce: config.Coalesce{Quiet: 100 * time.Millisecond, MaxDelay: 2 * time.Second}}
		if name == "signed" {
			e.Media = &config.Media{Connection: "media", Expiry: expiry}
		}
		cfg.Exports = append(cfg.Exports, e)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	svc := startService(t, cfg)
	files := pipelinetest.MediaFiles()
	for _, f := range files {
		if f.BlobPath == "" {
			continue
		}
		w, err := svc.Bucket("media").NewWriter(t.Context(), f.BlobPath, connectors.WriteOptions{ContentType: "application/octet-stream"})
		if err == nil {
			if _, err = w.Write(f.Data); err == nil {
				err = w.Close()
			}
		}
		if err != nil {
			t.Fatalf("store media object %s: %v", f.BlobPath, err)
		}
	}
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range pipelinetest.MediaEvents("media", files) {
		m := nats.NewMsg(e.Subject)
		m.Data = e.Body
		if _, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}

	disk := svc.Bucket("disk")
	type manifest struct {
		Key                string     `json:"key"`
		CreatedTime        time.Time  `json:"created_time"`
		FileListLength     int        `json:"file_list_length"`
		MediaLinksExpireAt *time.Time `json:"media_links_expire_at"`
		MediaLinksSigned   int        `json:"media_links_signed"`
	}
	latest := func(name string) manifest {
		var m manifest
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			r, err := disk.NewReader(t.Context(), "exports/"+name+"/latest.json")
			if err == nil {
				err = json.NewDecoder(r).Decode(&m)
				r.Close()
			}
			if err == nil && m.FileListLength == len(files) {
				return m
			}
			if time.Now().After(end) {
				t.Fatalf("%s: no export of every file after 30s (%v)", name, err)
			}
		}
	}
	document := func(key string) map[string]json.RawMessage {
		r, err := disk.NewReader(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var d map[string]json.RawMessage
		if err := json.NewDecoder(r).Decode(&d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	links := func(entry json.RawMessage, f pipelinetest.MediaFile) pipelinetest.EntryLinks {
		l, err := pipelinetest.LinksOf(entry, f.Type)
		if err != nil {
			t.Errorf("file %d: %v", f.ID, err)
		}
		return l
	}

	signed := latest("signed")
	doc := document(signed.Key)
	fetched := 0
	for _, f := range files {
		if f.BlobPath == "" {
			continue
		}
		l := links(doc[strconv.FormatInt(f.ID, 10)], f)
		u := l.BlobURL
		if u == f.URL || u == "" {
			t.Errorf("file %d: blob_url %q is not a signed link", f.ID, u)
			continue
		}
		if l.URL != u || l.Expiry != signed.CreatedTime.Add(expiry).Unix() {
			t.Errorf("file %d: its %s block's link %q expiring %d, want blob_url's %q expiring %d (created_time + %v)",
				f.ID, f.Type, l.URL, l.Expiry, u, signed.CreatedTime.Add(expiry).Unix(), expiry)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, f.Data) {
			t.Errorf("file %d: GET its signed link: %s, %d bytes (%v); want 200 and the %d bytes of %s", f.ID, resp.Status, len(got), err, len(f.Data), f.BlobPath)
			continue
		}
		fetched++
	}
	if fetched != 4 || signed.MediaLinksSigned != 5 {
		t.Errorf("%d of 4 files with blob_path fetched by their signed link; %d links signed, want 5 (one child also nested in its compound file)", fetched, signed.MediaLinksSigned)
	}
	if want := signed.CreatedTime.Add(expiry).Unix(); signed.MediaLinksExpireAt == nil || signed.MediaLinksExpireAt.Unix() != want {
		t.Errorf("signed: media_links_expire_at %v, want created_time + %v (%d)", signed.MediaLinksExpireAt, expiry, want)
	}

	copied := latest("copied")
	earliest := int64(0)
	for _, f := range files {
		if f.Expiry > 0 && (earliest == 0 || f.Expiry < earliest) {
			earliest = f.Expiry
		}
	}
	if copied.MediaLinksExpireAt == nil || copied.MediaLinksExpireAt.Unix() != earliest || copied.MediaLinksSigned != 0 {
		t.Errorf("copied: media_links_expire_at %v, %d signed; want %d (the earliest copied expiry) and none", copied.MediaLinksExpireAt, copied.MediaLinksSigned, earliest)
	}
	doc = document(copied.Key)
	for _, f := range files {
		if u := links(doc[strconv.FormatInt(f.ID, 10)], f).BlobURL; f.URL != "" && u != f.URL {
			t.Errorf("copied: file %d: blob_url %q, want it as received (%q)", f.ID, u, f.URL)
		}
	}

	resp, err := http.Get("http://" + svc.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for name, want := range map[string]int64{"signed": signed.MediaLinksExpireAt.Unix(), "copied": earliest} {
		prefix := `exportstream_media_links_expire_at_seconds{definition="` + name + `"} `
		var got string
		for line := range strings.Lines(string(body)) {
			if strings.HasPrefix(line, prefix) {
				got = strings.TrimSpace(strings.TrimPrefix(line, prefix))
			}
		}
		if v, err := strconv.ParseFloat(got, 64); err != nil || int64(v) != want {
			t.Errorf("/metrics: %s%q, want %d", prefix, got, want)
		}
	}
}

func TestMediaLinksLocal(t *testing.T) {
	runMedia(t, config.Connection{Type: config.TypeLocal, Local: &config.Local{Dir: t.TempDir(), SignKey: "media key"}})
}

func TestMediaLinksS3(t *testing.T) {
	o := s3test.NewBucket(t)
	runMedia(t, config.Connection{Type: config.TypeS3, S3: &config.S3{
		Bucket: o.Bucket, Region: o.Region, Endpoint: o.Endpoint, PathStyle: true,
		AccessKeyID: o.AccessKeyID, SecretAccessKey: config.Secret(o.SecretAccessKey), PartSize: 5 << 20,
	}})
}

// TestMediaLinksGCS: fake-gcs-server serves signed URLs without checking
// their signatures (connectors/gcs tests the signature itself).
func TestMediaLinksGCS(t *testing.T) {
	o := gcstest.NewBucket(t)
	runMedia(t, config.Connection{Type: config.TypeGCS, GCS: &config.GCS{
		Bucket: o.Bucket, Endpoint: o.Endpoint, CredentialsFile: o.CredentialsFile,
	}})
}

func TestMediaLinksAzure(t *testing.T) {
	o := azuritetest.NewBucket(t)
	runMedia(t, config.Connection{Type: config.TypeAzure, Azure: &config.Azure{
		Container: o.Container, ConnectionString: config.Secret(o.ConnectionString),
	}})
}
