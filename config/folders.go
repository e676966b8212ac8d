package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// CheckFolders tells whether the service can use every folder it writes
// to on this machine, as CheckFolder does, in the order of the keys:
// nats.embedded.store_dir (when nats.url is empty), each local
// connection's folder and the export folders in it
// (CheckLocalConnection), and state.dir. It returns one error per folder
// that cannot be used, nil when all can. Like CheckFolder it creates
// nothing and leaves nothing behind; Validate does not look at the disk.
func (c *Config) CheckFolders() []error {
	var errs []error
	if c.NATS.URL == "" {
		if err := CheckFolder("nats.embedded.store_dir", c.NATS.Embedded.StoreDir); err != nil {
			errs = append(errs, err)
		}
	}
	for i := range c.Connections {
		errs = append(errs, c.CheckLocalConnection(i)...)
	}
	if err := CheckStateDir(c.State.Dir); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// CheckLocalConnection tells whether the service can write to local
// connection i (c.Connections[i]): whether its folder can be used, as
// CheckFolder("connections[i].local.dir", dir) says, and, when it can, the
// folder of each export written to it (dir joined with the export's path,
// reported as "exports[j].path <folder>: ..."), which the service creates
// when it first writes there. It returns nil for a usable folder and for
// a connection that is not local.
func (c *Config) CheckLocalConnection(i int) []error {
	conn := c.Connections[i]
	if conn.Type != TypeLocal || conn.Local == nil {
		return nil
	}
	if err := CheckFolder(fmt.Sprintf("connections[%d].local.dir", i), conn.Local.Dir); err != nil {
		return []error{err}
	}
	var errs []error
	for j, e := range c.Exports {
		if e.Connection != conn.Name || e.Path == "" {
			continue
		}
		dir := filepath.Join(conn.Local.Dir, filepath.FromSlash(e.Path))
		if err := checkFolder(fmt.Sprintf("exports[%d].path %s", j, dir), dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// CheckStateDir tells whether the service can keep its local state store
// (state.dir) in dir: CheckFolder("state.dir", dir).
func CheckStateDir(dir string) error { return CheckFolder("state.dir", dir) }

// CheckFolder tells whether the service can use dir, the folder set at key
// (its YAML path, e.g. "state.dir" or "connections[0].local.dir"), to
// create files and folders in, and leaves nothing behind. An existing dir
// must be a directory this user can list and create files in: a
// temporary file is created in it and removed again. A missing dir is not
// created; its nearest existing parent must be a directory this user can
// create folders in (a temporary folder is created in it and removed
// again), so that the service's own MkdirAll succeeds. A relative dir is
// relative to the working directory, as for the service.
//
// The error starts with "<key> <dir>: " ("<key>: must name a folder" for
// an empty dir) and says what is wrong and what to do, e.g. "state.dir
// ./x/state: x is a file, not a folder, so the folder cannot be created
// in it: choose another folder or move x away". The verdicts: a file in
// the folder's place or on its way; a dangling symbolic link; a folder
// above it this user cannot enter; a folder this user cannot read or
// write; a missing folder whose nearest existing parent this user cannot
// create folders in (naming the missing parents); a read-only file
// system.
func CheckFolder(key, dir string) error {
	if dir == "" {
		return fmt.Errorf("%s: must name a folder", key)
	}
	return checkFolder(key+" "+dir, dir)
}

// checkFolder is CheckFolder with the errors' prefix, name, given whole.
func checkFolder(name, dir string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	target := filepath.Clean(dir)
	for p := target; ; {
		fi, err := os.Stat(p)
		switch {
		case err == nil && p == target:
			if !fi.IsDir() {
				return fail("is a file, not a folder: choose another folder or move the file away")
			}
			return checkWritableDir(p, fail)
		case err == nil:
			if !fi.IsDir() {
				return fail("%s is a file, not a folder, so the folder cannot be created in it: choose another folder or move %s away", p, p)
			}
			return checkParentDir(p, target, fail)
		case errors.Is(err, fs.ErrNotExist):
			if _, lerr := os.Lstat(p); lerr == nil {
				link, _ := os.Readlink(p)
				return fail("%sis a symbolic link to %s, which does not exist: create its target, remove the link or choose another folder", named(p, target), link)
			}
		case errors.Is(err, syscall.ENOTDIR):
			// A file on the way up; reported when the walk reaches it.
		case errors.Is(err, fs.ErrPermission):
			return fail("%scannot be reached by %s, as a folder above it does not let this user in: choose another folder or fix the permissions of the folders above it", named(p, target), thisUser())
		default:
			return fail("cannot be checked: %v", err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fail("no part of the path exists: choose another folder")
		}
		p = parent
	}
}

// checkWritableDir checks that the existing folder p can be listed and
// written, by creating and removing a temporary file in it.
func checkWritableDir(p string, fail func(string, ...any) error) error {
	d, err := os.Open(p)
	if err == nil {
		_, err = d.Readdirnames(1)
		d.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fail("not readable by %s: choose another folder or fix its permissions", thisUser())
		}
		return fail("cannot be read: %v", err)
	}
	f, err := os.CreateTemp(p, ".exportstream-check-*")
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fail("not writable by %s: choose another folder or fix its permissions", thisUser())
	case errors.Is(err, syscall.EROFS):
		return fail("on a read-only file system: choose a folder on a writable disk")
	case err != nil:
		return fail("cannot create a file in it: %v", err)
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fail("a test file was created but cannot be removed (%v): remove %s by hand and fix the folder's permissions", err, f.Name())
	}
	return nil
}

// checkParentDir checks that a folder can be created in the existing
// folder p, the nearest existing parent of the missing folder target, by
// creating and removing a temporary folder in it.
func checkParentDir(p, target string, fail func(string, ...any) error) error {
	tmp, err := os.MkdirTemp(p, ".exportstream-check-*")
	if err != nil {
		// Name the missing parents when there are any: "its parent x is
		// missing too" says why p matters.
		missing, folder := "", "folder"
		if parent := filepath.Dir(target); parent != p {
			missing, folder = fmt.Sprintf("its parent folder %s is missing too, and ", parent), "folders"
		}
		switch {
		case errors.Is(err, fs.ErrPermission):
			return fail("does not exist and cannot be created: %s%s is not writable by %s: create the %s, choose another one or fix the permissions of %s", missing, p, thisUser(), folder, p)
		case errors.Is(err, syscall.EROFS):
			return fail("does not exist and cannot be created: %s%s is on a read-only file system: choose a folder on a writable disk", missing, p)
		}
		return fail("does not exist and cannot be created in %s: %v", p, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fail("a test folder was created but cannot be removed (%v): remove %s by hand and fix the permissions of %s", err, tmp, p)
	}
	return nil
}

// named is "p " for a message about p, or "" when p is the folder itself
// (the message already starts with it).
func named(p, target string) string {
	if p == target {
		return ""
	}
	return p + " "
}

// thisUser names the user the process runs as, for error messages.
func thisUser() string {
	if uid := os.Geteuid(); uid >= 0 {
		return fmt.Sprintf("this user (uid %d)", uid)
	}
	return "this user"
}
