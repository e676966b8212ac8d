package service

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/pipeline"
)

// stallConnection is an S3 connection to an endpoint that accepts
// connections and never answers: an export to it stays in flight (the
// upload waits) until the service stops.
func stallConnection(t *testing.T, name string) config.Connection {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return config.Connection{Name: name, Type: config.TypeS3, S3: &config.S3{
		Bucket: "stalled", Region: "us-east-1", Endpoint: "http://" + ln.Addr().String(), PathStyle: true,
		AccessKeyID: "AKIDSTALL", SecretAccessKey: "stall-secret", PartSize: config.DefaultPartSize,
	}}
}

// TestHostileRequests: requests an attacker (or a careless script) sends
// to the HTTP surface, each with the answer it must get and what the
// answer must never hold. Completion events only ever go to
// diffgram.exports.<valid project>.<name>.completed.
func TestHostileRequests(t *testing.T) {
	svc, c, exp, cfg := startAPIService(t)
	nc, err := nats.Connect(svc.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var subjMu sync.Mutex
	var subjects []string
	sub, err := nc.Subscribe("diffgram.exports.>", func(m *nats.Msg) {
		subjMu.Lock()
		subjects = append(subjects, m.Subject)
		subjMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// A link in the bucket's folder to a file outside it, and a signed
	// link to it: the /files/ route must not follow it.
	outside := filepath.Join(t.TempDir(), "passwd")
	secretFile := []byte("root:x:0:0:outside the bucket\n")
	if err := os.WriteFile(outside, secretFile, 0o644); err != nil {
		t.Fatal(err)
	}
	var bucketDir string
	for _, conn := range cfg.Connections {
		if conn.Name == "disk" {
			bucketDir = conn.Local.Dir
		}
	}
	if err := os.Symlink(outside, filepath.Join(bucketDir, "exports", "passwd.json")); err != nil {
		t.Fatal(err)
	}
	link, err := svc.Bucket("disk").SignedURL(t.Context(), "exports/passwd.json", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	adhoc := func(project string) func() (int, http.Header, []byte) {
		return func() (int, http.Header, []byte) {
			return c.do("POST", "/api/v1/exports", map[string]any{"project": project, "source": map[string]any{"project": true},
				"connection": "disk", "wait": true})
		}
	}
	withAuth := func(value string) func() (int, http.Header, []byte) {
		return func() (int, http.Header, []byte) {
			req, err := http.NewRequestWithContext(t.Context(), "GET", c.base+"/api/v1/definitions", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", value)
			return send(t, req)
		}
	}
	fetch := func(u string) func() (int, http.Header, []byte) {
		return func() (int, http.Header, []byte) {
			req, err := http.NewRequestWithContext(t.Context(), "GET", u, nil)
			if err != nil {
				t.Fatal(err)
			}
			return send(t, req)
		}
	}
	for _, tc := range []struct {
		name   string
		do     func() (int, http.Header, []byte)
		status int
		code   string   // the JSON error code, if any
		never  []string // never in the answer
	}{
		// Ad-hoc projects are checked as the config checks them: they
		// name a token of the completion event's subject.
		{"ad-hoc project with a dot", adhoc("load.evil"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project *", adhoc("*"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project >", adhoc(">"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project with a space", adhoc("a b"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project with a tab", adhoc("a\tb"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project in capitals", adhoc("STREET-SCENES"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project as a subject", adhoc("street-scenes.adhoc.completed.x"), http.StatusBadRequest, "bad_request", nil},
		{"ad-hoc project with a NUL", adhoc("street\x00scenes"), http.StatusBadRequest, "bad_request", nil},
		// The bearer scheme is case-insensitive (RFC 7235); the token is
		// not.
		{"bearer in lower case", withAuth("bearer " + testToken), http.StatusOK, "", nil},
		{"bearer in capitals", withAuth("BEARER " + testToken), http.StatusOK, "", nil},
		{"bearer with two spaces", withAuth("Bearer  " + testToken), http.StatusOK, "", nil},
		{"token in another case", withAuth("Bearer " + strings.ToUpper(testToken)), http.StatusUnauthorized, "unauthorized", nil},
		{"token with a suffix", withAuth("Bearer " + testToken + "x"), http.StatusUnauthorized, "unauthorized", nil},
		{"no space after the scheme", withAuth("Bearer" + testToken), http.StatusUnauthorized, "unauthorized", nil},
		{"scheme without a token", withAuth("bearer"), http.StatusUnauthorized, "unauthorized", nil},
		{"basic scheme", withAuth("Basic " + testToken), http.StatusUnauthorized, "unauthorized", nil},
		// A signed link to a symbolic link in the bucket's folder.
		{"signed link to a symbolic link", fetch(link), http.StatusNotFound, "", []string{"root:x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := tc.do()
			if status != tc.status {
				t.Errorf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.code != "" {
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.code || h.Get("Content-Type") != "application/json" {
					t.Errorf("answer %s, want a JSON error %q", body, tc.code)
				}
				if tc.code == "bad_request" && !strings.Contains(e.Error.Message, "is not a valid project") {
					t.Errorf("message %q does not say what a project may hold", e.Error.Message)
				}
			}
			for _, n := range tc.never {
				if bytes.Contains(body, []byte(n)) {
					t.Errorf("answer holds %q: %s", n, body)
				}
			}
		})
	}

	// Nothing was exported for the refused projects, and every
	// completion event went to a subject naming one valid project.
	var page struct{ Exports []pipeline.Record }
	c.json("GET", "/api/v1/exports?definition="+pipeline.AdhocName, nil, http.StatusOK, &page)
	for _, r := range page.Exports {
		if r.Project != exp.Project {
			t.Errorf("ad-hoc export %d of project %q", r.ID, r.Project)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	subjMu.Lock()
	defer subjMu.Unlock()
	for _, s := range subjects {
		tokens := strings.Split(s, ".")
		if len(tokens) != 5 || tokens[4] != "completed" || config.CheckProject(tokens[2]) != nil {
			t.Errorf("completion event on %q", s)
		}
	}
}

// send does req and reads the answer.
func send(t *testing.T, req *http.Request) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// TestAdhocSharedAndLimited: 200 identical ad-hoc requests at once make
// one export, and every caller gets its id; different ones beyond
// http.max_adhoc_exports are refused with 429 and Retry-After, while an
// identical one still joins its running export. The exports go to a
// connection that never answers, so that they stay in flight.
func TestAdhocSharedAndLimited(t *testing.T) {
	_, c, exp, _ := startAPIService(t, func(cfg *config.Config) {
		cfg.HTTP.MaxAdhocExports = 2
		cfg.Connections = append(cfg.Connections, stallConnection(t, "stall"))
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	request := func(completion string) map[string]any {
		return map[string]any{"project": exp.Project, "source": map[string]any{"project": true},
			"completion": completion, "connection": "stall"}
	}
	countAdhoc := func() int {
		var page struct{ Total int }
		c.json("GET", "/api/v1/exports?definition="+pipeline.AdhocName, nil, http.StatusOK, &page)
		return page.Total
	}
	before := countAdhoc()

	// 200 requests at once leave the client with connections it dialed
	// and never used; close them, or the server's shutdown waits for them.
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	const n = 200
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status, _, body := c.do("POST", "/api/v1/exports", request("all"))
			var rec pipeline.Record
			if status != http.StatusAccepted || json.Unmarshal(body, &rec) != nil {
				t.Errorf("request %d: %d %s", i, status, body)
				return
			}
			ids[i] = rec.ID
		})
	}
	wg.Wait()
	for i, id := range ids {
		if id != ids[0] {
			t.Fatalf("request %d got export %d, request 0 export %d: identical requests made more than one export", i, id, ids[0])
		}
	}
	if got := countAdhoc() - before; got != 1 {
		t.Errorf("%d identical ad-hoc requests made %d export records, want 1", n, got)
	}

	// A second, different one fits the limit; a third does not.
	var second pipeline.Record
	c.json("POST", "/api/v1/exports", request("complete"), http.StatusAccepted, &second)
	if second.ID == ids[0] {
		t.Errorf("a different request joined export %d", second.ID)
	}
	status, h, body := c.do("POST", "/api/v1/exports", request("incomplete"))
	var e struct {
		Error struct{ Code, Message string }
	}
	if status != http.StatusTooManyRequests || json.Unmarshal(body, &e) != nil || e.Error.Code != "too_many_requests" ||
		!strings.Contains(e.Error.Message, "http.max_adhoc_exports") {
		t.Errorf("ad-hoc request beyond the limit: %d %s, want 429 too_many_requests naming the limit", status, body)
	}
	if ra := h.Get("Retry-After"); ra == "" || strings.Trim(ra, "0123456789") != "" || ra == "0" {
		t.Errorf("Retry-After %q, want a number of seconds", ra)
	}
	// Joining a running export is not one more.
	var again pipeline.Record
	c.json("POST", "/api/v1/exports", request("all"), http.StatusAccepted, &again)
	if again.ID != ids[0] {
		t.Errorf("an identical request while export %d runs got export %d", ids[0], again.ID)
	}
	if got := countAdhoc() - before; got != 2 {
		t.Errorf("%d ad-hoc export records, want 2", got)
	}
}
