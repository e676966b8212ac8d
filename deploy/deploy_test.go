package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// buildDir holds the exportstream binary built for the tests; TestMain
// removes it.
var buildDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// exportstreamBinary builds ../cmd/exportstream once per test binary, with
// the go command running the tests, and returns its path.
func exportstreamBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "exportstream-deploy-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "exportstream")
		cmd := exec.Command(goCommand(), "build", "-o", binPath, "../cmd/exportstream")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = errors.New("go build ../cmd/exportstream: " + err.Error() + "\n" + out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// goCommand is the go command of the toolchain running the tests.
func goCommand() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// yamlDocs decodes every document of a (multi-document) YAML file into a
// new T.
func yamlDocs[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []T
	for {
		var d T
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		docs = append(docs, d)
	}
}

// yamlMap is a YAML mapping decoded generically, with path look-ups.
type yamlMap map[string]any

// get returns the value at the dotted path ("nats.url"), or nil.
func (m yamlMap) get(path string) any {
	var cur any = map[string]any(m)
	for key := range strings.SplitSeq(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[key]
	}
	return cur
}

func (m yamlMap) str(path string) string {
	s, _ := m.get(path).(string)
	return s
}

func (m yamlMap) list(path string) []any {
	l, _ := m.get(path).([]any)
	return l
}

func parseYAMLMap(t *testing.T, name string, data []byte) yamlMap {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return yamlMap(m)
}

var envRefRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// envRefs returns the variables a config file refers to as ${NAME} in its
// string values (comments excluded; "$${" is a literal), sorted.
func envRefs(t *testing.T, name string, data []byte) []string {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	seen := map[string]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			v := strings.ReplaceAll(n.Value, "$${", "")
			for _, m := range envRefRE.FindAllStringSubmatch(v, -1) {
				seen[m[1]] = true
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&root)
	refs := make([]string, 0, len(seen))
	for k := range seen {
		refs = append(refs, k)
	}
	slices.Sort(refs)
	return refs
}

// byteSize parses a Kubernetes quantity or Go memory limit with a binary or
// decimal suffix ("10Gi", "900MiB", "8GB", "512M") into bytes.
func byteSize(t *testing.T, s string) int64 {
	t.Helper()
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
		{"B", 1}, {"", 1},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				continue
			}
			return n * u.mult
		}
	}
	t.Fatalf("%q is not a byte size", s)
	return 0
}

// dataDir is a folder a config has the service write to.
type dataDir struct {
	key string // the config key, for messages: "state.dir"
	dir string // as the config gives it (or the default)
}

// The defaults of the folders the service writes to, relative to its
// working directory (config.Default).
const (
	defaultNATSStoreDir = "./data/nats"
	defaultStateDir     = "./data/state"
)

// dataDirs returns the folders cfg has the service write to, with the
// defaults of the keys it leaves out: the embedded NATS server's
// store_dir (when nats.url is empty), each local connection's local.dir,
// and the local state store's state.dir.
func dataDirs(cfg yamlMap) []dataDir {
	var dirs []dataDir
	if cfg.str("nats.url") == "" {
		dir := cfg.str("nats.embedded.store_dir")
		if dir == "" {
			dir = defaultNATSStoreDir
		}
		dirs = append(dirs, dataDir{"nats.embedded.store_dir", dir})
	}
	for i, c := range cfg.list("connections") {
		if cm, ok := c.(map[string]any); ok {
			if dir := yamlMap(cm).str("local.dir"); dir != "" {
				dirs = append(dirs, dataDir{"connections[" + strconv.Itoa(i) + "].local.dir", dir})
			}
		}
	}
	dir := cfg.str("state.dir")
	if dir == "" {
		dir = defaultStateDir
	}
	return append(dirs, dataDir{"state.dir", dir})
}

// under reports whether the absolute path p is dir or inside it.
func under(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
