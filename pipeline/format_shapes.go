package pipeline

// What the COCO and YOLO formats read of a file entry: the pictures it
// holds (an image file, or a video frame that carries instances) and the
// shape of each instance on them.
//
// The entry is read in one pass, by a scanner that visits only the
// members the formats need (the file's type and name, the media block's
// size, the instance lists and, of each instance, its type, id, label,
// removal, geometry and frame) and steps over the others without
// decoding them. It allocates nothing for the usual entry: the shapes,
// their coordinates and the scratch space are the walker's, reused from
// entry to entry. Any valid JSON is read (whitespace, escaped keys); of a
// member named twice in an object, the first counts. An instance spelled
// as the renderer writes it is read member after member without a
// choice of key (readRendered), numbers as they are stepped over; any
// other spelling by the general reader (readMembers), which reads the
// same (TestReadRenderedAgrees).

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
	// wRaw and hRaw are the same as the document writes them when they
	// are integers (else nil): COCO copies them, exact beyond 2^53.
	w, h       float64
	wRaw, hRaw []byte
	// shapes are its instances, in document order. They are the walker's:
	// valid only during the call that hands the picture over.
	shapes []shape
}

// walker walks file entries for the picture formats: each file once
// (a compound file's child shows in its parent's entry and, often, as a
// top-level entry of its own).
type walker struct {
	done map[int64]bool // children walked
	// shapes are the instances of the entry being walked: its
	// instance_list, parent_instance_list and sequences' lists.
	shapes []shape
	// nums holds the coordinates of the shapes' polygons and keypoints,
	// polys the polygons' figures (slices of nums).
	nums  []float64
	polys [][]float64
	// Scratch: a polygon's points and figure ids, a video's frames, one
	// frame's shapes.
	pts    []polyPoint
	figs   [][]byte
	frames []frameRef
	frame  []shape
	// pic is the picture handed over (not on the stack: the callback
	// keeps a pointer to it).
	pic picture
}

// polyPoint is a polygon point, with the index of its figure.
type polyPoint struct {
	x, y float64
	fig  int
}

// frameRef is an instance of a video (its index in walker.shapes) on a
// frame.
type frameRef struct {
	frame int64
	i     int
}

// childEntry is a member of an entry named by a file id: a compound file's
// child entry.
type childEntry struct {
	id  int64
	val []byte
}

func newWalker() *walker { return &walker{done: map[int64]bool{}} }

// shapeSpan is a range of walker.shapes.
type shapeSpan struct{ from, to int }

// entryParts is what walk reads of an entry's members (each the first of
// its name; nil when absent).
type entryParts struct {
	typ, name, image, video []byte
	// imageSize and videoSize are the media blocks' width and height
	// members (nil when absent).
	imageSize, videoSize  [2][]byte
	list, parents, seqs   shapeSpan
	haveList, haveParents bool
	haveSeqs, haveFile    bool
	children              []childEntry
}

// walk calls pic with each picture of the entry of file id (child: a
// compound file's child), and other with the type of each instance on
// none (on a text, geospatial, sensor_fusion or compound file; on a
// video, without a frame number).
func (wk *walker) walk(id int64, entry []byte, child bool, pic func(*picture) error, other func(typ string)) error {
	if child {
		if wk.done[id] {
			return nil
		}
		wk.done[id] = true
	}
	if len(entry) == 0 || entry[0] != '{' {
		return nil // null: a type without an export form
	}
	wk.shapes, wk.nums, wk.polys = wk.shapes[:0], wk.nums[:0], wk.polys[:0]
	var e entryParts
	wk.readEntry(entry, &e)
	typ := fileType(orNull(e.typ))
	p := &wk.pic
	*p = picture{fileID: id, name: orNull(e.name)}
	switch typ {
	case "image":
		p.w, p.h, p.wRaw, p.hRaw = mediaSize(e.imageSize)
		p.shapes = wk.shapes[e.list.from:e.list.to]
		return pic(p)
	case "video":
		p.w, p.h, p.wRaw, p.hRaw = mediaSize(e.videoSize)
		// Frames in order, each with its instances in the order of the
		// parent list, the sequences' lists, then the removed ones.
		wk.frames = wk.frames[:0]
		for _, sp := range [3]shapeSpan{e.parents, e.seqs, e.list} {
			for i := sp.from; i < sp.to; i++ {
				if sh := &wk.shapes[i]; sh.hasFrame {
					wk.frames = append(wk.frames, frameRef{sh.frame, i})
				} else {
					other(sh.typ)
				}
			}
		}
		slices.SortStableFunc(wk.frames, func(a, b frameRef) int {
			switch {
			case a.frame < b.frame:
				return -1
			case a.frame > b.frame:
				return 1
			}
			return 0
		})
		for i := 0; i < len(wk.frames); {
			j := i
			wk.frame = wk.frame[:0]
			for ; j < len(wk.frames) && wk.frames[j].frame == wk.frames[i].frame; j++ {
				wk.frame = append(wk.frame, wk.shapes[wk.frames[j].i])
			}
			p.frame, p.isFrame, p.shapes = wk.frames[i].frame, true, wk.frame
			if err := pic(p); err != nil {
				return err
			}
			i = j
		}
		return nil
	}
	for i := e.list.from; i < e.list.to; i++ {
		other(wk.shapes[i].typ)
	}
	if typ == "compound" {
		for _, c := range e.children {
			if wk.done[c.id] {
				continue
			}
			wk.done[c.id] = true
			if err := wk.walk(c.id, c.val, false, pic, other); err != nil {
				return err
			}
		}
	}
	return nil
}

// readEntry reads the members of entry (an object) into e, and the
// instances of its lists into wk.shapes.
func (wk *walker) readEntry(b []byte, e *entryParts) {
	for i := 1; ; {
		key, esc, v, ok := nextMember(b, i)
		if !ok {
			return
		}
		i = -1
		switch string(keyBytes(key, esc)) {
		case "file":
			if !e.haveFile {
				e.haveFile = true
				i = readFile(b, v, e)
			}
		case "image":
			if e.image == nil {
				i, e.imageSize = readMedia(b, v)
				e.image = b[v:max(i, v)]
			}
		case "video":
			if e.video == nil {
				i, e.videoSize = readMedia(b, v)
				e.video = b[v:max(i, v)]
			}
		case "instance_list":
			if !e.haveList {
				e.haveList = true
				e.list.from = len(wk.shapes)
				i = wk.readList(b, v)
				e.list.to = len(wk.shapes)
			}
		case "parent_instance_list":
			if !e.haveParents {
				e.haveParents = true
				e.parents.from = len(wk.shapes)
				i = wk.readList(b, v)
				e.parents.to = len(wk.shapes)
			}
		case "sequence_list":
			if !e.haveSeqs {
				e.haveSeqs = true
				e.seqs.from = len(wk.shapes)
				i = wk.readSequences(b, v)
				e.seqs.to = len(wk.shapes)
			}
		default:
			if len(key) > 0 && (key[0] >= '0' && key[0] <= '9' || key[0] == '-' || key[0] == '+') {
				if cid, err := strconv.ParseInt(string(keyBytes(key, esc)), 10, 64); err == nil {
					i = scanValue(b, v)
					if i < 0 {
						return
					}
					e.children = append(e.children, childEntry{cid, b[v:i]})
				}
			}
		}
		if i < 0 {
			i = scanValue(b, v)
		}
		if i < 0 {
			return
		}
	}
}

// readFile reads the entry's "file" member at b[v] (its type and
// original_filename) and returns the index past it.
func readFile(b []byte, v int, e *entryParts) int {
	if v >= len(b) || b[v] != '{' {
		return scanValue(b, v)
	}
	i := v + 1
	for {
		key, esc, fv, ok := nextMember(b, i)
		if !ok {
			return endOf(b, i)
		}
		i = scanValue(b, fv)
		if i < 0 {
			return -1
		}
		switch string(keyBytes(key, esc)) {
		case "type":
			if e.typ == nil {
				e.typ = b[fv:i]
			}
		case "original_filename":
			if e.name == nil {
				e.name = b[fv:i]
			}
		}
	}
}

// readList reads the instances of the list at b[v] (nothing when it is
// not a list) and returns the index past it.
func (wk *walker) readList(b []byte, v int) int {
	if v >= len(b) || b[v] != '[' {
		return scanValue(b, v)
	}
	i := v + 1
	for {
		i = scanSep(b, i)
		if i >= len(b) {
			return -1
		}
		if b[i] == ']' {
			return i + 1
		}
		if i = wk.readShape(b, i); i < 0 {
			return -1
		}
	}
}

// readSequences reads the instance_list of each sequence of the list at
// b[v] and returns the index past it.
func (wk *walker) readSequences(b []byte, v int) int {
	if v >= len(b) || b[v] != '[' {
		return scanValue(b, v)
	}
	i := v + 1
	for {
		i = scanSep(b, i)
		if i >= len(b) {
			return -1
		}
		if b[i] == ']' {
			return i + 1
		}
		if b[i] != '{' {
			if i = scanValue(b, i); i < 0 {
				return -1
			}
			continue
		}
		i++
		have := false
		for {
			key, esc, sv, ok := nextMember(b, i)
			if !ok {
				i = endOf(b, i)
				break
			}
			if !have && string(keyBytes(key, esc)) == "instance_list" {
				have = true
				i = wk.readList(b, sv)
			} else {
				i = scanValue(b, sv)
			}
			if i < 0 {
				return -1
			}
		}
		if i < 0 {
			return -1
		}
	}
}

// readMedia reads the media block at b[v] (nothing when it is not an
// object): its width and height members, the first of each name, and
// the index past it.
func readMedia(b []byte, v int) (end int, size [2][]byte) {
	if v >= len(b) || b[v] != '{' {
		return scanValue(b, v), size
	}
	for i := v + 1; ; {
		key, esc, mv, ok := nextMember(b, i)
		if !ok {
			return endOf(b, i), size
		}
		if i = scanValue(b, mv); i < 0 {
			return -1, size
		}
		switch string(keyBytes(key, esc)) {
		case "width":
			if size[0] == nil {
				size[0] = b[mv:i]
			}
		case "height":
			if size[1] == nil {
				size[1] = b[mv:i]
			}
		}
	}
}

// mediaSize reads the width and height members of a media block: each
// a number above 0, else 0; and each as written when it is an integer
// above 0, else nil.
func mediaSize(size [2][]byte) (w, h float64, wRaw, hRaw []byte) {
	wr, hr := size[0], size[1]
	w, _ = rawFloat(wr)
	h, _ = rawFloat(hr)
	w, h = max(w, 0), max(h, 0)
	if w > 0 && intLiteral(wr) {
		wRaw = wr
	}
	if h > 0 && intLiteral(hr) {
		hRaw = hr
	}
	return w, h, wRaw, hRaw
}

// intLiteral reports whether v is a JSON integer: digits, after an
// optional minus, without fraction or exponent.
func intLiteral(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
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
	// frame is the instance's frame_number, when hasFrame (a video's).
	frame    int64
	hasFrame bool
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

// The members of an instance the picture formats read, as indexes of
// readShape's values.
const (
	iType = iota
	iID
	iLabel
	iSoftDelete
	iXMin
	iYMin
	iXMax
	iYMax
	iPoints
	iNodes
	iFrame
	nMembers
)

// shapeMember is the index of the instance member named key among
// readShape's values, -1 for a member it steps over.
func shapeMember(key []byte) int {
	switch string(key) {
	case "type":
		return iType
	case "id":
		return iID
	case "label_file_id":
		return iLabel
	case "soft_delete":
		return iSoftDelete
	case "x_min":
		return iXMin
	case "y_min":
		return iYMin
	case "x_max":
		return iXMax
	case "y_max":
		return iYMax
	case "points":
		return iPoints
	case "nodes":
		return iNodes
	case "frame_number":
		return iFrame
	}
	return -1
}

// shapeKeys are the instance keys readShape knows, as the renderer
// writes them (render.go, renderInstance: quoted, then a colon) and in
// the order it writes them, each with its index among readShape's values
// (-1: a member it steps over).
var shapeKeys = [...]struct {
	lit string
	m   int
}{
	{`"id":`, iID}, {`"type":`, iType}, {`"attribute_groups":`, -1}, {`"label_file_id":`, iLabel},
	{`"x_min":`, iXMin}, {`"y_min":`, iYMin}, {`"x_max":`, iXMax}, {`"y_max":`, iYMax},
	{`"points":`, iPoints}, {`"nodes":`, iNodes}, {`"soft_delete":`, iSoftDelete},
	{`"frame_number":`, iFrame}, {`"global_frame_number":`, -1}, {`"local_sequence_number":`, -1},
	{`"number":`, -1}, {`"interpolated":`, -1},
}

// renderedKey matches the instance member at b[i] against shapeKeys,
// comparing bytes instead of reading the key: next, the key that follows
// the last one matched in the renderer's order, is tried first. It
// returns the key's index in shapeKeys and the index of the member's
// value; ok is false for any other key or spelling (whitespace,
// escapes), which nextMember then reads.
func renderedKey(b []byte, i, next int) (k, v int, ok bool) {
	if next < len(shapeKeys) && hasAt(b, i, shapeKeys[next].lit) {
		k = next
	} else {
		if i+1 >= len(b) || b[i] != '"' {
			return 0, 0, false
		}
		k1, k2 := -1, -1
		switch b[i+1] {
		case 'i':
			k1, k2 = 0, 15
		case 't':
			k1 = 1
		case 'a':
			k1 = 2
		case 'l':
			k1, k2 = 3, 13
		case 'x':
			k1, k2 = 4, 6
		case 'y':
			k1, k2 = 5, 7
		case 'p':
			k1 = 8
		case 'n':
			k1, k2 = 9, 14
		case 's':
			k1 = 10
		case 'f':
			k1 = 11
		case 'g':
			k1 = 12
		default:
			return 0, 0, false
		}
		switch {
		case hasAt(b, i, shapeKeys[k1].lit):
			k = k1
		case k2 >= 0 && hasAt(b, i, shapeKeys[k2].lit):
			k = k2
		default:
			return 0, 0, false
		}
	}
	v = i + len(shapeKeys[k].lit)
	if v < len(b) && b[v] <= ' ' {
		v = scanSpace(b, v)
	}
	if v >= len(b) {
		return 0, 0, false
	}
	return k, v, true
}

// hasAt reports whether b holds lit at i.
func hasAt(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// readShape reads the instance at b[i] into a shape appended to
// wk.shapes and returns the index past it (-1, appending nothing, when
// the entry is cut short). A kind of shapeNone means neither picture
// format can hold it.
//
// Numbers are read as they are stepped over: a member that is an
// integer of at most 15 digits (the usual id, label and coordinate) is
// not parsed again.
func (wk *walker) readShape(b []byte, i int) int {
	wk.shapes = append(wk.shapes, shape{})
	s := &wk.shapes[len(wk.shapes)-1]
	if b[i] != '{' {
		s.typ = "unknown"
		return scanValue(b, i)
	}
	var raw [nMembers][]byte // the first of each name; nil when absent
	var num [nMembers]int64  // its value, when it is a small integer
	var small uint32         // bit m: raw[m] is a small integer, num[m]
	i++
	if end, ok := readRendered(b, i, &raw, &num, &small); ok {
		i = end
	} else {
		raw, num, small = [nMembers][]byte{}, [nMembers]int64{}, 0
		if i = wk.readMembers(b, i, &raw, &num, &small); i < 0 {
			wk.shapes = wk.shapes[:len(wk.shapes)-1]
			return -1
		}
	}
	s.fill(wk, &raw, &num, small)
	return i
}

// readMembers reads the members of the instance at b[i] (just past its
// '{') that readShape reads into raw, num and small, and returns the
// index past the instance (-1 when the entry is cut short).
func (wk *walker) readMembers(b []byte, i int, raw *[nMembers][]byte, num *[nMembers]int64, small *uint32) int {
	next := 0 // the key renderedKey tries first
	for {
		i = scanSep(b, i)
		k, v, ok := renderedKey(b, i, next)
		m := -1
		if ok {
			m, next = shapeKeys[k].m, k+1
		} else {
			var key []byte
			var esc bool
			if key, esc, v, ok = nextMember(b, i); !ok {
				i = endOf(b, i)
				break
			}
			m = shapeMember(keyBytes(key, esc))
		}
		if c := b[v]; c == '-' || c >= '0' && c <= '9' {
			var n int64
			var isSmall bool
			i, n, isSmall = scanNumber(b, v)
			if m >= 0 && raw[m] == nil {
				raw[m] = b[v:i]
				if isSmall {
					num[m], *small = n, *small|1<<m
				}
			}
			continue
		}
		if i = scanValue(b, v); i < 0 {
			return -1
		}
		if m >= 0 && raw[m] == nil {
			raw[m] = b[v:i]
		}
	}
	return i
}

// readRendered reads the instance at b[i] (just past its '{') as
// readMembers does when it is spelled exactly as the renderer writes a
// box, a polygon or an instance without geometry, on an image or a video
// (render.go, renderInstance):
//
//	"id":N,"type":T,"attribute_groups":V,"label_file_id":N
//	[,"x_min":N,"y_min":N,"x_max":N,"y_max":N] [,"points":P]
//	[,"frame_number":N,"global_frame_number":N,
//	 "local_sequence_number":N,"number":N,"interpolated":V]}
//
// each member matched in turn, without a choice of key. ok is false for
// anything else (another member, a key out of order, space), which
// readMembers then reads from i.
func readRendered(b []byte, i int, raw *[nMembers][]byte, num *[nMembers]int64, small *uint32) (end int, ok bool) {
	member := func(lit string, m int) bool {
		if !hasAt(b, i, lit) {
			return false
		}
		v := i + len(lit)
		if v >= len(b) {
			return false
		}
		if c := b[v]; c == '-' || c >= '0' && c <= '9' {
			var n int64
			var isSmall bool
			i, n, isSmall = scanNumber(b, v)
			if isSmall && m >= 0 {
				num[m], *small = n, *small|1<<m
			}
		} else if i = scanValue(b, v); i < 0 {
			return false
		}
		if m >= 0 {
			raw[m] = b[v:i]
		}
		return true
	}
	if !member(`"id":`, iID) || !member(`,"type":`, iType) || !member(`,"attribute_groups":`, -1) ||
		!member(`,"label_file_id":`, iLabel) {
		return 0, false
	}
	if hasAt(b, i, `,"x_min":`) &&
		(!member(`,"x_min":`, iXMin) || !member(`,"y_min":`, iYMin) || !member(`,"x_max":`, iXMax) || !member(`,"y_max":`, iYMax)) {
		return 0, false
	}
	if hasAt(b, i, `,"points":`) && !member(`,"points":`, iPoints) {
		return 0, false
	}
	if hasAt(b, i, `,"frame_number":`) &&
		(!member(`,"frame_number":`, iFrame) || !member(`,"global_frame_number":`, -1) ||
			!member(`,"local_sequence_number":`, -1) || !member(`,"number":`, -1) || !member(`,"interpolated":`, -1)) {
		return 0, false
	}
	if i >= len(b) || b[i] != '}' {
		return 0, false
	}
	return i + 1, true
}

// fill sets the shape from the members readShape read.
func (s *shape) fill(wk *walker, raw *[nMembers][]byte, num *[nMembers]int64, small uint32) {
	// intOf and floatOr0 read member m as rawInt and rawFloatOr0 do.
	intOf := func(m int) (int64, bool) {
		if small&(1<<m) != 0 {
			return num[m], true
		}
		return rawInt(orNull(raw[m]))
	}
	floatOr0 := func(m int) (float64, bool) {
		if small&(1<<m) != 0 {
			return float64(num[m]), true
		}
		return rawFloatOr0(raw[m])
	}
	s.typ = typeName(orNull(raw[iType]))
	s.id, _ = intOf(iID)
	s.label, s.labeled = intOf(iLabel)
	s.removed = string(raw[iSoftDelete]) == "true"
	if raw[iFrame] != nil {
		// A frame number below 0 names no frame of the video.
		s.frame, s.hasFrame = intOf(iFrame)
		s.hasFrame = s.hasFrame && s.frame >= 0
	}
	switch s.typ {
	case "box":
		x1, ok1 := floatOr0(iXMin)
		y1, ok2 := floatOr0(iYMin)
		x2, ok3 := floatOr0(iXMax)
		y2, ok4 := floatOr0(iYMax)
		if ok1 && ok2 && ok3 && ok4 {
			s.kind = shapeBox
			s.x1, s.x2 = min(x1, x2), max(x1, x2)
			s.y1, s.y2 = min(y1, y2), max(y1, y2)
		}
	case "polygon":
		wk.readPolygon(s, raw[iPoints])
	case "keypoints":
		wk.readKeypoints(s, raw[iNodes])
	}
}

// scanNumber steps over the number at b[i] as scanValue does and returns
// the index past it; n and small are its value and true when it is an
// integer of at most 15 digits, as smallInt reads one.
func scanNumber(b []byte, i int) (end int, n int64, small bool) {
	j := i
	neg := b[j] == '-'
	if neg {
		j++
	}
	start := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		n = n*10 + int64(b[j]-'0')
		j++
	}
	digits := j - start
	small = digits > 0 && digits <= 15 && (digits == 1 || b[start] != '0')
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-') {
		small = false
		j++
	}
	if neg {
		n = -n
	}
	return j, n, small
}

// readPolygon reads a polygon's points (x, y and figure_id of each) into
// s: its figures in order of first appearance, those of 3 points or more.
func (wk *walker) readPolygon(s *shape, points []byte) {
	if len(points) == 0 || points[0] != '[' {
		return
	}
	wk.pts, wk.figs = wk.pts[:0], wk.figs[:0]
	for i := 1; ; {
		i = scanSep(points, i)
		if i >= len(points) || points[i] == ']' {
			break
		}
		end := scanValue(points, i)
		if end < 0 {
			break
		}
		xr, yr, fig := readMembers3(points[i:end], "x", "y", "figure_id")
		i = end
		x, okx := rawFloat(xr)
		y, oky := rawFloat(yr)
		if !okx || !oky {
			return // a point without coordinates: not a polygon
		}
		fig = orNull(fig)
		f := slices.IndexFunc(wk.figs, func(g []byte) bool { return bytes.Equal(g, fig) })
		if f < 0 {
			f = len(wk.figs)
			wk.figs = append(wk.figs, fig)
		}
		wk.pts = append(wk.pts, polyPoint{x, y, f})
	}
	from := len(wk.polys)
	for f := range wk.figs {
		start := len(wk.nums)
		for _, pt := range wk.pts {
			if pt.fig == f {
				wk.nums = append(wk.nums, pt.x, pt.y)
			}
		}
		if len(wk.nums)-start < 6 {
			wk.nums = wk.nums[:start]
			continue
		}
		wk.polys = append(wk.polys, wk.nums[start:len(wk.nums):len(wk.nums)])
	}
	if len(wk.polys) == from {
		return
	}
	s.polys = wk.polys[from:len(wk.polys):len(wk.polys)]
	s.kind = shapePolygon
	s.x1, s.y1, s.x2, s.y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	for _, p := range s.polys {
		for i := 0; i < len(p); i += 2 {
			s.x1, s.x2 = min(s.x1, p[i]), max(s.x2, p[i])
			s.y1, s.y2 = min(s.y1, p[i+1]), max(s.y2, p[i+1])
		}
	}
}

// readKeypoints reads keypoints' nodes into s.
func (wk *walker) readKeypoints(s *shape, nodes []byte) {
	s.x1, s.y1, s.x2, s.y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
	if len(nodes) == 0 || nodes[0] != '[' {
		return
	}
	start := len(wk.nums)
	for i := 1; ; {
		i = scanSep(nodes, i)
		if i >= len(nodes) || nodes[i] == ']' {
			break
		}
		end := scanValue(nodes, i)
		if end < 0 {
			break
		}
		xr, yr, occ := readMembers3(nodes[i:end], "x", "y", "occluded")
		i = end
		x, okx := rawFloat(xr)
		y, oky := rawFloat(yr)
		v := 2.0
		switch {
		case !okx || !oky:
			x, y, v = 0, 0, 0
		case truthy(orNull(occ)):
			v = 1
		}
		wk.nums = append(wk.nums, x, y, v)
		if v > 0 {
			s.nkp++
			s.x1, s.x2 = min(s.x1, x), max(s.x2, x)
			s.y1, s.y2 = min(s.y1, y), max(s.y2, y)
		}
	}
	s.kps = wk.nums[start:len(wk.nums):len(wk.nums)]
	if s.nkp > 0 {
		s.kind = shapeKeypoints
	}
}

// readMembers3 returns the raw values of the first members named k1, k2
// and k3 of the object obj (nil when absent or obj is not an object).
func readMembers3(obj []byte, k1, k2, k3 string) (v1, v2, v3 []byte) {
	if len(obj) == 0 || obj[0] != '{' {
		return
	}
	for i := 1; ; {
		key, esc, v, ok := nextMember(obj, i)
		if !ok {
			return
		}
		if i = scanValue(obj, v); i < 0 {
			return
		}
		switch string(keyBytes(key, esc)) {
		case k1:
			if v1 == nil {
				v1 = obj[v:i]
			}
		case k2:
			if v2 == nil {
				v2 = obj[v:i]
			}
		case k3:
			if v3 == nil {
				v3 = obj[v:i]
			}
		}
	}
}

// nextMember reads past whitespace and a comma to the next member of the
// object being read (i is just past its '{' or a member's value): its key
// (raw, without the quotes; esc when it holds an escape) and the index
// of its value. ok is false at the object's end or when the input is cut
// short.
func nextMember(b []byte, i int) (key []byte, esc bool, v int, ok bool) {
	i = scanSep(b, i)
	if i >= len(b) || b[i] != '"' {
		return nil, false, 0, false
	}
	j := i + 1
	for ; j < len(b); j++ {
		c := b[j]
		if c == '"' {
			break
		}
		if c == '\\' {
			esc = true
			j++
		}
	}
	if j >= len(b) {
		return nil, false, 0, false
	}
	key = b[i+1 : j]
	v = j + 1
	for v < len(b) && b[v] != ':' {
		v++
	}
	v = scanSpace(b, v+1)
	if v >= len(b) {
		return nil, false, 0, false
	}
	return key, esc, v, true
}

// endOf returns the index past the '}' that ends the object being read,
// i being at or before it (past whitespace and commas only).
func endOf(b []byte, i int) int {
	i = scanSep(b, i)
	if i >= len(b) {
		return -1
	}
	return i + 1
}

// keyBytes is a member's key as text: key itself unless it holds an
// escape (then decoded, as encoding/json decodes it).
func keyBytes(key []byte, esc bool) []byte {
	if !esc {
		return key
	}
	var k string
	if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k) != nil {
		return nil
	}
	return []byte(k)
}

// scanSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func scanSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanSep is scanSpace also skipping commas.
func scanSep(b []byte, i int) int {
	for i < len(b) && (b[i] == ',' || b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanValue returns the index past the value at b[i], or -1.
func scanValue(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c >= '0' && c <= '9' || c == '-':
		j := i + 1
		for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-') {
			j++
		}
		return j
	case c == 'n' || c == 't':
		if i+4 <= len(b) {
			return i + 4
		}
		return -1
	case c == 'f':
		if i+5 <= len(b) {
			return i + 5
		}
		return -1
	case c == '"':
		// To the next quote that no backslash escapes: one with an odd
		// number of backslashes before it is escaped.
		for j := i + 1; ; j++ {
			k := bytes.IndexByte(b[j:], '"')
			if k < 0 {
				return -1
			}
			j += k
			p := j - 1
			for b[p] == '\\' {
				p--
			}
			if (j-1-p)%2 == 0 {
				return j + 1
			}
		}
	}
	return events.SkipValue(b, i)
}

// orNull returns v, or null when v is nil (absent).
func orNull(v []byte) []byte {
	if v == nil {
		return []byte("null")
	}
	return v
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
func pictureSize(p *picture, labels map[int64]bool) (w, h float64) {
	w, h = p.w, p.h
	if w > 0 && h > 0 {
		return w, h
	}
	mw, mh := 1.0, 1.0
	for i := range p.shapes {
		if p.shapes[i].held(labels) {
			mw, mh = max(mw, math.Ceil(p.shapes[i].x2)), max(mh, math.Ceil(p.shapes[i].y2))
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

// fileType returns a file's type (raw JSON) as text, as rawText does:
// the types walk tells apart without allocating.
func fileType(v []byte) string {
	switch string(v) {
	case `"image"`:
		return "image"
	case `"video"`:
		return "video"
	case `"compound"`:
		return "compound"
	}
	return rawText(v)
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

// rawFloatOr0 reads a number member (v, nil when absent): 0 when absent
// or null (the Diffgram entry leaves out a box whose corners are all
// zero), ok false when it is something else.
func rawFloatOr0(v []byte) (float64, bool) {
	if v == nil || string(v) == "null" {
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

// rawInt parses a raw JSON integer (no fraction or exponent: as the
// event decoder reads ids and frame numbers) exactly; ok false for
// anything else, a number beyond int64 included.
func rawInt(v []byte) (int64, bool) {
	if n, ok := smallInt(v); ok {
		return n, true
	}
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// appendNum appends a number as JSON: the shortest form that reads back
// as v.
func appendNum(b []byte, v float64) []byte {
	if v == 0 {
		return append(b, '0') // no "-0"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return appendDec(b, int64(v))
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}

// appendDec appends n in decimal, as strconv.AppendInt(b, n, 10) does
// (faster below 10^8).
func appendDec(b []byte, n int64) []byte {
	switch {
	case n >= 0 && n < 10000:
		return appendSmall(b, n)
	case n >= 10000 && n < 1e8:
		lo := n % 10000
		b = appendSmall(b, n/10000)
		return append(b, digits2[2*(lo/100)], digits2[2*(lo/100)+1], digits2[2*(lo%100)], digits2[2*(lo%100)+1])
	}
	return strconv.AppendInt(b, n, 10)
}

// digits2 is "00" to "99", each two bytes.
const digits2 = "0001020304050607080910111213141516171819" +
	"2021222324252627282930313233343536373839" +
	"4041424344454647484950515253545556575859" +
	"6061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendSmall appends n, in [0, 10000), in decimal.
func appendSmall(b []byte, n int64) []byte {
	switch {
	case n < 10:
		return append(b, byte('0'+n))
	case n < 100:
		return append(b, digits2[2*n], digits2[2*n+1])
	case n < 1000:
		return append(b, byte('0'+n/100), digits2[2*(n%100)], digits2[2*(n%100)+1])
	}
	return append(b, digits2[2*(n/100)], digits2[2*(n/100)+1], digits2[2*(n%100)], digits2[2*(n%100)+1])
}

// appendUnit6 appends v, in [0, 1], with six decimals: v × 10^6 rounded
// half away from zero.
func appendUnit6(b []byte, v float64) []byte {
	n := int64(math.Round(v * 1e6))
	if n >= 1e6 {
		return append(b, "1.000000"...)
	}
	if n < 0 {
		n = 0
	}
	hi, mid, lo := n/10000, n/100%100, n%100
	return append(b, '0', '.', digits2[2*hi], digits2[2*hi+1], digits2[2*mid], digits2[2*mid+1], digits2[2*lo], digits2[2*lo+1])
}
