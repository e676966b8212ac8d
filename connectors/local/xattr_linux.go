package local

import (
	"errors"
	"os"
	"syscall"
)

// contentTypeAttr is the extended attribute that keeps an object's content
// type on the file itself (it follows the inode through link and rename).
const contentTypeAttr = "user.exportstream.content_type"

// setContentType stores ct on f; a file system without user extended
// attributes (some tmpfs, NFS) is not an error: the type is then guessed
// from the key's extension.
func setContentType(f *os.File, ct string) error {
	err := syscall.Setxattr(f.Name(), contentTypeAttr, []byte(ct), 0)
	if errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) {
		return nil
	}
	return err
}

// storedContentType reads the content type stored on the file at path, or
// "" if there is none.
func storedContentType(path string) string {
	buf := make([]byte, 256)
	n, err := syscall.Getxattr(path, contentTypeAttr, buf)
	if err != nil || n <= 0 {
		return ""
	}
	return string(buf[:n])
}
