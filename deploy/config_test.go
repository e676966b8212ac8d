package deploy_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// exampleConfig is one config file in deploy/.
type exampleConfig struct {
	name string // for messages
	path string // a file exportstream can read
	data []byte
}

// exampleConfigs returns every config file in deploy/: config/*.yaml and
// the config.yaml of the Kubernetes ConfigMap (written to a temp file).
func exampleConfigs(t *testing.T) []exampleConfig {
	t.Helper()
	files, err := filepath.Glob("config/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []exampleConfig
	for _, f := range files {
		cfgs = append(cfgs, exampleConfig{f, f, []byte(readFile(t, f))})
	}
	cm := configMapConfig(t)
	p := filepath.Join(t.TempDir(), "configmap-config.yaml")
	if err := os.WriteFile(p, cm, 0o600); err != nil {
		t.Fatal(err)
	}
	return append(cfgs, exampleConfig{"kubernetes ConfigMap config.yaml", p, cm})
}

// TestExampleConfigs runs `exportstream check-config` on every config in
// deploy/, with dummy values for the variables it refers to, and checks
// that each example is what its name says.
func TestExampleConfigs(t *testing.T) {
	cfgs := exampleConfigs(t)
	var names []string
	for _, c := range cfgs {
		names = append(names, filepath.Base(c.name))
	}
	for _, want := range []string{"local.yaml", "s3.yaml", "gcs.yaml", "azure.yaml", "cluster.yaml"} {
		if !slices.Contains(names, want) {
			t.Errorf("no example config/%s", want)
		}
	}
	bin := exportstreamBinary(t)
	for _, c := range cfgs {
		t.Run(filepath.Base(c.name), func(t *testing.T) {
			// Only the referenced variables: a reference the test did
			// not see would fail as missing.
			env := []string{}
			for _, ref := range envRefs(t, c.name, c.data) {
				v, ok := dummyEnv[ref]
				if !ok {
					v = "dummy-" + strings.ToLower(ref)
				}
				env = append(env, ref+"="+v)
			}
			// check-config checks that state.dir can be created: run it
			// in an empty working directory (where the relative default
			// lands), with an absolute state.dir (a pod's volume) moved
			// under a temp dir, as this machine's user need not be able
			// to create /var/lib/... (TestKubernetes checks the volume).
			cmd := exec.CommandContext(t.Context(), bin, "check-config", "--config", reRootStateDir(t, c))
			cmd.Dir = t.TempDir()
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("check-config --config %s (env %v): %v\n%s", c.name, env, err, out.String())
			}
			if !strings.Contains(out.String(), ": OK") {
				t.Errorf("check-config said:\n%s", out.String())
			}

			cfg := parseYAMLMap(t, c.name, c.data)
			types := map[string]bool{}
			for _, conn := range cfg.list("connections") {
				if m, ok := conn.(map[string]any); ok {
					typ, _ := m["type"].(string)
					types[typ] = true
				}
			}
			if len(cfg.list("exports")) == 0 {
				t.Errorf("no export definitions")
			}
			clustered := cfg.str("nats.url") != ""
			switch filepath.Base(c.name) {
			case "local.yaml":
				if clustered || !types["local"] {
					t.Errorf("local.yaml: want the embedded NATS server and a local connection")
				}
			case "s3.yaml", "gcs.yaml", "azure.yaml":
				typ := strings.TrimSuffix(filepath.Base(c.name), ".yaml")
				if !types[typ] {
					t.Errorf("want a connection of type %s", typ)
				}
			case "cluster.yaml":
				if !clustered {
					t.Errorf("cluster.yaml: want nats.url")
				}
			}
			if clustered {
				if r := cfg.get("nats.replicas"); r != 3 {
					t.Errorf("nats.replicas = %v with a NATS cluster, want 3", r)
				}
			}
		})
	}
}

// dummyEnv holds values of the right shape for variables whose values
// check-config checks; other variables get "dummy-<name>".
var dummyEnv = map[string]string{
	"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=dummy;AccountKey=ZHVtbXk=;EndpointSuffix=core.windows.net",
}

// httpListenPort returns the port of the config's http.listen.
func httpListenPort(t *testing.T, cfg yamlMap) int {
	t.Helper()
	_, p, err := net.SplitHostPort(cfg.str("http.listen"))
	if err != nil {
		t.Fatalf("http.listen: %v", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("http.listen port: %v", err)
	}
	return port
}

// reRootStateDir returns the absolute path of a file with c's config for
// check-config to read: c's own file, or, when c sets an absolute
// state.dir, a copy with that folder moved under a new temp dir
// (/var/lib/x becomes <tmp>/var/lib/x).
func reRootStateDir(t *testing.T, c exampleConfig) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(c.data, &doc); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	dir := yamlNode(&doc, "state", "dir")
	if dir == nil || !filepath.IsAbs(dir.Value) {
		p, err := filepath.Abs(c.path)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	moved := filepath.Join(t.TempDir(), dir.Value)
	t.Logf("state.dir %s checked as %s", dir.Value, moved)
	dir.Value = moved
	data, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(c.path))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// yamlNode returns the value at the path of mapping keys in a decoded
// YAML document, or nil.
func yamlNode(n *yaml.Node, keys ...string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}
