//go:build unix

package azuritetest

import (
	"os"
	"syscall"
)

// terminate asks the process pid to shut down gracefully (SIGTERM).
func terminate(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }

// killGroup kills the process group led by pid (SIGKILL): Azurite and
// anything it started.
func killGroup(pid int) { syscall.Kill(-pid, syscall.SIGKILL) }

// lockFile takes an exclusive lock on the file at path (creating it),
// waiting for it, and returns the function that releases it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
