package local_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/local"
)

// signingBucket is a fresh folder whose signed links a test server
// serves, as the service does under /files/<connection>/.
func signingBucket(t *testing.T) *local.Bucket {
	var b *local.Bucket
	srv := httptest.NewServer(http.StripPrefix("/files/disk", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Handler().ServeHTTP(w, r)
	})))
	t.Cleanup(srv.Close)
	b, err := local.NewWithOptions(t.TempDir(), local.Options{BaseURL: srv.URL + "/files/disk", SignKey: []byte("test key")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	connectorstest.Run(t, func(t *testing.T) connectors.Bucket { return signingBucket(t) },
		connectorstest.Options{MaxHeapGrowth: 8 << 20})
}

// Without a base URL and key a folder cannot sign, and says so.
func TestSignedURLNotConfigured(t *testing.T) {
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SignedURL(t.Context(), "a.json", time.Minute); !errors.Is(err, connectors.ErrNotSupported) {
		t.Errorf("SignedURL without options: err = %v, want ErrNotSupported", err)
	}
}

// Temp files a crashed writer left behind are removed by the next New
// once stale; a fresh one (a write in progress elsewhere) stays.
func TestNewRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	if _, err := local.New(dir); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, ".tmp", "w-crashed")
	fresh := filepath.Join(dir, ".tmp", "w-in-progress")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-local.StaleTemp - time.Minute)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
}

// go test ./connectors/local -run '^$' -bench Upload -benchtime 1x
func BenchmarkUpload1GiB(b *testing.B) {
	bucket, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	connectorstest.BenchmarkUpload(b, bucket, 1<<30)
}

// The suite also holds for a bucket seen through a prefix (as the real
// cloud runs use it), with objects outside the prefix left alone.
func TestConformancePrefixed(t *testing.T) {
	connectorstest.Run(t, func(t *testing.T) connectors.Bucket {
		b := signingBucket(t)
		w, _ := b.NewWriter(t.Context(), "outside.json", connectors.WriteOptions{})
		w.Write([]byte("{}"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return connectors.Prefixed(b, "run-1/")
	}, connectorstest.Options{MaxHeapGrowth: 8 << 20, StreamSize: 64 << 20})
}

// TestSymlinksAreNotObjects: a symbolic link inside the bucket's folder,
// to a file outside it, to a folder outside it, or to another object
// inside it, is no object: its signed link answers 404 and never the
// content, and NewReader does not find it. A regular object beside them
// is still served.
func TestSymlinksAreNotObjects(t *testing.T) {
	b := signingBucket(t)
	outside := t.TempDir()
	secret := []byte("root:x:0:0:secret outside the bucket\n")
	if err := os.WriteFile(filepath.Join(outside, "passwd"), secret, 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := b.NewWriter(t.Context(), "exports/real.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(`{"real": true}`)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"exports/passwd":        filepath.Join(outside, "passwd"),
		"exports/etc":           outside,
		"exports/inside.json":   filepath.Join(b.Dir(), "exports", "real.json"),
		"exports/relative.json": "real.json",
	}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(b.Dir(), filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	get := func(key string) (int, []byte) {
		u, err := b.SignedURL(t.Context(), key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	for _, key := range []string{"exports/passwd", "exports/etc/passwd", "exports/inside.json", "exports/relative.json"} {
		status, body := get(key)
		if status != http.StatusNotFound || bytes.Contains(body, secret) || bytes.Contains(body, []byte("real")) {
			t.Errorf("signed link to the symbolic link %s: %d %q, want 404 without the content", key, status, body)
		}
		if r, err := b.NewReader(t.Context(), key); !errors.Is(err, connectors.ErrNotFound) {
			if r != nil {
				r.Close()
			}
			t.Errorf("NewReader(%s) through a symbolic link: %v, want ErrNotFound", key, err)
		}
	}
	if status, body := get("exports/real.json"); status != http.StatusOK || string(body) != `{"real": true}` {
		t.Errorf("signed link to a regular object: %d %q", status, body)
	}
}
