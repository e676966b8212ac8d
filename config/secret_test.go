package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const leak = "hunter2-do-not-print"

// secretConfig is a valid Config holding leak in every Secret field.
func secretConfig(t *testing.T) *Config {
	t.Helper()
	data := []byte(`
nats:
  url: nats://n:4222
  user: u
  password: ${LEAK}
connections:
  - {name: s3, type: s3, s3: {bucket: b, access_key_id: k, secret_access_key: "${LEAK}", session_token: "${LEAK}"}}
  - {name: az, type: azure, azure: {container: c, connection_string: "${LEAK}"}}
  - {name: az2, type: azure, azure: {container: c, account_name: a, account_key: "${LEAK}"}}
`)
	cfg, err := Parse(data, lookup(map[string]string{"LEAK": leak}))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.NATS.Password.Reveal(); got != leak {
		t.Fatalf("Reveal() = %q, want the expanded value", got)
	}
	return cfg
}

func TestSecretNeverLeaks(t *testing.T) {
	cfg := secretConfig(t)
	s := Secret(leak)
	// %p is left out: fmt handles it before looking at any method, for
	// every type; see the Secret doc.
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%s", "%#v", "%q", "%x", "%X", "%d", "%10s", "%-8q", "%T %v", "%t"} {
		outputs["fmt "+verb+" secret"] = fmt.Sprintf(verb, s)
		outputs["fmt "+verb+" *secret"] = fmt.Sprintf(verb, &s)
		outputs["fmt "+verb+" config"] = fmt.Sprintf(verb, *cfg)
		outputs["fmt "+verb+" nats"] = fmt.Sprintf(verb, cfg.NATS)
		outputs["fmt "+verb+" s3"] = fmt.Sprintf(verb, *cfg.Connections[0].S3)
		outputs["fmt "+verb+" azure"] = fmt.Sprintf(verb, *cfg.Connections[1].Azure)
		outputs["fmt "+verb+" connection"] = fmt.Sprintf(verb, cfg.Connections[0])
		outputs["fmt "+verb+" connections"] = fmt.Sprintf(verb, cfg.Connections)
		outputs["fmt "+verb+" *connection"] = fmt.Sprintf(verb, &cfg.Connections[2])
		outputs["fmt "+verb+" *s3"] = fmt.Sprintf(verb, cfg.Connections[0].S3)
	}
	outputs["fmt Sprint"] = fmt.Sprint(s, cfg.NATS)
	outputs["fmt Sprintln"] = fmt.Sprintln(s, cfg.NATS)
	outputs["String"] = s.String()
	outputs["GoString"] = s.GoString()

	for name, v := range map[string]any{"secret": s, "config": cfg, "s3": cfg.Connections[0].S3, "map": map[string]Secret{"k": s}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", name, err)
		}
		outputs["json "+name] = string(j)
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatalf("yaml.Marshal(%s): %v", name, err)
		}
		outputs["yaml "+name] = string(y)
	}
	text, _ := s.MarshalText()
	outputs["MarshalText"] = string(text)
	outputs["Redacted"] = cfg.Redacted()

	var jsonLog, textLog bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&jsonLog, nil), slog.NewTextHandler(&textLog, nil)} {
		l := slog.New(h)
		l.Info("msg", "secret", s, "config", cfg, "nats", cfg.NATS, slog.Any("any", s), slog.Group("g", "azure", cfg.Connections[1].Azure))
	}
	outputs["slog json"] = jsonLog.String()
	outputs["slog text"] = textLog.String()

	for name, out := range outputs {
		if strings.Contains(out, leak) || strings.Contains(out, fmt.Sprintf("%x", leak)) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
	}
	var fromJSON string
	if err := json.Unmarshal([]byte(outputs["json secret"]), &fromJSON); err != nil || fromJSON != "<secret>" {
		t.Errorf("json secret = %s, want \"<secret>\"", outputs["json secret"])
	}
	for _, name := range []string{"fmt %v secret", "fmt %s secret", "fmt %#v secret", "String", "GoString", "MarshalText", "yaml secret"} {
		if !strings.Contains(outputs[name], "<secret>") {
			t.Errorf("%s = %q, want <secret>", name, outputs[name])
		}
	}
	if !strings.Contains(outputs["slog json"], `"secret":"<secret>"`) {
		t.Errorf("slog JSON does not show <secret>: %s", outputs["slog json"])
	}
	if !strings.Contains(outputs["Redacted"], "password: <secret>") {
		t.Errorf("Redacted does not show <secret>:\n%s", outputs["Redacted"])
	}
}

func TestEmptySecretIsEmpty(t *testing.T) {
	var s Secret
	j, _ := json.Marshal(s)
	y, _ := yaml.Marshal(s)
	for name, got := range map[string]string{
		"String": s.String(), "GoString": s.GoString(), "%v": fmt.Sprintf("%v", s),
		"json": string(j), "yaml": string(y), "slog": s.LogValue().String(),
	} {
		if strings.Contains(got, "<secret>") {
			t.Errorf("%s of an empty secret = %q, want it to look empty", name, got)
		}
	}
	if got := fmt.Sprintf("%q", s); got != `""` {
		t.Errorf("%%q of an empty secret = %s", got)
	}
}

// TestSecretDecodesAsString: outside Parse too, a Secret is a plain string
// to the YAML and JSON decoders.
func TestSecretDecodesAsString(t *testing.T) {
	var a Azure
	if err := yaml.Unmarshal([]byte("connection_string: abc\naccount_key: 'k'\n"), &a); err != nil {
		t.Fatal(err)
	}
	if a.ConnectionString.Reveal() != "abc" || a.AccountKey.Reveal() != "k" {
		t.Errorf("yaml decoded %q, %q", a.ConnectionString.Reveal(), a.AccountKey.Reveal())
	}
	var s Secret
	if err := json.Unmarshal([]byte(`"xyz"`), &s); err != nil || s.Reveal() != "xyz" {
		t.Errorf("json decoded %q, %v", s.Reveal(), err)
	}
}

// TestProblemsDoNotLeak: a missing or bad secret is reported by name, never
// by value.
func TestProblemsDoNotLeak(t *testing.T) {
	data := []byte(`
nats:
  url: nats://n:4222
  password: "` + leak + `"
  token: ${TOKEN}
connections:
  - {name: s3, type: s3, s3: {bucket: b, secret_access_key: "` + leak + `"}}
`)
	_, err := Parse(data, nil)
	if err == nil {
		t.Fatal("Parse succeeded, want problems")
	}
	if strings.Contains(err.Error(), leak) {
		t.Errorf("problems leak the secret:\n%v", err)
	}
}

func TestConnectionFormat(t *testing.T) {
	c := Connection{Name: "disk", Type: "local"}
	for verb, want := range map[string]string{
		"%v":  "{disk local <nil> <nil> <nil> <nil> 0 0s}",
		"%s":  "{disk local <nil> <nil> <nil> <nil> 0 0s}",
		"%+v": "{Name:disk Type:local Local:<nil> S3:<nil> GCS:<nil> Azure:<nil> Uploads:0 SignedURLExpiry:0s}",
		"%#v": `config.Connection{Name:"disk", Type:"local", Local:(*config.Local)(nil), S3:(*config.S3)(nil), GCS:(*config.GCS)(nil), Azure:(*config.Azure)(nil), Uploads:0, SignedURLExpiry:0}`,
	} {
		if got := fmt.Sprintf(verb, c); got != want {
			t.Errorf("Sprintf(%q) = %s, want %s", verb, got, want)
		}
	}
}

func TestURLPasswordsRedacted(t *testing.T) {
	cfg := Default()
	cfg.NATS.URL = "nats://u:" + leak + "@n1:4222, nats://n2:4222,tls://x:" + leak + "@n3:4222"
	cfg.Connections = append(cfg.Connections, Connection{Name: "s3", Type: "s3",
		S3: &S3{Bucket: "b", Endpoint: "http://k:" + leak + "@minio:9000", PartSize: DefaultPartSize}})
	out := cfg.Redacted()
	if strings.Contains(out, leak) {
		t.Errorf("Redacted leaks a URL password:\n%s", out)
	}
	for _, want := range []string{"nats://u:<secret>@n1:4222, nats://n2:4222,tls://x:<secret>@n3:4222", "http://k:<secret>@minio:9000"} {
		if !strings.Contains(out, want) {
			t.Errorf("Redacted does not show %s:\n%s", want, out)
		}
	}
	if cfg.NATS.URL != "nats://u:"+leak+"@n1:4222, nats://n2:4222,tls://x:"+leak+"@n3:4222" {
		t.Errorf("Redacted changed the config: %s", cfg.NATS.URL)
	}

	cfg.NATS.URL = "http://u:" + leak + "@n1:4222"
	cfg.Connections[1].S3.Endpoint = "ftp://k:" + leak + "@minio:9000"
	err := cfg.Validate()
	if err == nil || strings.Contains(err.Error(), leak) || !strings.Contains(err.Error(), "http://u:<secret>@n1:4222") {
		t.Errorf("Validate: %v", err)
	}
}

// The passwords and tokens in URLs' user information are secrets the
// output filters blank (as written and percent-decoded); user names,
// hosts and text without user information are not.
func TestSecretValuesFromURLs(t *testing.T) {
	cfg := Default()
	cfg.NATS.URL = "nats://alice:pa%40ss-word@n1:4222, nats://n2:4222,tls://tok3n-value@n3:4222"
	cfg.HTTP.PublicURL = "https://exports.example.com/a@b"
	cfg.Connections = append(cfg.Connections, Connection{Name: "s3", Type: "s3",
		S3: &S3{Bucket: "b", Endpoint: "http://key:s3-pass@minio:9000/", PartSize: DefaultPartSize}})
	got := map[string]bool{}
	for _, s := range cfg.SecretValues() {
		got[s] = true
	}
	for _, want := range []string{"pa%40ss-word", "pa@ss-word", "tok3n-value", "s3-pass"} {
		if !got[want] {
			t.Errorf("SecretValues lacks %q: %q", want, cfg.SecretValues())
		}
	}
	for _, not := range []string{"alice", "key", "n1:4222", "n2:4222", "exports.example.com/a", "a"} {
		if got[not] {
			t.Errorf("SecretValues holds %q, which is no secret: %q", not, cfg.SecretValues())
		}
	}
}
