//go:build unix && !linux

package azuritetest

import "syscall"

// sysProcAttr puts Azurite in a process group of its own, so that Stop can
// kill all of it.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
