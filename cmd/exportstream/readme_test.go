package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/events/simulate"
)

// The README's commands, checked against the code they describe.

// repoRoot is the repository's folder, absolute: tests change directory.
var repoRoot = func() string {
	p, err := filepath.Abs("../..")
	if err != nil {
		panic(err)
	}
	return p
}()

// readme returns README.md, or the part of it from the heading that
// starts with section to the next heading of the same level.
func readme(t *testing.T, section string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if section == "" {
		return text
	}
	i := strings.Index(text, "\n"+section)
	if i < 0 {
		t.Fatalf("README.md has no section %q", section)
	}
	text = text[i+1:]
	level := section[:strings.IndexByte(section, ' ')+1]
	if j := strings.Index(text[1:], "\n"+level); j >= 0 {
		text = text[:j+1]
	}
	return text
}

// codeBlocks returns the fenced blocks of text in the language lang ("" for
// blocks without one), with shell line continuations joined.
func codeBlocks(text, lang string) []string {
	var out []string
	var cur *strings.Builder
	keep := false
	for line := range strings.SplitSeq(text, "\n") {
		fence, isFence := strings.CutPrefix(line, "```")
		switch {
		case isFence && cur == nil:
			cur, keep = &strings.Builder{}, fence == lang
		case isFence:
			if keep {
				out = append(out, strings.ReplaceAll(cur.String(), "\\\n", " "))
			}
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}

// TestReadmeStart: the README's first command runs the demo on the
// embedded default, the build it offers builds the same binary, and the
// banner it shows is the one the demo prints on that default.
func TestReadmeStart(t *testing.T) {
	blocks := codeBlocks(readme(t, ""), "sh")
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d sh blocks", len(blocks))
	}
	if first := strings.TrimSpace(blocks[0]); first != "go run ./cmd/exportstream demo" {
		t.Errorf("the README's first command is %q, want `go run ./cmd/exportstream demo`", first)
	}
	if !strings.Contains(blocks[1], "go build -o exportstream ./cmd/exportstream") || !strings.Contains(blocks[1], "./exportstream demo") {
		t.Errorf("the README's second block does not build the binary and run its demo:\n%s", blocks[1])
	}
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL != "" {
		t.Fatalf("the embedded default has nats.url %q: it runs no NATS server of its own", cfg.NATS.URL)
	}
	cfg.Exports = demoExports("street-scenes")
	banner := demoBanner(cfg, cfg.HTTP.Listen, "nats://"+cfg.NATS.Embedded.Listen, "street-scenes", 20, simulate.Restored{})
	var shown []string
	for _, b := range codeBlocks(readme(t, "## The two commands"), "") {
		if strings.Contains(b, "Page:") {
			shown = strings.Split(strings.TrimRight(b, "\n"), "\n")
		}
	}
	if len(shown) == 0 {
		t.Fatal("the README shows no demo banner (a block with Page:)")
	}
	lines := strings.Split(banner, "\n")
	at := -1
	for _, l := range shown {
		i := slices.Index(lines, l)
		if i < 0 {
			t.Errorf("the README's banner line %q is not what the demo prints:\n%s", l, banner)
		} else if i < at {
			t.Errorf("the README's banner line %q is out of the demo's order:\n%s", l, banner)
		}
		at = i
	}
}

// TestReadmeExampleProject: the README's way of publishing the contract's
// example gives events of a project other than the demo's (whose ids they
// share), which the service takes, and the export command that follows
// names that project.
func TestReadmeExampleProject(t *testing.T) {
	var producer, consumer, generate string
	for _, b := range codeBlocks(readme(t, "## Events in"), "sh") {
		// A pipe at the end of a line goes on on the next.
		for l := range strings.SplitSeq(strings.ReplaceAll(b, "|\n", "| "), "\n") {
			if p, c, ok := strings.Cut(l, "|"); ok && strings.HasPrefix(l, "sed ") {
				producer, consumer = p, c
			}
			if strings.Contains(l, "exports generate") {
				generate = l
			}
		}
	}
	if producer == "" || !strings.Contains(consumer, "exportstream publish /dev/stdin") {
		t.Fatalf("the README's Events in section pipes no sed output into publish /dev/stdin (%q | %q)", producer, consumer)
	}
	cmd := exec.CommandContext(t.Context(), "sh", "-c", producer)
	cmd.Dir = repoRoot
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", producer, err, errOut.String())
	}
	projects := map[string]int{}
	n := 0
	err := events.ReadStream(&out, func(subject string, body []byte, msgID string) error {
		n++
		ev, err := events.Decode(subject, body, 1<<20)
		if err != nil {
			t.Errorf("event %d (%s): the service would dead-letter it: %v", n, subject, err)
			return nil
		}
		projects[ev.Project]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("%s gave %d events", producer, n)
	}
	if len(projects) != 1 {
		t.Fatalf("the example's events are in projects %v, want one", projects)
	}
	for p := range projects {
		if p == simulate.DefaultProject {
			t.Errorf("the example is published into %q, the demo's project", p)
		}
		if !strings.Contains(generate, "--project "+p+" ") {
			t.Errorf("the export command %q does not name the example's project %s", generate, p)
		}
	}
}

// TestReadmeDocker: the README's container quick start works as written.
// Its nats and http blocks, put into each cloud's example config, pass
// check-config (a token off loopback); they listen beyond the container's
// loopback; and the docker run line mounts the config where the image
// reads it, keeps the data on a volume, publishes both ports and passes
// every variable the config names.
func TestReadmeDocker(t *testing.T) {
	section := readme(t, "## Your own bucket")
	var snippet map[string]any
	for _, b := range codeBlocks(section, "yaml") {
		if strings.Contains(b, "0.0.0.0") {
			if err := yaml.Unmarshal([]byte(b), &snippet); err != nil {
				t.Fatalf("the README's container config: %v\n%s", err, b)
			}
		}
	}
	if snippet == nil {
		t.Fatal("the README's quick start has no container config (a yaml block listening on 0.0.0.0)")
	}
	if !regexp.MustCompile(`(?s)Replace the .nats:. and .http:. blocks`).MatchString(section) {
		t.Errorf("the README does not say to replace the nats: and http: blocks with its snippet")
	}
	var dockerRun, copied string
	for _, b := range codeBlocks(section, "sh") {
		for l := range strings.SplitSeq(b, "\n") {
			if strings.HasPrefix(l, "docker run") {
				dockerRun = l
			}
			if m := regexp.MustCompile(`^cp (deploy/config/\S+\.yaml) my\.yaml`).FindStringSubmatch(l); m != nil {
				copied = m[1]
			}
		}
	}
	if dockerRun == "" || copied == "" {
		t.Fatalf("the quick start lacks `cp deploy/config/X.yaml my.yaml` (%q) or `docker run` (%q)", copied, dockerRun)
	}
	// The docker run line's options.
	var volumes, ports, envs []string
	args := strings.Fields(dockerRun)
	for i := 0; i+1 < len(args); i++ {
		v := strings.Trim(args[i+1], `"'`)
		switch args[i] {
		case "-v":
			volumes = append(volumes, v)
		case "-p":
			ports = append(ports, v)
		case "-e":
			envs = append(envs, v)
		}
	}

	for _, name := range []string{"s3.yaml", "gcs.yaml", "azure.yaml"} {
		t.Run(name, func(t *testing.T) {
			example := filepath.Join(repoRoot, "deploy/config", name)
			b, err := os.ReadFile(example)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(section, "(deploy/config/"+name+")") {
				t.Errorf("the quick start does not link deploy/config/%s", name)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			doc["nats"], doc["http"] = snippet["nats"], snippet["http"]
			merged, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "my.yaml")
			if err := os.WriteFile(p, merged, 0o644); err != nil {
				t.Fatal(err)
			}
			refs := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(string(merged), -1)
			for _, r := range refs {
				v := "dummy-" + strings.ToLower(r[1])
				if r[1] == "AZURE_STORAGE_CONNECTION_STRING" {
					v = "DefaultEndpointsProtocol=https;AccountName=dummy;AccountKey=ZHVtbXk=;EndpointSuffix=core.windows.net"
				}
				t.Setenv(r[1], v)
			}
			t.Chdir(t.TempDir()) // the relative folders check-config looks at
			var out, errOut bytes.Buffer
			if code := run([]string{"check-config", "--config", p}, &out, &errOut); code != 0 {
				t.Fatalf("check-config of %s with the README's blocks: exit %d\n%s%s", name, code, out.String(), errOut.String())
			}
			cfg, err := config.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			for what, hostPort := range map[string]string{"http.listen": cfg.HTTP.Listen, "nats.embedded.listen": cfg.NATS.Embedded.Listen} {
				host, port, err := net.SplitHostPort(hostPort)
				if err != nil {
					t.Fatalf("%s %q: %v", what, hostPort, err)
				}
				if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
					t.Errorf("%s %s: not reachable from outside the container", what, hostPort)
				}
				if !slices.ContainsFunc(ports, func(p string) bool { return strings.HasSuffix(p, ":"+port) }) {
					t.Errorf("docker run publishes %v, not the %s port %s", ports, what, port)
				}
			}
			if cfg.NATS.URL != "" {
				t.Errorf("nats.url %q: the quick start is for the embedded server", cfg.NATS.URL)
			}
			if name != path.Base(copied) {
				return // the docker run line is written for the copied example
			}
			want := dockerfileConfigPath(t)
			if !slices.ContainsFunc(volumes, func(v string) bool {
				parts := strings.Split(v, ":")
				return len(parts) >= 2 && parts[1] == want
			}) {
				t.Errorf("docker run mounts %v, not the config at %s (the image's CMD)", volumes, want)
			}
			// Relative folders land under / (the image's working directory).
			for what, dir := range map[string]string{"nats.embedded.store_dir": cfg.NATS.Embedded.StoreDir, "state.dir": cfg.State.Dir} {
				abs := path.Join("/", dir)
				if !slices.ContainsFunc(volumes, func(v string) bool {
					parts := strings.Split(v, ":")
					return len(parts) >= 2 && !strings.HasPrefix(parts[0], "$") && (abs == parts[1] || strings.HasPrefix(abs, parts[1]+"/"))
				}) {
					t.Errorf("%s %s (%s in the container) is on no volume of %v", what, dir, abs, volumes)
				}
			}
			for _, r := range refs {
				if !slices.Contains(envs, r[1]) {
					t.Errorf("the config names ${%s}, which docker run does not pass (-e %s)", r[1], r[1])
				}
			}
		})
	}
}

// dockerfileConfigPath is the config file the image's CMD runs with.
func dockerfileConfigPath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("deploy/Dockerfile has no CMD in exec form")
	}
	var cmd []string
	if err := json.Unmarshal(m[1], &cmd); err != nil {
		t.Fatal(err)
	}
	i := slices.Index(cmd, "--config")
	if i < 0 || i+1 >= len(cmd) {
		t.Fatalf("the image's CMD %v names no --config", cmd)
	}
	return cmd[i+1]
}
