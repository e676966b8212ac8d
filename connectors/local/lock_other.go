//go:build !unix

package local

import "io/fs"

// fileLock does nothing where flock is unavailable: IfMatch is then a
// compare-and-swap only among the writers of one process.
type fileLock struct{}

func openFileLock(string) (*fileLock, error) { return &fileLock{}, nil }

func (*fileLock) lock() error  { return nil }
func (*fileLock) unlock()      {}
func (*fileLock) close() error { return nil }

// inode is 0 where the OS has no inode numbers.
func inode(fs.FileInfo) uint64 { return 0 }
