package pipeline

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRenderFormats renders an export of files × 10 box instances
// (the state of renderSetup, warm: the plan is built once, the instance
// fragments are cached after the first round) to io.Discard: the Diffgram
// document alone (render, as a Diffgram-only export does), each other
// format alone (a pass of renderFormats), and all four formats either in
// one pass (every format fed from one read of each entry, as
// Pipeline.writeObjects does) or in four passes (as it did until
// 2026-12-01, one bucket writer open at a time). Compare "diffgram" with
// "all-one-pass" (and "all-passes").
//
// Besides the time, cpu-ms/op is the process's CPU time (user and
// system, every thread: the stages of a formats pass run beside it, see
// format_stages.go) per round: on a machine whose second core is busy,
// the time of a formats pass tends to that.
func BenchmarkRenderFormats(b *testing.B) {
	for _, files := range []int{10_000, 100_000} {
		s, _, d := renderSetup(b, files)
		pl := s.buildPlan(d)
		at := time.Now()
		one := func(b *testing.B, formats ...string) {
			var outs []formatOut
			for _, f := range formats {
				outs = append(outs, formatOut{format: f, w: io.Discard})
			}
			if _, err := pl.renderFormats(outs, 1, at); err != nil {
				b.Fatal(err)
			}
		}
		cases := []struct {
			name string
			run  func(b *testing.B)
		}{
			{"diffgram", func(b *testing.B) {
				if _, err := pl.render(io.Discard, 1, at); err != nil {
					b.Fatal(err)
				}
			}},
			{"coco", func(b *testing.B) { one(b, FormatCOCO) }},
			{"yolo", func(b *testing.B) { one(b, FormatYOLO) }},
			{"jsonl", func(b *testing.B) { one(b, FormatJSONL) }},
			{"all-passes", func(b *testing.B) {
				if _, err := pl.render(io.Discard, 1, at); err != nil {
					b.Fatal(err)
				}
				for _, f := range formatOrder[1:] {
					one(b, f)
				}
			}},
			{"all-one-pass", func(b *testing.B) { one(b, formatOrder...) }},
		}
		for _, c := range cases {
			b.Run(fmt.Sprintf("files=%d/%s", files, c.name), func(b *testing.B) {
				b.ReportAllocs()
				cpu := cpuTime(b)
				for b.Loop() {
					c.run(b)
				}
				b.ReportMetric(float64(cpuTime(b)-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
