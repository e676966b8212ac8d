package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// flagsOf runs a command with -h and returns the flags its flag set
// prints (flag.PrintDefaults: "  -name type" lines), failing unless the
// help exits 0.
func flagsOf(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(append(args, "-h"), &out, &errOut); code != 0 {
		t.Fatalf("%s -h: exit %d, want 0: %s", strings.Join(args, " "), code, errOut.String())
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([\w-]+)`).FindAllStringSubmatch(out.String()+errOut.String(), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("%s -h lists no flags:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	}
	return names
}

// section is the part of a usage text that starts with the line holding
// start and ends before the next line starting with next (or at the end).
func section(text, start, next string) string {
	i := strings.Index(text, start)
	if i < 0 {
		return ""
	}
	rest := text[i+len(start):]
	if j := strings.Index(rest, "\n"+next); j >= 0 {
		rest = rest[:j]
	}
	return start + rest
}

// TestUsageNamesEveryFlag: `exportstream --help` names every flag of
// every command, each in its command's entry, and `exportstream exports
// help` every flag of every exports subcommand, as the commands' own flag
// sets define them.
func TestUsageNamesEveryFlag(t *testing.T) {
	code, help, _ := cliRun(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for name := range commands {
			if !yield(name) {
				return
			}
		}
	}) {
		entry := section(help, "  exportstream "+name+" ", "  exportstream ")
		if entry == "" {
			t.Errorf("--help has no entry for %s:\n%s", name, help)
			continue
		}
		if name == "exports" {
			continue // its own help, below
		}
		for _, f := range flagsOf(t, name) {
			if !regexp.MustCompile(`--` + regexp.QuoteMeta(f) + `\b`).MatchString(entry) {
				t.Errorf("--help: the entry of %s does not name --%s:\n%s", name, f, entry)
			}
		}
	}

	code, exportsHelp, _ := cliRun(t, "exports", "help")
	if code != 0 {
		t.Fatalf("exports help: exit %d", code)
	}
	subs := []string{"list", "get", "generate", "url", "data"}
	perSub := map[string][]string{}
	common := map[string]int{}
	for _, sub := range subs {
		perSub[sub] = flagsOf(t, "exports", sub)
		for _, f := range perSub[sub] {
			common[f]++
		}
	}
	every := section(exportsHelp, "Every subcommand takes:", "Exit status:")
	// Each subcommand's entries (generate has two): from a line
	// "  exportstream exports SUB" to the next such line or the end of
	// the list.
	entries := map[string]string{}
	list, _, _ := strings.Cut(exportsHelp, "Every subcommand takes:")
	for _, chunk := range strings.Split(list, "\n  exportstream exports ")[1:] {
		sub, _, _ := strings.Cut(chunk, " ")
		entries[sub] += chunk
	}
	for _, sub := range subs {
		if entries[sub] == "" {
			t.Errorf("exports help has no entry for %s", sub)
		}
		for _, f := range perSub[sub] {
			in, where := entries[sub], "the entry of "+sub
			if common[f] == len(subs) {
				in, where = every, `"Every subcommand takes"`
			}
			if !regexp.MustCompile(`--` + regexp.QuoteMeta(f) + `\b`).MatchString(in) {
				t.Errorf("exports help: %s does not name --%s", where, f)
			}
		}
	}
}

// TestHelpCommand: `help COMMAND` and `COMMAND -h` show the command's
// flags with their defaults and exit 0; an unknown flag exits 2.
func TestHelpCommand(t *testing.T) {
	for _, name := range []string{"run", "demo", "check-config", "publish"} {
		code, out, _ := cliRun(t, "help", name)
		for _, f := range flagsOf(t, name) {
			if code != 0 || !strings.Contains(out, "  -"+f) {
				t.Errorf("help %s: exit %d, -%s missing:\n%s", name, code, f, out)
			}
		}
	}
	if code, out, _ := cliRun(t, "help", "exports"); code != 0 || !strings.Contains(out, "Every subcommand takes:") {
		t.Errorf("help exports: exit %d:\n%s", code, out)
	}
	for _, args := range [][]string{{"run", "--bogus"}, {"publish", "--bogus"}, {"check-config", "--bogus"}, {"run", "config.yaml"}} {
		code, out, errOut := cliRun(t, args...)
		if code != 2 || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, %q, %q; want 2 and a message", args, code, out, errOut)
		}
	}
}

// TestVersion: `version`, `--version` and `-version` print the version
// line of the build information, the same for all three.
func TestVersion(t *testing.T) {
	bi, _ := debug.ReadBuildInfo()
	want := versionLine(version, bi)
	for _, arg := range []string{"version", "--version", "-version"} {
		code, out, errOut := cliRun(t, arg)
		if code != 0 || out != want+"\n" || errOut != "" {
			t.Errorf("%s: exit %d, %q, %q; want %q", arg, code, out, errOut, want)
		}
	}
	if !strings.HasPrefix(want, "exportstream ") || !strings.Contains(want, bi.GoVersion) {
		t.Errorf("version line %q lacks the name or the Go release %s", want, bi.GoVersion)
	}
}

// TestVersionLine: what the version line says for the builds there are.
func TestVersionLine(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	at := "2026-01-02T03:04:05Z"
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	build := func(version string, s []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/exportstream/exportstream", Version: version}, Settings: s}
	}
	for _, c := range []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		version string // what buildVersion says
		has     []string
		hasNot  []string
	}{
		{"a tagged, clean checkout", "dev", build("v1.4.0", settings("vcs", "git", "vcs.revision", rev, "vcs.time", at, "vcs.modified", "false")),
			"v1.4.0", []string{"exportstream v1.4.0 ", "revision " + rev, at, "go1.99.1"}, []string{"uncommitted", "no VCS"}},
		{"a modified checkout", "dev", build("v0.0.0-20260102030405-0123456789ab+dirty", settings("vcs", "git", "vcs.revision", rev, "vcs.time", at, "vcs.modified", "true")),
			"v0.0.0-20260102030405-0123456789ab+dirty", []string{"revision " + rev, "with uncommitted changes"}, []string{"no VCS"}},
		{"go run, go test", "dev", build("(devel)", nil),
			"dev", []string{"exportstream dev ", "no VCS revision recorded", "go1.99.1"}, []string{"(devel)", "revision 0"}},
		{"stamped with -ldflags -X main.version", "v2.0.0", build("(devel)", settings("vcs.revision", rev)),
			"v2.0.0", []string{"exportstream v2.0.0 ", "revision " + rev}, nil},
		{"no build information", "dev", nil,
			"dev", []string{"exportstream dev ", "no build information"}, nil},
	} {
		if got := buildVersion(c.stamped, c.bi); got != c.version {
			t.Errorf("%s: buildVersion %q, want %q", c.name, got, c.version)
		}
		line := versionLine(c.stamped, c.bi)
		for _, s := range c.has {
			if !strings.Contains(line, s) {
				t.Errorf("%s: %q lacks %q", c.name, line, s)
			}
		}
		for _, s := range c.hasNot {
			if strings.Contains(line, s) {
				t.Errorf("%s: %q holds %q", c.name, line, s)
			}
		}
		if strings.Contains(line, "\n") {
			t.Errorf("%s: %q is more than a line", c.name, line)
		}
	}
}

// closedNATSURL is a loopback URL nothing listens on.
func closedNATSURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "nats://" + addr
}

// TestNATSUnreachable: when no NATS server answers, publish and run say
// where they tried (without the password of the URL) and what to do.
func TestNATSUnreachable(t *testing.T) {
	url := closedNATSURL(t)
	host := strings.TrimPrefix(url, "nats://")
	events := pipelinetest.EventsFile(filepath.Join(pipelinetest.ExamplesDir(), "street-scenes-ordered"))

	withUser := "nats://someone:pa55word-of-nats@" + host
	for _, u := range []string{url, withUser} {
		code, out, errOut := cliRun(t, "publish", "--nats", u, events)
		if code != 1 || out != "" {
			t.Errorf("publish to %s: exit %d, %q", u, code, out)
		}
		for _, want := range []string{url, "exportstream demo", "--nats"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("publish to %s: %q lacks %q", u, errOut, want)
			}
		}
		if strings.Contains(errOut, "pa55word-of-nats") || strings.Contains(errOut, "someone") {
			t.Errorf("publish shows the URL's user information: %q", errOut)
		}
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "remote.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "nats: {url: %q}\nstate: {dir: %q}\nhttp: {listen: 127.0.0.1:0}\n",
		withUser, filepath.Join(dir, "state")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cliRun(t, "run", "--config", cfg)
	if code != 1 || out != "" {
		t.Errorf("run: exit %d, %q", code, out)
	}
	for _, want := range []string{"exportstream: ", url, "nats.url"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("run: %q lacks %q", errOut, want)
		}
	}
	if strings.Contains(errOut, "pa55word-of-nats") {
		t.Errorf("run shows the NATS password: %q", errOut)
	}
}

// TestBinary builds the command as a user does and checks what only the
// built binary shows: the VCS revision in `version`, and the line a
// clean stop (SIGTERM) logs.
func TestBinary(t *testing.T) {
	// In a git checkout, with the VCS information go build records by
	// default (whatever GOFLAGS says here).
	head, gitErr := exec.Command("git", "rev-parse", "HEAD").Output()
	args := []string{"build", "-o", filepath.Join(t.TempDir(), "exportstream")}
	if gitErr == nil {
		args = append(args, "-buildvcs=true")
	}
	bin := args[2]
	if out, err := exec.CommandContext(t.Context(), goCommand(), append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("version: %v: %s", err, out)
		}
		line := strings.TrimSuffix(string(out), "\n")
		// What the go command reads from the binary.
		meta, err := exec.Command(goCommand(), "version", "-m", bin).Output()
		if err != nil {
			t.Fatalf("go version -m: %v", err)
		}
		info := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(meta))
		for sc.Scan() {
			f := strings.Split(strings.TrimSpace(sc.Text()), "\t")
			switch {
			case len(f) >= 3 && f[0] == "mod":
				info["mod"] = f[2]
			case len(f) >= 2 && f[0] == "build":
				if k, v, ok := strings.Cut(f[1], "="); ok {
					info[k] = v
				}
			}
		}
		if v := info["mod"]; v != "" && v != "(devel)" && !strings.HasPrefix(line, "exportstream "+v+" ") {
			t.Errorf("version %q does not start with the module version %s", line, v)
		}
		// The revision of the checkout it was built in, when built in one.
		if gitErr == nil && info["vcs.revision"] != strings.TrimSpace(string(head)) {
			t.Errorf("the binary records revision %q, the checkout is at %s", info["vcs.revision"], head)
		}
		if rev := info["vcs.revision"]; rev != "" {
			if !strings.Contains(line, "revision "+rev) {
				t.Errorf("version %q lacks the revision %s", line, rev)
			}
			if modified := info["vcs.modified"] == "true"; modified != strings.Contains(line, "uncommitted changes") {
				t.Errorf("version %q: vcs.modified is %v", line, modified)
			}
		} else if !strings.Contains(line, "no VCS revision") {
			t.Errorf("version %q: no revision recorded, and it does not say so", line)
		}
		if flagOut, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || string(flagOut) != string(out) {
			t.Errorf("--version: %v, %q; want %q", err, flagOut, out)
		}
	})

	// The service's collector settings, as its Go metrics show them:
	// GOGC 50 and the soft memory limit unless the environment sets them.
	t.Run("memory", func(t *testing.T) {
		for _, c := range []struct {
			env         []string
			gogc, limit float64
		}{
			{[]string{"GOGC=", "GOMEMLIMIT="}, 50, memoryLimit},
			{[]string{"GOGC=80", "GOMEMLIMIT=300MiB"}, 80, 300 << 20},
		} {
			in := newServiceInstance(t, bin, "memory")
			in.env = c.env
			in.start(t)
			addr := serviceHTTPAddr(in.cur.log, 60*time.Second)
			if addr == "" {
				t.Fatalf("%v: the service did not start\n%s", c.env, logTail(in.cur.log, 20))
			}
			for name, want := range map[string]float64{"go_gc_gogc_percent": c.gogc, "go_gc_gomemlimit_bytes": c.limit} {
				if v := metricSum(t, "http://"+addr+"/metrics", name); v != want {
					t.Errorf("%v: %s = %v, want %v", c.env, name, v, want)
				}
			}
			in.kill(t)
		}
	})

	t.Run("stop", func(t *testing.T) {
		in := newServiceInstance(t, bin, "stop")
		in.start(t)
		in.waitLogCount(t, `"msg":"exportstream running"`, 1, 60*time.Second)
		p := in.cur
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("still running 30s after SIGTERM\n%s", logTail(p.log, 20))
		}
		in.cur = nil
		if p.err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0\n%s", p.err, logTail(p.log, 20))
		}
		b, _ := os.ReadFile(p.log)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		// A clean stop warns about nothing (it used to log "state watch
		// ended; watching again": the watch ended with the caller's
		// context before the store stopped following it).
		for _, l := range lines {
			var rec struct{ Level string }
			if json.Unmarshal([]byte(l), &rec) == nil && rec.Level != "INFO" && rec.Level != "DEBUG" {
				t.Errorf("a clean stop logged %s", l)
			}
		}
		var last struct{ Msg, Reason string }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
			t.Fatalf("last log line %q: %v", lines[len(lines)-1], err)
		}
		if last.Msg != "exportstream stopped" || !strings.Contains(last.Reason, syscall.SIGTERM.String()) {
			t.Errorf("last log line %q, want \"exportstream stopped\" with the signal (%s) as the reason", lines[len(lines)-1], syscall.SIGTERM)
		}
	})
}

// TestMemoryLimitFor: the soft memory limit is memoryLimit until the
// live heap outgrows it, then stays above the live heap.
func TestMemoryLimitFor(t *testing.T) {
	for _, live := range []uint64{0, 50 << 20, 80 << 20, 85 << 20, 90 << 20, 200 << 20, 2 << 30} {
		got := memoryLimitFor(live)
		if got < memoryLimit {
			t.Errorf("memoryLimitFor(%d MiB) = %d, below memoryLimit (%d)", live>>20, got, memoryLimit)
		}
		if got < int64(live+live/8) {
			t.Errorf("memoryLimitFor(%d MiB) = %d MiB: less than an eighth over the live heap", live>>20, got>>20)
		}
		if live <= 80<<20 && got != memoryLimit {
			t.Errorf("memoryLimitFor(%d MiB) = %d, want memoryLimit (%d)", live>>20, got, memoryLimit)
		}
	}
}

// goCommand is the go command running the test (as buildService finds
// it).
func goCommand() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); pathExists(p) {
			return p
		}
	}
	return "go"
}
