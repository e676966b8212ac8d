// Package eventstest starts real, in-process NATS JetStream servers for
// tests, on loopback, stopped by t.Cleanup.
package eventstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StartServer starts a JetStream server storing under a temp dir and
// returns it; it fails the test if the server cannot start.
func StartServer(t testing.TB) *server.Server {
	t.Helper()
	return StartServerAt(t, t.TempDir(), -1)
}

// StartServerAt starts a JetStream server storing under dir, on port
// (-1: a free one). Restarting on the same dir keeps the streams.
func StartServerAt(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Connect connects to ns and returns the connection and a JetStream
// context, closed by t.Cleanup.
func Connect(t testing.TB, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, ns.ClientURL())
}

// ConnectURL is Connect for a server (or a cluster's servers, as
// Cluster.URLs lists them) named by url.
func ConnectURL(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
