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
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
	line    []byte
	index   []byte
	path    []byte
	stemBuf []byte
	// hdr is the tar header archive/tar writes for a label file, with
	// an empty name and size 0 (nil when it is not a plain USTAR header);
	// hdrSum is its checksum without the name and size fields.
	hdr    []byte
	hdrSum int
	// pic and other are the walker's callbacks, bound once.
	pic   func(*picture) error
	other func(typ string)
}

func newYOLOSink(pl *plan, dst *outStage, at time.Time) (*yoloSink, error) {
	f, err := os.CreateTemp("", "exportstream-yolo-files-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name())
	s := &yoloSink{out: newBufOut(dst), at: at.UTC().Truncate(time.Second), classOf: map[int64]int{}, live: map[int64]bool{},
		wk: newWalker(), stems: make(map[uint64]struct{}, pl.ids.Len()), spill: f, files: bufio.NewWriterSize(f, 64<<10), skip: map[string]int{}}
	s.tw = tar.NewWriter(s.out)
	s.pic = s.picture
	s.other = func(typ string) { s.skip[typ]++ }
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
	// The padding of data.yaml is written now: the label files' headers
	// are written past archive/tar, which then writes files.jsonl.
	if err := s.tw.Flush(); err != nil {
		s.close()
		return nil, err
	}
	var tb bytes.Buffer
	tt := tar.NewWriter(&tb)
	if tt.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o644, ModTime: s.at}) == nil && tb.Len() == 512 {
		s.hdr = tb.Bytes()
		s.hdr[0] = 0
		for i, c := range s.hdr {
			switch {
			case i >= 124 && i < 136: // size
			case i >= 148 && i < 156: // checksum
				s.hdrSum += ' '
			default:
				s.hdrSum += int(c)
			}
		}
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
	return s.wk.walk(id, entry, child, s.pic, s.other)
}

// picture writes the picture's label file.
func (s *yoloSink) picture(p *picture) error {
	w, h := pictureSize(p, s.live)
	b := s.line[:0]
	for i := range p.shapes {
		sh := &p.shapes[i]
		c, ok := s.classOf[sh.label]
		if !sh.held(s.live) || !ok || (sh.kind != shapeBox && sh.kind != shapePolygon) {
			s.skip[sh.typ]++
			continue
		}
		if sh.kind == shapeBox {
			x1, x2 := unit(sh.x1/w), unit(sh.x2/w)
			y1, y2 := unit(sh.y1/h), unit(sh.y2/h)
			b = appendDec(b, int64(c))
			for _, v := range [4]float64{(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1} {
				b = append(b, ' ')
				b = appendUnit6(b, unit(v))
			}
			b = append(b, '\n')
			continue
		}
		for _, poly := range sh.polys {
			b = appendDec(b, int64(c))
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
	s.path = append(append(s.path[:0], "labels/"...), s.stem(p)...)
	s.path = append(s.path, ".txt"...)
	if err := s.addLabels(s.path, b); err != nil {
		return err
	}
	line := s.index[:0]
	line = append(line, `{"label":`...)
	line = appendPlainString(line, s.path)
	line = append(line, `,"diffgram_file_id":`...)
	line = appendDec(line, p.fileID)
	line = append(line, `,"frame_number":`...)
	if p.isFrame {
		line = appendDec(line, p.frame)
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

// appendPlainString appends v as a JSON string, as appendString does.
func appendPlainString(b, v []byte) []byte {
	for _, c := range v {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			return appendString(b, string(v))
		}
	}
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"')
}

// addLabels writes a label file into the tar: its header made from
// s.hdr when archive/tar would write a plain USTAR header for it (an
// ASCII name of 100 bytes at most), which is what it writes, else through
// archive/tar.
func (s *yoloSink) addLabels(name, body []byte) error {
	if s.hdr == nil || len(name) > 100 || int64(len(body)) >= 1<<33 || !plainASCII(name) {
		if err := s.add(string(name), body); err != nil {
			return err
		}
		return s.tw.Flush() // its padding, before the next header
	}
	start := len(s.out.b)
	s.out.b = append(s.out.b, s.hdr...)
	blk := s.out.b[start : start+512]
	copy(blk[:100], name)
	// The checksum is the sum of the header's bytes, its own field
	// taken as spaces: the template's (hdrSum), plus the name's and the
	// size's.
	sum := s.hdrSum
	for _, c := range name {
		sum += int(c)
	}
	size := blk[124:136]
	for i, n := 10, len(body); i >= 0; i-- {
		size[i] = byte('0' + n&7)
		sum += int(size[i])
		n >>= 3
	}
	size[11] = 0
	ck := blk[148:156]
	for i := 5; i >= 0; i-- {
		ck[i] = byte('0' + sum&7)
		sum >>= 3
	}
	ck[6], ck[7] = 0, ' '
	s.out.b = append(s.out.b, body...)
	if pad := len(body) % 512; pad > 0 {
		s.out.b = append(s.out.b, zeroBlock[:512-pad]...)
	}
	return nil
}

// zeroBlock is a tar block of zeros.
var zeroBlock [512]byte

// plainASCII reports whether name holds only ASCII bytes other than NUL.
func plainASCII(name []byte) bool {
	for _, c := range name {
		if c == 0 || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// unit clamps v to [0, 1].
func unit(v float64) float64 { return min(max(v, 0), 1) }

// stem returns the picture's label file stem, not taken before; it is
// s.stemBuf's, valid until the next call.
func (s *yoloSink) stem(p *picture) []byte {
	b := s.stemBuf[:0]
	if len(p.name) >= 2 && p.name[0] == '"' {
		if bytes.IndexByte(p.name, '\\') < 0 {
			b = append(b, p.name[1:len(p.name)-1]...)
		} else {
			b = append(b, rawText(p.name)...)
		}
	}
	for i, c := range b {
		if c == '/' || c == '\\' || c == 0 {
			b[i] = '_'
		}
	}
	if dot := bytes.LastIndexByte(b, '.'); dot >= 0 {
		b = b[:dot]
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		b = strconv.AppendInt(b[:0], p.fileID, 10)
	}
	if p.isFrame {
		b = append(b, '_')
		b = strconv.AppendInt(b, p.frame, 10)
	}
	for s.taken(b) {
		b = append(b, '_')
		b = strconv.AppendInt(b, p.fileID, 10)
	}
	s.stemBuf = b
	return b
}

// taken reports whether stem is taken, and takes it if not.
func (s *yoloSink) taken(stem []byte) bool {
	k := uint64(14695981039346656037) // FNV-64a
	for _, c := range stem {
		k ^= uint64(c)
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
