package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// printedConfigs are configurations check-config --print may show: the
// default, the testdata files, and one built in Go with the values whose
// zero means something (and a few that are easy to get wrong). None has a
// password inside a URL: "<secret>" there makes the URL invalid, so such
// a printed config does not load again (TestURLPasswordsRedacted).
func printedConfigs(t *testing.T) map[string]*Config {
	t.Helper()
	out := map[string]*Config{"default": Default()}
	for file, env := range map[string]map[string]string{
		"minimal.good.yml": nil,
		// DEPLOYMENT empty: the host name, which must read back as itself.
		"features.good.yml": {"NATS_URL": "nats://n:4222", "TOKEN": "tok", "EMPTY": "", "PREFIX": "ml", "API_TOKEN": "api-tok", "DEPLOYMENT": ""},
		"contract.good.yml": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "aws-secret", "AZURE_STORAGE_CONNECTION_STRING": "conn-string"},
	} {
		cfg, err := Parse(mustRead(t, "testdata/"+file), lookup(env))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[file] = cfg
	}
	c := Default()
	c.Deployment = "eu-1"
	c.NATS.CreateStream = false
	c.NATS.URL = "nats://n:4222"
	c.NATS.Embedded.StoreDir = "/srv/nats" // kept: the file set it
	c.Records = Records{KeepLast: 0, MaxAge: time.Hour}
	c.Connections = append(c.Connections,
		Connection{Name: "tuned", Type: TypeLocal, Local: &Local{Dir: "/srv/b", SignKey: "k"}, Uploads: 5, SignedURLExpiry: 10 * time.Minute},
		Connection{Name: "minio", Type: TypeS3, S3: &S3{Bucket: "b", Endpoint: "http://minio:9000", PartSize: DefaultPartSize}})
	c.Exports = []Export{
		{Name: "root", Project: "p", Source: Source{DirectoryID: ptr[int64](7)}, Completion: CompletionAll,
			Connection: "tuned", Path: "root/", Coalesce: Coalesce{Quiet: 0, MaxDelay: time.Second}},
		{Name: "dollar", Project: "p", Source: Source{Directory: "a ${b} $${c}"}, Completion: CompletionComplete,
			Connection: "minio", Path: "x/${y}/", Coalesce: Coalesce{Quiet: 5 * time.Second, MaxDelay: time.Minute}, KeepLast: 3},
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the Go-built config: %v", err)
	}
	out["built in Go"] = c
	return out
}

// readBack parses a Redacted rendering and returns its effective config,
// with the secrets of want (which read back as "<secret>") put back.
func readBack(t *testing.T, out string, want *Config) (*Config, error) {
	t.Helper()
	back, err := Parse([]byte(out), nil)
	if err != nil {
		return nil, err
	}
	back = back.effective()
	restoreSecrets(t, reflect.ValueOf(back).Elem(), reflect.ValueOf(want).Elem(), "")
	return back, nil
}

func restoreSecrets(t *testing.T, got, want reflect.Value, path string) {
	switch {
	case got.Type() == reflect.TypeFor[Secret]():
		if want.String() != "" {
			if got.String() != redactedText {
				t.Errorf("%s: printed as %q, want %q", path, got.String(), redactedText)
			}
			got.Set(want)
		}
	case got.Kind() == reflect.Pointer:
		if !got.IsNil() && !want.IsNil() {
			restoreSecrets(t, got.Elem(), want.Elem(), path)
		}
	case got.Kind() == reflect.Struct:
		for i := range got.NumField() {
			restoreSecrets(t, got.Field(i), want.Field(i), path+"."+got.Type().Field(i).Name)
		}
	case got.Kind() == reflect.Slice:
		for i := range min(got.Len(), want.Len()) {
			restoreSecrets(t, got.Index(i), want.Index(i), path)
		}
	}
}

// TestRedactedRoundTrip: what check-config --print shows, loaded again,
// is the same effective configuration (secrets aside), and printing does
// not change the config.
func TestRedactedRoundTrip(t *testing.T) {
	for name, cfg := range printedConfigs(t) {
		t.Run(name, func(t *testing.T) {
			before := cfg.effective()
			out := cfg.Redacted()
			if diff := cmp.Diff(before, cfg.effective()); diff != "" {
				t.Errorf("Redacted changed the config (-before +after):\n%s", diff)
			}
			back, err := readBack(t, out, cfg)
			if err != nil {
				t.Fatalf("parsing Redacted output: %v\n%s", err, out)
			}
			if diff := cmp.Diff(cfg.effective(), back); diff != "" {
				t.Errorf("round trip (-want +got):\n%s\n%s", diff, out)
			}
			if again := back.Redacted(); again != out {
				t.Errorf("printing the printed config again differs:\n%s\nthen:\n%s", out, again)
			}
		})
	}
}

// TestRedactedIsEffective: the printed config shows the effective values
// of the keys whose zero stands for a default, and holds no key with an
// empty, false or zero value that could be left out: leaving out any such
// key must change the config read back.
func TestRedactedIsEffective(t *testing.T) {
	for name, cfg := range printedConfigs(t) {
		t.Run(name, func(t *testing.T) {
			out := cfg.Redacted()
			want := cfg.effective()
			for i, c := range want.Connections {
				if cfg.Connections[i].Uploads == 0 && c.Uploads != DefaultUploads ||
					cfg.Connections[i].SignedURLExpiry == 0 && c.SignedURLExpiry != DefaultSignedURLExpiry {
					t.Errorf("effective connection %d: uploads %d, signed_url_expiry %s; want the defaults", i, c.Uploads, c.SignedURLExpiry)
				}
			}
			for _, bad := range []string{"uploads: 0\n", "signed_url_expiry: 0s\n", `: ""`} {
				if strings.Contains(out, bad) {
					t.Errorf("printed config holds %q:\n%s", bad, out)
				}
			}
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatal(err)
			}
			zeros := 0
			eachEntry(&doc, "", func(path string, parent *yaml.Node, i int) {
				v := parent.Content[i+1]
				if v.Kind != yaml.ScalarNode {
					return
				}
				switch v.Value {
				case "", "0", "0s", "false", "null", "~":
				default:
					return
				}
				zeros++
				// Leave the entry out and read the file back.
				saved := parent.Content
				parent.Content = append(append([]*yaml.Node{}, saved[:i]...), saved[i+2:]...)
				defer func() { parent.Content = saved }()
				var buf bytes.Buffer
				if err := yaml.NewEncoder(&buf).Encode(&doc); err != nil {
					t.Fatal(err)
				}
				back, err := readBack(t, buf.String(), cfg)
				if err != nil {
					return // left out, the file is not valid: the key is needed
				}
				if cmp.Equal(want, back) {
					t.Errorf("%s: %q is printed, but leaving it out gives the same config", path, v.Value)
				}
			})
			t.Logf("%d zero-valued keys printed", zeros)
		})
	}
}

// eachEntry calls fn for every mapping entry under n, with its path, its
// mapping and the entry's index in the mapping's Content.
func eachEntry(n *yaml.Node, path string, fn func(path string, parent *yaml.Node, i int)) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			eachEntry(c, path, fn)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			eachEntry(c, path+"["+string(rune('0'+i))+"]", fn)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := joinPath(path, n.Content[i].Value)
			fn(p, n, i)
			eachEntry(n.Content[i+1], p, fn)
		}
	}
}

// TestRedactedShowsDefaults: the defaults a zero stands for are printed,
// unset optional keys are not, and the embedded server's settings are
// left out when a NATS server is configured.
func TestRedactedShowsDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`nats: {url: "nats://n:4222"}
connections:
  - {name: disk, type: local, local: {dir: ./b}}
  - {name: s3, type: s3, s3: {bucket: b}, uploads: 4}
exports:
  - {name: a, project: p, source: {directory: d}, connection: disk}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := cfg.Redacted()
	for _, want := range []string{
		"  - name: disk\n    type: local\n    local:\n      dir: ./b\n    uploads: 2\n    signed_url_expiry: 1h0m0s\n",
		"    s3:\n      bucket: b\n      part_size: 5242880\n    uploads: 4\n    signed_url_expiry: 1h0m0s\n",
		"    source:\n      directory: d\n    completion: complete\n",
		"    path: exports/a/\n    coalesce:\n      quiet: 5s\n      max_delay: 1m0s\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printed config lacks\n%s\nin:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"embedded:", "directory_id", "job:", "project: false", "include_removed_instances", "keep_last: 0",
		"credentials_file", "user:", "password", "token", "tls:", "region", "endpoint", "sign_key", "public_url"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("printed config holds %q:\n%s", unwanted, out)
		}
	}
}
