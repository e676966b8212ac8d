package deploy_test

import (
	"bufio"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// unitFile is a systemd unit: section → key → values (a key may repeat).
type unitFile map[string]map[string][]string

// parseUnit reads a unit file as systemd.syntax(7) describes: [Section]
// headers, Key=Value lines, "#" and ";" comments, "\" continuations.
func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	var cont strings.Builder
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cont.WriteString(l + " ")
			continue
		}
		cont.WriteString(line)
		line = cont.String()
		cont.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is not Key=Value in a section", path, n, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u
}

// last returns the effective (last) value of a key.
func (u unitFile) last(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func TestSystemdUnit(t *testing.T) {
	const unitPath = "systemd/exportstream.service"
	u := parseUnit(t, unitPath)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Fatalf("no [%s] section", s)
		}
	}
	svc := func(key string) string { return u.last("Service", key) }

	// ExecStart runs `exportstream run --config <path>`.
	exec := strings.Fields(svc("ExecStart"))
	if len(exec) != 4 || !filepath.IsAbs(exec[0]) || filepath.Base(exec[0]) != "exportstream" ||
		exec[1] != "run" || exec[2] != "--config" || !filepath.IsAbs(exec[3]) {
		t.Fatalf("ExecStart=%s, want /…/exportstream run --config /…/config.yaml", svc("ExecStart"))
	}
	configPath := exec[3]
	if configPath != "/etc/exportstream/config.yaml" {
		t.Errorf("config %s, want /etc/exportstream/config.yaml (the image and manifests use that path)", configPath)
	}

	user := svc("User")
	if user == "" || user == "root" || user == "0" {
		t.Errorf("User=%q: want a dedicated user", user)
	}
	want := map[string]string{
		"Restart":         "on-failure",
		"KillSignal":      "SIGTERM",
		"StateDirectory":  "exportstream",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
	}
	for k, v := range want {
		if got := svc(k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	if d := svc("TimeoutStopSec"); systemdDuration(d) < 30*time.Second {
		t.Errorf("TimeoutStopSec=%q, want >= 30s", d)
	}
	if ef := svc("EnvironmentFile"); !strings.HasPrefix(ef, "-") || filepath.Dir(ef[1:]) != filepath.Dir(configPath) {
		t.Errorf("EnvironmentFile=%q: want optional (-) and beside the config", ef)
	}
	if svc("CapabilityBoundingSet") != "" || len(u["Service"]["CapabilityBoundingSet"]) == 0 {
		t.Errorf("CapabilityBoundingSet: want it set empty (no capabilities)")
	}
	stateDir := "/var/lib/" + svc("StateDirectory")
	writable := strings.Fields(strings.Join(u["Service"]["ReadWritePaths"], " "))
	if !slices.Contains(writable, stateDir) {
		t.Errorf("ReadWritePaths=%v lacks the state directory %s", writable, stateDir)
	}
	workDir := svc("WorkingDirectory")
	if workDir != stateDir {
		t.Errorf("WorkingDirectory=%q, want the state directory %s (the embedded default's ./data lands there)", workDir, stateDir)
	}
	if got := u.last("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}

	// The unit's install notes put an example of deploy/config/ at the
	// config path; it exists, and its data lands where the unit lets the
	// service write (ProtectSystem=strict makes the rest read-only).
	m := regexp.MustCompile(`install .*deploy/(config/\S+\.yaml) (\S+)`).FindStringSubmatch(readFile(t, unitPath))
	if m == nil || m[2] != configPath {
		t.Fatalf("the unit's notes install no deploy/config/*.yaml as %s", configPath)
	}
	cfg := parseYAMLMap(t, m[1], []byte(readFile(t, m[1])))
	dirs := dataDirs(cfg)
	if len(dirs) < 2 {
		t.Errorf("%s writes no local data but the state store: the systemd example should be the single-host one", m[1])
	}
	for _, d := range dirs {
		abs := d.dir
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(workDir, abs)
		}
		if !slices.ContainsFunc(writable, func(w string) bool { return under(abs, w) }) {
			t.Errorf("%s: %s %s is %s, not under the unit's writable paths %v", m[1], d.key, d.dir, abs, writable)
		}
	}

	// The user exists: sysusers.d creates it.
	created := false
	for line := range strings.SplitSeq(readFile(t, "systemd/exportstream.sysusers"), "\n") {
		f := strings.Fields(line)
		created = created || (len(f) >= 2 && f[0] == "u" && f[1] == user)
	}
	if !created {
		t.Errorf("exportstream.sysusers does not create the user %s", user)
	}
}

// systemdDuration parses a time span as systemd.time(7) writes the simple
// ones: seconds without a unit, or a Go duration ("30s", "1m30s"). It
// returns 0 for anything else.
func systemdDuration(s string) time.Duration {
	if d, err := time.ParseDuration(s + "s"); err == nil {
		return d
	}
	d, _ := time.ParseDuration(s)
	return d
}

// TestSystemdEnv: the example environment file has placeholders only and
// names every variable the example configs refer to.
func TestSystemdEnv(t *testing.T) {
	env := readFile(t, "systemd/env.example")
	keyRE := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	for line := range strings.SplitSeq(env, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := keyRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("env.example: %q is not KEY=value", line)
		} else if !strings.Contains(m[2], "REPLACE-ME") {
			t.Errorf("env.example: %s is not a placeholder", m[1])
		}
	}
	for _, c := range exampleConfigs(t) {
		for _, ref := range envRefs(t, c.name, c.data) {
			if !strings.Contains(env, ref+"=") {
				t.Errorf("env.example does not mention %s (%s refers to it)", ref, c.name)
			}
		}
	}
}
