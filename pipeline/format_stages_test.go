package pipeline

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// failAfter is a writer that takes n bytes, then fails.
type failAfter struct {
	n   int
	err error
}

func (w *failAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

// TestFormatsWriteFails: when one format's writer fails (at its first
// write, or after some pieces), a pass writing every format returns that
// writer's error, and every stage it started has ended.
func TestFormatsWriteFails(t *testing.T) {
	s := NewState()
	applyAll(t, s, syntheticEvents(1000, 10)) // every output and batch spans several pieces
	d := &Definition{Name: "all", Project: "bench", Source: Source{Kind: SourceProject}, Completion: CompletionAll}
	before := runtime.NumGoroutine()
	for _, failing := range formatOrder {
		for _, after := range []int{0, 300 << 10} {
			t.Run(fmt.Sprintf("%s/after=%d", failing, after), func(t *testing.T) {
				boom := errors.New("boom")
				var outs []formatOut
				for _, f := range formatOrder {
					var w io.Writer = io.Discard
					if f == failing {
						w = &failAfter{n: after, err: boom}
					}
					outs = append(outs, formatOut{format: f, w: w})
				}
				var err error
				s.Read(func(v View) { _, err = buildPlan(v, d).renderFormats(outs, 42, formatsAt) })
				if !errors.Is(err, boom) {
					t.Errorf("err = %v, want the writer's", err)
				}
			})
		}
	}
	// The stages' goroutines end once they have closed done: give them a
	// moment to return.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the passes, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
