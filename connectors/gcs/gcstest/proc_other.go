//go:build !linux

package gcstest

import (
	"os"
	"syscall"
)

// sysProcAttr is empty off Linux: the server is one process, killed by
// its pid, and it outlives a test binary that dies without Main.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate kills the server (there is no portable gentler signal).
func terminate(p *os.Process) { _ = p.Kill() }

// kill kills the server.
func kill(p *os.Process) { _ = p.Kill() }
