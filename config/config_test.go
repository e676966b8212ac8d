package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.bad.yml.err from the current output")

// testEnv is the environment the testdata files are parsed with.
var testEnv = map[string]string{
	"SET_VAR":  "from-env",
	"EMPTY":    "",
	"REPLICAS": "3",
	"NATS_KEY": "url",
	"DURATION": "5s",
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// TestBadFiles parses every testdata/*.bad.yml and compares the problems,
// one "path: message" per line, with the sibling .bad.yml.err file.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found %d bad files, want at least 15", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".bad.yml"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(data, lookup(testEnv))
			if err == nil {
				t.Fatalf("Parse succeeded, want problems")
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with its error")
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			for _, p := range errs.Problems {
				if p.Line == 0 {
					t.Errorf("problem without a line: %s", p)
				}
			}
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(file+".err", []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file + ".err")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")); diff != "" {
				t.Errorf("problems differ from %s.err (-want +got):\n%s", file, diff)
			}
		})
	}
}

// TestNoStrayGoldenFiles keeps testdata tidy: every .err file has its
// .bad.yml.
func TestNoStrayGoldenFiles(t *testing.T) {
	errFiles, err := filepath.Glob("testdata/*.err")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range errFiles {
		if _, err := os.Stat(strings.TrimSuffix(f, ".err")); err != nil {
			t.Errorf("%s has no config file: %v", f, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestContractExample loads testdata's copy of the example from CONFIG.md
// (its media line names training-s3; TestContractExampleAsWritten checks
// the copy against the contract), with the variables it needs in the
// process environment.
func TestContractExample(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
	t.Setenv("AZURE_STORAGE_CONNECTION_STRING", "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=y")

	cfg, err := Load("testdata/contract.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	// The file's connections replace the default one; the first is the
	// same local-disk connection.
	want.Connections = []Connection{
		{Name: "local-disk", Type: "local", Local: &Local{Dir: "./data/bucket"}},
		{Name: "training-s3", Type: "s3", S3: &S3{
			Bucket: "ml-exports", Region: "us-east-1",
			AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "aws-secret",
			PartSize: DefaultPartSize,
		}},
		{Name: "training-gcs", Type: "gcs", GCS: &GCS{Bucket: "ml-exports", CredentialsFile: "/etc/exportstream/gcs.json"}},
		{Name: "training-azure", Type: "azure", Azure: &Azure{
			Container:        "ml-exports",
			ConnectionString: "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=y",
		}},
	}
	want.Exports = []Export{{
		Name:       "luckfrill-complete",
		Project:    "street-scenes",
		Source:     Source{Directory: "Luckfrill"},
		Completion: "complete",
		Connection: "local-disk",
		Path:       "exports/luckfrill/",
		Coalesce:   Coalesce{Quiet: 5 * time.Second, MaxDelay: 60 * time.Second},
		Formats:    []string{"diffgram", "coco", "yolo"},
		Media:      &Media{Connection: "training-s3", Expiry: 168 * time.Hour},
	}}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

// TestContractExampleAsWritten reads the example from CONFIG.md itself
// (../shared/contract): its media line names a connection, media-s3, that
// the example does not define, and that is the one problem reported.
// With the media line naming training-s3, it is testdata's contract file.
func TestContractExampleAsWritten(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "shared", "contract", "CONFIG.md"))
	if err != nil {
		t.Fatalf("the contract beside the repository: %v", err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in CONFIG.md")
	}
	env := lookup(map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-secret",
		"AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=y"})
	_, err = Parse([]byte(example), env)
	want := `exports[0].media.connection: no connection named "media-s3"`
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("CONFIG.md's example: %v\nwant one problem: %s (...)", err, want)
	}
	fixed := strings.Replace(example, "connection: media-s3,", "connection: training-s3,", 1)
	got, err := Parse([]byte(fixed), env)
	if err != nil {
		t.Fatal(err)
	}
	file, err := Parse(mustRead(t, "testdata/contract.good.yml"), env)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(file, got); diff != "" {
		t.Errorf("testdata/contract.good.yml and CONFIG.md's example differ (-file +contract):\n%s", diff)
	}
}

func TestContractExampleMissingEnv(t *testing.T) {
	data, err := os.ReadFile("testdata/contract.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data, lookup(map[string]string{"AWS_ACCESS_KEY_ID": "x"}))
	want := "connections[1].s3.secret_access_key: environment variable AWS_SECRET_ACCESS_KEY is not set\n" +
		"connections[3].azure.connection_string: environment variable AZURE_STORAGE_CONNECTION_STRING is not set"
	if err == nil || err.Error() != want {
		t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
	}
}

func TestMinimalFileGetsDefaults(t *testing.T) {
	cfg, err := Parse(mustRead(t, "testdata/minimal.good.yml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Exports = []Export{
		{
			Name: "street", Project: "street-scenes", Source: Source{Project: true},
			Completion: "complete", Connection: "local-disk", Path: "exports/street/",
			Coalesce: Coalesce{Quiet: 5 * time.Second, MaxDelay: 60 * time.Second},
		},
		{
			Name: "review", Project: "street-scenes", Source: Source{JobID: ptr[int64](42)},
			Completion: "all", Connection: "local-disk", Path: "review/",
			// An explicit zero is kept, not replaced by the default.
			Coalesce: Coalesce{Quiet: 0, MaxDelay: 60 * time.Second},
		},
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestFeaturesFile(t *testing.T) {
	env := map[string]string{"NATS_URL": "nats://nats-1:4222", "TOKEN": "tok", "EMPTY": "", "PREFIX": "ml", "API_TOKEN": "api-tok", "DEPLOYMENT": "eu-1"}
	cfg, err := Parse(mustRead(t, "testdata/features.good.yml"), lookup(env))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.NATS.URL = "nats://nats-1:4222,nats://nats-2:4222"
	want.NATS.Token = "tok"
	want.NATS.TLS = TLS{CAFile: "/etc/ca.pem", CertFile: "/etc/c.pem", KeyFile: "/etc/k.pem"}
	want.NATS.Subjects = []string{"a.>", "b.*.c"}
	want.NATS.CreateStream = false
	want.NATS.Replicas = 3
	want.NATS.AckWait = 90 * time.Second
	want.NATS.MaxEventBytes = 4 << 20
	want.NATS.MaxEventDepth = 128
	want.Deployment = "eu-1"
	want.Records = Records{KeepLast: 50, MaxAge: 168 * time.Hour}
	want.HTTP.PublicURL = "https://exports.example.com"
	want.HTTP.Token = "api-tok"
	want.Connections = []Connection{
		{Name: "minio", Type: "s3", S3: &S3{
			Bucket: "b", Endpoint: "http://minio:9000", PathStyle: true, PartSize: 16 << 20,
		}},
	}
	shared := Export{
		Project: "street-scenes", Source: Source{Project: true}, Completion: "complete",
		Connection: "minio", Coalesce: Coalesce{Quiet: 10 * time.Second, MaxDelay: 60 * time.Second},
	}
	a, b := shared, shared
	a.Name, a.Path = "a", "ml/a/"
	b.Name, b.Path, b.Completion = "b", "${literal}/$HOME/b/", "incomplete"
	b.Source = Source{Directory: "from ${nothing}"}
	b.IncludeRemovedInstances = true
	want.Exports = []Export{a, b}
	want.HTTP.Listen = ":8080"
	want.Log = Log{Level: "debug", Format: "text"}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	for _, data := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		cfg, err := Parse([]byte(data), nil)
		if err != nil {
			t.Fatalf("Parse(%q): %v", data, err)
		}
		if diff := cmp.Diff(Default(), cfg); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", data, diff)
		}
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate():\n%v", err)
	}
	if a, b := Default(), Default(); &a.NATS.Subjects[0] == &b.NATS.Subjects[0] || a.Connections[0].Local == b.Connections[0].Local {
		t.Error("Default shares memory between calls")
	}
}

// TestNATSEventLimitsDefaults: max_event_depth defaults to 64, and a file
// that leaves it out (or empty) keeps the default.
func TestNATSEventLimitsDefaults(t *testing.T) {
	if got := Default().NATS.MaxEventDepth; got != 64 {
		t.Errorf("Default().NATS.MaxEventDepth = %d, want 64", got)
	}
	for _, data := range []string{"nats: {max_event_bytes: 10}\n", "nats:\n  max_event_depth:\n"} {
		cfg, err := Parse([]byte(data), nil)
		if err != nil {
			t.Fatalf("Parse(%q): %v", data, err)
		}
		if cfg.NATS.MaxEventDepth != DefaultMaxEventDepth {
			t.Errorf("Parse(%q): max_event_depth %d, want the default %d", data, cfg.NATS.MaxEventDepth, DefaultMaxEventDepth)
		}
	}
}

// TestDeploymentDefault: deployment defaults to the host name, in Default
// and in a file that leaves it out, empty or null; a value is kept.
func TestDeploymentDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatalf("os.Hostname: %v", err)
	}
	if got := Default().Deployment; got != host {
		t.Errorf("Default().Deployment = %q, want the host name %q", got, host)
	}
	for data, want := range map[string]string{
		"":                             host,
		"deployment:\n":                host,
		"deployment: \"\"\n":           host,
		"deployment: ${EMPTY}\n":       host,
		"deployment: eu-west_1.prod\n": "eu-west_1.prod",
		"deployment: ${SET_VAR}\n":     "from-env",
	} {
		cfg, err := Parse([]byte(data), lookup(testEnv))
		if err != nil {
			t.Errorf("Parse(%q): %v", data, err)
			continue
		}
		if cfg.Deployment != want {
			t.Errorf("Parse(%q): deployment %q, want %q", data, cfg.Deployment, want)
		}
	}
}

// TestRecordsDefaults: export records are kept 30 days, at most 1000 per
// definition, unless the file says otherwise; an empty records block keeps
// the defaults, and explicit zeros (a rule turned off) are kept.
func TestRecordsDefaults(t *testing.T) {
	if got, want := Default().Records, (Records{KeepLast: 1000, MaxAge: 720 * time.Hour}); got != want {
		t.Errorf("Default().Records = %+v, want %+v", got, want)
	}
	for data, want := range map[string]Records{
		"records:\n":                            {KeepLast: 1000, MaxAge: 720 * time.Hour},
		"records: {keep_last: 10}\n":            {KeepLast: 10, MaxAge: 720 * time.Hour},
		"records: {max_age: 24h}\n":             {KeepLast: 1000, MaxAge: 24 * time.Hour},
		"records: {keep_last: 0, max_age: 0}\n": {},
	} {
		cfg, err := Parse([]byte(data), nil)
		if err != nil {
			t.Errorf("Parse(%q): %v", data, err)
			continue
		}
		if cfg.Records != want {
			t.Errorf("Parse(%q): records %+v, want %+v", data, cfg.Records, want)
		}
	}
	c := Default()
	c.Records = Records{KeepLast: -1, MaxAge: -time.Second}
	err := c.Validate()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate: %v, want *Errors", err)
	}
	want := []Problem{
		{Path: "records.keep_last", Message: "must not be negative (got -1; 0 keeps any number of records)"},
		{Path: "records.max_age", Message: "must not be negative (got -1s; 0 keeps records of any age)"},
	}
	if diff := cmp.Diff(want, errs.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// TestMaxAdhocExportsDefault: at most 4 ad-hoc exports at once, in
// Default and in a file that leaves the key out; a value is kept.
func TestMaxAdhocExportsDefault(t *testing.T) {
	if got := Default().HTTP.MaxAdhocExports; got != 4 || DefaultMaxAdhocExports != 4 {
		t.Errorf("Default().HTTP.MaxAdhocExports = %d (DefaultMaxAdhocExports %d), want 4", got, DefaultMaxAdhocExports)
	}
	for data, want := range map[string]int{
		"http:\n":                                  4,
		"http: {listen: 127.0.0.1:9090}\n":         4,
		"http: {max_adhoc_exports: 12}\n":          12,
		"http: {max_adhoc_exports: }\n":            4,
		"http:\n  max_adhoc_exports: 1\nlog: {}\n": 1,
	} {
		cfg, err := Parse([]byte(data), nil)
		if err != nil {
			t.Errorf("Parse(%q): %v", data, err)
			continue
		}
		if cfg.HTTP.MaxAdhocExports != want {
			t.Errorf("Parse(%q): max_adhoc_exports %d, want %d", data, cfg.HTTP.MaxAdhocExports, want)
		}
	}
}

// TestStateDefaults: the local state store defaults to ./data/state, in
// Default and in a file that leaves state.dir out or empty (null); a value
// is kept, and an explicit empty string is a problem.
func TestStateDefaults(t *testing.T) {
	if got := Default().State; got != (State{Dir: "./data/state"}) || DefaultStateDir != "./data/state" {
		t.Errorf("Default().State = %+v (DefaultStateDir %q), want dir ./data/state", got, DefaultStateDir)
	}
	for data, want := range map[string]string{
		"":                            DefaultStateDir,
		"state:\n":                    DefaultStateDir,
		"state: {}\n":                 DefaultStateDir,
		"state:\n  dir:\n":            DefaultStateDir,
		"state: {dir: /var/lib/x}\n":  "/var/lib/x",
		"state:\n  dir: ${SET_VAR}\n": "from-env",
	} {
		cfg, err := Parse([]byte(data), lookup(testEnv))
		if err != nil {
			t.Errorf("Parse(%q): %v", data, err)
			continue
		}
		if cfg.State.Dir != want {
			t.Errorf("Parse(%q): state.dir %q, want %q", data, cfg.State.Dir, want)
		}
	}
	const empty = "state.dir: must name a folder (the local state store; leave the key out for the default, ./data/state)"
	for _, data := range []string{"state: {dir: \"\"}\n", "state:\n  dir: ${EMPTY}\n"} {
		_, err := Parse([]byte(data), lookup(testEnv))
		var errs *Errors
		if !errors.As(err, &errs) {
			t.Fatalf("Parse(%q): %v, want *Errors", data, err)
		}
		want := []Problem{{Path: "state.dir", Message: strings.TrimPrefix(empty, "state.dir: "), Line: strings.Count(data, "\n")}}
		if diff := cmp.Diff(want, errs.Problems); diff != "" {
			t.Errorf("Parse(%q) problems (-want +got):\n%s", data, diff)
		}
	}
	c := Default()
	c.State.Dir = ""
	if err := c.Validate(); err == nil || err.Error() != empty {
		t.Errorf("Validate with an empty state.dir: %v, want %q", err, empty)
	}
	// Validate does not look at the disk: a folder that cannot exist is
	// CheckStateDir's business.
	c.State.Dir = "/dev/null/state"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate looked at the disk: %v", err)
	}
}

// TestCheckStateDir: a folder that is there and writable, or missing under
// a writable folder, is fine; a file in its place or on its way, a
// dangling link, and (when permissions apply) a folder this user cannot
// write are reported with what to do. Nothing is created or left behind.
func TestCheckStateDir(t *testing.T) {
	root := t.TempDir()
	mkdir := func(p string, mode os.FileMode) string {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		// Let t.TempDir's cleanup remove what is inside.
		t.Cleanup(func() { os.Chmod(p, 0o755) })
		return p
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := mkdir("existing", 0o755)
	if err := os.WriteFile(filepath.Join(existing, "MANIFEST-000001"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(root, "dangling")
	haveSymlink := os.Symlink(filepath.Join(root, "nowhere"), dangling) == nil

	type tc struct {
		name, dir string
		want      []string // substrings of the error; nil: no error
	}
	cases := []tc{
		{"existing folder", existing, nil},
		{"existing empty folder", mkdir("empty", 0o755), nil},
		{"missing folder", filepath.Join(root, "new"), nil},
		{"missing folders", filepath.Join(root, "a", "b", "c"), nil},
		{"missing under an existing one", filepath.Join(existing, "sub", "state"), nil},
		{"trailing slash", existing + "/", nil},
		{"empty", "", []string{"state.dir: must name a folder"}},
		{"a file in its place", file, []string{"state.dir " + file + ": is a file, not a folder: choose another folder or move the file away"}},
		{"a file on its way", filepath.Join(file, "state"), []string{
			"state.dir " + filepath.Join(file, "state") + ": " + file + " is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + file + " away"}},
		{"a file further up", filepath.Join(file, "a", "b"), []string{"state.dir " + filepath.Join(file, "a", "b") + ": " + file + " is a file, not a folder"}},
	}
	if haveSymlink {
		cases = append(cases, tc{"a dangling link", dangling, []string{
			"state.dir " + dangling + ": is a symbolic link to " + filepath.Join(root, "nowhere") + ", which does not exist: create its target, remove the link or choose another folder"}},
			tc{"under a dangling link", filepath.Join(dangling, "state"), []string{
				"state.dir " + filepath.Join(dangling, "state") + ": " + dangling + " is a symbolic link to"}})
	}
	if os.Geteuid() != 0 {
		uid := fmt.Sprintf("this user (uid %d)", os.Geteuid())
		readOnly := mkdir("read-only", 0o555)
		locked := mkdir("locked", 0o755)
		mkdir("locked/inner", 0o755)
		os.Chmod(locked, 0o000)
		cases = append(cases,
			tc{"a read-only folder", readOnly, []string{"state.dir " + readOnly + ": not writable by " + uid + ": choose another folder or fix its permissions"}},
			tc{"missing in a read-only folder", filepath.Join(readOnly, "state"), []string{
				"state.dir " + filepath.Join(readOnly, "state") + ": does not exist and cannot be created: " + readOnly + " is not writable by " + uid + ": create the folder, choose another one or fix the permissions of " + readOnly}},
			tc{"a write-only folder", mkdir("write-only", 0o333), []string{"not readable by " + uid}},
			tc{"behind a folder without access", filepath.Join(locked, "inner"), []string{
				"state.dir " + filepath.Join(locked, "inner") + ": cannot be reached by " + uid + ", as a folder above it does not let this user in"}},
			tc{"missing behind a folder without access", filepath.Join(locked, "inner", "state"), []string{
				"state.dir " + filepath.Join(locked, "inner", "state") + ": cannot be reached by " + uid}},
		)
	} else {
		t.Log("running as root: the permission cases are skipped (root may write anywhere)")
	}
	listing := func() []string {
		var paths []string
		filepath.WalkDir(root, func(p string, _ os.DirEntry, _ error) error {
			paths = append(paths, p)
			return nil
		})
		return paths
	}
	before := listing()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckStateDir(c.dir)
			t.Logf("CheckStateDir(%q) = %v", c.dir, err)
			switch {
			case c.want == nil && err != nil:
				t.Errorf("CheckStateDir(%q): %v", c.dir, err)
			case c.want != nil && err == nil:
				t.Errorf("CheckStateDir(%q) = nil, want an error with %q", c.dir, c.want)
			case c.want != nil:
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("CheckStateDir(%q) = %q, want it to contain %q", c.dir, err, w)
					}
				}
			}
			if diff := cmp.Diff(before, listing()); diff != "" {
				t.Errorf("CheckStateDir(%q) changed the disk (-before +after):\n%s", c.dir, diff)
			}
		})
	}
}

// TestCheckStateDirRelative: a relative folder is relative to the working
// directory, and the error names it as the file gives it.
func TestCheckStateDirRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := CheckStateDir(DefaultStateDir); err != nil {
		t.Errorf("CheckStateDir(%q) in an empty folder: %v", DefaultStateDir, err)
	}
	if _, err := os.Stat("data"); !os.IsNotExist(err) {
		t.Errorf("CheckStateDir created ./data (stat: %v)", err)
	}
	if err := os.WriteFile("x", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "state.dir ./x/state: x is a file, not a folder, so the folder cannot be created in it: choose another folder or move x away"
	if err := CheckStateDir("./x/state"); err == nil || err.Error() != want {
		t.Errorf("CheckStateDir(./x/state) = %v, want %q", err, want)
	}
}

// TestNewKeysValidate checks the bounds of nats.max_event_depth and the
// characters of deployment on a Config built in Go.
func TestNewKeysValidate(t *testing.T) {
	const segment = `use only letters, digits, ".", "_" and "-" ([A-Za-z0-9._-]+, not "." or "..")`
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []Problem // nil: valid
	}{
		{"depth 1", func(c *Config) { c.NATS.MaxEventDepth = 1 }, nil},
		{"depth 10000", func(c *Config) { c.NATS.MaxEventDepth = 10000 }, nil},
		{"depth 0", func(c *Config) { c.NATS.MaxEventDepth = 0 },
			[]Problem{{Path: "nats.max_event_depth", Message: "must be between 1 and 10000 (got 0)"}}},
		{"depth -3", func(c *Config) { c.NATS.MaxEventDepth = -3 },
			[]Problem{{Path: "nats.max_event_depth", Message: "must be between 1 and 10000 (got -3)"}}},
		{"depth 10001", func(c *Config) { c.NATS.MaxEventDepth = 10001 },
			[]Problem{{Path: "nats.max_event_depth", Message: "must be between 1 and 10000 (got 10001)"}}},
		{"max_adhoc_exports 1", func(c *Config) { c.HTTP.MaxAdhocExports = 1 }, nil},
		{"max_adhoc_exports 256", func(c *Config) { c.HTTP.MaxAdhocExports = 256 }, nil},
		{"max_adhoc_exports 0", func(c *Config) { c.HTTP.MaxAdhocExports = 0 },
			[]Problem{{Path: "http.max_adhoc_exports", Message: "must be between 1 and 256 (got 0; leave the key out for the default, 4)"}}},
		{"max_adhoc_exports 257", func(c *Config) { c.HTTP.MaxAdhocExports = 257 },
			[]Problem{{Path: "http.max_adhoc_exports", Message: "must be between 1 and 256 (got 257; leave the key out for the default, 4)"}}},
		{"deployment with dots", func(c *Config) { c.Deployment = "prod.eu-1_a" }, nil},
		{"deployment empty", func(c *Config) { c.Deployment = "" },
			[]Problem{{Path: "deployment", Message: "required (it defaults to the host name, which is unknown here)"}}},
		{"deployment with a slash", func(c *Config) { c.Deployment = "eu/1" },
			[]Problem{{Path: "deployment", Message: `"eu/1" is not valid: it names a URI path segment in completion events' source, so ` + segment}}},
		{"deployment with a space", func(c *Config) { c.Deployment = "eu 1" },
			[]Problem{{Path: "deployment", Message: `"eu 1" is not valid: it names a URI path segment in completion events' source, so ` + segment}}},
		{"deployment not ASCII", func(c *Config) { c.Deployment = "zürich" },
			[]Problem{{Path: "deployment", Message: `"zürich" is not valid: it names a URI path segment in completion events' source, so ` + segment}}},
		{"deployment dot", func(c *Config) { c.Deployment = "." },
			[]Problem{{Path: "deployment", Message: `"." is not valid: it names a URI path segment in completion events' source, so ` + segment}}},
		{"deployment dot dot", func(c *Config) { c.Deployment = ".." },
			[]Problem{{Path: "deployment", Message: `".." is not valid: it names a URI path segment in completion events' source, so ` + segment}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Deployment = "test"
			tc.edit(c)
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Validate: %v, want *Errors", err)
			}
			if diff := cmp.Diff(tc.want, errs.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRedactedPrintsNewKeys: check-config --print shows the newer keys.
func TestRedactedPrintsNewKeys(t *testing.T) {
	c := Default()
	c.Deployment = "eu-1"
	c.NATS.MaxEventDepth = 99
	c.State.Dir = "/var/lib/exportstream/state"
	out := c.Redacted()
	for _, want := range []string{"\n  max_event_depth: 99\n", "\ndeployment: eu-1\n", "\nstate:\n  dir: /var/lib/exportstream/state\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("Redacted output lacks %q:\n%s", want, out)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
	var errs *Errors
	if errors.As(err, &errs) {
		t.Errorf("Load of a missing file returned *Errors")
	}
}

// TestValidateStandalone checks Validate on a Config built in Go: no lines,
// problems in key order.
func TestValidateStandalone(t *testing.T) {
	c := Default()
	c.NATS.Replicas = 9
	c.Exports = []Export{{Name: "x", Project: "p", Source: Source{Project: true}, Completion: "all",
		Connection: "nope", Path: "no-slash", Coalesce: Coalesce{MaxDelay: time.Second}}}
	c.Log.Format = ""
	err := c.Validate()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Validate: %v, want *Errors", err)
	}
	want := []Problem{
		{Path: "nats.replicas", Message: "9 is out of range 1..5"},
		{Path: "exports[0].connection", Message: `no connection named "nope" (the connections are: local-disk)`},
		{Path: "exports[0].path", Message: `must end with "/"`},
		{Path: "log.format", Message: "required (one of json, text)"},
	}
	if diff := cmp.Diff(want, errs.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestExpand(t *testing.T) {
	env := lookup(map[string]string{"A": "x", "B_2": "y", "E": ""})
	for _, tc := range []struct {
		in, want string
		msgs     int
	}{
		{"plain", "plain", 0},
		{"$A and $", "$A and $", 0},
		{"${A}", "x", 0},
		{"${A}${B_2}-${E}.", "xy-.", 0},
		{"$${A}", "${A}", 0},
		{"$$${A}", "$${A}", 0},
		{"${A", "", 1},
		{"${MISSING}/${A}/${OTHER}", "/x/", 2},
		{"${9}", "", 1},
		{"${A:-default}", "", 1},
	} {
		got, msgs := expand(tc.in, env)
		if got != tc.want || len(msgs) != tc.msgs {
			t.Errorf("expand(%q) = %q, %q; want %q and %d messages", tc.in, got, msgs, tc.want, tc.msgs)
		}
	}
}

func TestProblemOrder(t *testing.T) {
	ps := []Problem{{Path: "c", Line: 0}, {Path: "b", Line: 5}, {Path: "a", Line: 2}, {Path: "d", Line: 5}}
	sortByLine(ps)
	var got []string
	for _, p := range ps {
		got = append(got, p.Path)
	}
	if diff := cmp.Diff([]string{"a", "b", "d", "c"}, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzParse: Parse never panics, returns either a config or *Errors, and a
// config it returns is valid.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		cfg, err := Parse(data, lookup(testEnv))
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Parse took %s", d)
		}
		if err != nil {
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.Problems) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse returned an invalid config: %v", err)
		}
		_ = cfg.Redacted()
	})
}

// TestHostileMerges: merge keys that refer to themselves or fan out
// exponentially, and aliases repeating a large mapping, are reported
// quickly, not expanded forever.
func TestHostileMerges(t *testing.T) {
	self := "exports:\n  - &a\n    name: a\n    <<: [*a, *a]\n"
	var fan strings.Builder
	fan.WriteString("x0: &x0 {name: a}\n")
	for i := 1; i < 40; i++ {
		fmt.Fprintf(&fan, "x%d: &x%d {<<: [*x%d, *x%d, *x%d]}\n", i, i, i-1, i-1, i-1)
	}
	fan.WriteString("exports:\n  - *x39\n")
	var wide strings.Builder
	wide.WriteString("exports:\n  - &e\n")
	for i := range 3000 {
		fmt.Fprintf(&wide, "    k%d: v\n", i)
	}
	for range 3000 {
		wide.WriteString("  - *e\n")
	}
	for name, data := range map[string]string{"self": self, "fan-out": fan.String(), "wide": wide.String()} {
		start := time.Now()
		_, err := Parse([]byte(data), nil)
		if err == nil {
			t.Errorf("%s: Parse succeeded", name)
		}
		// Generous: the point is bounded, not fast, and -race is slow.
		if d := time.Since(start); d > 60*time.Second {
			t.Errorf("%s: Parse took %s", name, d)
		}
		if name == "wide" && (err == nil || !strings.Contains(err.Error(), "too complex")) {
			t.Errorf("wide: no \"too complex\" problem")
		}
		if err != nil && len(err.(*Errors).Problems) > maxProblems+2 {
			t.Errorf("%s: %d problems, want at most %d", name, len(err.(*Errors).Problems), maxProblems+2)
		}
	}
}

// TestFormats: diffgram may be left out of formats (it is always
// written), an empty list is the default, and CheckFormats (the API's
// check of ad-hoc formats) agrees with Validate.
func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		formats []string
		want    string // "": valid
	}{
		{nil, ""},
		{[]string{}, ""},
		{[]string{"coco"}, ""},
		{[]string{"jsonl", "diffgram", "yolo", "coco"}, ""},
		{[]string{"coco", "coco"}, `"coco" is listed twice`},
		{[]string{"yolov8"}, `"yolov8" is not a format (did you mean "yolo"?); the formats are: diffgram, coco, yolo, jsonl (diffgram is always written)`},
		{[]string{""}, `"" is not a format; the formats are: diffgram, coco, yolo, jsonl (diffgram is always written)`},
	} {
		err := CheckFormats(tc.formats)
		if got := fmt.Sprint(err); tc.want == "" && err != nil || tc.want != "" && got != tc.want {
			t.Errorf("CheckFormats(%q) = %v, want %q", tc.formats, err, tc.want)
		}
		c := Default()
		c.Exports = []Export{defaultExport()}
		e := &c.Exports[0]
		e.Name, e.Project, e.Source, e.Connection, e.Path, e.Formats = "x", "p", Source{Project: true}, "local-disk", "x/", tc.formats
		verr := c.Validate()
		if (verr == nil) != (tc.want == "") {
			t.Errorf("Validate with formats %q = %v, want valid %t", tc.formats, verr, tc.want == "")
		} else if verr != nil && !strings.HasPrefix(verr.Error(), "exports[0].formats[") {
			t.Errorf("Validate with formats %q = %v, want a problem at exports[0].formats[i]", tc.formats, verr)
		}
	}
}
