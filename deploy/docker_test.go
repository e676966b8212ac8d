package deploy_test

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	var ins []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(readFile(t, "Dockerfile")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		ins = append(ins, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return ins
}

// stages splits the instructions at each FROM.
func stages(ins []instruction) [][]instruction {
	var st [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			st = append(st, nil)
		}
		if len(st) > 0 {
			st[len(st)-1] = append(st[len(st)-1], in)
		}
	}
	return st
}

func jsonArgs(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Errorf("%s %s: not the JSON (exec) form: %v", in.cmd, in.args, err)
	}
	return v
}

// dockerfileCMD returns the image's CMD.
func dockerfileCMD(t *testing.T) []string {
	t.Helper()
	var cmd []string
	for _, in := range dockerfile(t) {
		if in.cmd == "CMD" {
			cmd = jsonArgs(t, in)
		}
	}
	return cmd
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	st := stages(ins)
	if len(st) != 2 {
		t.Fatalf("want 2 stages (build, final), got %d", len(st))
	}
	args := map[string]string{}
	for _, in := range ins {
		if in.cmd == "ARG" {
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
		}
	}

	// The build stage: the Go release of go.mod, a static, trimmed
	// binary with the version stamped into main.version.
	build := st[0]
	from := strings.Fields(build[0].args)
	image := from[len(from)-3]
	if from[len(from)-2] != "AS" || from[len(from)-1] != "build" {
		t.Errorf("first stage %q: want `FROM ... golang:<version> AS build`", build[0].args)
	}
	image = strings.ReplaceAll(image, "${GO_VERSION}", args["GO_VERSION"])
	goMod := readFile(t, "../go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	if goLine == nil || image != "golang:"+goLine[1] {
		t.Errorf("build image %s, want golang:%s (go.mod's go line, pinned by tag)", image, goLine[1])
	}
	var goBuild string
	hasVersionArg := false
	for _, in := range build {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "VERSION") {
			hasVersionArg = true
		}
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			goBuild = in.args
		}
	}
	if !hasVersionArg {
		t.Errorf("the build stage declares no ARG VERSION")
	}
	for _, want := range []string{"CGO_ENABLED=0", "go build", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`, "./cmd/exportstream"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("go build step %q lacks %s", goBuild, want)
		}
	}
	// -X main.version needs the variable in package main.
	if !regexp.MustCompile(`(?m)^var version = `).MatchString(readFile(t, "../cmd/exportstream/main.go")) {
		t.Errorf("cmd/exportstream/main.go has no `var version`, the target of -X main.version")
	}

	// The final stage: static, non-root, with CA certificates.
	final := st[1]
	base := strings.Fields(final[0].args)[0]
	var user, entrypoint string
	var cmd []string
	workdir := "/"
	owned := map[string]string{} // folder → the --chown of the COPY that made it
	exposed, certs, healthcheck := false, false, false
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "WORKDIR":
			workdir = path.Join(workdir, in.args)
		case "ENTRYPOINT":
			entrypoint = strings.Join(jsonArgs(t, in), " ")
		case "CMD":
			cmd = jsonArgs(t, in)
		case "EXPOSE":
			exposed = exposed || slices.Contains(strings.Fields(in.args), "8080")
		case "COPY":
			certs = certs || strings.Contains(in.args, "ca-certificates")
			f := strings.Fields(in.args)
			for _, flag := range f[:len(f)-1] {
				if chown, ok := strings.CutPrefix(flag, "--chown="); ok {
					owned[path.Join(workdir, f[len(f)-1])] = chown
				}
			}
		case "HEALTHCHECK":
			healthcheck = true
		}
	}
	switch {
	case base == "gcr.io/distroless/static-debian12:nonroot":
		// distroless/static carries /etc/ssl/certs/ca-certificates.crt.
	case base == "scratch":
		if !certs {
			t.Errorf("FROM scratch without copying the CA certificates")
		}
	default:
		t.Errorf("final image %s: want gcr.io/distroless/static-debian12:nonroot or scratch", base)
	}
	if user != "65532:65532" && user != "nonroot" && user != "nonroot:nonroot" {
		t.Errorf("USER %q: want 65532:65532", user)
	}
	if entrypoint != "/exportstream" {
		t.Errorf("ENTRYPOINT %q, want [\"/exportstream\"]", entrypoint)
	}
	if strings.Join(cmd, " ") != "run --config /etc/exportstream/config.yaml" {
		t.Errorf("CMD %q, want [\"run\",\"--config\",\"/etc/exportstream/config.yaml\"]", cmd)
	}
	if !exposed {
		t.Errorf("no EXPOSE 8080")
	}
	if healthcheck {
		t.Errorf("HEALTHCHECK cannot run in a shell-less image; Kubernetes probes check health")
	}
	// The embedded default's folders, relative to the working directory,
	// land in a folder the user owns (as do the folders the service
	// creates in it: the local state store's ./data/state).
	uid := func(owner string) string {
		u, _, _ := strings.Cut(owner, ":")
		if u == "nonroot" {
			return "65532"
		}
		return u
	}
	for _, d := range dataDirs(yamlMap{}) {
		abs := path.Join(workdir, d.dir)
		ok := false
		for dir, owner := range owned {
			ok = ok || (under(abs, dir) && uid(owner) == uid(user))
		}
		if !ok {
			t.Errorf("%s %s lands in %s, in no folder the image gives to USER %s (COPY --chown: %v)", d.key, d.dir, abs, user, owned)
		}
	}
}

// dockerignored reports whether the build context leaves out rel (a
// slash-separated path from the repository root): a pattern (no "!"
// exceptions) matches it or one of its parent folders. "**" matches any
// number of folders, "*" and "?" stay within one name.
func dockerignored(patterns []string, rel string) bool {
	parts := strings.Split(rel, "/")
	for _, p := range patterns {
		re := globRE(strings.TrimPrefix(path.Clean(p), "/"))
		for j := 1; j <= len(parts); j++ {
			if re.MatchString(strings.Join(parts[:j], "/")) {
				return true
			}
		}
	}
	return false
}

func globRE(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch {
		case strings.HasPrefix(glob[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(glob[i:], "**"):
			b.WriteString(".*")
			i++
		case glob[i] == '*':
			b.WriteString("[^/]*")
		case glob[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func TestDockerignore(t *testing.T) {
	var patterns []string
	for line := range strings.SplitSeq(readFile(t, "Dockerfile.dockerignore"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf("pattern %q: the test does not handle exceptions", line)
		}
		patterns = append(patterns, line)
	}
	for _, out := range []string{".git/config", "pipeline.test", "cmd/exportstream/exportstream.test",
		"connectors/azure/azuritetest/npm/node_modules/azurite/package.json", "data/nats/x", "exportstream"} {
		if !dockerignored(patterns, out) {
			t.Errorf("the build context keeps %s", out)
		}
	}
	// Every file the binary is built from stays in the context.
	list := exec.CommandContext(t.Context(), goCommand(), "list", "-deps",
		"-f", `{{if and .Module .Module.Main}}{{range .GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{end}}`,
		"../cmd/exportstream")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := append(strings.Fields(string(out)), filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if len(files) < 10 {
		t.Fatalf("go list found only %d files", len(files))
	}
	for _, f := range files {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		if dockerignored(patterns, filepath.ToSlash(rel)) {
			t.Errorf("the build context leaves out %s, which the build needs", rel)
		}
	}
}
