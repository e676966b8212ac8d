package gcs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/api/googleapi"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
)

func open(t *testing.T, opts gcs.Options) *gcs.Bucket {
	t.Helper()
	b, err := gcs.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func put(t *testing.T, b connectors.Bucket, key string, data []byte, opts connectors.WriteOptions) error {
	t.Helper()
	w, err := b.NewWriter(t.Context(), key, opts)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// TestConditionalWrites pins down what the server answers to conditional
// writes, in one request and as a resumable upload of several chunks, and
// that the cause survives the translation into sentinels.
func TestConditionalWrites(t *testing.T) {
	opts := gcstest.NewBucket(t)
	opts.ChunkSize = gcs.ChunkSizeUnit
	b := open(t, opts)
	small, large := 1<<10, 2*gcs.ChunkSizeUnit+1 // large: three chunks
	if err := put(t, b, "exists.json", []byte("{}"), connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	a, err := b.Attributes(t.Context(), "exists.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		key        string
		opts       connectors.WriteOptions
		wantStatus int
		want       []error
	}{
		{"IfAbsent on an existing key", "exists.json", connectors.WriteOptions{IfAbsent: true},
			http.StatusPreconditionFailed, []error{connectors.ErrExists}},
		{"IfMatch with a stale ETag", "exists.json", connectors.WriteOptions{IfMatch: "1"},
			http.StatusPreconditionFailed, []error{connectors.ErrPrecondition}},
		{"IfMatch on a missing key", "missing.json", connectors.WriteOptions{IfMatch: a.ETag},
			http.StatusPreconditionFailed, []error{connectors.ErrPrecondition, connectors.ErrNotFound}},
	}
	for _, c := range cases {
		for _, size := range []int{small, large} {
			name := fmt.Sprintf("%s (%d bytes)", c.name, size)
			err := put(t, b, c.key, make([]byte, size), c.opts)
			var ge *googleapi.Error
			if !errors.As(err, &ge) {
				t.Errorf("%s: err = %v, want a *googleapi.Error inside", name, err)
				continue
			}
			t.Logf("%s: HTTP %d %q", name, ge.Code, ge.Message)
			if ge.Code != c.wantStatus {
				t.Errorf("%s: HTTP %d, want %d (err: %v)", name, ge.Code, c.wantStatus, err)
			}
			for _, want := range c.want {
				if !errors.Is(err, want) {
					t.Errorf("%s: err = %v, want it to wrap %v", name, err, want)
				}
			}
		}
	}
	if got, err := b.Attributes(t.Context(), "exists.json"); err != nil || got.ETag != a.ETag {
		t.Errorf("after the refused writes: %+v, %v; want ETag %s", got, err, a.ETag)
	}

	// An IfMatch that is no generation cannot match anything.
	if _, err := b.NewWriter(t.Context(), "exists.json", connectors.WriteOptions{IfMatch: `"abc"`}); !errors.Is(err, connectors.ErrPrecondition) {
		t.Errorf("NewWriter with IfMatch %q: err = %v, want ErrPrecondition", `"abc"`, err)
	}
	if _, err := b.NewWriter(t.Context(), "exists.json", connectors.WriteOptions{IfAbsent: true, IfMatch: a.ETag}); err == nil {
		t.Error("NewWriter with IfAbsent and IfMatch succeeded")
	}
}

func TestErrorTranslation(t *testing.T) {
	srv := gcstest.Start(t)

	t.Run("MissingBucket", func(t *testing.T) {
		opts := srv.Options("no-such-bucket-" + fmt.Sprint(time.Now().UnixNano()))
		b := open(t, opts)
		_, errRead := b.NewReader(t.Context(), "k.json")
		_, errAttr := b.Attributes(t.Context(), "k.json")
		errList := b.List(t.Context(), "", func(connectors.Attributes) bool { return true })
		errWrite := put(t, b, "k.json", []byte("{}"), connectors.WriteOptions{})
		errCreate := put(t, b, "k.json", []byte("{}"), connectors.WriteOptions{IfAbsent: true})
		errDelete := b.Delete(t.Context(), "k.json")
		for name, err := range map[string]error{"NewReader": errRead, "Attributes": errAttr, "List": errList,
			"Write": errWrite, "IfAbsent write": errCreate, "Delete": errDelete} {
			if !errors.Is(err, connectors.ErrBucketNotFound) || errors.Is(err, connectors.ErrNotFound) {
				t.Errorf("%s in a missing bucket: err = %v, want ErrBucketNotFound and not ErrNotFound", name, err)
			}
		}
		if r := connectors.Probe(t.Context(), b, "", 30*time.Second); r.Outcome != connectors.ProbeBucketMissing {
			t.Errorf("Probe of a missing bucket: %v, want %q", r, connectors.ProbeBucketMissing)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + l.Addr().String()
		l.Close()
		b := open(t, gcs.Options{Bucket: "unreachable", Endpoint: closed})
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err = b.Attributes(ctx, "k.json")
		if got := connectors.Classify(err); got != connectors.ProbeUnreachable {
			t.Errorf("Attributes on a closed port: err = %v, classified %q, want %q", err, got, connectors.ProbeUnreachable)
		}
		w, err := b.NewWriter(t.Context(), "k.json", connectors.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("{}"))
		if err := w.Close(); !errors.Is(err, connectors.ErrUnreachable) {
			t.Errorf("write on a closed port: err = %v, want ErrUnreachable", err)
		}
		start := time.Now()
		if r := connectors.Probe(t.Context(), b, "", 3*time.Second); r.Outcome != connectors.ProbeUnreachable {
			t.Errorf("Probe on a closed port: %v, want %q", r, connectors.ProbeUnreachable)
		} else {
			t.Logf("Probe on a closed port after %v: %v", time.Since(start).Round(time.Millisecond), r)
		}
	})

	t.Run("NoCredentials", func(t *testing.T) {
		dir := t.TempDir()
		missing := filepath.Join(dir, "missing.json")
		user := filepath.Join(dir, "user.json")
		if err := os.WriteFile(user, []byte(`{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, file := range []string{missing, user} {
			opts := srv.Options("any-bucket")
			opts.CredentialsFile = file
			if _, err := gcs.New(t.Context(), opts); !errors.Is(err, connectors.ErrNoCredentials) {
				t.Errorf("New with credentials file %s: err = %v, want ErrNoCredentials", filepath.Base(file), err)
			}
		}
	})

	t.Run("TokenRefused", func(t *testing.T) {
		// A key the token endpoint does not accept (revoked, say).
		refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
		}))
		defer refuse.Close()
		sa, err := gcstest.NewServiceAccount(t.TempDir(), refuse.URL+"/token")
		if err != nil {
			t.Fatal(err)
		}
		opts := srv.NewBucket(t)
		opts.CredentialsFile = sa.File
		b := open(t, opts)
		_, err = b.Attributes(t.Context(), "k.json")
		if !errors.Is(err, connectors.ErrNoCredentials) {
			t.Errorf("Attributes with a refused key: err = %v, want ErrNoCredentials", err)
		}
		if r := connectors.Probe(t.Context(), b, "", 30*time.Second); r.Outcome != connectors.ProbeNoCredentials {
			t.Errorf("Probe with a refused key: %v, want %q", r, connectors.ProbeNoCredentials)
		}
	})
}

// recorder is an HTTP transport that remembers the requests it sends.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Clone(context.Background()))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

// TestHTTPClientAndKMS checks that a caller's HTTP client is used and
// still gets the credentials, and that uploads name the KMS key
// (fake-gcs-server ignores it, so the request is what can be checked).
func TestHTTPClientAndKMS(t *testing.T) {
	const kms = "projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"
	rec := &recorder{}
	opts := gcstest.NewBucket(t)
	opts.HTTPClient = &http.Client{Transport: rec}
	opts.KMSKeyName = kms
	b := open(t, opts)
	if err := put(t, b, "kms.json", []byte("{}"), connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var uploads int
	for _, req := range rec.reqs {
		if req.URL.Path == "/token" {
			continue // the token request itself, to the key file's token_uri
		}
		if got := req.Header.Get("Authorization"); got != "Bearer gcstest-token" {
			t.Errorf("%s %s: Authorization %q, want the token of the key file", req.Method, req.URL.Path, got)
		}
		if strings.HasPrefix(req.URL.Path, "/upload/") {
			uploads++
			if got := req.URL.Query().Get("kmsKeyName"); got != kms {
				t.Errorf("upload %s: kmsKeyName %q, want %q", req.URL, got, kms)
			}
		}
	}
	if uploads == 0 {
		t.Errorf("no upload request went through the caller's HTTP client (%d requests did)", len(rec.reqs))
	}
}

// TestOutage stops the server in the middle: requests fail as unreachable
// while it is down, and everything is back after it restarts, with the
// data it had. It must not run in parallel with other tests.
func TestOutage(t *testing.T) {
	srv := gcstest.Start(t)
	b := open(t, srv.NewBucket(t))
	if err := put(t, b, "kept.json", []byte(`{"kept":true}`), connectors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := srv.Start(); err != nil {
				t.Errorf("Start: %v", err)
			}
		}
	})
	if r := connectors.Probe(t.Context(), b, "", 2*time.Second); r.Outcome != connectors.ProbeUnreachable {
		t.Errorf("Probe while the server is down: %v, want %q", r, connectors.ProbeUnreachable)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	restarted = true
	r, err := b.NewReader(t.Context(), "kept.json")
	if err != nil {
		t.Fatalf("NewReader after the restart: %v", err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || string(got) != `{"kept":true}` {
		t.Errorf("read after the restart: %q, %v", got, err)
	}
	if r := connectors.Probe(t.Context(), b, "", 30*time.Second); !r.OK() {
		t.Errorf("Probe after the restart: %v", r)
	}
}

func TestOptions(t *testing.T) {
	bad := []struct {
		opts gcs.Options
		want []string
	}{
		{gcs.Options{}, []string{"bucket is required"}},
		{gcs.Options{Bucket: "Bad/Name"}, []string{"not a valid bucket name"}},
		{gcs.Options{Bucket: "b-1", ChunkSize: 1000}, []string{"chunk size 1000"}},
		{gcs.Options{Bucket: "b-1", ChunkSize: -gcs.ChunkSizeUnit}, []string{"chunk size"}},
		{gcs.Options{Bucket: "b-1", Endpoint: "127.0.0.1:4443"}, []string{"not an http(s) URL"}},
		{gcs.Options{Bucket: "b-1", Endpoint: "http://127.0.0.1:4443", SigningAccount: "sa@p.iam.gserviceaccount.com"},
			[]string{"signing account needs a credentials file"}},
		{gcs.Options{Bucket: "b-1", SigningAccount: "nobody"}, []string{"not a service account email"}},
		{gcs.Options{Bucket: "b-1", KMSKeyName: "k"}, []string{"KMS key name"}},
		{gcs.Options{ChunkSize: 3, KMSKeyName: "k"}, []string{"bucket is required", "chunk size 3", "KMS key name"}},
	}
	for _, c := range bad {
		err := c.opts.Validate()
		if err == nil {
			t.Errorf("Validate(%v) = nil, want errors %q", c.opts, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%v) = %q, want it to say %q", c.opts, err, w)
			}
		}
		if _, err := gcs.New(t.Context(), c.opts); err == nil {
			t.Errorf("New(%v) succeeded", c.opts)
		}
	}
	good := gcs.Options{Bucket: "my.bucket_1", Endpoint: "http://127.0.0.1:4443", ChunkSize: 4 * gcs.ChunkSizeUnit,
		KMSKeyName: "projects/p/locations/l/keyRings/r/cryptoKeys/k", HTTPClient: &http.Client{}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%v): %v", good, err)
	}
	for _, s := range []string{fmt.Sprintf("%v", good), fmt.Sprintf("%+v", good), fmt.Sprintf("%#v", good)} {
		if strings.Contains(s, "0x") || !strings.Contains(s, "HTTPClient:custom") {
			t.Errorf("formatted options %s: want no pointers and HTTPClient:custom", s)
		}
	}
}

// TestListAttributes checks that List reports what Attributes does,
// except the content type.
func TestListAttributes(t *testing.T) {
	b := open(t, gcstest.NewBucket(t))
	if err := put(t, b, "a/x.json", []byte(`{"x":1}`), connectors.WriteOptions{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	a, err := b.Attributes(t.Context(), "a/x.json")
	if err != nil {
		t.Fatal(err)
	}
	if a.ContentType != "text/plain" || a.Size != 7 {
		t.Errorf("Attributes: %+v, want text/plain and 7 bytes", a)
	}
	var listed []connectors.Attributes
	if err := b.List(t.Context(), "a/", func(a connectors.Attributes) bool { listed = append(listed, a); return true }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 {
		t.Fatalf("List: %+v, want one object", listed)
	}
	if l := listed[0]; l.Key != a.Key || l.Size != a.Size || l.ETag != a.ETag || !l.ModTime.Equal(a.ModTime) || l.ContentType != "" {
		t.Errorf("List: %+v, want %+v without the content type", l, a)
	}
}

// TestListPages checks that List really pages (against fake-gcs-server,
// which only pages when asked) and loses or repeats nothing at the page
// boundary.
func TestListPages(t *testing.T) {
	opts := gcstest.NewBucket(t)
	b := open(t, opts)
	n := gcs.ListPageSize + 1
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			w, err := b.NewWriter(t.Context(), fmt.Sprintf("p/%05d.json", i), connectors.WriteOptions{})
			if err != nil {
				return err
			}
			if _, err := w.Write([]byte("{}")); err != nil {
				w.Abort()
				return err
			}
			return w.Close()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	opts.HTTPClient = &http.Client{Transport: rec}
	b = open(t, opts)
	var i int
	err := b.List(t.Context(), "p/", func(a connectors.Attributes) bool {
		if want := fmt.Sprintf("p/%05d.json", i); a.Key != want {
			t.Fatalf("List: object %d is %q, want %q", i, a.Key, want)
		}
		i++
		return true
	})
	if err != nil || i != n {
		t.Fatalf("List: %d objects, %v; want %d", i, err, n)
	}
	var pages int
	for _, req := range rec.reqs {
		if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/b/"+opts.Bucket+"/o") {
			pages++
			if got := req.URL.Query().Get("maxResults"); got != fmt.Sprint(gcs.ListPageSize) {
				t.Errorf("list request %s: maxResults %q, want %d", req.URL, got, gcs.ListPageSize)
			}
		}
	}
	if pages != 2 {
		t.Errorf("List of %d objects took %d requests, want 2", n, pages)
	}
}
