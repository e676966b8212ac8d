package pipeline

import (
	"encoding/json"
	"testing"

	"github.com/exportstream/exportstream/events"
)

func TestObjectFields(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`{}`, nil},
		{`{"a":1,"b":"x,}","c":{"d":[1,{"e":"]"}]},"f":null,"g":true,"h":-1.5e3}`,
			[]string{`a=1`, `b="x,}"`, `c={"d":[1,{"e":"]"}]}`, `f=null`, `g=true`, `h=-1.5e3`}},
		{` { "a" : [ 1 , 2 ] , "b\"q" : "\\" } `, []string{`a=[ 1 , 2 ]`, `b"q="\\"`}},
		{`[1]`, nil},
		{`{"a":`, nil},
	} {
		var got []string
		for _, f := range events.Fields([]byte(tc.in)) {
			got = append(got, f.Key+"="+string(f.Val))
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %q, want %q", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: got %q, want %q", tc.in, got, tc.want)
			}
		}
	}
}

func FuzzObjectFields(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[{"c":"d"}],"e":"\"}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs := events.Fields(b)
		if !json.Valid(b) {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		// On a valid object every member is found, with a valid value.
		keys := map[string]bool{}
		for _, fl := range fs {
			keys[fl.Key] = true
			if !json.Valid(fl.Val) {
				t.Fatalf("invalid value %q for %q", fl.Val, fl.Key)
			}
		}
		if len(keys) != len(m) {
			t.Fatalf("%d distinct fields from an object of %d members", len(keys), len(m))
		}
	})
}

func TestUniqueKeys(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a":1,"b":{"c":[1,{"d":2}]}}`, `{"a":1,"b":{"c":[1,{"d":2}]}}`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`{"a":1,"b":2,"a":3}`, `{"b":2,"a":3}`},
		{`{"x":[{"k":1,"k":2},{"k":3}]}`, `{"x":[{"k":2},{"k":3}]}`},
		{`{"a":{"b":1,"b":{"c":1,"c":2}}}`, `{"a":{"b":{"c":2}}}`},
		{`{"\u0061":1,"a":2}`, `{"a":2}`},
		{`{"s":"{\"a\":1,\"a\":2}","t":[]}`, `{"s":"{\"a\":1,\"a\":2}","t":[]}`},
		{`[{"a":1},{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}]`,
			`[{"a":1},{"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}]`},
		{`7`, `7`},
		{`"a"`, `"a"`},
	} {
		if got := string(uniqueKeys([]byte(tc.in))); got != tc.want {
			t.Errorf("uniqueKeys(%s) = %s, want %s", tc.in, got, tc.want)
		}
		if got, want := repeatsKey([]byte(tc.in)), tc.in != tc.want; got != want {
			t.Errorf("repeatsKey(%s) = %t, want %t", tc.in, got, want)
		}
	}
}
