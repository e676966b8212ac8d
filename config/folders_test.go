package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCheckFolders: every folder the service writes to is checked, with
// its key: the embedded server's store (only when it is used), each local
// connection's folder, the folders of the exports written to a usable one,
// and state.dir. Cloud connections are not. Nothing is created.
func TestCheckFolders(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	usable := filepath.Join(root, "usable")
	if err := os.MkdirAll(filepath.Join(usable, "blocked"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A file where an export's folder would go.
	if err := os.WriteFile(filepath.Join(usable, "blocked", "by-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	c := Default()
	c.NATS.Embedded.StoreDir = filepath.Join(file, "nats")
	c.State.Dir = filepath.Join(root, "state") // missing, can be created
	c.Connections = []Connection{
		{Name: "in-place", Type: TypeLocal, Local: &Local{Dir: file}},
		{Name: "cloud", Type: TypeS3, S3: &S3{Bucket: "b", PartSize: DefaultPartSize}},
		{Name: "usable", Type: TypeLocal, Local: &Local{Dir: usable}},
		{Name: "missing", Type: TypeLocal, Local: &Local{Dir: filepath.Join(root, "new", "bucket")}},
	}
	export := func(name, conn, path string) Export {
		e := defaultExport()
		e.Name, e.Project, e.Source, e.Connection, e.Path = name, "p", Source{Project: true}, conn, path
		return e
	}
	c.Exports = []Export{
		export("on-file", "in-place", "a/"), // its connection is reported
		export("fine", "usable", "exports/fine/"),
		export("blocked", "usable", "blocked/by-file/sub/"),
		export("root", "usable", ""),
		export("cloud", "cloud", "blocked/by-file/"), // not on disk
		export("new", "missing", "exports/new/"),
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	byFile := filepath.Join(usable, "blocked", "by-file")
	want := []string{
		"nats.embedded.store_dir " + filepath.Join(file, "nats") + ": " + file + " is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + file + " away",
		"connections[0].local.dir " + file + ": is a file, not a folder: choose another folder or move the file away",
		"exports[2].path " + filepath.Join(byFile, "sub") + ": " + byFile + " is a file, not a folder, so the folder cannot be created in it: choose another folder or move " + byFile + " away",
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
	var got []string
	for _, err := range c.CheckFolders() {
		got = append(got, err.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CheckFolders (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, listing()); diff != "" {
		t.Errorf("CheckFolders changed the disk (-before +after):\n%s", diff)
	}

	// Per connection, as check-config --probe asks.
	for i, want := range [][]string{{want[1]}, nil, {want[2]}, nil} {
		var got []string
		for _, err := range c.CheckLocalConnection(i) {
			got = append(got, err.Error())
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("CheckLocalConnection(%d) (-want +got):\n%s", i, diff)
		}
	}

	// With a NATS server of its own, the embedded store is not used.
	c.NATS.URL = "nats://n:4222"
	if errs := c.CheckFolders(); len(errs) != 2 || strings.HasPrefix(errs[0].Error(), "nats.") {
		t.Errorf("CheckFolders with nats.url: %v, want the two connection problems only", errs)
	}
	// All usable: nothing to say.
	c.Connections[0].Local.Dir = filepath.Join(root, "other")
	c.Exports[2].Path = "blocked/sub/"
	if errs := c.CheckFolders(); errs != nil {
		t.Errorf("CheckFolders with usable folders: %v", errs)
	}
}

// TestCheckFolder: the key starts the verdict, an empty folder is named
// as such, and (when permissions apply) a missing folder whose parents are
// missing too says so.
func TestCheckFolder(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckFolder("connections[3].local.dir", ""); err == nil || err.Error() != "connections[3].local.dir: must name a folder" {
		t.Errorf("empty: %v", err)
	}
	want := "connections[3].local.dir " + file + ": is a file, not a folder: choose another folder or move the file away"
	if err := CheckFolder("connections[3].local.dir", file); err == nil || err.Error() != want {
		t.Errorf("a file: %v, want %q", err, want)
	}
	if err := CheckFolder("x", filepath.Join(root, "a", "b", "c")); err != nil {
		t.Errorf("missing folders under a writable one: %v", err)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: the permission cases are skipped (root may write anywhere)")
		return
	}
	ro := filepath.Join(root, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	uid := fmt.Sprintf("this user (uid %d)", os.Geteuid())
	dir := filepath.Join(ro, "data", "bucket")
	want = "connections[0].local.dir " + dir + ": does not exist and cannot be created: its parent folder " + filepath.Join(ro, "data") +
		" is missing too, and " + ro + " is not writable by " + uid + ": create the folders, choose another one or fix the permissions of " + ro
	if err := CheckFolder("connections[0].local.dir", dir); err == nil || err.Error() != want {
		t.Errorf("missing parents in a read-only folder: %v, want %q", err, want)
	}
	want = "connections[0].local.dir " + ro + ": not writable by " + uid + ": choose another folder or fix its permissions"
	if err := CheckFolder("connections[0].local.dir", ro); err == nil || err.Error() != want {
		t.Errorf("a read-only folder: %v, want %q", err, want)
	}
}
