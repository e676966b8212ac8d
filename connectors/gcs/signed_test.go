package gcs_test

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
)

// TestSignedURLSignature checks V4 signed URLs against Google's
// specification rather than against the SDK: it rebuilds the canonical
// request and the string to sign from the URL alone and verifies
// X-Goog-Signature with the service account's public key. fake-gcs-server
// does not check signatures, so this is the test that they are right.
func TestSignedURLSignature(t *testing.T) {
	srv := gcstest.Start(t)
	const key = "signed/with space/ünï ✓+&=~'(x).json"
	const expiry = 10 * time.Minute
	emulated := srv.NewBucket(t)
	cases := []struct {
		name       string
		opts       gcs.Options
		wantScheme string
		wantHost   string
	}{
		// No endpoint: a URL for Google Cloud Storage itself. New and
		// SignedURL send no request here: the key signs locally.
		{"GCS", gcs.Options{Bucket: "exportstream-signing-test", CredentialsFile: srv.Account.File}, "https", "storage.googleapis.com"},
		{"Emulator", emulated, "http", strings.TrimPrefix(srv.URL, "http://")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := open(t, c.opts)
			before := time.Now().UTC()
			raw, err := b.SignedURL(t.Context(), key, expiry)
			if err != nil {
				t.Fatalf("SignedURL: %v", err)
			}
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatalf("signed URL %q does not parse: %v", raw, err)
			}
			if u.Scheme != c.wantScheme || u.Host != c.wantHost {
				t.Errorf("signed URL %s: scheme and host %s://%s, want %s://%s", raw, u.Scheme, u.Host, c.wantScheme, c.wantHost)
			}
			wantPath := "/" + c.opts.Bucket + "/" + uriEncode(key, false)
			if u.EscapedPath() != wantPath {
				t.Errorf("signed URL path %s, want %s", u.EscapedPath(), wantPath)
			}
			q := u.Query()
			date, err := time.Parse("20060102T150405Z", q.Get("X-Goog-Date"))
			if err != nil || date.Before(before.Add(-time.Second).Truncate(time.Second)) || date.After(time.Now().Add(time.Second)) {
				t.Errorf("X-Goog-Date %q (%v), want the signing time, about %v", q.Get("X-Goog-Date"), err, before)
			}
			scope := date.Format("20060102") + "/auto/storage/goog4_request"
			for param, want := range map[string]string{
				"X-Goog-Algorithm":     "GOOG4-RSA-SHA256",
				"X-Goog-Credential":    srv.Account.Email + "/" + scope,
				"X-Goog-Expires":       fmt.Sprint(int(expiry.Seconds())),
				"X-Goog-SignedHeaders": "host",
			} {
				if got := q.Get(param); got != want {
					t.Errorf("%s = %q, want %q", param, got, want)
				}
			}

			sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
			if err != nil {
				t.Fatalf("X-Goog-Signature %q is not hex: %v", q.Get("X-Goog-Signature"), err)
			}
			pub := &srv.Account.Key.PublicKey
			if err := verifyV4(pub, u, sig); err != nil {
				t.Errorf("signature of %s does not verify: %v", raw, err)
			}
			// The verification is not vacuous: another key, or another
			// expiry, does not verify with the same signature.
			moved := *u
			moved.RawPath, moved.Path = "", "/"+c.opts.Bucket+"/signed/other.json"
			if verifyV4(pub, &moved, sig) == nil {
				t.Error("the signature also verifies for another key")
			}
			longer := *u
			lq := u.Query()
			lq.Set("X-Goog-Expires", "604800")
			longer.RawQuery = lq.Encode()
			if verifyV4(pub, &longer, sig) == nil {
				t.Error("the signature also verifies with another X-Goog-Expires")
			}
		})
	}

	t.Run("EmulatorServesIt", func(t *testing.T) {
		b := open(t, emulated)
		data := []byte(`{"signed":true}`)
		put(t, b, key, data, connectors.WriteOptions{})
		u, err := b.SignedURL(t.Context(), key, expiry)
		if err != nil {
			t.Fatalf("SignedURL: %v", err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
			t.Errorf("GET signed URL: %s, %q, %v; want 200 and %q", resp.Status, got, err, data)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		b := open(t, emulated)
		for _, d := range []time.Duration{0, -time.Second, gcs.MaxSignedURLExpiry + time.Second} {
			if _, err := b.SignedURL(t.Context(), key, d); err == nil {
				t.Errorf("SignedURL with expiry %v succeeded", d)
			}
		}
		if _, err := b.SignedURL(t.Context(), key, gcs.MaxSignedURLExpiry); err != nil {
			t.Errorf("SignedURL with expiry %v: %v", gcs.MaxSignedURLExpiry, err)
		}
	})

	t.Run("NothingCanSign", func(t *testing.T) {
		opts := emulated
		opts.CredentialsFile = "" // the emulator without credentials
		b := open(t, opts)
		_, err := b.SignedURL(t.Context(), key, expiry)
		if !errors.Is(err, connectors.ErrNotSupported) || !strings.Contains(err.Error(), "credentials_file") {
			t.Errorf("SignedURL without credentials: err = %v, want ErrNotSupported naming credentials_file", err)
		}
	})
}

// TestSignedURLWithIAM signs as another service account than the key
// file's, which goes through the IAM Credentials signBlob API. The API is
// played by a local server: the caller's HTTP client routes its host there
// (and refuses every other host that is not on loopback).
func TestSignedURLWithIAM(t *testing.T) {
	srv := gcstest.Start(t)
	signerSA, err := gcstest.NewServiceAccount(t.TempDir(), "http://127.0.0.1:1/unused")
	if err != nil {
		t.Fatal(err)
	}
	const signAs, denied = "signer@gcstest.iam.gserviceaccount.com", "denied@gcstest.iam.gserviceaccount.com"
	var signCalls atomic.Int64
	iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		signCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer gcstest-token" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":401,"message":"no token","status":"UNAUTHENTICATED"}}`)
			return
		}
		if r.URL.Path == "/v1/projects/-/serviceAccounts/"+denied+":signBlob" {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.signBlob' denied","status":"PERMISSION_DENIED"}}`)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/-/serviceAccounts/"+signAs+":signBlob" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"error":{"code":404,"message":"no %s %s","status":"NOT_FOUND"}}`, r.Method, r.URL.Path)
			return
		}
		var req struct{ Payload []byte }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(req.Payload)
		sig, err := rsa.SignPKCS1v15(nil, signerSA.Key, crypto.SHA256, sum[:])
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keyId": "k1", "signedBlob": sig})
	}))
	defer iam.Close()
	hc := &http.Client{Transport: &router{routes: map[string]string{"iamcredentials.googleapis.com": iam.Listener.Addr().String()}}}

	opts := srv.NewBucket(t)
	opts.HTTPClient = hc
	opts.SigningAccount = signAs
	b := open(t, opts)
	const key = "iam/signed ✓.json"
	raw, err := b.SignedURL(t.Context(), key, time.Hour)
	if err != nil {
		t.Fatalf("SignedURL: %v", err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if cred := q.Get("X-Goog-Credential"); !strings.HasPrefix(cred, signAs+"/") {
		t.Errorf("X-Goog-Credential %q, want it to name %s", cred, signAs)
	}
	sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyV4(&signerSA.Key.PublicKey, u, sig); err != nil {
		t.Errorf("signature by IAM does not verify: %v", err)
	}
	if n := signCalls.Load(); n != 1 {
		t.Errorf("signBlob called %d times, want 1", n)
	}

	opts.SigningAccount = denied
	b = open(t, opts)
	_, err = b.SignedURL(t.Context(), key, time.Hour)
	if !errors.Is(err, connectors.ErrPermission) || !strings.Contains(err.Error(), "roles/iam.serviceAccountTokenCreator") {
		t.Errorf("SignedURL as an account we may not sign as: err = %v, want ErrPermission naming the role", err)
	}
}

// router sends requests for the hosts in routes to other addresses over
// plain HTTP, lets requests to loopback through, and refuses the rest.
type router struct {
	routes map[string]string // host → "127.0.0.1:port"
}

func (rt *router) RoundTrip(req *http.Request) (*http.Response, error) {
	if addr, ok := rt.routes[req.URL.Host]; ok {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host, req.Host = "http", addr, ""
		return http.DefaultTransport.RoundTrip(req)
	}
	if ip := net.ParseIP(req.URL.Hostname()); ip != nil && ip.IsLoopback() {
		return http.DefaultTransport.RoundTrip(req)
	}
	return nil, fmt.Errorf("test router: no route to %s", req.URL.Host)
}

// verifyV4 checks sig over the V4 string to sign of u, built as Google's
// "Signed URL signing process" describes it: the canonical request
//
//	GET
//	<path: each segment percent-encoded, RFC 3986 unreserved kept>
//	<query without X-Goog-Signature: names sorted, names and values encoded>
//	host:<host>
//	(empty line ending the canonical headers)
//	host
//	UNSIGNED-PAYLOAD
//
// and the string to sign "GOOG4-RSA-SHA256\n<X-Goog-Date>\n<scope>\n<hex
// SHA-256 of the canonical request>", signed RSASSA-PKCS1-v1_5 SHA-256.
//
// The host is taken without its port: the SDK signs u.Hostname(), which
// only differs from the Host header for servers on other ports (emulators,
// which do not check); GCS itself has none.
func verifyV4(pub *rsa.PublicKey, u *url.URL, sig []byte) error {
	q := u.Query()
	names := make([]string, 0, len(q))
	for name := range q {
		if name != "X-Goog-Signature" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var query []string
	for _, name := range names {
		for _, v := range q[name] {
			query = append(query, uriEncode(name, true)+"="+uriEncode(v, true))
		}
	}
	canonical := strings.Join([]string{
		http.MethodGet,
		uriEncode(u.Path, false),
		strings.Join(query, "&"),
		"host:" + u.Hostname(),
		"",
		"host",
		"UNSIGNED-PAYLOAD",
	}, "\n")
	credential := q.Get("X-Goog-Credential")
	scope := credential[strings.Index(credential, "/")+1:]
	sum := sha256.Sum256([]byte(canonical))
	toSign := "GOOG4-RSA-SHA256\n" + q.Get("X-Goog-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	digest := sha256.Sum256([]byte(toSign))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

// uriEncode percent-encodes s as V4 signing wants it: every byte except
// the RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~), in upper-case
// hex, and '/' too when slash is set.
func uriEncode(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/' && !slash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
