package connectors_test

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/exportstream/exportstream/connectors/local"
)

// TestInstrumentedLocalWriteFails: a local bucket whose disk refuses the
// data while it is written, as a full disk does (here a file size limit,
// RLIMIT_FSIZE, which holds for root too: EFBIG instead of ENOSPC). The
// Write fails, the caller aborts and never closes: the failed write is
// counted all the same. It sets a limit on the whole process, so it
// must not run in parallel with other tests.
func TestInstrumentedLocalWriteFails(t *testing.T) {
	lb, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	x, m := instrument(t, "disk", lb)
	if err := writeAsPipeline(t.Context(), x, "ok.json", []byte(`{}`), 1<<10); err != nil {
		t.Fatal(err)
	}
	m.wantGoodWrite(x)

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limited := old
	limited.Cur = 256 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limited); err != nil {
		t.Fatal(err)
	}
	err = writeAsPipeline(t.Context(), x, "full.json", bytes.Repeat([]byte("x"), 1<<20), 64<<10)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("a write beyond the file size limit succeeded")
	}
	m.wantFailedWrite(x, 0)
	if got := m.value("exportstream_bucket_errors_total", "abort"); got != 0 {
		t.Errorf("exportstream_bucket_errors_total{op=abort} = %v: the abort itself worked", got)
	}

	if err := writeAsPipeline(t.Context(), x, "again.json", []byte(`{}`), 1<<10); err != nil {
		t.Fatal(err)
	}
	m.wantGoodWrite(x)
}
