package pipeline

// What the COCO and YOLO formats read of a file entry: the pictures it
// holds (an image file, or a video frame that carries instances) and the
// shape of each instance on them.

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"

	"github.com/exportstream/exportstream/events"
)

// picture is an image file, or a frame of a video that carries
// instances.
type picture struct {
	fileID int64
	// name is the file's original_filename as raw JSON (a string, or
	// null).
	name    json.RawMessage
	frame   int64
	isFrame bool
	// w and h are the media block's width and height; 0 when unknown.
	w, h float64
	// insts are the instances on it, in document order.
	insts [][]byte
}

// walker walks file entries for the picture formats: each file once
// (a compound file's child shows in its parent's entry and, often, as a
// top-level entry of its own).
type walker struct {
	done   map[int64]bool // children walked
	frames map[int64][][]byte
	insts  [][]byte       // an image's instances, reused
	fs     []events.Field // scratch for one instance's members
}

func newWalker() *walker { return &walker{done: map[int64]bool{}, frames: map[int64][][]byte{}} }

// walk calls pic with each picture of the entry of file id (child: a
// compound file's child), and other with each instance on none (on a
// text, geospatial, sensor_fusion or compound file; on a video, without a
// frame number).
func (wk *walker) walk(id int64, entry []byte, child bool, pic func(*picture) error, other func(inst []byte)) error {
	if child {
		if wk.done[id] {
			return nil
		}
		wk.done[id] = true
	}
	if len(entry) == 0 || entry[0] != '{' {
		return nil // null: a type without an export form
	}
	fs := events.Fields(entry)
	fileRaw, _ := lookup(fs, "file")
	ffs := events.Fields(fileRaw)
	typ := rawText(rawOrNull(ffs, "type"))
	p := picture{fileID: id, name: rawOrNull(ffs, "original_filename")}
	switch typ {
	case "image":
		p.w, p.h = mediaSize(fs, "image")
		p.insts = wk.insts[:0]
		eachIn(rawOrNull(fs, "instance_list"), func(v []byte) bool {
			p.insts = append(p.insts, v)
			return true
		})
		wk.insts = p.insts
		return pic(&p)
	case "video":
		p.w, p.h = mediaSize(fs, "video")
		clear(wk.frames)
		add := func(v []byte) bool {
			wk.fs = events.AppendFields(wk.fs[:0], v)
			f, ok := rawInt(rawOrNull(wk.fs, "frame_number"))
			if !ok {
				other(v)
				return true
			}
			wk.frames[f] = append(wk.frames[f], v)
			return true
		}
		eachIn(rawOrNull(fs, "parent_instance_list"), add)
		eachIn(rawOrNull(fs, "sequence_list"), func(seq []byte) bool {
			eachIn(rawOrNull(events.Fields(seq), "instance_list"), add)
			return true
		})
		eachIn(rawOrNull(fs, "instance_list"), add) // removed instances, when included
		frames := make([]int64, 0, len(wk.frames))
		for f := range wk.frames {
			frames = append(frames, f)
		}
		slices.Sort(frames)
		for _, f := range frames {
			fp := p
			fp.frame, fp.isFrame, fp.insts = f, true, wk.frames[f]
			if err := pic(&fp); err != nil {
				return err
			}
		}
		return nil
	}
	eachIn(rawOrNull(fs, "instance_list"), func(v []byte) bool {
		other(v)
		return true
	})
	if typ == "compound" {
		for _, f := range fs {
			cid, err := strconv.ParseInt(f.Key, 10, 64)
			if err != nil || wk.done[cid] {
				continue
			}
			wk.done[cid] = true
			if err := wk.walk(cid, f.Val, false, pic, other); err != nil {
				return err
			}
		}
	}
	return nil
}

// mediaSize reads width and height from the entry's media block.
func mediaSize(fs []events.Field, key string) (w, h float64) {
	m := events.Fields(rawOrNull(fs, key))
	w, _ = rawFloat(rawOrNull(m, "width"))
	h, _ = rawFloat(rawOrNull(m, "height"))
	return max(w, 0), max(h, 0)
}

// Shape kinds the picture formats hold.
const (
	shapeNone = iota
	shapeBox
	shapePolygon
	shapeKeypoints
)

// shape is what the picture formats read of an instance.
type shape struct {
	typ     string
	id      int64
	label   int64
	labeled bool
	removed bool
	kind    int
	// x1, y1, x2, y2 is the bounding box (x1 <= x2, y1 <= y2).
	x1, y1, x2, y2 float64
	// polys are a polygon's figures, each x, y, x, y, ... (3 points or
	// more).
	polys [][]float64
	// kps are keypoints as x, y, v triples (v: 0 not labelled, 1
	// occluded, 2 visible); nkp counts those with v > 0.
	kps []float64
	nkp int
}

// parseShape reads an instance as the entry shows it. A kind of
// shapeNone means neither picture format can hold it. fs is scratch
// space for the instance's members; it returns it for reuse.
func parseShape(inst []byte, fs []events.Field) (shape, []events.Field) {
	fs = events.AppendFields(fs[:0], inst)
	s := shape{typ: typeName(rawOrNull(fs, "type"))}
	s.id, _ = rawInt(rawOrNull(fs, "id"))
	s.label, s.labeled = rawInt(rawOrNull(fs, "label_file_id"))
	s.removed = string(rawOrNull(fs, "soft_delete")) == "true"
	switch s.typ {
	case "box":
		x1, ok1 := rawFloatOr0(fs, "x_min")
		y1, ok2 := rawFloatOr0(fs, "y_min")
		x2, ok3 := rawFloatOr0(fs, "x_max")
		y2, ok4 := rawFloatOr0(fs, "y_max")
		if ok1 && ok2 && ok3 && ok4 {
			s.kind = shapeBox
			s.x1, s.x2 = min(x1, x2), max(x1, x2)
			s.y1, s.y2 = min(y1, y2), max(y1, y2)
		}
	case "polygon":
		var figs []json.RawMessage // figure ids, in order of first appearance
		bad := false
		eachIn(rawOrNull(fs, "points"), func(pt []byte) bool {
			pfs := events.Fields(pt)
			x, okx := rawFloat(rawOrNull(pfs, "x"))
			y, oky := rawFloat(rawOrNull(pfs, "y"))
			if !okx || !oky {
				bad = true
				return false
			}
			fig := rawOrNull(pfs, "figure_id")
			i := slices.IndexFunc(figs, func(f json.RawMessage) bool { return bytes.Equal(f, fig) })
			if i < 0 {
				i = len(figs)
				figs = append(figs, fig)
				s.polys = append(s.polys, nil)
			}
			s.polys[i] = append(s.polys[i], x, y)
			return true
		})
		s.polys = slices.DeleteFunc(s.polys, func(p []float64) bool { return len(p) < 6 })
		if !bad && len(s.polys) > 0 {
			s.kind = shapePolygon
			s.x1, s.y1, s.x2, s.y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
			for _, p := range s.polys {
				for i := 0; i < len(p); i += 2 {
					s.x1, s.x2 = min(s.x1, p[i]), max(s.x2, p[i])
					s.y1, s.y2 = min(s.y1, p[i+1]), max(s.y2, p[i+1])
				}
			}
		}
	case "keypoints":
		s.x1, s.y1, s.x2, s.y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		eachIn(rawOrNull(fs, "nodes"), func(n []byte) bool {
			nfs := events.Fields(n)
			x, okx := rawFloat(rawOrNull(nfs, "x"))
			y, oky := rawFloat(rawOrNull(nfs, "y"))
			v := 2.0
			switch {
			case !okx || !oky:
				x, y, v = 0, 0, 0
			case truthy(rawOrNull(nfs, "occluded")):
				v = 1
			}
			s.kps = append(s.kps, x, y, v)
			if v > 0 {
				s.nkp++
				s.x1, s.x2 = min(s.x1, x), max(s.x2, x)
				s.y1, s.y2 = min(s.y1, y), max(s.y2, y)
			}
			return true
		})
		if s.nkp > 0 {
			s.kind = shapeKeypoints
		}
	}
	return s, fs
}

// typeName returns an instance's type (raw JSON) as text: the contract's
// names without allocating, "unknown" for anything but a string.
func typeName(v []byte) string {
	if len(v) >= 2 && v[0] == '"' {
		switch string(v[1 : len(v)-1]) {
		case "box":
			return "box"
		case "polygon":
			return "polygon"
		case "keypoints":
			return "keypoints"
		case "point":
			return "point"
		case "tag":
			return "tag"
		case "global":
			return "global"
		case "relation":
			return "relation"
		case "text_token":
			return "text_token"
		}
	}
	if t := rawText(v); t != "" {
		return t
	}
	return "unknown"
}

// held reports whether a picture format holds the shape: a box, polygon
// or keypoints instance, not removed, with an id and a label of the
// label_map (labels).
func (s *shape) held(labels map[int64]bool) bool {
	return s.kind != shapeNone && !s.removed && s.labeled && labels[s.label] && s.id > 0
}

// area is the shape's area: a polygon's (its figures' areas added), else
// the box's.
func (s *shape) area() float64 {
	if s.kind != shapePolygon {
		return (s.x2 - s.x1) * (s.y2 - s.y1)
	}
	a := 0.0
	for _, p := range s.polys {
		sum := 0.0
		n := len(p) / 2
		for i := range n {
			j := (i + 1) % n
			sum += p[2*i]*p[2*j+1] - p[2*j]*p[2*i+1]
		}
		a += math.Abs(sum) / 2
	}
	return a
}

// pictureSize is the picture's width and height: the media block's, or,
// when it lacks them, the extent of the shapes on it a picture format
// holds (held; rounded up, at least 1). Both formats size a picture alike.
func pictureSize(p *picture, shapes []shape, labels map[int64]bool) (w, h float64) {
	w, h = p.w, p.h
	if w > 0 && h > 0 {
		return w, h
	}
	mw, mh := 1.0, 1.0
	for i := range shapes {
		if shapes[i].held(labels) {
			mw, mh = max(mw, math.Ceil(shapes[i].x2)), max(mh, math.Ceil(shapes[i].y2))
		}
	}
	if w <= 0 {
		w = mw
	}
	if h <= 0 {
		h = mh
	}
	return w, h
}

// rawText returns a raw JSON string's text ("" for anything else).
func rawText(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1])
	}
	var s string
	_ = json.Unmarshal(v, &s)
	return s
}

// rawFloat parses a raw JSON number; ok false for anything else (null
// included) and for a number too large for a float64.
func rawFloat(v []byte) (float64, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	if n, ok := smallInt(v); ok {
		return float64(n), true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// rawFloatOr0 reads a number member of fs: 0 when absent or null (the
// Diffgram entry leaves out a box whose corners are all zero), ok false
// when it is something else.
func rawFloatOr0(fs []events.Field, key string) (float64, bool) {
	v, present := lookup(fs, key)
	if !present || string(v) == "null" {
		return 0, true
	}
	return rawFloat(v)
}

// smallInt parses a raw JSON integer of at most 15 digits (the usual
// coordinate and id) without strconv; ok false for anything else.
func smallInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	d := v
	if neg {
		d = v[1:]
	}
	if len(d) == 0 || len(d) > 15 || (len(d) > 1 && d[0] == '0') {
		return 0, false
	}
	var n int64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// rawInt parses a raw JSON integer; ok false for anything else.
func rawInt(v []byte) (int64, bool) {
	if n, ok := smallInt(v); ok {
		return n, true
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		f, ok := rawFloat(v)
		if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, false
		}
		return int64(f), true
	}
	return n, true
}

// appendNum appends a number as JSON: the shortest form that reads back
// as v.
func appendNum(b []byte, v float64) []byte {
	if v == 0 {
		return append(b, '0') // no "-0"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}

// appendUnit6 appends v, in [0, 1], with six decimals (as
// strconv.AppendFloat(b, v, 'f', 6, 64) does, faster).
func appendUnit6(b []byte, v float64) []byte {
	n := int64(math.Round(v * 1e6))
	if n >= 1e6 {
		return append(b, "1.000000"...)
	}
	if n < 0 {
		n = 0
	}
	b = append(b, '0', '.')
	var d [6]byte
	for i := 5; i >= 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[:]...)
}

// eachIn is eachElement for a member that may be absent or not a list.
func eachIn(raw []byte, fn func(v []byte) bool) {
	if len(raw) > 0 && raw[0] == '[' {
		eachElement(raw, fn)
	}
}
