package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReadRenderedAgrees: readShape's fast path for an instance exactly
// as the renderer writes it (readRendered) reads what its general path
// (readMembers) reads, on every instance of the random, edge, benchmark,
// format and render cases' documents, and on each of them spelled otherwise
// (spaces, a member named twice, members reordered), where the fast path
// must give way.
func TestReadRenderedAgrees(t *testing.T) {
	var insts [][]byte
	for _, set := range []struct {
		lines   []line
		project string
	}{
		{randomFormatEvents(rand.New(rand.NewPCG(3, 4)), 600), "rnd"},
		{edgeFormatEvents(), "edge"},
		{syntheticEvents(50, 10), "bench"},
		{readLines(t, "testdata/format-cases.jsonl"), "fmt"},
		{readLines(t, "testdata/render-cases.jsonl"), "golden"},
	} {
		s := NewState()
		applyAll(t, s, set.lines)
		for _, removed := range []bool{false, true} {
			d := &Definition{Name: "all", Project: set.project, Source: Source{Kind: SourceProject}, Completion: CompletionAll, IncludeRemovedInstances: removed}
			var doc bytes.Buffer
			if _, err := s.Render(&doc, d, 1, formatsAt); err != nil {
				t.Fatal(err)
			}
			insts = append(insts, documentInstances(t, doc.Bytes())...)
		}
	}
	fast := 0
	for _, in := range insts {
		for _, b := range [][]byte{
			in,
			bytes.Replace(in, []byte(`":`), []byte(`": `), 1),
			bytes.Replace(in, []byte(`,"type":`), []byte(`,"type":"x","type":`), 1),
			bytes.Replace(in, []byte(`{"id":`), []byte(`{"x_min":7,"id":`), 1),
			bytes.Replace(in, []byte(`}`), []byte(`,"y_max":99}`), 1),
		} {
			var raw [nMembers][]byte
			var num [nMembers]int64
			var small uint32
			if end, ok := readRendered(b, 1, &raw, &num, &small); ok {
				fast++
				if end != len(b) {
					t.Errorf("%s: the fast path ends at %d of %d", b, end, len(b))
				}
			}
			got := newWalker()
			if end := got.readShape(b, 0); end != len(b) {
				t.Errorf("%s: readShape ends at %d of %d", b, end, len(b))
			}
			want := newWalker()
			raw, num, small = [nMembers][]byte{}, [nMembers]int64{}, 0
			want.shapes = append(want.shapes, shape{})
			if end := want.readMembers(b, 1, &raw, &num, &small); end != len(b) {
				t.Errorf("%s: readMembers ends at %d of %d", b, end, len(b))
			}
			want.shapes[0].fill(want, &raw, &num, small)
			if diff := cmp.Diff(want.shapes, got.shapes, cmp.AllowUnexported(shape{})); diff != "" {
				t.Errorf("%s: the fast path reads otherwise (-general +fast):\n%s", b, diff)
			}
		}
	}
	// The fast path was taken, and given way.
	if fast == 0 || fast == 5*len(insts) {
		t.Errorf("the fast path read %d of %d instances", fast, 5*len(insts))
	}
	t.Logf("%d instances, %d read by the fast path", 5*len(insts), fast)
}

// documentInstances returns the instances of a Diffgram document's file
// entries (their lists, their sequences' lists, their children's), each
// as written.
func documentInstances(t *testing.T, doc []byte) [][]byte {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	var entry func(raw json.RawMessage)
	entry = func(raw json.RawMessage) {
		var e map[string]json.RawMessage
		if json.Unmarshal(raw, &e) != nil {
			return // null
		}
		for k, v := range e {
			switch k {
			case "instance_list", "parent_instance_list":
				var l []json.RawMessage
				if err := json.Unmarshal(v, &l); err != nil {
					t.Fatal(err)
				}
				for _, in := range l {
					out = append(out, in)
				}
			case "sequence_list":
				var seqs []struct {
					InstanceList []json.RawMessage `json:"instance_list"`
				}
				if err := json.Unmarshal(v, &seqs); err != nil {
					t.Fatal(err)
				}
				for _, s := range seqs {
					for _, in := range s.InstanceList {
						out = append(out, in)
					}
				}
			default:
				if _, err := fmt.Sscan(k, new(int64)); err == nil {
					entry(v)
				}
			}
		}
	}
	for k, v := range top {
		if _, err := fmt.Sscan(k, new(int64)); err == nil {
			entry(v)
		}
	}
	return out
}

// TestAppendDec: appendDec writes what strconv.AppendInt writes.
func TestAppendDec(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	ns := []int64{0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 10001, 99999999, 1e8, -1, -10000, math.MaxInt64, math.MinInt64}
	for range 100000 {
		ns = append(ns, r.Int64N(2e8)-1e7)
	}
	for _, n := range ns {
		if got, want := string(appendDec(nil, n)), strconv.FormatInt(n, 10); got != want {
			t.Fatalf("appendDec(%d) = %s", n, got)
		}
	}
}
