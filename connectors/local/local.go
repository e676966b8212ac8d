// Package local is a connectors.Bucket backed by a folder on disk, for the
// embedded default setup and for tests.
//
// It keeps the connectors.Bucket contract with ordinary file operations:
//
//   - A Writer streams into a temporary file under "<dir>/.tmp/" (hidden from
//     List; keys whose first element is ".tmp" are refused); on Linux it asks
//     the kernel to start writing each 4 MiB to disk as it goes, without
//     waiting for it (sync_file_range). Close fsyncs the file, then
//     publishes it atomically: os.Link for IfAbsent (so an existing key is
//     never replaced, and ErrExists is returned), os.Rename otherwise.
//     The directory is fsynced after the publish. Readers see the old file or
//     the new one, never a partial one. Abort, or a cancelled context, removes
//     the temporary file and nothing becomes visible.
//   - Publishing (and Delete) runs under a per-bucket lock: a mutex in the
//     process plus, on Unix, an flock on "<dir>/.tmp/.lock" so that several
//     processes sharing the folder also see IfMatch as a compare-and-swap.
//   - The ETag is cheap and needs no hashing: the hex of the file's size,
//     modification time in nanoseconds and inode number ("<size>-<mtime>-<ino>").
//     Every successful Close stamps the file with the current time at
//     nanosecond precision, so a rewrite always changes the ETag, even with
//     the same content and the same size.
//   - List walks the folder in ascending key order (byte-wise, as S3 does),
//     without collecting the whole listing in memory.
//
// Keys are slash-separated and map to filepath.FromSlash(key) under the
// folder. Keys that are empty, absolute, contain "." or ".." elements, empty
// elements ("a//b"), a trailing slash, or names the OS cannot represent, are
// refused with an error wrapping ErrInvalidKey. Because keys are files, a key
// cannot also be a "directory" of other keys: writing "a" when "a/b" exists
// (or the reverse) fails. WriteOptions.ContentType is kept in the file's
// "user.exportstream.content_type" extended attribute on Linux; where
// there is none, Attributes guesses it from the key's extension.
//
// Signed URLs (see signed.go) are HMAC-signed links served by Handler.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/exportstream/exportstream/connectors"
)

// tmpDirName is the folder inside the bucket's root that holds writes in
// progress and the lock file. It is never listed.
const tmpDirName = ".tmp"

// filePerm is the mode of published objects.
const filePerm = 0o644

// ErrInvalidKey is returned (wrapped) for keys that cannot name a file
// inside the bucket's folder.
var ErrInvalidKey = errors.New("invalid key")

// Bucket is a folder used as a connectors.Bucket. Create it with New. All
// methods are safe for concurrent use.
type Bucket struct {
	*connectors.Portable
	d *driver
}

// driver is the provider's side of Bucket (see connectors.Driver).
type driver struct {
	opts   Options
	dir    string // absolute, cleaned
	tmpDir string
	mu     sync.Mutex // serializes publishes and deletes within the process
	lock   *fileLock  // serializes them across processes (nil where unsupported)
}

var (
	_ connectors.Bucket = (*Bucket)(nil)
	_ connectors.Driver = (*driver)(nil)
)

// New returns a Bucket rooted at dir, creating dir (and its parents) if
// needed. Temporary files left in dir/.tmp by a crashed process (not
// written to for StaleTemp) are removed; younger ones may belong to a
// write in progress in another process and are left alone.
func New(dir string) (*Bucket, error) { return NewWithOptions(dir, Options{}) }

// Options configure the signed URLs of a Bucket.
type Options struct {
	// BaseURL is where Handler is reachable, for example
	// "http://127.0.0.1:8080/files/local-disk"; SignedURL appends the key.
	BaseURL string
	// SignKey is the HMAC key of signed URLs. Without it (or BaseURL),
	// SignedURL returns ErrNotSupported.
	SignKey []byte
}

// newDriver builds the driver NewWithOptions wraps.
func newDriver(dir string, opts Options) (*driver, error) {
	if dir == "" {
		return nil, errors.New("local: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	tmp := filepath.Join(abs, tmpDirName)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("local: create %s: %w", tmp, mapErr(err))
	}
	lock, err := openFileLock(filepath.Join(tmp, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("local: %w", mapErr(err))
	}
	removeStaleTemps(tmp, time.Now().Add(-StaleTemp))
	return &driver{opts: opts, dir: abs, tmpDir: tmp, lock: lock}, nil
}

// NewWithOptions is New with signed URLs configured.
func NewWithOptions(dir string, opts Options) (*Bucket, error) {
	d, err := newDriver(dir, opts)
	if err != nil {
		return nil, err
	}
	return &Bucket{Portable: connectors.NewPortable("local", d), d: d}, nil
}

// StaleTemp is how long a temporary file must have gone unwritten before
// New removes it as left over by a crash.
const StaleTemp = time.Hour

func removeStaleTemps(tmp string, before time.Time) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() == ".lock" || e.IsDir() {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(before) {
			_ = os.Remove(filepath.Join(tmp, e.Name()))
		}
	}
}

// Dir returns the bucket's absolute root folder.
func (b *Bucket) Dir() string { return b.d.dir }

// path validates key and returns its file path.
func (b *driver) path(key string) (string, error) {
	if key == "" || key == "." || !fs.ValidPath(key) {
		return "", fmt.Errorf("local: key %q: %w", key, ErrInvalidKey)
	}
	if first, _, _ := strings.Cut(key, "/"); first == tmpDirName {
		return "", fmt.Errorf("local: key %q: %w: %q is reserved", key, ErrInvalidKey, tmpDirName+"/")
	}
	rel, err := filepath.Localize(key)
	if err != nil {
		return "", fmt.Errorf("local: key %q: %w: %v", key, ErrInvalidKey, err)
	}
	return filepath.Join(b.dir, rel), nil
}

// publishLock takes the bucket's lock; the returned func releases it.
func (b *driver) publishLock() (func(), error) {
	b.mu.Lock()
	if err := b.lock.lock(); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("local: lock: %w", err)
	}
	return func() {
		b.lock.unlock()
		b.mu.Unlock()
	}, nil
}

// NewWriter starts writing key into a temporary file. See
// connectors.Bucket.NewWriter for the contract (connectors.Portable has
// checked ctx and opts). An invalid key returns an error wrapping
// ErrInvalidKey.
// An IfMatch write on a missing key fails with an error wrapping both
// ErrPrecondition and ErrNotFound, as S3 does.
func (b *driver) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	final, err := b.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(b.tmpDir, "w-*")
	if err != nil {
		return nil, fmt.Errorf("local: write %q: %w", key, mapErr(err))
	}
	return &writer{b: b, ctx: ctx, key: key, final: final, opts: opts, f: f}, nil
}

// NewReader opens key. If key does not exist, the error wraps
// connectors.ErrNotFound.
func (b *driver) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := b.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: read %q: %w", key, err)
	}
	f, _, err := b.openObject(key, p)
	if err != nil {
		return nil, fmt.Errorf("local: read %q: %w", key, err)
	}
	return f, nil
}

// openObject opens the regular file of key (at p, from path) for reading.
// Symbolic links are not objects (List skips them): a key whose file, or
// any folder on the way to it inside the bucket's folder, is a symbolic
// link is not found, so that a link placed in the folder never serves a
// file from elsewhere. The file is opened through an os.Root on the
// folder, so a link swapped in meanwhile cannot lead outside it either.
// Errors wrap connectors.ErrNotFound for a missing key or a link.
func (b *driver) openObject(key, p string) (*os.File, fs.FileInfo, error) {
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return nil, nil, mapErr(err)
	}
	defer root.Close()
	rel, err := filepath.Rel(b.dir, p)
	if err != nil {
		return nil, nil, err
	}
	elems := strings.Split(key, "/")
	for i := range elems {
		fi, err := root.Lstat(filepath.Join(elems[:i+1]...))
		if err != nil {
			return nil, nil, mapErr(err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, nil, fmt.Errorf("%w: %s is a symbolic link", connectors.ErrNotFound, strings.Join(elems[:i+1], "/"))
		}
	}
	f, err := root.Open(rel)
	if err != nil {
		return nil, nil, mapErr(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, mapErr(err)
	}
	// The file opened is the one checked, not a link put there since.
	if last, err := root.Lstat(rel); err != nil || !fi.Mode().IsRegular() || !os.SameFile(fi, last) {
		f.Close()
		return nil, nil, fmt.Errorf("%w: not a regular file", connectors.ErrNotFound)
	}
	return f, fi, nil
}

// Attributes stats key. If key does not exist, the error wraps
// connectors.ErrNotFound.
func (b *driver) Attributes(ctx context.Context, key string) (connectors.Attributes, error) {
	p, err := b.path(key)
	if err != nil {
		return connectors.Attributes{}, err
	}
	if err := ctx.Err(); err != nil {
		return connectors.Attributes{}, fmt.Errorf("local: attributes %q: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return connectors.Attributes{}, fmt.Errorf("local: attributes %q: %w", key, mapErr(err))
	}
	if !fi.Mode().IsRegular() {
		return connectors.Attributes{}, fmt.Errorf("local: attributes %q: %w", key, connectors.ErrNotFound)
	}
	a := attributes(key, fi)
	a.ContentType = contentType(p, key)
	return a, nil
}

// List calls fn for every file whose key starts with prefix, in ascending
// byte-wise key order. It walks only the directories that can hold such
// keys, one directory listing in memory per level.
func (b *driver) List(ctx context.Context, prefix string, fn func(connectors.Attributes) bool) error {
	// Start at the deepest directory that every matching key lies under.
	start := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
		if _, err := b.path(start); err != nil {
			return nil // no valid key can start with this prefix
		}
	}
	_, err := b.walk(ctx, start, prefix, fn)
	if err != nil {
		return fmt.Errorf("local: list %q: %w", prefix, err)
	}
	return nil
}

// walk lists the directory rel (a key prefix without trailing slash, "" for
// the root) and reports whether the caller should go on.
func (b *driver) walk(ctx context.Context, rel, prefix string, fn func(connectors.Attributes) bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	dir := b.dir
	if rel != "" {
		dir = filepath.Join(b.dir, filepath.FromSlash(rel))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return true, nil // removed meanwhile, or a file: nothing below it
		}
		return false, mapErr(err)
	}
	type entry struct {
		sortKey string // name, plus "/" for a directory: sorts subtrees where their keys go
		key     string
		dir     bool
	}
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if rel == "" && name == tmpDirName {
			continue
		}
		key := name
		if rel != "" {
			key = rel + "/" + name
		}
		isDir := e.IsDir()
		if !isDir && !e.Type().IsRegular() {
			continue // symlinks, sockets...: not objects
		}
		if isDir {
			// Descend only if keys below can match: "key/" starts with
			// prefix, or prefix goes deeper into "key/".
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				continue
			}
			list = append(list, entry{sortKey: name + "/", key: key, dir: true})
			continue
		}
		if strings.HasPrefix(key, prefix) {
			list = append(list, entry{sortKey: name, key: key})
		}
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.sortKey, b.sortKey) })
	for _, e := range list {
		if e.dir {
			more, err := b.walk(ctx, e.key, prefix, fn)
			if err != nil || !more {
				return more, err
			}
			continue
		}
		fi, err := os.Stat(filepath.Join(b.dir, filepath.FromSlash(e.key)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since ReadDir
			}
			return false, mapErr(err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if !fn(attributes(e.key, fi)) {
			return false, nil
		}
	}
	return true, nil
}

// Delete removes key. A missing key is not an error. Empty parent
// directories are left in place.
func (b *driver) Delete(ctx context.Context, key string) error {
	p, err := b.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: delete %q: %w", key, err)
	}
	unlock, err := b.publishLock()
	if err != nil {
		return err
	}
	defer unlock()
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(mapErr(err), connectors.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("local: delete %q: %w", key, mapErr(err))
	}
	if fi.IsDir() {
		return nil // a "directory" of other keys is not an object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: delete %q: %w", key, mapErr(err))
	}
	return syncDir(filepath.Dir(p))
}

// Close releases the lock file. Writers still open may fail afterwards.
func (b *driver) Close() error {
	return b.lock.close()
}

func attributes(key string, fi fs.FileInfo) connectors.Attributes {
	return connectors.Attributes{
		Key:     key,
		Size:    fi.Size(),
		ETag:    etag(fi),
		ModTime: fi.ModTime(),
	}
}

// etag is "<size>-<mtime ns>-<inode>" in hex (inode 0 where the OS has none).
func etag(fi fs.FileInfo) string {
	return fmt.Sprintf("%x-%x-%x", fi.Size(), fi.ModTime().UnixNano(), inode(fi))
}

// mapErr wraps the connectors sentinels around OS errors, keeping the cause.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", connectors.ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", connectors.ErrPermission, err)
	}
	return err
}

// permErr wraps connectors.ErrPermission around permission errors only; on
// the write path a missing or non-directory parent is not "not found".
func permErr(err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %w", connectors.ErrPermission, err)
	}
	return err
}

// syncDir fsyncs a directory so that a rename or link in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("local: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("local: sync %s: %w", dir, err)
	}
	return nil
}

// writer streams into a temporary file; Close publishes it.
type writer struct {
	b     *driver
	ctx   context.Context
	key   string
	final string
	opts  connectors.WriteOptions

	mu   sync.Mutex
	f    *os.File // nil once closed or aborted
	done bool
	err  error // result of Close, returned again by later calls
	// written is how many bytes were written, queued how many of them
	// the kernel was asked to start writing to disk (startWriteback).
	written, queued int64
}

// writebackSize is how much a writer writes before it asks the kernel to
// start writing it to disk (Linux): the data goes to disk while the
// writer writes the rest, so the fsync in Close waits for the last few
// MiB instead of the whole object: an export's 175 MB Diffgram document
// took ~70 ms to fsync in Close, its four formats' 596 MB ~260 ms, the
// disk idle while they were written (pipeline's BenchmarkExportFormats,
// docs/performance.md).
const writebackSize = 4 << 20

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fmt.Errorf("local: write %q: writer is closed", w.key)
	}
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("local: write %q: %w", w.key, err)
	}
	n, err := w.f.Write(p)
	if err != nil {
		return n, fmt.Errorf("local: write %q: %w", w.key, mapErr(err))
	}
	if w.written += int64(n); w.written-w.queued >= writebackSize {
		startWriteback(w.f, w.queued, w.written-w.queued)
		w.queued = w.written
	}
	return n, nil
}

// Close fsyncs the temporary file and publishes it under the key, honouring
// IfAbsent (ErrExists) and IfMatch (ErrPrecondition). On any failure the
// temporary file is removed and the previous object stays in place.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return w.err
	}
	w.done = true
	if w.f == nil {
		w.err = fmt.Errorf("local: close %q: writer was aborted", w.key)
		return w.err
	}
	f := w.f
	w.f = nil
	tmp := f.Name()
	w.err = w.publish(f)
	f.Close()
	os.Remove(tmp) // after a link or a failure; after a rename it is already gone
	return w.err
}

func (w *writer) publish(f *os.File) error {
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, err)
	}
	// CreateTemp made the file private; published objects are world-readable
	// like any file written with the default umask.
	if err := f.Chmod(filePerm); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, permErr(err))
	}
	// A fresh nanosecond mtime makes every published version's ETag unique.
	now := time.Now()
	if err := os.Chtimes(f.Name(), now, now); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, permErr(err))
	}
	if err := setContentType(f, w.opts.ContentType); err != nil {
		return fmt.Errorf("local: write %q: content type: %w", w.key, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, err)
	}
	parent := filepath.Dir(w.final)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, permErr(err))
	}
	unlock, err := w.b.publishLock()
	if err != nil {
		return err
	}
	defer unlock()
	// Checked again under the lock: a cancelled write must not publish.
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("local: write %q: %w", w.key, err)
	}
	if fi, err := os.Lstat(w.final); err == nil && fi.IsDir() {
		return fmt.Errorf("local: write %q: a directory of other keys is in the way", w.key)
	}
	switch {
	case w.opts.IfAbsent:
		if err := os.Link(f.Name(), w.final); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("local: write %q: %w", w.key, connectors.ErrExists)
			}
			return fmt.Errorf("local: write %q: %w", w.key, permErr(err))
		}
	default:
		if w.opts.IfMatch != "" {
			fi, err := os.Stat(w.final)
			switch {
			case errors.Is(mapErr(err), connectors.ErrNotFound):
				return fmt.Errorf("local: write %q: %w: %w", w.key, connectors.ErrPrecondition, connectors.ErrNotFound)
			case err != nil:
				return fmt.Errorf("local: write %q: %w", w.key, mapErr(err))
			case !fi.Mode().IsRegular() || etag(fi) != w.opts.IfMatch:
				return fmt.Errorf("local: write %q: %w", w.key, connectors.ErrPrecondition)
			}
		}
		if err := os.Rename(f.Name(), w.final); err != nil {
			return fmt.Errorf("local: write %q: %w", w.key, permErr(err))
		}
	}
	return syncDir(parent)
}

// Abort removes the temporary file. It does nothing after Close.
func (w *writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	f.Close()
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local: abort %q: %w", w.key, err)
	}
	return nil
}
