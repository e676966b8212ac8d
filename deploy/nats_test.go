package deploy_test

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsNode is one of deploy/nats/nats-*.conf, parsed by nats-server.
type natsNode struct {
	file string
	opts *server.Options
}

// natsNodes parses every deploy/nats/nats-*.conf with nats-server's own
// config parser. Warnings (an unknown field, say) fail the test too.
func natsNodes(t *testing.T) []natsNode {
	t.Helper()
	files, err := filepath.Glob("nats/nats-*.conf")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 files nats/nats-*.conf, found %v (%v)", files, err)
	}
	var nodes []natsNode
	for _, f := range files {
		opts := &server.Options{}
		if err := opts.ProcessConfigFile(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		nodes = append(nodes, natsNode{f, opts})
	}
	return nodes
}

// routePeer returns the server name a route points at: the first label of
// its host name (nats-1.nats: nats-1).
func routePeer(u *url.URL) string {
	name, _, _ := strings.Cut(u.Hostname(), ".")
	return name
}

func TestNATSConfig(t *testing.T) {
	nodes := natsNodes(t)
	names := map[string]string{}
	for _, n := range nodes {
		o := n.opts
		if !o.JetStream {
			t.Errorf("%s: JetStream is not enabled", n.file)
		}
		if o.StoreDir == "" || o.JetStreamMaxStore <= 0 {
			t.Errorf("%s: jetstream store_dir %q, max_file_store %d: set both", n.file, o.StoreDir, o.JetStreamMaxStore)
		}
		if o.ServerName == "" {
			t.Errorf("%s: no server_name", n.file)
		} else if other, dup := names[o.ServerName]; dup {
			t.Errorf("%s: server_name %s is also %s's", n.file, o.ServerName, other)
		}
		names[o.ServerName] = n.file
		if want := strings.TrimSuffix(filepath.Base(n.file), ".conf"); o.ServerName != want {
			t.Errorf("%s: server_name %s, want %s (the file and the pod are named after it)", n.file, o.ServerName, want)
		}
		if o.Cluster.Name == "" || o.Cluster.Name != nodes[0].opts.Cluster.Name {
			t.Errorf("%s: cluster name %q, want one name for all (%q)", n.file, o.Cluster.Name, nodes[0].opts.Cluster.Name)
		}
		if o.Cluster.Port <= 0 {
			t.Errorf("%s: no cluster listen port", n.file)
		}
		// exportstream's events (nats.max_event_bytes, 1 MiB by default)
		// plus a dead-lettered copy's headers must fit.
		if o.MaxPayload < 2<<20 {
			t.Errorf("%s: max_payload %d, want >= 2 MiB", n.file, o.MaxPayload)
		}
	}
	for _, n := range nodes {
		var peers []string
		for _, r := range n.opts.Routes {
			peers = append(peers, routePeer(r))
			if p, _ := strconv.Atoi(r.Port()); p != n.opts.Cluster.Port {
				t.Errorf("%s: route %s: port %s, the cluster port is %d", n.file, r, r.Port(), n.opts.Cluster.Port)
			}
		}
		slices.Sort(peers)
		want := slices.Sorted(func(yield func(string) bool) {
			for name := range names {
				if !yield(name) {
					return
				}
			}
		})
		if !slices.Equal(peers, want) {
			t.Errorf("%s: routes go to %v, want all of %v", n.file, peers, want)
		}
	}
}

// TestNATSClients: the configs that use the cluster name its three nodes
// at their client port, and create R3 streams and buckets.
func TestNATSClients(t *testing.T) {
	nodes := natsNodes(t)
	hosts := map[string]bool{}
	for _, n := range nodes {
		for _, r := range n.opts.Routes {
			hosts[net.JoinHostPort(r.Hostname(), strconv.Itoa(n.opts.Port))] = true
		}
	}
	for name, data := range map[string][]byte{
		"config/cluster.yaml":              []byte(readFile(t, "config/cluster.yaml")),
		"kubernetes ConfigMap config.yaml": configMapConfig(t),
	} {
		cfg := parseYAMLMap(t, name, data)
		got := map[string]bool{}
		for u := range strings.SplitSeq(cfg.str("nats.url"), ",") {
			pu, err := url.Parse(strings.TrimSpace(u))
			if err != nil || pu.Scheme != "nats" {
				t.Errorf("%s: nats.url %q: not a nats:// URL", name, u)
				continue
			}
			got[pu.Host] = true
		}
		if fmt.Sprint(got) != fmt.Sprint(hosts) {
			t.Errorf("%s: nats.url names %v, want the cluster's nodes %v", name, got, hosts)
		}
		if r := cfg.get("nats.replicas"); r != 3 {
			t.Errorf("%s: nats.replicas = %v, want 3", name, r)
		}
	}
}

// TestNATSCluster starts the three nodes in this process from their
// config files, with loopback addresses, free ports and temporary store
// dirs in place of the real ones, and checks that they elect a JetStream
// meta leader and keep an R3 stream and key-value bucket, as exportstream
// creates with nats.replicas: 3.
func TestNATSCluster(t *testing.T) {
	nodes := natsNodes(t)
	clusterPort := map[string]int{}
	for _, n := range nodes {
		clusterPort[n.opts.ServerName] = freePort(t)
	}
	var servers []*server.Server
	for _, n := range nodes {
		o := n.opts.Clone()
		o.Host, o.Port = "127.0.0.1", -1
		o.HTTPHost, o.HTTPPort = "", 0
		o.Cluster.Host, o.Cluster.Port, o.Cluster.ListenStr = "127.0.0.1", clusterPort[o.ServerName], ""
		o.StoreDir = t.TempDir()
		o.PidFile = ""
		o.NoLog, o.NoSigs = true, true
		// The same routes, each to its peer's loopback address.
		o.Routes = nil
		for _, r := range n.opts.Routes {
			port, ok := clusterPort[routePeer(r)]
			if !ok {
				t.Fatalf("%s: route %s goes to no node", n.file, r)
			}
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))})
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("%s: %v", n.file, err)
		}
		go s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s: not ready for connections", n.file)
		}
		servers = append(servers, s)
	}

	// A meta leader that sees all three nodes online with JetStream (what
	// placing an R3 stream needs), named as in their configs.
	var want []string
	for _, n := range nodes {
		want = append(want, n.opts.ServerName)
	}
	slices.Sort(want)
	start := time.Now()
	for deadline := start.Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var peers []string
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				peers = s.JetStreamClusterPeers()
			}
		}
		slices.Sort(peers)
		if slices.Equal(peers, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: the JetStream meta leader sees %v online, want %v", time.Since(start), peers, want)
		}
	}
	t.Logf("meta leader with all peers online in %v", time.Since(start).Round(time.Millisecond))

	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	str, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "DEPLOY_TEST", Subjects: []string{"deploy.test.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	})
	if err != nil {
		t.Fatalf("R3 stream: %v", err)
	}
	if _, err := js.Publish(ctx, "deploy.test.a", []byte("x")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 || info.State.Msgs != 1 {
		t.Errorf("stream info: cluster %+v, %d messages; want a leader, 2 replicas, 1 message", info.Cluster, info.State.Msgs)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "DEPLOY_TEST_KV", Replicas: 3})
	if err != nil {
		t.Fatalf("R3 key-value bucket: %v", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("kv create: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Values() != 1 {
		t.Errorf("kv holds %d values, want 1", st.Values())
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNATSKubernetes checks deploy/nats's StatefulSet against the node
// configs it runs.
func TestNATSKubernetes(t *testing.T) {
	nodes := natsNodes(t)
	objs, kust := manifests(t, "nats")
	checkKustomization(t, "nats", kust, objs)

	var confs []string
	for _, n := range nodes {
		confs = append(confs, filepath.Base(n.file))
	}
	if len(kust.ConfigMapGenerator) != 1 || !slices.Equal(slices.Sorted(slices.Values(kust.ConfigMapGenerator[0].Files)), confs) {
		t.Fatalf("kustomization's configMapGenerator %+v, want one with %v", kust.ConfigMapGenerator, confs)
	}
	cmName := kust.ConfigMapGenerator[0].Name

	sts := find(t, objs, "StatefulSet")
	w := spec[workloadSpec](t, sts)
	if w.Replicas == nil || *w.Replicas != len(nodes) {
		t.Errorf("replicas %v, want %d", w.Replicas, len(nodes))
	}
	if !selects(w.Selector.MatchLabels, w.Template.Metadata.Labels) {
		t.Errorf("selector does not match the pod labels")
	}
	// Pods are <statefulset>-<i>, reached as <pod>.<headless service>:
	// the names the routes use.
	svc := find(t, objs, "Service")
	s := spec[serviceSpec](t, svc)
	if w.ServiceName != svc.Metadata.Name || s.ClusterIP != "None" || !selects(s.Selector, w.Template.Metadata.Labels) {
		t.Errorf("serviceName %q: want the headless Service %s selecting the pods", w.ServiceName, svc.Metadata.Name)
	}
	for i, n := range nodes {
		pod := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		if n.opts.ServerName != pod {
			t.Errorf("%s: server_name %s, but the pod is %s", n.file, n.opts.ServerName, pod)
		}
		for _, r := range n.opts.Routes {
			if want := routePeer(r) + "." + svc.Metadata.Name; r.Hostname() != want {
				t.Errorf("%s: route host %s, want %s", n.file, r.Hostname(), want)
			}
		}
	}

	pod := w.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want 1 container")
	}
	c := pod.Containers[0]
	checkHardened(t, "nats", pod, c)
	confDir := mountPath(c, configMapVolume(pod, cmName))
	if want := []string{"--config", confDir + "/$(POD_NAME).conf"}; confDir == "" || !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	if !slices.ContainsFunc(c.Env, func(e envVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Errorf("no env POD_NAME from metadata.name")
	}
	o := nodes[0].opts
	for name, port := range map[string]int{"client": o.Port, "cluster": o.Cluster.Port, "monitor": o.HTTPPort} {
		if got := containerPort(c, name); got != port {
			t.Errorf("container port %s = %d, the config listens on %d", name, got, port)
		}
		if !slices.ContainsFunc(s.Ports, func(p servicePort) bool {
			return p.Port == port
		}) {
			t.Errorf("the Service lacks port %d (%s)", port, name)
		}
	}
	for _, p := range []*probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || !strings.HasPrefix(p.HTTPGet.Path, "/healthz") || containerPort(c, p.HTTPGet.Port) != o.HTTPPort {
			t.Errorf("probes: want startup, liveness and readiness on /healthz at the monitoring port %d", o.HTTPPort)
			break
		}
	}
	if len(w.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate")
	}
	vct := w.VolumeClaimTemplates[0]
	if mountPath(c, vct.Metadata.Name) != o.StoreDir {
		t.Errorf("volume %s mounted at %q, JetStream's store_dir is %s", vct.Metadata.Name, mountPath(c, vct.Metadata.Name), o.StoreDir)
	}
	if size := byteSize(t, vct.Spec.Resources.Requests["storage"]); o.JetStreamMaxStore >= size {
		t.Errorf("max_file_store %d is not below the volume's %d bytes", o.JetStreamMaxStore, size)
	}
	if dir := filepath.Dir(o.PidFile); o.PidFile != "" && !slices.ContainsFunc(c.VolumeMounts, func(m volumeMount) bool {
		return m.MountPath == dir && !m.ReadOnly
	}) {
		t.Errorf("pid_file %s: no writable volume at %s (the root file system is read-only)", o.PidFile, dir)
	}
	checkPDB(t, spec[pdbSpec](t, find(t, objs, "PodDisruptionBudget")), w)

	// The image is the nats-server release whose parser read the configs.
	if v := natsServerVersion(t); c.Image != "nats:"+strings.TrimPrefix(v, "v")+"-alpine" {
		t.Errorf("image %s, want nats:%s-alpine (go.mod's nats-server, which parsed the configs)", c.Image, strings.TrimPrefix(v, "v"))
	}
}

// natsServerVersion is go.mod's version of nats-server ("v2.15.3").
func natsServerVersion(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 (v\S+)`).FindStringSubmatch(readFile(t, "../go.mod"))
	if m == nil {
		t.Fatal("go.mod does not require github.com/nats-io/nats-server/v2")
	}
	return m[1]
}
