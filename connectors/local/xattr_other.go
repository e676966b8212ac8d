//go:build !linux

package local

import "os"

// On systems other than Linux the content type is not stored: it is
// guessed from the key's extension.
func setContentType(f *os.File, ct string) error { return nil }

func storedContentType(path string) string { return "" }
