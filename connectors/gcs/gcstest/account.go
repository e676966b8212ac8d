package gcstest

import (
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
	"os"
	"path/filepath"
	"strings"
)

// ServiceAccount is a generated service account with an RSA key, written
// as a key file in the format Google issues ("type": "service_account").
type ServiceAccount struct {
	// Email is the account's client_email.
	Email string
	// Key is the private key; its public half verifies what it signed.
	Key *rsa.PrivateKey
	// File is the path of the key file.
	File string
}

// NewServiceAccount generates a service account whose key file, written
// into dir, sends token requests to tokenURL (the JWT-bearer grant).
func NewServiceAccount(dir, tokenURL string) (*ServiceAccount, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	sa := &ServiceAccount{
		Email: "gcstest@" + ProjectID + ".iam.gserviceaccount.com",
		Key:   key,
	}
	j, err := json.MarshalIndent(map[string]string{
		"type":           "service_account",
		"project_id":     ProjectID,
		"private_key_id": "gcstest-key",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   sa.Email,
		"client_id":      "100000000000000000000",
		"auth_uri":       "https://accounts.google.com/o/oauth2/auth",
		"token_uri":      tokenURL,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "service-account-*.json")
	if err != nil {
		return nil, err
	}
	sa.File = f.Name()
	_, err = f.Write(j)
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, fmt.Errorf("write %s: %w", filepath.Base(sa.File), err)
	}
	return sa, nil
}

// verifyAssertion checks a token request: the JWT-bearer grant, with an
// assertion signed (RS256) by the account's key and issued by its email.
func (sa *ServiceAccount) verifyAssertion(r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return err
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		return fmt.Errorf("grant_type %q, want the JWT-bearer grant", g)
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		return errors.New("assertion is not a JWT")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("assertion signature: %w", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&sa.Key.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("assertion signature: %w", err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("assertion payload: %w", err)
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fmt.Errorf("assertion payload: %w", err)
	}
	if claims.Iss != sa.Email {
		return fmt.Errorf("assertion issued by %q, want %q", claims.Iss, sa.Email)
	}
	return nil
}
