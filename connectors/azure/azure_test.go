package azure_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
	"github.com/exportstream/exportstream/connectors/connectorstest"
)

func TestMain(m *testing.M) { os.Exit(azuritetest.Main(m)) }

// realAzureEnv holds a connection string for a real storage account; when
// set, TestConformance runs against it too, in containers it creates and
// deletes.
const realAzureEnv = "EXPORTSTREAM_TEST_AZURE_CONNECTION_STRING"

// listPageSize makes List page at 1000 blobs against Azurite, as S3 does,
// so that ListPagination crosses two page boundaries with 2100 objects
// instead of writing more than 5000.
const listPageSize = 1000

func conformanceOptions() connectorstest.Options {
	return connectorstest.Options{
		ListObjects: 2*listPageSize + 100,
		// A Writer holds Concurrency block buffers (outside the Go heap,
		// but counted here as if they were not), plus one block in flight
		// in the HTTP client and one being filled.
		MaxHeapGrowth: (azure.DefaultConcurrency+2)*azure.DefaultBlockSize + 8<<20,
	}
}

func TestConformance(t *testing.T) {
	connectorstest.Run(t, newBucket, conformanceOptions())
	if cs := os.Getenv(realAzureEnv); cs != "" {
		t.Run("RealAzure", func(t *testing.T) {
			connectorstest.Run(t, func(t *testing.T) connectors.Bucket {
				return open(t, realContainer(t, cs))
			}, conformanceOptions())
		})
	}
}

func newBucket(t *testing.T) connectors.Bucket {
	opts := azuritetest.NewBucket(t)
	opts.ListPageSize = listPageSize
	return open(t, opts)
}

func open(t testing.TB, opts azure.Options) *azure.Bucket {
	t.Helper()
	b, err := azure.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("azure.New(%v): %v", opts, err)
	}
	return b
}

// realContainer creates a container in the real account of connStr and
// deletes it when t ends.
func realContainer(t *testing.T, connStr string) azure.Options {
	t.Helper()
	svc, err := service.NewClientFromConnectionString(connStr, nil)
	if err != nil {
		t.Fatalf("client for %s: %v", realAzureEnv, err)
	}
	name := fmt.Sprintf("exportstream-test-%d", time.Now().UnixNano())
	if _, err := svc.CreateContainer(t.Context(), name, nil); err != nil {
		t.Fatalf("create container %q: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := svc.DeleteContainer(ctx, name, nil); err != nil {
			t.Errorf("delete container %q: %v", name, err)
		}
	})
	return azure.Options{Container: name, ConnectionString: connStr}
}

// writeErr writes data to key with opts and returns Close's error.
func writeErr(t *testing.T, b connectors.Bucket, key string, data []byte, opts connectors.WriteOptions) error {
	t.Helper()
	w, err := b.NewWriter(t.Context(), key, opts)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

func TestMissingContainer(t *testing.T) {
	opts := azuritetest.NewBucket(t)
	opts.Container = "no-such-container"
	b := open(t, opts)
	ctx := t.Context()

	err := writeErr(t, b, "a.json", []byte("{}"), connectors.WriteOptions{})
	if !errors.Is(err, connectors.ErrBucketNotFound) {
		t.Errorf("write: err = %v, want ErrBucketNotFound", err)
	}
	big := bytes.Repeat([]byte("x"), azure.DefaultBlockSize+1) // staged blocks
	if err := writeErr(t, b, "big.json", big, connectors.WriteOptions{IfAbsent: true}); !errors.Is(err, connectors.ErrBucketNotFound) {
		t.Errorf("multi-block write: err = %v, want ErrBucketNotFound", err)
	}
	if _, err := b.NewReader(ctx, "a.json"); !errors.Is(err, connectors.ErrBucketNotFound) || errors.Is(err, connectors.ErrNotFound) {
		t.Errorf("NewReader: err = %v, want ErrBucketNotFound (and not ErrNotFound)", err)
	}
	if _, err := b.Attributes(ctx, "a.json"); !errors.Is(err, connectors.ErrBucketNotFound) {
		t.Errorf("Attributes: err = %v, want ErrBucketNotFound", err)
	}
	if err := b.List(ctx, "", func(connectors.Attributes) bool { return true }); !errors.Is(err, connectors.ErrBucketNotFound) {
		t.Errorf("List: err = %v, want ErrBucketNotFound", err)
	}
	if err := b.Delete(ctx, "a.json"); !errors.Is(err, connectors.ErrBucketNotFound) {
		t.Errorf("Delete: err = %v, want ErrBucketNotFound", err)
	}
	if r := connectors.Probe(ctx, b, "", 30*time.Second); r.Outcome != connectors.ProbeBucketMissing {
		t.Errorf("Probe: %v, want %q", r, connectors.ProbeBucketMissing)
	}
}

// TestWrongAccountKey: Azurite refuses a request signed with another key
// with 403 AuthorizationFailure, where Azure answers 403
// AuthenticationFailed (→ ErrNoCredentials). AuthorizationFailure is,
// on Azure, a request that is authenticated but not allowed (network
// rules), so it maps to ErrPermission, and the probe says access denied.
func TestWrongAccountKey(t *testing.T) {
	opts := azuritetest.NewBucket(t)
	srv := azuritetest.Start(t)
	wrongKey := "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleS0xMjM0NTY3ODkwMTI="
	b := open(t, azure.Options{Container: opts.Container, AccountName: azuritetest.AccountName, AccountKey: wrongKey, Endpoint: srv.Endpoint})

	r := connectors.Probe(t.Context(), b, "", 30*time.Second)
	if r.Outcome != connectors.ProbeAccessDenied {
		t.Errorf("Probe with a wrong key: %v, want %q (Azurite's AuthorizationFailure)", r, connectors.ProbeAccessDenied)
	}
	_, err := b.Attributes(t.Context(), "a.json")
	if !bloberror.HasCode(err, bloberror.AuthorizationFailure) || !errors.Is(err, connectors.ErrPermission) {
		t.Errorf("Attributes with a wrong key: err = %v, want AuthorizationFailure and ErrPermission", err)
	}
	wantNoSecret(t, err, wrongKey)
}

func TestClosedPort(t *testing.T) {
	opts := azuritetest.NewBucket(t)
	opts.ConnectionString = ""
	opts.AccountName, opts.AccountKey = azuritetest.AccountName, azuritetest.AccountKey
	opts.Endpoint = "http://" + closedAddr(t) + "/" + azuritetest.AccountName
	b := open(t, opts)
	if r := connectors.Probe(t.Context(), b, "", 30*time.Second); r.Outcome != connectors.ProbeUnreachable {
		t.Errorf("Probe of a closed port: %v, want %q", r, connectors.ProbeUnreachable)
	}
}

// closedAddr returns an address on which nothing listens.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// failingCredential is an Azure AD credential that finds no identity.
type failingCredential struct{}

func (failingCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{}, errors.New("no identity here")
}

func TestNoToken(t *testing.T) {
	b := open(t, azure.Options{
		Container:   "exports",
		AccountName: "account",
		Endpoint:    "https://" + closedAddr(t) + "/account",
		Credential:  failingCredential{},
	})
	if _, err := b.Attributes(t.Context(), "a.json"); !errors.Is(err, connectors.ErrNoCredentials) {
		t.Errorf("Attributes without a token: err = %v, want ErrNoCredentials", err)
	}
	if r := connectors.Probe(t.Context(), b, "", 30*time.Second); r.Outcome != connectors.ProbeNoCredentials {
		t.Errorf("Probe without a token: %v, want %q", r, connectors.ProbeNoCredentials)
	}
}

// containerSAS signs a SAS for the whole container with the account key.
func containerSAS(t *testing.T, container string, perms sas.ContainerPermissions, expiry time.Duration) string {
	t.Helper()
	cred, err := service.NewSharedKeyCredential(azuritetest.AccountName, azuritetest.AccountKey)
	if err != nil {
		t.Fatal(err)
	}
	q, err := sas.BlobSignatureValues{
		Protocol:      sas.ProtocolHTTPSandHTTP,
		ExpiryTime:    time.Now().UTC().Add(expiry),
		Permissions:   perms.String(),
		ContainerName: container,
	}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	return q.Encode()
}

var allPerms = sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true, Delete: true, List: true}

func TestSASToken(t *testing.T) {
	srv := azuritetest.Start(t)
	for _, tc := range []struct {
		name string
		opts func(container, token string) azure.Options
	}{
		{"AccountName", func(c, token string) azure.Options {
			return azure.Options{Container: c, AccountName: azuritetest.AccountName, SASToken: "?" + token, Endpoint: srv.Endpoint}
		}},
		{"ConnectionString", func(c, token string) azure.Options {
			return azure.Options{Container: c, ConnectionString: "BlobEndpoint=" + srv.Endpoint + ";SharedAccessSignature=" + token}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := azuritetest.NewBucket(t).Container
			b := open(t, tc.opts(c, containerSAS(t, c, allPerms, time.Hour)))
			ctx := t.Context()

			small, large := []byte(`{"small":true}`), bytes.Repeat([]byte("0123456789abcdef"), (azure.DefaultBlockSize+1<<20)/16)
			for key, data := range map[string][]byte{"sas/small.json": small, "sas/large.json": large} {
				if err := writeErr(t, b, key, data, connectors.WriteOptions{IfAbsent: true}); err != nil {
					t.Fatalf("write %q: %v", key, err)
				}
				if err := writeErr(t, b, key, data, connectors.WriteOptions{IfAbsent: true}); !errors.Is(err, connectors.ErrExists) {
					t.Errorf("second IfAbsent write of %q: err = %v, want ErrExists", key, err)
				}
				r, err := b.NewReader(ctx, key)
				if err != nil {
					t.Fatalf("NewReader(%q): %v", key, err)
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("read %q: %d bytes, %v; want %d bytes", key, len(got), err, len(data))
				}
			}
			var listed []string
			if err := b.List(ctx, "sas/", func(a connectors.Attributes) bool { listed = append(listed, a.Key); return true }); err != nil {
				t.Fatalf("List: %v", err)
			}
			if strings.Join(listed, ",") != "sas/large.json,sas/small.json" {
				t.Errorf("List: got %q", listed)
			}
			if err := b.Delete(ctx, "sas/small.json"); err != nil {
				t.Errorf("Delete: %v", err)
			}
			if r := connectors.Probe(ctx, b, "", 30*time.Second); !r.OK() {
				t.Errorf("Probe: %v", r)
			}

			_, err := b.SignedURL(ctx, "sas/large.json", time.Minute)
			if !errors.Is(err, connectors.ErrNotSupported) {
				t.Errorf("SignedURL with a SAS token: err = %v, want ErrNotSupported", err)
			}
		})
	}
}

// TestSASPermissions: a SAS without write permission is refused as a
// permission problem, a SAS for another container as bad credentials
// (Azurite answers 403 AuthorizationFailure for both).
func TestSASPermissions(t *testing.T) {
	srv := azuritetest.Start(t)
	c := azuritetest.NewBucket(t).Container
	token := containerSAS(t, c, sas.ContainerPermissions{Read: true, List: true}, time.Hour)
	b := open(t, azure.Options{Container: c, AccountName: azuritetest.AccountName, SASToken: token, Endpoint: srv.Endpoint})
	err := writeErr(t, b, "ro.json", []byte("{}"), connectors.WriteOptions{})
	if !errors.Is(err, connectors.ErrPermission) {
		t.Errorf("write with a read-only SAS: err = %v, want ErrPermission", err)
	}
	t.Logf("write with a read-only SAS: %v", err)
	q, _ := url.ParseQuery(token)
	wantNoSecret(t, err, token, q.Get("sig"))
}

// TestSecretsNotInErrors: no error a Bucket returns quotes its account key
// or SAS signature, whichever way the call failed, and neither do its
// Options when printed.
func TestSecretsNotInErrors(t *testing.T) {
	srv := azuritetest.Start(t)
	c := azuritetest.NewBucket(t).Container
	token := containerSAS(t, c, allPerms, time.Hour)
	sig := must(url.ParseQuery(token)).Get("sig")
	badSig := strings.ToUpper(sig[:len(sig)/2]) + sig[len(sig)/2:] // still base64, wrong
	badToken := strings.Replace(token, url.QueryEscape(sig), url.QueryEscape(badSig), 1)
	if badToken == token {
		t.Fatal("could not tamper with the signature")
	}
	down := "http://" + closedAddr(t) + "/" + azuritetest.AccountName
	ctx := t.Context()

	for _, tc := range []struct {
		name    string
		opts    azure.Options
		secrets []string
	}{
		{"SASClosedPort", azure.Options{Container: c, AccountName: azuritetest.AccountName, SASToken: token, Endpoint: down},
			[]string{token, sig, url.QueryEscape(sig)}},
		{"SASConnectionStringClosedPort", azure.Options{Container: c, ConnectionString: "BlobEndpoint=" + down + ";SharedAccessSignature=" + token},
			[]string{token, sig, url.QueryEscape(sig)}},
		{"WrongSAS", azure.Options{Container: c, AccountName: azuritetest.AccountName, SASToken: badToken, Endpoint: srv.Endpoint},
			[]string{badToken, badSig, url.QueryEscape(badSig)}},
		{"KeyClosedPort", azure.Options{Container: c, AccountName: azuritetest.AccountName, AccountKey: azuritetest.AccountKey, Endpoint: down},
			[]string{azuritetest.AccountKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Retry.MaxRetries = -1 // fail fast on the closed port
			for _, s := range []string{fmt.Sprint(tc.opts), fmt.Sprintf("%+v", tc.opts), fmt.Sprintf("%#v", tc.opts)} {
				for _, secret := range tc.secrets {
					if strings.Contains(s, secret) {
						t.Errorf("printed options %s contain a secret", s)
					}
				}
			}
			b := open(t, tc.opts)
			var errs []error
			_, err := b.Attributes(ctx, "x.json")
			errs = append(errs, err)
			_, err = b.NewReader(ctx, "x.json")
			errs = append(errs, err)
			errs = append(errs, writeErr(t, b, "x.json", []byte("{}"), connectors.WriteOptions{IfAbsent: true}))
			errs = append(errs, b.List(ctx, "", func(connectors.Attributes) bool { return true }))
			errs = append(errs, b.Delete(ctx, "x.json"))
			for _, err := range errs {
				if err == nil {
					t.Errorf("a call succeeded; want every call to fail")
					continue
				}
				wantNoSecret(t, err, tc.secrets...)
			}
			t.Logf("for example: %v", errs[0])
		})
	}

	// Invalid options: the messages name the problem, not the value.
	for _, opts := range []azure.Options{
		{Container: c, AccountName: "a", AccountKey: "not base64!" + azuritetest.AccountKey},
		{Container: c, AccountName: "a", SASToken: "sv=1&sog=" + sig},
		{Container: c, AccountName: "a", SASToken: "%zz" + sig},
		{Container: c, ConnectionString: "AccountKey=" + azuritetest.AccountKey},
		{Container: c, ConnectionString: "BlobEndpoint=http://x/;SharedAccessSignature=%zz" + sig},
		{Container: c, ConnectionString: "garbage" + azuritetest.AccountKey},
	} {
		_, err := azure.New(ctx, opts)
		if err == nil {
			t.Errorf("New(%v) succeeded", opts)
			continue
		}
		wantNoSecret(t, err, azuritetest.AccountKey, sig, url.QueryEscape(sig))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// wantNoSecret fails if err, or any error it wraps, mentions a secret.
func wantNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		msg := err.Error()
		for _, s := range secrets {
			if s != "" && strings.Contains(msg, s) {
				t.Errorf("error (%T) reveals a secret: %s", err, msg)
				return
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
}

// TestConditionalAnswers pins what Azurite answers to the conditions of
// a write, in one request (Put Blob) and in a multi-block commit (Put
// Block List), through the SDK directly, and that the bucket maps each
// answer to its sentinel.
func TestConditionalAnswers(t *testing.T) {
	opts := azuritetest.NewBucket(t)
	b := open(t, opts)
	ctx := t.Context()
	small := []byte(`{"v":1}`)
	large := bytes.Repeat([]byte("z"), 2*azure.MinBlockSize+1)
	upload := func(key string, data []byte, cond blob.ModifiedAccessConditions) error {
		_, err := b.Client().NewBlockBlobClient(key).UploadStream(ctx, bytes.NewReader(data), &blockblob.UploadStreamOptions{
			BlockSize:        azure.MinBlockSize,
			AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &cond},
		})
		return err
	}
	if err := upload("exists.json", small, blob.ModifiedAccessConditions{}); err != nil {
		t.Fatal(err)
	}
	stale := azcore.ETag(`"0x8D000000000000"`)
	for _, tc := range []struct {
		name   string
		key    string
		cond   blob.ModifiedAccessConditions
		status int
		code   bloberror.Code
	}{
		{"IfNoneMatchStarOnExisting", "exists.json", blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}, 409, bloberror.BlobAlreadyExists},
		{"WrongIfMatch", "exists.json", blob.ModifiedAccessConditions{IfMatch: &stale}, 412, bloberror.ConditionNotMet},
		{"IfMatchOnMissing", "missing.json", blob.ModifiedAccessConditions{IfMatch: &stale}, 412, bloberror.ConditionNotMet},
	} {
		for _, size := range []struct {
			name string
			data []byte
		}{{"PutBlob", small}, {"PutBlockList", large}} {
			t.Run(tc.name+"/"+size.name, func(t *testing.T) {
				err := upload(tc.key, size.data, tc.cond)
				var re *azcore.ResponseError
				if !errors.As(err, &re) {
					t.Fatalf("err = %v, want an azcore.ResponseError", err)
				}
				t.Logf("Azurite answered %d %s", re.StatusCode, re.ErrorCode)
				if re.StatusCode != tc.status || !bloberror.HasCode(err, tc.code) {
					t.Errorf("Azurite answered %d %s, want %d %s", re.StatusCode, re.ErrorCode, tc.status, tc.code)
				}
			})
		}
	}
}

// TestConcurrentBlockWrites: of two unconditional multi-block writes of
// one key, the one that commits second fails, and the object is the
// first one's, whole.
func TestConcurrentBlockWrites(t *testing.T) {
	b := open(t, azuritetest.NewBucket(t))
	first := bytes.Repeat([]byte("1"), 2*azure.DefaultBlockSize+1)
	second := bytes.Repeat([]byte("2"), 2*azure.DefaultBlockSize+1)
	w1, err := b.NewWriter(t.Context(), "k.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := b.NewWriter(t.Context(), "k.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w1.Write(first)
	w2.Write(second)
	if err := w1.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	err = w2.Close()
	if !bloberror.HasCode(err, bloberror.InvalidBlockList) {
		t.Errorf("second Close: err = %v, want InvalidBlockList", err)
	}
	r, err := b.NewReader(t.Context(), "k.json")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, first) {
		t.Errorf("read: %d bytes, %v; want the first write's %d bytes", len(got), err, len(first))
	}
}

// TestDelegatedSignedURL: with Azure AD credentials, SignedURL signs with
// a user delegation key it fetches once and reuses. Azurite cannot serve
// this (it derives the account from the host name, and needs OAuth over
// https), so the key comes from a canned Get User Delegation Key answer.
func TestDelegatedSignedURL(t *testing.T) {
	keys := &delegationServer{}
	b := open(t, azure.Options{
		Container:   "exports",
		AccountName: "acct",
		Credential:  staticToken{},
		HTTPClient:  &http.Client{Transport: keys},
	})
	ctx := t.Context()
	var urls []string
	for _, key := range []string{"signed/a b.json", "signed/other.json"} {
		u, err := b.SignedURL(ctx, key, time.Hour)
		if err != nil {
			t.Fatalf("SignedURL(%q): %v", key, err)
		}
		urls = append(urls, u)
	}
	if keys.requests != 1 {
		t.Errorf("%d Get User Delegation Key requests for two URLs, want 1", keys.requests)
	}
	if keys.lifetime < azure.MaxDelegatedExpiry || keys.lifetime > azure.MaxDelegatedExpiry+10*time.Minute {
		t.Errorf("key requested for %v, want about %v", keys.lifetime, azure.MaxDelegatedExpiry)
	}
	u, err := url.Parse(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "https" || u.Host != "acct.blob.core.windows.net" || u.Path != "/exports/signed/a b.json" {
		t.Errorf("signed URL %s: want https://acct.blob.core.windows.net/exports/signed/a b.json", u)
	}
	for k, want := range map[string]string{"sp": "r", "sr": "b", "spr": "https", "skoid": "oid-1", "sktid": "tid-1"} {
		if q.Get(k) != want {
			t.Errorf("signed URL %s: %s=%q, want %q", u, k, q.Get(k), want)
		}
	}
	se, err := time.Parse(time.RFC3339, q.Get("se"))
	if err != nil || se.Before(time.Now().Add(59*time.Minute)) || se.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("signed URL %s: se=%q, want in an hour", u, q.Get("se"))
	}
	if q.Get("sig") == "" {
		t.Errorf("signed URL %s has no signature", u)
	}

	if _, err := b.SignedURL(ctx, "x.json", azure.MaxDelegatedExpiry+time.Hour); err == nil || errors.Is(err, connectors.ErrNotSupported) {
		t.Errorf("SignedURL for longer than a delegation key lives: err = %v, want a plain error", err)
	}

	// An identity without the right to get delegation keys.
	denied := open(t, azure.Options{
		Container:   "exports",
		AccountName: "acct",
		Credential:  staticToken{},
		HTTPClient:  &http.Client{Transport: &delegationServer{deny: true}},
	})
	if _, err := denied.SignedURL(ctx, "x.json", time.Hour); !errors.Is(err, connectors.ErrPermission) {
		t.Errorf("SignedURL without the right to get delegation keys: err = %v, want ErrPermission", err)
	}
}

type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// delegationServer answers Get User Delegation Key requests, and nothing
// else.
type delegationServer struct {
	deny     bool
	mu       sync.Mutex
	requests int
	lifetime time.Duration // of the last key asked for
}

func (d *delegationServer) RoundTrip(req *http.Request) (*http.Response, error) {
	answer := func(status int, code, body string) (*http.Response, error) {
		h := http.Header{"Content-Type": {"application/xml"}}
		if code != "" {
			h.Set("x-ms-error-code", code)
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h,
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	if req.Method != http.MethodPost || req.URL.Query().Get("comp") != "userdelegationkey" {
		return answer(http.StatusNotFound, "ResourceNotFound", "")
	}
	if req.Header.Get("Authorization") != "Bearer token" {
		return answer(http.StatusUnauthorized, "NoAuthenticationInformation", "")
	}
	if d.deny {
		return answer(http.StatusForbidden, "AuthorizationPermissionMismatch", "")
	}
	var info struct{ Start, Expiry string }
	body, _ := io.ReadAll(req.Body)
	if err := xml.Unmarshal(body, &info); err != nil {
		return answer(http.StatusBadRequest, "InvalidXmlDocument", "")
	}
	start, err1 := time.Parse(time.RFC3339, info.Start)
	expiry, err2 := time.Parse(time.RFC3339, info.Expiry)
	if err1 != nil || err2 != nil {
		return answer(http.StatusBadRequest, "InvalidXmlNodeValue", "")
	}
	d.mu.Lock()
	d.requests++
	d.lifetime = expiry.Sub(start)
	d.mu.Unlock()
	return answer(http.StatusOK, "", `<?xml version="1.0" encoding="utf-8"?><UserDelegationKey>`+
		`<SignedOid>oid-1</SignedOid><SignedTid>tid-1</SignedTid>`+
		`<SignedStart>`+info.Start+`</SignedStart><SignedExpiry>`+info.Expiry+`</SignedExpiry>`+
		`<SignedService>b</SignedService><SignedVersion>2026-12-06</SignedVersion>`+
		`<Value>`+base64.StdEncoding.EncodeToString([]byte("delegation-key-0123456789abcdef"))+`</Value></UserDelegationKey>`)
}

// TestEncryptionScope: writes carry the configured encryption scope
// (Azurite accepts the header and ignores it, so the test looks at the
// requests, through Options.HTTPClient).
func TestEncryptionScope(t *testing.T) {
	opts := azuritetest.NewBucket(t)
	opts.EncryptionScope = "exportscope"
	rec := &recorder{next: http.DefaultTransport}
	opts.HTTPClient = &http.Client{Transport: rec}
	b := open(t, opts)
	for key, data := range map[string][]byte{"small.json": []byte("{}"), "large.json": bytes.Repeat([]byte("s"), azure.DefaultBlockSize+1)} {
		if err := writeErr(t, b, key, data, connectors.WriteOptions{}); err != nil {
			t.Fatalf("write %q with an encryption scope: %v", key, err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.puts) != 4 { // Put Blob; Put Block ×2, Put Block List
		t.Errorf("%d PUT requests, want 4: %q", len(rec.puts), rec.puts)
	}
	for _, p := range rec.puts {
		if p.scope != opts.EncryptionScope {
			t.Errorf("%s: x-ms-encryption-scope %q, want %q", p.query, p.scope, opts.EncryptionScope)
		}
	}
}

// recorder remembers the PUT requests it passes on.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	puts []struct{ query, scope string }
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		r.mu.Lock()
		// The SDK sets its x-ms-* headers with lowercase keys, which
		// Header.Get (canonical keys) does not find.
		//lint:ignore SA1008 the key as the SDK sets it, not canonical
		scope := strings.Join(req.Header["x-ms-encryption-scope"], ",")
		r.puts = append(r.puts, struct{ query, scope string }{req.URL.Query().Get("comp"), scope})
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

func TestOptions(t *testing.T) {
	valid := azure.Options{Container: "exports", AccountName: "acct", AccountKey: azuritetest.AccountKey}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate(%v): %v", valid, err)
	}
	for _, tc := range []struct {
		name string
		opts azure.Options
		want []string // substrings of the error, one per problem
	}{
		{"Empty", azure.Options{}, []string{"container is required", "one of connection string and account name is required"}},
		{"BadContainer", azure.Options{Container: "Ex--ports", AccountName: "a", SASToken: "sig=x"}, []string{`container "Ex--ports" is not a valid container name`}},
		{"Both", azure.Options{Container: "abc", AccountName: "a", ConnectionString: "AccountName=a;AccountKey=" + azuritetest.AccountKey}, []string{"set only one of connection string and account name"}},
		{"KeyAndSAS", azure.Options{Container: "abc", AccountName: "a", AccountKey: azuritetest.AccountKey, SASToken: "sig=x"}, []string{"set only one of account key and SAS token"}},
		{"KeyWithoutName", azure.Options{Container: "abc", ConnectionString: "AccountName=a;AccountKey=" + azuritetest.AccountKey, AccountKey: azuritetest.AccountKey}, []string{"account key requires an account name"}},
		{"NoSig", azure.Options{Container: "abc", AccountName: "a", SASToken: "sv=2020-01-01"}, []string{"SAS token: has no signature"}},
		{"ConnNoAuth", azure.Options{Container: "abc", ConnectionString: "AccountName=a"}, []string{"connection string needs AccountKey or SharedAccessSignature"}},
		{"TokenOverHTTP", azure.Options{Container: "abc", AccountName: "a", Endpoint: "http://127.0.0.1:1/a"}, []string{"Azure AD credentials are only sent over https"}},
		{"EndpointQuery", azure.Options{Container: "abc", AccountName: "a", AccountKey: azuritetest.AccountKey, Endpoint: "https://x/?sig=1"}, []string{"endpoint must not have a query"}},
		{"Sizes", azure.Options{Container: "abc", AccountName: "a", AccountKey: azuritetest.AccountKey, BlockSize: 1000, Concurrency: -1, ListPageSize: 5001},
			[]string{"block size 1000 is outside", "concurrency -1 is negative", "list page size 5001 is outside"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if err == nil {
				t.Fatalf("Validate(%v) = nil", tc.opts)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate: %q does not say %q", err, w)
				}
			}
			if _, err := azure.New(t.Context(), tc.opts); err == nil {
				t.Errorf("New(%v) succeeded", tc.opts)
			}
		})
	}
}

func BenchmarkUpload1GiB(b *testing.B) {
	bucket, err := azure.New(b.Context(), azuritetest.NewBucket(b))
	if err != nil {
		b.Fatal(err)
	}
	connectorstest.BenchmarkUpload(b, bucket, 1<<30)
}
