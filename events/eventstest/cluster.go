package eventstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartCluster starts an n-node JetStream cluster in this process on
// loopback (each node storing under a temp dir, every route configured)
// and returns its nodes once the cluster has a meta leader; it fails the
// test if it cannot. Streams and buckets created with Replicas n are kept
// on every node. The nodes are stopped by t.Cleanup.
func StartCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))}
	}
	nodes := make([]*server.Server, n)
	for i := range nodes {
		ns, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		})
		if err != nil {
			t.Fatalf("nats-server n%d: %v", i, err)
		}
		go ns.Start()
		t.Cleanup(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
		nodes[i] = ns
	}
	for i, ns := range nodes {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats-server n%d did not start", i)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		leader := 0
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() {
				leader++
			}
		}
		current := true
		for _, ns := range nodes {
			current = current && ns.JetStreamIsCurrent()
		}
		if leader == 1 && current {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatal("the NATS cluster elected no JetStream meta leader in 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
