package events_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/events"
)

// validCases are JSON texts at the edges of the grammar, valid or not.
var validCases = []string{
	``, ` `, `{}`, ` {} `, `[]`, `[ ]`, `{ }`, `{`, `}`, `[`, `]`, `[}`, `{]`,
	`""`, `"`, `"\"`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\x"`, `"\u00e9"`, `"\u00E9"`, `"\u00g9"`, `"\u00e"`,
	`"\u"`, "\"\x01\"", "\"\x1f\"", "\"\x7f\"", "\"\xff\"", "\"tab\there\"", `"é"`,
	`0`, `-0`, `-`, `01`, `-01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `1.5e3`, `-1.5E-3`, `+1`,
	`1 2`, `[1 2]`, `[1,]`, `[,1]`, `[1,2]`, `{"a":1,}`, `{"a" 1}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `{,"a":1}`,
	`{"a":1,"a":2}`, `{"a":[1,{"b":null}],"c":true,"d":false}`, `true`, `tru`, `truex`, `false`, `fals`, `null`,
	`nul`, `nulll`, `NaN`, `Infinity`, "\t\n\r {} \r\n\t", "\v{}", "\u00a0{}", `{"a":1}x`, `{"a":1}}`, `[[[]]]`,
	`[[[]]`, `{"a":{"b":{"c":{}}}}`, `"a" "b"`, `{"":""}`, `{"\u0000":0}`, `[-]`, `[-a]`, `[1e5e5]`, `[0x10]`,
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	check := func(b []byte) {
		t.Helper()
		if got, want := events.ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %t, json.Valid says %t", b, got, want)
		}
	}
	for _, c := range validCases {
		check([]byte(c))
	}
	// Nesting at encoding/json's limit (10000) and one above it.
	for _, n := range []int{9999, 10000, 10001} {
		check([]byte(strings.Repeat("[", n) + strings.Repeat("]", n)))
		check([]byte(strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n)))
	}
	// Every body of both examples and of the bad-input table, whole, cut
	// short at every byte, and with every byte replaced by each of a few
	// bytes that matter to the grammar.
	var bodies [][]byte
	for _, name := range []string{"street-scenes-ordered", "street-scenes-chaos"} {
		for _, l := range readExample(t, name) {
			bodies = append(bodies, l.body)
		}
	}
	for _, tc := range badInputs {
		bodies = append(bodies, tc.body)
	}
	if len(bodies) < 20 {
		t.Fatalf("only %d bodies to check", len(bodies))
	}
	swaps := []byte(`"\{}[],:0-.e+ tfnu` + "\x00\x1f")
	for _, body := range bodies[:min(len(bodies), 60)] {
		check(body)
		for i := range body {
			check(body[:i])
			for _, c := range swaps {
				body := bytes.Clone(body)
				body[i] = c
				check(body)
			}
		}
	}
}

// FuzzValidJSON holds validJSON to json.Valid on any input.
func FuzzValidJSON(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	for _, tc := range badInputs {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := events.ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %t, json.Valid says %t", b, got, want)
		}
	})
}

func BenchmarkValidJSON(b *testing.B) {
	lines := readExample(b, "street-scenes-ordered")
	var n int64
	for _, l := range lines {
		n += int64(len(l.body))
	}
	for _, bc := range []struct {
		name  string
		valid func([]byte) bool
	}{{"events", events.ValidJSON}, {"encoding-json", json.Valid}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				for _, l := range lines {
					if !bc.valid(l.body) {
						b.Fatal("invalid")
					}
				}
			}
		})
	}
}
