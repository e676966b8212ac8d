package events_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/exportstream/exportstream/events"
)

type streamMsg struct {
	Subject string
	Body    string
	MsgID   string
}

func TestReadStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   string
		want    []streamMsg
		wantErr string // substring of the error; "" for none
	}{
		{
			name:  "empty input",
			input: "",
		},
		{
			name:  "only blank lines",
			input: "\n  \n\t\n\n",
		},
		{
			name: "messages, blank lines and ids",
			input: "a.b.c.d\t{\"id\":\"e-1\",\"x\":1}\n" +
				"\n" +
				"   \n" +
				"a.b.c.e\tnot json\n" +
				"a.b.c.f\t{\"id\":5}\n" +
				"a.b.c.g\t[\"id\",\"e-2\"]\n" +
				"a.b.c.h\t{\"x\":\"no id\"}\n" +
				"a.b.c.i\t{\"id\":\"e-3\"}", // no newline at the end
			want: []streamMsg{
				{"a.b.c.d", `{"id":"e-1","x":1}`, "e-1"},
				{"a.b.c.e", "not json", ""},
				{"a.b.c.f", `{"id":5}`, ""},
				{"a.b.c.g", `["id","e-2"]`, ""},
				{"a.b.c.h", `{"x":"no id"}`, ""},
				{"a.b.c.i", `{"id":"e-3"}`, "e-3"},
			},
		},
		{
			name:  "only the first tab separates",
			input: "s.t\tbody\twith\ttabs\n",
			want:  []streamMsg{{"s.t", "body\twith\ttabs", ""}},
		},
		{
			name:  "empty body",
			input: "s.t\t\n",
			want:  []streamMsg{{"s.t", "", ""}},
		},
		{
			name:    "line without a tab",
			input:   "s.t\t{\"id\":\"e-1\"}\n\ns.u {\"id\":\"e-2\"}\ns.v\t{}\n",
			want:    []streamMsg{{"s.t", `{"id":"e-1"}`, "e-1"}},
			wantErr: "line 3: no tab",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []streamMsg
			err := events.ReadStream(strings.NewReader(tc.input), func(subject string, body []byte, msgID string) error {
				got = append(got, streamMsg{subject, string(body), msgID})
				return nil
			})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ReadStream: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ReadStream error = %v, want one containing %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadStreamCallbackError checks an error from fn stops the read and
// comes back wrapped with the line number.
func TestReadStreamCallbackError(t *testing.T) {
	errStop := errors.New("stop")
	calls := 0
	err := events.ReadStream(strings.NewReader("a.b\t{}\n\nc.d\t{}\ne.f\t{}\n"), func(string, []byte, string) error {
		calls++
		if calls == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("ReadStream = %v, want it to wrap fn's error", err)
	}
	if !strings.Contains(err.Error(), "line 3") {
		t.Errorf("error %q does not name line 3", err)
	}
	if calls != 2 {
		t.Errorf("fn called %d times after its error, want 2 calls in all", calls)
	}
}

// TestReadStreamBodiesAreOwned checks fn may keep the body it is given:
// later lines do not overwrite it.
func TestReadStreamBodiesAreOwned(t *testing.T) {
	var kept [][]byte
	input := "a\t" + strings.Repeat("1", 100) + "\nb\t" + strings.Repeat("2", 100) + "\n"
	if err := events.ReadStream(strings.NewReader(input), func(_ string, body []byte, _ string) error {
		kept = append(kept, body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(kept) != 2 || string(kept[0]) != strings.Repeat("1", 100) || string(kept[1]) != strings.Repeat("2", 100) {
		t.Errorf("kept bodies changed: %q", kept)
	}
}

// TestReadStreamExample reads the ordered example: every line is a message
// whose msgID is its body's id.
func TestReadStreamExample(t *testing.T) {
	lines := readExample(t, "street-scenes-ordered")
	f, err := os.Open(filepath.Join(examplesDir, "street-scenes-ordered", "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int
	err = events.ReadStream(f, func(subject string, body []byte, msgID string) error {
		if n >= len(lines) {
			t.Fatalf("more messages than the %d lines", len(lines))
		}
		l := lines[n]
		n++
		if subject != l.subject || string(body) != string(l.body) {
			t.Errorf("line %d: got %s %s", l.line, subject, body)
		}
		ev, err := events.Decode(subject, body, 0)
		if err != nil {
			t.Fatalf("line %d: %v", l.line, err)
		}
		if msgID != ev.ID {
			t.Errorf("line %d: msgID %q, want the event id %q", l.line, msgID, ev.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(lines) {
		t.Errorf("%d messages, want %d", n, len(lines))
	}
}
