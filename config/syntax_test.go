package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// TestTabs: a tab in the indentation is named, at the line it is on
// (the parser reports some a line early, or without a line); the parser's
// other messages, and tabs YAML allows, are left alone.
func TestTabs(t *testing.T) {
	const tabs = "tabs are not allowed in YAML indentation: indent with spaces"
	raw := Problem{Message: "raw"}
	for _, tc := range []struct {
		data string
		want Problem // zero: no syntax problem
	}{
		{"nats:\n\turl: nats://n:4222\n", Problem{Line: 2, Message: "line 2: " + tabs}},
		{"nats:\n  url: nats://n:4222\n\tstream: S\n", Problem{Line: 3, Message: "line 3: " + tabs}},
		{"nats:\n  url: nats://n:4222\n  \tstream: S\n", Problem{Line: 3, Message: "line 3: " + tabs}},
		{"exports:\n  - name: a\n\t  project: p\n", Problem{Line: 3, Message: "line 3: " + tabs}},
		{"\tnats: {}\n", Problem{Line: 1, Message: "line 1: " + tabs}},
		{"exports:\n\t- name: a\n", Problem{Line: 2, Message: "line 2: " + tabs}},
		{"# a\n# b\nnats:\n  embedded:\n    listen: a\n\t\tstore_dir: b\n", Problem{Line: 6, Message: "line 6: " + tabs}},
		{"nats:\n\tx: 1\nlog: `y\n", Problem{Line: 2, Message: "line 2: " + tabs}},
		// Not a tab: the parser's words.
		{"nats: @x\n", raw},
		{"nats:\n  url: x\n  stream: @x\n\t# tab\n", raw},
		{"nats: {url: \"nats://n:4222\n", raw},
		// Tabs YAML allows: after a key, inside a flow list.
		{"nats:\n  url:\tnats://n:4222\n", Problem{}},
		{"nats:\n  subjects: [\n\ta.>]\n", Problem{}},
	} {
		_, err := Parse([]byte(tc.data), nil)
		var errs *Errors
		if tc.want == (Problem{}) {
			if err != nil {
				t.Errorf("Parse(%q): %v", tc.data, err)
			}
			continue
		}
		if !errors.As(err, &errs) || len(errs.Problems) != 1 {
			t.Errorf("Parse(%q): %v, want one problem", tc.data, err)
			continue
		}
		if tc.want == raw {
			var n yaml.Node
			yerr := yaml.Unmarshal([]byte(tc.data), &n)
			if yerr == nil {
				t.Fatalf("yaml.Unmarshal(%q) succeeded", tc.data)
			}
			tc.want = Problem{Message: strings.TrimPrefix(yerr.Error(), "yaml: ")}
			if strings.HasPrefix(tc.want.Message, "line ") {
				tc.want.Line = errs.Problems[0].Line // as the parser said; checked in TestBadFiles
			}
		}
		if diff := cmp.Diff(tc.want, errs.Problems[0]); diff != "" {
			t.Errorf("Parse(%q) (-want +got):\n%s", tc.data, diff)
		}
	}
}
