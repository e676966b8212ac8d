package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/exportstream/exportstream/events"
	"github.com/exportstream/exportstream/pipeline/pipelinetest"
)

// contentHashOf computes content_sha256 from an export document as
// docs/contract-decisions.md defines it: SHA-256 over each file entry in
// document order (its id as 8 bytes big-endian, then the SHA-256 of its
// value as written), then over the header (everything before the first
// file entry) with export_info's id and created_time blanked.
func contentHashOf(doc []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if _, err := dec.Token(); err != nil {
		return "", err
	}
	h := sha256.New()
	header := -1
	for dec.More() {
		end := dec.InputOffset() // after the value before
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", err
		}
		id, err := strconv.ParseInt(tok.(string), 10, 64)
		if err != nil {
			if header >= 0 {
				return "", fmt.Errorf("key %q after the file entries", tok)
			}
			continue
		}
		if header < 0 {
			header = int(end)
		}
		var rec [8]byte
		binary.BigEndian.PutUint64(rec[:], uint64(id))
		sum := sha256.Sum256(raw)
		h.Write(rec[:])
		h.Write(sum[:])
	}
	if header < 0 {
		return "", errors.New("no file entries")
	}
	head := doc[:header]
	i := bytes.Index(head, []byte(`"export_info":{"id":`))
	if i < 0 {
		return "", errors.New("no export_info")
	}
	info := head[i:]
	idEnd := bytes.IndexByte(info, ',')
	ct := regexp.MustCompile(`"created_time":"[^"]*"`).FindIndex(info)
	if idEnd < 0 || ct == nil {
		return "", errors.New("export_info without id or created_time")
	}
	var canon []byte
	canon = append(canon, head[:i]...)
	canon = append(canon, `"export_info":{"id":0`...)
	canon = append(canon, info[idEnd:ct[0]]...)
	canon = append(canon, `"created_time":""`...)
	canon = append(canon, info[ct[1]:]...)
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// definitionFor turns an expected definition into a pipeline Definition.
func definitionFor(t testing.TB, name, project string, d pipelinetest.Definition) *Definition {
	def := &Definition{Name: name, Project: project, Completion: Completion(d.Completion),
		IncludeRemovedInstances: d.IncludeRemoved, Path: "exports/" + name + "/"}
	for k, v := range d.Source {
		switch k {
		case "directory":
			def.Source = Source{Kind: SourceDirectory, Name: v.(string)}
		case "directory_id":
			def.Source = Source{Kind: SourceDirectory, ID: int64(v.(float64))}
		case "job":
			def.Source = Source{Kind: SourceJob, Name: v.(string)}
		case "job_id":
			def.Source = Source{Kind: SourceJob, ID: int64(v.(float64))}
		case "task_id":
			def.Source = Source{Kind: SourceTask, ID: int64(v.(float64))}
		case "project":
			def.Source = Source{Kind: SourceProject}
		default:
			t.Fatalf("unknown source %q", k)
		}
	}
	return def
}

type line struct {
	subject string
	body    []byte
}

// readLines reads a file of events in the examples' format; a directory
// means its events.jsonl.
func readLines(t testing.TB, path string) []line {
	f, err := os.Open(pipelinetest.EventsFile(path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []line
	err = events.ReadStream(f, func(subject string, body []byte, _ string) error {
		out = append(out, line{subject, body})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shuffled returns lines with a third of them repeated, in random order.
func shuffled(lines []line, seed uint64) []line {
	rng := rand.New(rand.NewPCG(seed, 11))
	out := slices.Clone(lines)
	for range len(lines) / 3 {
		out = append(out, lines[rng.IntN(len(lines))])
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// orderedExample returns the contract's street-scenes-ordered example:
// its folder and its expected.json.
func orderedExample(t testing.TB) (string, *pipelinetest.Expected) {
	t.Helper()
	dir := filepath.Join(pipelinetest.ExamplesDir(), "street-scenes-ordered")
	exp, err := pipelinetest.LoadExpected(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, exp
}

// decodeLines decodes lines in order and returns the good events and how
// many were bad input; any other decoding error fails t.
func decodeLines(t testing.TB, lines []line) ([]*events.Event, int) {
	t.Helper()
	evs, bad := make([]*events.Event, 0, len(lines)), 0
	for _, l := range lines {
		ev, err := events.Decode(l.subject, l.body, 1<<20)
		if err != nil {
			if !events.IsBadInput(err) {
				t.Fatalf("decode: %v", err)
			}
			bad++
			continue
		}
		evs = append(evs, ev)
	}
	return evs, bad
}

// applyAll decodes and applies lines in memory; it returns how many were
// bad input.
func applyAll(t testing.TB, s *State, lines []line) int {
	evs, bad := decodeLines(t, lines)
	for _, ev := range evs {
		if _, err := s.applyLocal(ev); err != nil {
			t.Fatalf("apply %s: %v", ev.ID, err)
		}
	}
	return bad
}

func TestRenderExamples(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range scenarios {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			exp, err := pipelinetest.LoadExpected(dir)
			if err != nil {
				t.Fatal(err)
			}
			s := NewState()
			lines := readLines(t, dir)
			bad := applyAll(t, s, lines)
			// The same id published twice is one event for JetStream, so
			// count bad input by distinct line.
			if bad != exp.Poison {
				t.Errorf("bad input: %d lines, want %d", bad, exp.Poison)
			}
			for name, d := range exp.Definitions {
				def := definitionFor(t, name, exp.Project, d)
				var buf bytes.Buffer
				res, err := s.Render(&buf, def, 1, time.Unix(0, 0))
				if err != nil {
					t.Fatal(err)
				}
				if d.NoExport {
					if res.Empty == "" || res.Files != 0 {
						t.Errorf("%s: the source should match no file; got %d files, reason %q", name, res.Files, res.Empty)
					}
					continue
				}
				if res.Empty != "" {
					t.Errorf("%s: empty source (%s)", name, res.Empty)
				}
				if res.Files != d.FileListLength {
					t.Errorf("%s: result files %d, want %d", name, res.Files, d.FileListLength)
				}
				if res.Instances != d.InstanceCount {
					t.Errorf("%s: result instances %d, want %d", name, res.Instances, d.InstanceCount)
				}
				if sum := s.buildPlan(def).content; sum != res.ContentHash {
					t.Errorf("%s: the plan's content hash %s; render's %s", name, sum, res.ContentHash)
				}
				if sum, err := contentHashOf(buf.Bytes()); err != nil || sum != res.ContentHash {
					t.Errorf("%s: content hash from the document %s (%v); render's %s", name, sum, err, res.ContentHash)
				}
				for _, e := range pipelinetest.Check(buf.Bytes(), exp, d) {
					t.Errorf("%s: %s", name, e)
				}
				if t.Failed() {
					t.Logf("%.3000s", buf.String())
				}
			}
		})
	}
}

// TestOrderInsensitive is the state's property: the same events shuffled
// and duplicated render byte-identical documents apart from id and time.
func TestOrderInsensitive(t *testing.T) {
	scenarios, err := pipelinetest.Scenarios()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range scenarios {
		exp, err := pipelinetest.LoadExpected(dir)
		if err != nil {
			t.Fatal(err)
		}
		lines := readLines(t, dir)
		var names []string
		for n := range exp.Definitions {
			names = append(names, n)
		}
		sort.Strings(names)
		render := func(s *State, id int64, at time.Time) map[string]Result {
			out := map[string]Result{}
			for _, n := range names {
				res, err := s.Render(&bytes.Buffer{}, definitionFor(t, n, exp.Project, exp.Definitions[n]), id, at)
				if err != nil {
					t.Fatal(err)
				}
				out[n] = res
			}
			return out
		}
		base := NewState()
		applyAll(t, base, lines)
		want := render(base, 1, time.Unix(0, 0))
		for seed := range uint64(25) {
			s := NewState()
			applyAll(t, s, shuffled(lines, seed))
			got := render(s, int64(seed)+100, time.Unix(int64(seed)*1000, 0))
			for _, n := range names {
				if got[n].ContentHash != want[n].ContentHash {
					t.Errorf("%s seed %d: %s: content differs after shuffle", filepath.Base(dir), seed, n)
				}
				if got[n].SHA256 == want[n].SHA256 {
					t.Errorf("%s seed %d: %s: the full hash ignores the export id and time", filepath.Base(dir), seed, n)
				}
			}
		}
	}
}
