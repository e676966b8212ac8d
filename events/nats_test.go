package events_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/exportstream/exportstream/events"
)

// startSecured starts a server with the given options on loopback.
func startSecured(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server did not start")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

func TestConnectUserPassword(t *testing.T) {
	ns := startSecured(t, &server.Options{Username: "svc", Password: "s3cret"})
	if _, err := events.Connect(events.ConnectOptions{URL: ns.ClientURL(), User: "svc", Password: "wrong"}, nil); err == nil {
		t.Error("a wrong password was accepted")
	}
	nc, err := events.Connect(events.ConnectOptions{URL: ns.ClientURL(), User: "svc", Password: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

func TestConnectToken(t *testing.T) {
	ns := startSecured(t, &server.Options{Authorization: "tok-123"})
	if _, err := events.Connect(events.ConnectOptions{URL: ns.ClientURL()}, nil); err == nil {
		t.Error("no token was accepted")
	}
	nc, err := events.Connect(events.ConnectOptions{URL: ns.ClientURL(), Token: "tok-123"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

// TestConnectTLS: a server with its own CA, requiring client certificates.
func TestConnectTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
		return certFile, keyFile
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	srvCert, srvKey := issue("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := issue("client", 3, x509.ExtKeyUsageClientAuth)

	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert, KeyFile: srvKey, CaFile: caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := startSecured(t, &server.Options{TLS: true, TLSConfig: tlsConfig, TLSVerify: true, TLSTimeout: 5})
	url := "tls://" + ns.Addr().String()
	if _, err := events.Connect(events.ConnectOptions{URL: url, CAFile: caFile}, nil); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	nc, err := events.Connect(events.ConnectOptions{URL: url, CAFile: caFile, CertFile: cliCert, KeyFile: cliKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := nc.TLSConnectionState(); err != nil || len(st.PeerCertificates) == 0 {
		t.Errorf("not connected over TLS: %v", err)
	}
	nc.Close()
}

// TestAskAgain: timeouts, no responders and "no suitable peers" (a
// cluster that has not seen every node yet) are asked again, up to three
// times; anything else is returned at once.
func TestAskAgain(t *testing.T) {
	for _, tc := range []struct {
		err   error
		calls int
	}{
		{nil, 1},
		{nats.ErrTimeout, 3},
		{context.DeadlineExceeded, 3},
		{nats.ErrNoResponders, 3},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}, 3},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}, 1},
		{errors.New("other"), 1},
	} {
		calls := 0
		err := events.AskAgain(t.Context(), func() error { calls++; return tc.err })
		if calls != tc.calls || !errors.Is(err, tc.err) && err != tc.err {
			t.Errorf("%v: %d calls, err %v; want %d calls and the error", tc.err, calls, err, tc.calls)
		}
	}
}
