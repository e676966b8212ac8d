package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/exportstream/exportstream/events"
)

// fuzzMaxBytes is the size limit the fuzz target decodes with: above the
// example lines, so they reach the JSON checks, and low enough that the
// fuzzer reaches the limit too.
const fuzzMaxBytes = 8 << 10

// fuzzMaxDepth is the depth limit the fuzz target decodes with: above the
// example lines (6), and low enough that the fuzzer reaches it.
const fuzzMaxDepth = 8

var offsetRe = regexp.MustCompile(`^body is not valid UTF-8: invalid byte at offset (\d+)$`)

var projectRe = regexp.MustCompile(`^[a-z0-9-]+$`)

// FuzzDecode checks DecodeWith's promise on any subject and body: it never
// panics, and returns either a valid event or a *BadInputError with a
// reason, never both and never neither. A body within the size limit that
// is not valid UTF-8 is rejected for it, at the offset of its first invalid
// sequence; a rejection for depth is right; an accepted event's body and
// Raw are valid UTF-8 and within the depth limit.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"street-scenes-ordered", "street-scenes-chaos"} {
		for _, l := range readExample(f, name) {
			f.Add(l.subject, l.body)
		}
	}
	for _, tc := range badInputs {
		f.Add(tc.subject, tc.body)
	}
	f.Add(subj("file.uploaded"), ce("diffgram.file.uploaded", nestedFile(fuzzMaxDepth-3)))
	lim := events.Limits{MaxBytes: fuzzMaxBytes, MaxDepth: fuzzMaxDepth}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		ev, err := events.DecodeWith(subject, body, lim)
		if err != nil {
			var b *events.BadInputError
			if !errors.As(err, &b) {
				t.Fatalf("error %v is a %T, not a *BadInputError", err, err)
			}
			if b.Reason == "" {
				t.Fatal("*BadInputError with an empty Reason")
			}
			if ev != nil {
				t.Fatalf("Decode returned both an event and the error %v", err)
			}
			if len(body) > fuzzMaxBytes {
				return
			}
			m := offsetRe.FindStringSubmatch(b.Reason)
			if utf8.Valid(body) != (m == nil) {
				t.Fatalf("utf8.Valid = %v, and the reason is %q", utf8.Valid(body), b.Reason)
			}
			if m != nil {
				if at, _ := strconv.Atoi(m[1]); at != firstInvalid(body) {
					t.Fatalf("reason %q; the first invalid sequence is at %d", b.Reason, firstInvalid(body))
				}
			}
			if b.Reason == fmt.Sprintf("nested deeper than %d", fuzzMaxDepth) {
				if d := jsonDepth(t, body); d >= 0 && d <= fuzzMaxDepth {
					t.Fatalf("rejected as nested deeper than %d, but is JSON nested %d deep", fuzzMaxDepth, d)
				}
			}
			return
		}
		if ev == nil {
			t.Fatal("Decode returned neither an event nor an error")
		}
		if len(body) > fuzzMaxBytes {
			t.Errorf("accepted a body of %d bytes, over the limit", len(body))
		}
		if ev.ID == "" {
			t.Error("event with an empty ID")
		}
		if !slices.Contains(events.Kinds(), ev.Kind) {
			t.Errorf("Kind %q is not one of Kinds()", ev.Kind)
		}
		if want := "diffgram." + string(ev.Kind) + "." + ev.Action; ev.Type != want {
			t.Errorf("Type %q, want %q", ev.Type, want)
		}
		if ev.Version < 0 {
			t.Errorf("Version %d is negative", ev.Version)
		}
		if ev.Kind != events.KindProject && ev.EntityID <= 0 {
			t.Errorf("%s EntityID %d is not positive", ev.Kind, ev.EntityID)
		}
		if !projectRe.MatchString(ev.Project) {
			t.Errorf("Project %q is not [a-z0-9-]+", ev.Project)
		}
		if tok := strings.Split(subject, "."); len(tok) < 4 || tok[len(tok)-3] != ev.Project {
			t.Errorf("Project %q is not the subject's project token (%q)", ev.Project, subject)
		}
		if !json.Valid(ev.Raw) {
			t.Errorf("Raw is not valid JSON: %q", ev.Raw)
		}
		if !utf8.Valid(body) || !utf8.Valid(ev.Raw) {
			t.Errorf("accepted a body that is not valid UTF-8: %q", body)
		}
		if d := jsonDepth(t, body); d > fuzzMaxDepth {
			t.Errorf("accepted a body nested %d deep, over the limit of %d", d, fuzzMaxDepth)
		}
		if d := jsonDepth(t, ev.Raw); d > fuzzMaxDepth-2 {
			t.Errorf("Raw is nested %d deep, over %d (the limit less the envelope and data)", d, fuzzMaxDepth-2)
		}
		if ev.Entity == nil {
			t.Error("event without a typed Entity")
		}
		if ev.Seq != 0 {
			t.Errorf("Seq = %d; only the consumer sets it", ev.Seq)
		}
		// Decoding is a pure function of its input.
		again, err := events.DecodeWith(subject, body, lim)
		if err != nil || again.ID != ev.ID || again.EntityID != ev.EntityID || again.Version != ev.Version || again.Partial != ev.Partial {
			t.Errorf("second Decode differs: %+v, %v; first %+v", again, err, ev)
		}
	})
}
