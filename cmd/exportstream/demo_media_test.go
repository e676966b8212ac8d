package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoMediaLinks: the demo keeps its simulated media files in a local
// media bucket beside its export bucket and its exports sign their links:
// an image's blob_url in an export is a link the service serves, and it
// fetches the image (a PNG of the size the snapshot says). The manifest
// says when the links expire (7 days after the export), and the signing
// key stays beside the bucket for the next run.
func TestDemoMediaLinks(t *testing.T) {
	dir := t.TempDir()
	cfg := demoConfig(t, dir)
	demo := startDemo(t, "--config", cfg, "--rate", "200", "--files", "8")
	defer demo.stop(t)
	page := demo.bannerURL(t, "Page")

	latest := filepath.Join(dir, "bucket", "exports", "whole-project", "latest.json")
	var m struct {
		Key                string     `json:"key"`
		CreatedTime        time.Time  `json:"created_time"`
		MediaLinksExpireAt *time.Time `json:"media_links_expire_at"`
		MediaLinksSigned   int        `json:"media_links_signed"`
	}
	var doc map[string]json.RawMessage
	var link string
	var width, height int
	for deadline := time.Now().Add(60 * time.Second); link == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no export with a signed image link after 60 s:\n%s", demo.stderr.String())
		}
		b, err := os.ReadFile(latest)
		if err != nil || json.Unmarshal(b, &m) != nil || m.MediaLinksSigned == 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "bucket", filepath.FromSlash(m.Key)))
		if err != nil || json.Unmarshal(data, &doc) != nil {
			continue
		}
		for k, v := range doc {
			var e struct {
				File struct {
					BlobURL string `json:"blob_url"`
				} `json:"file"`
				Image *struct {
					Width  int    `json:"width"`
					Height int    `json:"height"`
					URL    string `json:"image_signed_url"`
					Expiry int64  `json:"image_signed_expiry"`
				} `json:"image"`
			}
			if k[0] < '0' || k[0] > '9' || json.Unmarshal(v, &e) != nil || e.Image == nil {
				continue
			}
			if !strings.HasPrefix(e.File.BlobURL, strings.TrimSuffix(page, "/")+"/files/local-media/") || e.Image.URL != e.File.BlobURL {
				t.Fatalf("file %s: blob_url %q, image_signed_url %q: want one link served under %sfiles/local-media/", k, e.File.BlobURL, e.Image.URL, page)
			}
			if want := m.CreatedTime.Add(7 * 24 * time.Hour).Unix(); e.Image.Expiry != want {
				t.Errorf("file %s: image_signed_expiry %d, want %d (7 days after the export)", k, e.Image.Expiry, want)
			}
			link, width, height = e.File.BlobURL, e.Image.Width, e.Image.Height
			break
		}
	}
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	img, err := png.Decode(bytes.NewReader(body))
	if resp.StatusCode != http.StatusOK || err != nil || img.Bounds().Dx() != width || img.Bounds().Dy() != height {
		t.Fatalf("GET %s: %s, %d bytes (%v); want a %dx%d PNG", link, resp.Status, len(body), err, width, height)
	}
	if m.MediaLinksExpireAt == nil || m.MediaLinksExpireAt.After(m.CreatedTime.Add(7*24*time.Hour)) {
		t.Errorf("manifest: media_links_expire_at %v, want at most 7 days after %v", m.MediaLinksExpireAt, m.CreatedTime)
	}
	if fi, err := os.Stat(filepath.Join(dir, "media.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the media signing key is not kept beside the buckets (mode 0600): %v", err)
	}
}
