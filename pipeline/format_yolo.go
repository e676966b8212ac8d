package pipeline

// The YOLO format: a tar (EXPORTS.md, "Formats beside the Diffgram one")
// of
//
//	data.yaml           names in class-id order (nc, names; train and val
//	                    point at images/, where the reader puts the media)
//	labels/<stem>.txt   one per picture: a line per box ("class cx cy w
//	                    h") or polygon figure ("class x1 y1 x2 y2 ..."),
//	                    every coordinate normalised to [0, 1]; empty for
//	                    a picture without objects
//	files.jsonl         one line per label file: the Diffgram file (and
//	                    frame) it belongs to and its original_filename
//
// in that order, as ultralytics reads it. A picture is an image file, or
// a video frame that carries instances (stem "<video stem>_<frame>"). A
// label file's stem is the original_filename's without its extension
// ("/" and "\" made "_"); when it is taken already, "_<file id>" is
// added. Class ids come from the definition's class map (Pipeline.classes),
// which only ever grows: a label keeps its class id across exports.

import (
	"archive/tar"
	"bufio"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/exportstream/exportstream/events"
)

type yoloSink struct {
	out     *bufOut
	tw      *tar.Writer
	at      time.Time
	classOf map[int64]int
	live    map[int64]bool // labels in the label_map
	wk      *walker
	stems   map[uint64]struct{} // FNV-64a of the stems taken
	spill   *os.File
	files   *bufio.Writer
	nFiles  int64
	skip    map[string]int
	shapes  []shape
	fs      []events.Field
	line    []byte
	index   []byte
}

func newYOLOSink(pl *plan, w io.Writer, at time.Time) (*yoloSink, error) {
	f, err := os.CreateTemp("", "exportstream-yolo-files-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name())
	s := &yoloSink{out: newBufOut(w), at: at.UTC().Truncate(time.Second), classOf: map[int64]int{}, live: map[int64]bool{},
		wk: newWalker(), stems: map[uint64]struct{}{}, spill: f, files: bufio.NewWriterSize(f, 64<<10), skip: map[string]int{}}
	s.tw = tar.NewWriter(s.out)
	for _, l := range pl.labels {
		s.live[l.id] = true
	}
	classes := pl.classes
	if classes == nil {
		classes = mergeClasses(nil, pl.labels)
	}
	var y strings.Builder
	y.WriteString("# YOLO labels of a Diffgram export, written by exportstream.\n")
	y.WriteString("# Put each picture under images/ with the stem of its label file\n")
	y.WriteString("# (files.jsonl names the Diffgram file and frame of each).\n")
	y.WriteString("path: .\ntrain: images\nval: images\n")
	y.WriteString("nc: " + strconv.Itoa(len(classes)) + "\nnames:\n")
	for i, id := range classes {
		s.classOf[id] = i
		name := strconv.FormatInt(id, 10)
		if l := pl.allLbls[id]; l != nil {
			name = labelName(l)
		}
		y.WriteString("  " + strconv.Itoa(i) + ": " + strconv.Quote(name) + "\n")
	}
	if err := s.add("data.yaml", []byte(y.String())); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// mergeClasses returns the class map old (label_file_ids in class-id
// order) with the labels it lacks appended, by id.
func mergeClasses(old []int64, labels []*snap) []int64 {
	have := make(map[int64]bool, len(old))
	for _, id := range old {
		have[id] = true
	}
	out := append([]int64(nil), old...)
	for _, l := range labels {
		if !have[l.id] {
			out = append(out, l.id)
		}
	}
	return out
}

// add writes one file into the tar.
func (s *yoloSink) add(name string, body []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: s.at}
	if err := s.tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := s.tw.Write(body)
	return err
}

func (s *yoloSink) entry(id int64, entry []byte, child bool) error {
	return s.wk.walk(id, entry, child, s.picture, func(inst []byte) {
		s.fs = events.AppendFields(s.fs[:0], inst)
		s.skip[typeName(rawOrNull(s.fs, "type"))]++
	})
}

// picture writes the picture's label file.
func (s *yoloSink) picture(p *picture) error {
	s.shapes = s.shapes[:0]
	for _, inst := range p.insts {
		var sh shape
		sh, s.fs = parseShape(inst, s.fs)
		s.shapes = append(s.shapes, sh)
	}
	w, h := pictureSize(p, s.shapes, s.live)
	b := s.line[:0]
	for i := range s.shapes {
		sh := &s.shapes[i]
		c, ok := s.classOf[sh.label]
		if !sh.held(s.live) || !ok || (sh.kind != shapeBox && sh.kind != shapePolygon) {
			s.skip[sh.typ]++
			continue
		}
		if sh.kind == shapeBox {
			x1, x2 := unit(sh.x1/w), unit(sh.x2/w)
			y1, y2 := unit(sh.y1/h), unit(sh.y2/h)
			b = strconv.AppendInt(b, int64(c), 10)
			for _, v := range [4]float64{(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1} {
				b = append(b, ' ')
				b = appendUnit6(b, unit(v))
			}
			b = append(b, '\n')
			continue
		}
		for _, poly := range sh.polys {
			b = strconv.AppendInt(b, int64(c), 10)
			for j, v := range poly {
				d := w
				if j%2 == 1 {
					d = h
				}
				b = append(b, ' ')
				b = appendUnit6(b, unit(v/d))
			}
			b = append(b, '\n')
		}
	}
	s.line = b
	stem := s.stem(p)
	if err := s.add("labels/"+stem+".txt", b); err != nil {
		return err
	}
	line := s.index[:0]
	line = append(line, `{"label":`...)
	line = appendString(line, "labels/"+stem+".txt")
	line = append(line, `,"diffgram_file_id":`...)
	line = strconv.AppendInt(line, p.fileID, 10)
	line = append(line, `,"frame_number":`...)
	if p.isFrame {
		line = strconv.AppendInt(line, p.frame, 10)
	} else {
		line = append(line, "null"...)
	}
	line = append(line, `,"original_filename":`...)
	line = append(line, p.name...)
	line = append(line, "}\n"...)
	s.index = line
	s.nFiles++
	if _, err := s.files.Write(line); err != nil {
		return err
	}
	return s.out.maybeFlush()
}

// unit clamps v to [0, 1].
func unit(v float64) float64 { return min(max(v, 0), 1) }

// stem returns the picture's label file stem, not taken before.
func (s *yoloSink) stem(p *picture) string {
	name := stemUnsafe.Replace(rawText(p.name))
	base := strings.TrimSuffix(name, path.Ext(name))
	if base == "" || base == "." || base == ".." {
		base = strconv.FormatInt(p.fileID, 10)
	}
	if p.isFrame {
		base += "_" + strconv.FormatInt(p.frame, 10)
	}
	stem := base
	for s.taken(stem) {
		stem += "_" + strconv.FormatInt(p.fileID, 10)
	}
	return stem
}

// stemUnsafe are the characters a stem cannot hold, made "_".
var stemUnsafe = strings.NewReplacer("/", "_", "\\", "_", "\x00", "_")

// taken reports whether stem is taken, and takes it if not.
func (s *yoloSink) taken(stem string) bool {
	k := uint64(14695981039346656037) // FNV-64a
	for i := 0; i < len(stem); i++ {
		k ^= uint64(stem[i])
		k *= 1099511628211
	}
	if _, ok := s.stems[k]; ok {
		return true
	}
	s.stems[k] = struct{}{}
	return false
}

func (s *yoloSink) finish() error {
	if err := s.files.Flush(); err != nil {
		return err
	}
	size, err := s.spill.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := s.spill.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := &tar.Header{Typeflag: tar.TypeReg, Name: "files.jsonl", Mode: 0o644, Size: size, ModTime: s.at}
	if err := s.tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.Copy(s.tw, s.spill); err != nil {
		return err
	}
	if err := s.tw.Close(); err != nil {
		return err
	}
	return s.out.flush()
}

func (s *yoloSink) close() { _ = s.spill.Close() }

func (s *yoloSink) skipped() map[string]int { return s.skip }
