package gcs

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/compute/metadata"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	iamcredentials "google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"

	"github.com/exportstream/exportstream/connectors"
)

// MaxSignedURLExpiry is the longest validity GCS allows for a V4 signed URL.
const MaxSignedURLExpiry = 7 * 24 * time.Hour

// signer signs V4 URLs, locally with a service-account key or remotely
// with the IAM signBlob API. Which one is decided by New, from the
// credentials and Options.SigningAccount.
type signer struct {
	host     string // of the signed URLs
	insecure bool   // http instead of https (an emulator endpoint)

	key *rsa.PrivateKey         // local signing; nil: IAM
	iam *iamcredentials.Service // remote signing; nil: local or nothing

	// unsupported says what is missing when nothing can sign ("" if
	// something can).
	unsupported string

	mu      sync.Mutex
	account string // GoogleAccessID; "" with iam: the GCE default account, found on first use
}

// credsFile is what signing needs from a credentials JSON file.
type credsFile struct {
	Type             string `json:"type"`
	ClientEmail      string `json:"client_email"`
	PrivateKey       string `json:"private_key"`
	ImpersonationURL string `json:"service_account_impersonation_url"`
}

// newSigner decides how URLs are signed. creds is nil when no credentials
// are sent (an emulator endpoint); authOpt reaches Google APIs with them.
// It does no network I/O.
func newSigner(ctx context.Context, creds *auth.Credentials, authOpt option.ClientOption, signingAccount string) (*signer, error) {
	if creds == nil {
		return &signer{unsupported: "an endpoint without a credentials file sends no credentials, so there is no key to sign with: set credentials_file to a service-account key"}, nil
	}
	var f credsFile
	if j := creds.JSON(); len(j) > 0 {
		if err := json.Unmarshal(j, &f); err != nil {
			return nil, fmt.Errorf("read credentials JSON: %w", err)
		}
	}
	s := &signer{account: signingAccount}
	if f.Type == "service_account" && f.PrivateKey != "" && (signingAccount == "" || signingAccount == f.ClientEmail) {
		key, err := parseKey([]byte(f.PrivateKey))
		if err != nil {
			return nil, fmt.Errorf("service-account key of %s: %w", f.ClientEmail, err)
		}
		s.key, s.account = key, f.ClientEmail
		return s, nil
	}
	if s.account == "" && f.Type != "" {
		// A service account without its key signs as itself; impersonated
		// and workload-identity credentials name the account they act as;
		// other kinds (a user's gcloud login) name none. No JSON at all
		// means credentials from the GCE metadata server, whose default
		// account is asked for on first use.
		s.account = f.ClientEmail
		if f.Type != "service_account" {
			s.account = impersonatedAccount(f.ImpersonationURL)
		}
		if s.account == "" {
			s.unsupported = fmt.Sprintf("the default credentials (type %q) name no service account to sign as: set signing_account (and grant roles/iam.serviceAccountTokenCreator on it)", f.Type)
			return s, nil
		}
	}
	iam, err := iamcredentials.NewService(ctx, authOpt)
	if err != nil {
		return nil, fmt.Errorf("create IAM credentials client: %w", err)
	}
	s.iam = iam
	return s, nil
}

// impersonatedAccount is the service account in an impersonation URL
// (".../serviceAccounts/NAME@PROJECT.iam.gserviceaccount.com:generateAccessToken"),
// or "".
func impersonatedAccount(u string) string {
	start, end := strings.LastIndex(u, "/"), strings.LastIndex(u, ":")
	if start < 0 || end <= start+1 {
		return ""
	}
	return u[start+1 : end]
}

// parseKey reads a PEM RSA private key (PKCS#8 or PKCS#1).
func parseKey(pemKey []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return nil, errors.New("private key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is a %T, not RSA", k)
		}
		return rk, nil
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	return k, nil
}

// SignedURL returns a V4 signed URL (GOOG4-RSA-SHA256) that GETs key until
// expiry has passed; expiry is at most MaxSignedURLExpiry. If nothing can
// sign as configured, the error wraps connectors.ErrNotSupported and says
// what is missing. Signing through IAM can fail like any request: without
// iam.serviceAccounts.signBlob on the signing account the error wraps
// connectors.ErrPermission.
func (b *driver) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	s := b.signer
	switch {
	case s.unsupported != "":
		return "", fmt.Errorf("gcs: sign %q: %w: %s", key, connectors.ErrNotSupported, s.unsupported)
	case expiry <= 0:
		return "", fmt.Errorf("gcs: sign %q: expiry %v is not positive", key, expiry)
	case expiry > MaxSignedURLExpiry:
		return "", fmt.Errorf("gcs: sign %q: %w: expiry %v is longer than GCS allows (%v)", key, connectors.ErrNotSupported, expiry, MaxSignedURLExpiry)
	}
	account, err := s.signingAccount(ctx)
	if err != nil {
		return "", fmt.Errorf("gcs: sign %q: %w", key, err)
	}
	opts := &storage.SignedURLOptions{
		GoogleAccessID: account,
		Method:         http.MethodGet,
		// The SDK signs X-Goog-Expires = whole seconds from its own "now",
		// taken just after this one: half a second more keeps a whole
		// number of seconds from losing one, and stays within GCS's
		// 7 days + 1 second limit.
		Expires:  time.Now().Add(expiry + time.Second/2),
		Scheme:   storage.SigningSchemeV4,
		Hostname: s.host,
		Insecure: s.insecure,
	}
	if s.key != nil {
		opts.SignBytes = s.signLocally
	} else {
		opts.SignBytes = func(p []byte) ([]byte, error) { return s.signBlob(ctx, account, p) }
	}
	u, err := storage.SignedURL(b.name, key, opts)
	if err != nil {
		return "", b.mapErr(ctx, opSign, key, err, nil)
	}
	return u, nil
}

// signingAccount is the account URLs are signed as, asking the GCE
// metadata server for its default account the first time if needed.
func (s *signer) signingAccount(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.account != "" {
		return s.account, nil
	}
	if !metadata.OnGCEWithContext(ctx) {
		return "", fmt.Errorf("%w: the default credentials have no service-account key and name no service account: set signing_account, or credentials_file to a service-account key", connectors.ErrNotSupported)
	}
	email, err := metadata.EmailWithContext(ctx, "default")
	if err != nil {
		return "", fmt.Errorf("%w: ask the GCE metadata server for the default service account (or set signing_account): %w", connectors.ErrNotSupported, err)
	}
	if email == "" {
		return "", fmt.Errorf("%w: the GCE metadata server names no default service account: set signing_account", connectors.ErrNotSupported)
	}
	s.account = email
	return email, nil
}

// signLocally signs p with the service-account key (RSASSA-PKCS1-v1_5 over
// SHA-256, what GOOG4-RSA-SHA256 means).
func (s *signer) signLocally(p []byte) ([]byte, error) {
	sum := sha256.Sum256(p)
	return rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
}

// signBlob signs p as account with the IAM Credentials API.
func (s *signer) signBlob(ctx context.Context, account string, p []byte) ([]byte, error) {
	resp, err := s.iam.Projects.ServiceAccounts.SignBlob("projects/-/serviceAccounts/"+account,
		&iamcredentials.SignBlobRequest{Payload: base64.StdEncoding.EncodeToString(p)}).Context(ctx).Do()
	if err != nil {
		var ge *googleapi.Error
		if errors.As(err, &ge) && ge.Code == http.StatusForbidden {
			return nil, fmt.Errorf("IAM signBlob as %s (the credentials need iam.serviceAccounts.signBlob on it, e.g. roles/iam.serviceAccountTokenCreator): %w", account, err)
		}
		return nil, fmt.Errorf("IAM signBlob as %s: %w", account, err)
	}
	sig, err := base64.StdEncoding.DecodeString(resp.SignedBlob)
	if err != nil {
		return nil, fmt.Errorf("IAM signBlob as %s: decode signature: %w", account, err)
	}
	return sig, nil
}
