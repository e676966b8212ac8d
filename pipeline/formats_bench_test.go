package pipeline

import (
	"fmt"
	"io"
	"testing"
	"time"
)

// BenchmarkRenderFormats renders an export of files × 10 box instances
// (the state of renderSetup, warm: the plan is built once, the instance
// fragments are cached after the first round) to io.Discard: the Diffgram
// document alone (render, as a Diffgram-only export does), each other
// format alone (a pass of renderFormats), and all four formats either in
// one pass (every format fed from one read of each entry) or in four
// passes, as Pipeline.writeObjects does (one bucket writer open at a
// time). Compare "diffgram" with "all-passes" and "all-one-pass".
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
				for b.Loop() {
					c.run(b)
				}
			})
		}
	}
}
