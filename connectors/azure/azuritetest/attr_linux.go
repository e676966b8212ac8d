package azuritetest

import "syscall"

// sysProcAttr puts Azurite in a process group of its own, so that Stop can
// kill all of it, and has the kernel kill it when the test binary dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
