package eventstest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
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
	return NewCluster(t, n, nil).Nodes
}

// Cluster is a JetStream cluster in this process whose nodes can be
// stopped and started again (same name, ports and store), as a node that
// crashed and came back.
type Cluster struct {
	t    testing.TB
	opts []*server.Options
	// Nodes are the running servers, by index; a stopped node's entry is
	// the server that was stopped.
	Nodes []*server.Server
}

// NewCluster starts an n-node cluster like StartCluster; adjust, when not
// nil, changes each node's options before it starts (a JetStream store
// limit, say). Every node listens for clients on a fixed port, so that a
// restarted node has the same URL.
//
// Under -short (the fast tier) it skips t: clusters run in the full suite.
func NewCluster(t testing.TB, n int, adjust func(*server.Options)) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skipf("a %d-node NATS cluster, left out by -short", n)
	}
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))}
	}
	c := &Cluster{t: t, opts: make([]*server.Options, n), Nodes: make([]*server.Server, n)}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: freePort(t),
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
			Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
		}
		if adjust != nil {
			adjust(o)
		}
		c.opts[i] = o
		c.start(i)
	}
	for i, ns := range c.Nodes {
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats-server n%d did not start", i)
		}
	}
	c.WaitLeader(20 * time.Second)
	return c
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	ns, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("nats-server n%d: %v", i, err)
	}
	go ns.Start()
	c.t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	c.Nodes[i] = ns
}

// URLs returns the client URLs of every node, comma separated, as
// nats.url takes them.
func (c *Cluster) URLs() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, "nats://"+net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
	}
	return strings.Join(urls, ",")
}

// Stop shuts node i down and waits until it is gone.
func (c *Cluster) Stop(i int) {
	c.Nodes[i].Shutdown()
	c.Nodes[i].WaitForShutdown()
}

// Restart starts the stopped node i again with its name, ports and
// store, and waits until it accepts clients.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
	if !c.Nodes[i].ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("nats-server n%d did not start again", i)
	}
}

// WaitLeader waits until the running nodes have one JetStream meta leader
// and all are current; it fails the test after timeout.
func (c *Cluster) WaitLeader(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leader := 0
		current := true
		for _, ns := range c.Nodes {
			if !ns.Running() {
				continue
			}
			if ns.JetStreamIsLeader() {
				leader++
			}
			current = current && ns.JetStreamIsCurrent()
		}
		if leader == 1 && current {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the NATS cluster elected no JetStream meta leader in %v", timeout)
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
