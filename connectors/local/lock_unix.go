//go:build unix

package local

import (
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// fileLock is an exclusive flock on a file, shared by every process that
// opens the same bucket folder.
type fileLock struct {
	f    *os.File
	once sync.Once
	err  error
}

func openFileLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &fileLock{f: f}, nil
}

func (l *fileLock) lock() error {
	for {
		err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

func (l *fileLock) unlock() { syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN) }

func (l *fileLock) close() error {
	l.once.Do(func() { l.err = l.f.Close() })
	return l.err
}

// inode returns the file's inode number.
func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
