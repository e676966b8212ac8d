package pipelinetest

// Readers of the formats written beside the Diffgram document (EXPORTS.md,
// "Formats beside the Diffgram one"), written from the format
// descriptions, not from the renderer: each parses the whole output with
// general-purpose decoders (encoding/json, archive/tar, a YAML parser),
// checks every rule the contract names, and compares what it read with
// what the Diffgram document of the same export says.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"github.com/exportstream/exportstream/connectors"
)

// Doc is a Diffgram export document, decoded for the readers.
type Doc struct {
	// LabelMap is label_map: label_file_id → name.
	LabelMap map[int64]string
	// FileIDs are the file entries' ids, in document order; Entries their
	// values as written.
	FileIDs []int64
	Entries []json.RawMessage
	// InstanceCount is export_info.instance_count.
	InstanceCount int
}

// ReadDoc decodes a Diffgram export document, keeping its file entries in
// order.
func ReadDoc(doc []byte) (*Doc, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	d := &Doc{LabelMap: map[int64]string{}}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		switch key {
		case "label_map":
			var m map[string]string
			if err := json.Unmarshal(raw, &m); err != nil {
				return nil, err
			}
			for k, v := range m {
				id, err := strconv.ParseInt(k, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("label_map key %q", k)
				}
				d.LabelMap[id] = v
			}
		case "export_info":
			var info struct {
				InstanceCount int `json:"instance_count"`
			}
			if err := json.Unmarshal(raw, &info); err != nil {
				return nil, err
			}
			d.InstanceCount = info.InstanceCount
		case "readme", "label_colour_map", "attribute_groups_reference":
		default:
			id, err := strconv.ParseInt(key, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("top-level key %q", key)
			}
			d.FileIDs = append(d.FileIDs, id)
			d.Entries = append(d.Entries, raw)
		}
	}
	return d, nil
}

// dgInstance is what the readers need of an instance in the document,
// read by the rules of docs/contract-decisions.md ("Which values count"):
// ids, labels and frame numbers are JSON integers (read exactly, whatever
// their size); a frame number below 0 is no frame; coordinates are JSON
// numbers within float64's range, a box corner being 0 when absent or
// null. A value breaking these rules is left unset (nil), or, for a box
// corner, marks the box as BadBox.
type dgInstance struct {
	ID          *int64
	Type        string
	LabelFileID *int64
	SoftDelete  bool
	// XMin, YMin, XMax, YMax are the box's corners; BadBox says one of
	// them is no number.
	XMin, YMin, XMax, YMax float64
	BadBox                 bool
	Points                 []dgPoint
	Nodes                  []dgPoint
	FrameNumber            *int64
}

// dgPoint is a polygon point or a keypoints node: X and Y are nil when
// they are no number.
type dgPoint struct {
	X, Y     *float64
	FigureID json.RawMessage
	Occluded any
}

// UnmarshalJSON reads an instance by dgInstance's rules; it fails only
// when raw is not a JSON object.
func (in *dgInstance) UnmarshalJSON(raw []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	*in = dgInstance{ID: jsonInt(m["id"]), LabelFileID: jsonInt(m["label_file_id"])}
	_ = json.Unmarshal(m["type"], &in.Type)
	in.SoftDelete = string(m["soft_delete"]) == "true"
	for _, c := range []struct {
		key string
		dst *float64
	}{{"x_min", &in.XMin}, {"y_min", &in.YMin}, {"x_max", &in.XMax}, {"y_max", &in.YMax}} {
		v, present := m[c.key]
		if !present || string(v) == "null" {
			continue
		}
		if f := jsonNumber(v); f != nil {
			*c.dst = *f
		} else {
			in.BadBox = true
		}
	}
	in.Points, in.Nodes = points(m["points"]), points(m["nodes"])
	if f := jsonInt(m["frame_number"]); f != nil && *f >= 0 {
		in.FrameNumber = f
	}
	return nil
}

// points reads a list of points; nil when raw is no list.
func points(raw json.RawMessage) []dgPoint {
	var list []map[string]json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	out := make([]dgPoint, len(list))
	for i, p := range list {
		out[i] = dgPoint{X: jsonNumber(p["x"]), Y: jsonNumber(p["y"]), FigureID: p["figure_id"]}
		if o, ok := p["occluded"]; ok {
			_ = json.Unmarshal(o, &out[i].Occluded)
		}
	}
	return out
}

// jsonInt reads a JSON integer exactly: nil for anything else (a
// fraction or exponent, a number beyond int64, a string, null).
func jsonInt(raw json.RawMessage) *int64 {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

// jsonNumber reads a JSON number as a float64 (the nearest): nil for
// anything else, and for a number beyond float64's range.
func jsonNumber(raw json.RawMessage) *float64 {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return nil
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return nil
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// dgPicture is an image file, or a video frame carrying instances.
type dgPicture struct {
	fileID  int64
	name    *string
	frame   int64
	isFrame bool
	w, h    float64
	// wRaw and hRaw are the media block's width and height as written
	// (nil when they are no number).
	wRaw, hRaw json.RawMessage
	insts      []dgInstance
	filename   string // the COCO file_name it must carry
}

// pictures lists the document's pictures in document order (video frames
// by frame number), each file once, and every instance on none
// (text, compound, ... files; video instances without a frame).
func (d *Doc) pictures() (pics []*dgPicture, other []dgInstance, err error) {
	seen := map[int64]bool{}
	var walk func(id int64, raw json.RawMessage) error
	walk = func(id int64, raw json.RawMessage) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		if string(raw) == "null" {
			return nil
		}
		var e map[string]json.RawMessage
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		var f struct {
			ID               int64   `json:"id"`
			OriginalFilename *string `json:"original_filename"`
			Type             string  `json:"type"`
		}
		if err := json.Unmarshal(e["file"], &f); err != nil {
			return err
		}
		list := func(key string) []dgInstance {
			var l []dgInstance
			if v, ok := e[key]; ok {
				_ = json.Unmarshal(v, &l)
			}
			return l
		}
		// The media block's width and height: numbers, else unknown (0);
		// and as written, for the integers COCO must copy exactly.
		var media struct {
			Width, Height       float64
			WidthRaw, HeightRaw json.RawMessage
		}
		readMedia := func(raw json.RawMessage) {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(raw, &m)
			if f := jsonNumber(m["width"]); f != nil {
				media.Width, media.WidthRaw = *f, m["width"]
			}
			if f := jsonNumber(m["height"]); f != nil {
				media.Height, media.HeightRaw = *f, m["height"]
			}
		}
		switch f.Type {
		case "image":
			readMedia(e["image"])
			name := strconv.FormatInt(id, 10)
			if f.OriginalFilename != nil {
				name = *f.OriginalFilename
			}
			pics = append(pics, &dgPicture{fileID: id, name: f.OriginalFilename, w: media.Width, h: media.Height,
				wRaw: media.WidthRaw, hRaw: media.HeightRaw, insts: list("instance_list"), filename: name})
		case "video":
			readMedia(e["video"])
			all := list("parent_instance_list")
			var seqs []struct {
				InstanceList []dgInstance `json:"instance_list"`
			}
			_ = json.Unmarshal(e["sequence_list"], &seqs)
			for _, s := range seqs {
				all = append(all, s.InstanceList...)
			}
			all = append(all, list("instance_list")...)
			frames := map[int64][]dgInstance{}
			for _, in := range all {
				if in.FrameNumber == nil {
					other = append(other, in)
					continue
				}
				frames[*in.FrameNumber] = append(frames[*in.FrameNumber], in)
			}
			keys := make([]int64, 0, len(frames))
			for k := range frames {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				pics = append(pics, &dgPicture{fileID: id, name: f.OriginalFilename, frame: k, isFrame: true, w: media.Width, h: media.Height,
					wRaw: media.WidthRaw, hRaw: media.HeightRaw,
					insts: frames[k], filename: fmt.Sprintf("%d_%d", id, k)})
			}
		default:
			other = append(other, list("instance_list")...)
			if f.Type == "compound" {
				for k, v := range e {
					if cid, err := strconv.ParseInt(k, 10, 64); err == nil {
						if err := walk(cid, v); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	}
	for i, id := range d.FileIDs {
		if err := walk(id, d.Entries[i]); err != nil {
			return nil, nil, err
		}
	}
	return pics, other, nil
}

// size is a picture's width and height: its media block's, or where that
// lacks them (docs/contract-decisions.md) the extent of the instances
// COCO holds on it, rounded up, at least 1.
func (d *Doc) size(p *dgPicture) (w, h float64) {
	if p.w > 0 && p.h > 0 {
		return p.w, p.h
	}
	mw, mh := 1.0, 1.0
	for _, in := range p.insts {
		switch d.cocoKind(in) {
		case "box":
			mw, mh = math.Max(mw, math.Ceil(math.Max(in.XMin, in.XMax))), math.Max(mh, math.Ceil(math.Max(in.YMin, in.YMax)))
		case "polygon":
			for _, f := range figures(in.Points) {
				for _, pt := range f {
					mw, mh = math.Max(mw, math.Ceil(*pt.X)), math.Max(mh, math.Ceil(*pt.Y))
				}
			}
		case "keypoints":
			for _, n := range in.Nodes {
				if n.X != nil && n.Y != nil {
					mw, mh = math.Max(mw, math.Ceil(*n.X)), math.Max(mh, math.Ceil(*n.Y))
				}
			}
		}
	}
	if p.w > 0 {
		mw = p.w
	}
	if p.h > 0 {
		mh = p.h
	}
	return mw, mh
}

// cocoKind says whether COCO holds the instance, and how.
func (d *Doc) cocoKind(in dgInstance) string {
	if in.SoftDelete || in.LabelFileID == nil || in.ID == nil || *in.ID <= 0 {
		return ""
	}
	if _, ok := d.LabelMap[*in.LabelFileID]; !ok {
		return ""
	}
	switch in.Type {
	case "box":
		if !in.BadBox {
			return "box"
		}
	case "polygon":
		if len(figures(in.Points)) > 0 {
			return "polygon"
		}
	case "keypoints":
		for _, n := range in.Nodes {
			if n.X != nil && n.Y != nil {
				return "keypoints"
			}
		}
	}
	return ""
}

// figures groups a polygon's points by figure_id, in order of first
// appearance, keeping those of 3 points or more.
func figures(pts []dgPoint) [][]dgPoint {
	var keys []string
	by := map[string][]dgPoint{}
	for _, p := range pts {
		if p.X == nil || p.Y == nil {
			return nil
		}
		k := string(p.FigureID)
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], p)
	}
	var out [][]dgPoint
	for _, k := range keys {
		if len(by[k]) >= 3 {
			out = append(out, by[k])
		}
	}
	return out
}

// CheckCOCO checks a COCO "instances" document against every rule of
// EXPORTS.md and against the Diffgram document of the same export:
// categories are the label_map; the images are the image files and the
// video frames that carry instances (file_name the original_filename, or
// "<file id>_<frame>"); every box, polygon and keypoints instance with a
// label of the label_map is an annotation (id: the instance id) of its
// picture, with the box, area and points the document says; skipped
// counts by type the document's instances that are not annotations. It
// returns every problem found.
func CheckCOCO(coco []byte, dg *Doc, skipped map[string]int) []string {
	var ps []string
	add := func(f string, a ...any) { ps = append(ps, fmt.Sprintf(f, a...)) }
	var c struct {
		Images      []map[string]any `json:"images"`
		Annotations []map[string]any `json:"annotations"`
		Categories  []map[string]any `json:"categories"`
	}
	dec := json.NewDecoder(bytes.NewReader(coco))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return []string{"not a COCO document: " + err.Error()}
	}
	if c.Images == nil || c.Annotations == nil || c.Categories == nil {
		add("images, annotations and categories must all be lists")
	}
	posID := func(what string, m map[string]any, key string) (int64, bool) {
		n, ok := m[key].(json.Number)
		if !ok {
			add("%s: %s %v is not a number", what, key, m[key])
			return 0, false
		}
		v, err := n.Int64()
		if err != nil || v <= 0 {
			add("%s: %s %s is not a positive integer", what, key, n)
			return 0, false
		}
		return v, true
	}
	num := func(v any) (float64, bool) {
		n, ok := v.(json.Number)
		if !ok {
			return 0, false
		}
		f, err := n.Float64()
		return f, err == nil
	}
	// Categories: the label_map, ids unique and positive.
	cats := map[int64]string{}
	for i, cat := range c.Categories {
		id, ok := posID(fmt.Sprintf("categories[%d]", i), cat, "id")
		if !ok {
			continue
		}
		if _, dup := cats[id]; dup {
			add("category id %d twice", id)
		}
		name, _ := cat["name"].(string)
		cats[id] = name
		if want, ok := dg.LabelMap[id]; !ok || want != name {
			add("category %d %q is not label_map's (%q)", id, name, want)
		}
	}
	if len(cats) != len(dg.LabelMap) {
		add("%d categories, label_map has %d labels", len(cats), len(dg.LabelMap))
	}
	// Images.
	pics, other, err := dg.pictures()
	if err != nil {
		return append(ps, "reading the Diffgram document: "+err.Error())
	}
	type img struct {
		pic *dgPicture
	}
	images := map[int64]*img{}
	if len(c.Images) != len(pics) {
		add("%d images, want %d (image files and video frames carrying instances)", len(c.Images), len(pics))
	}
	picByKey := map[string]*dgPicture{}
	for _, p := range pics {
		picByKey[fmt.Sprintf("%d/%d/%t", p.fileID, p.frame, p.isFrame)] = p
	}
	for i, im := range c.Images {
		where := fmt.Sprintf("images[%d]", i)
		id, ok := posID(where, im, "id")
		if !ok {
			continue
		}
		if images[id] != nil {
			add("image id %d twice", id)
			continue
		}
		fid, _ := posID(where, im, "diffgram_file_id")
		var frame int64
		_, isFrame := im["frame_number"]
		if isFrame {
			// Exactly, however large: a frame number beyond 2^53 must
			// name its frame.
			n, _ := im["frame_number"].(json.Number)
			f, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil || f < 0 {
				add("%s: frame_number %v is not a frame number", where, im["frame_number"])
			}
			frame = f
		}
		p := picByKey[fmt.Sprintf("%d/%d/%t", fid, frame, isFrame)]
		if p == nil {
			add("%s: file %d frame %d (%t) is no picture of the document", where, fid, frame, isFrame)
			continue
		}
		delete(picByKey, fmt.Sprintf("%d/%d/%t", fid, frame, isFrame))
		images[id] = &img{pic: p}
		if fn, _ := im["file_name"].(string); fn != p.filename {
			add("%s: file_name %q, want %q", where, im["file_name"], p.filename)
		}
		w, okw := num(im["width"])
		h, okh := num(im["height"])
		if !okw || !okh || w <= 0 || h <= 0 {
			add("%s: width and height must be set (got %v, %v)", where, im["width"], im["height"])
		}
		if ww, wh := dg.size(p); w != ww || h != wh {
			add("%s: %vx%v, want %vx%v (the media block's, else the extent of the annotations)", where, w, h, ww, wh)
		}
		// A media size that is an integer is copied exactly, beyond 2^53
		// too.
		for _, c := range []struct {
			key  string
			size float64
			raw  json.RawMessage
		}{{"width", p.w, p.wRaw}, {"height", p.h, p.hRaw}} {
			want, isInt := new(big.Int).SetString(string(c.raw), 10)
			if c.size <= 0 || !isInt {
				continue
			}
			n, _ := im[c.key].(json.Number)
			if got, ok := new(big.Int).SetString(n.String(), 10); !ok || got.Cmp(want) != 0 {
				add("%s: %s %v, the media block's is %s", where, c.key, im[c.key], c.raw)
			}
		}
	}
	for k := range picByKey {
		add("picture %s has no image", k)
	}
	// Annotations.
	want := map[int64]dgInstance{} // by instance id
	wantImage := map[int64]*dgPicture{}
	notAnn := map[string]int{}
	for _, p := range pics {
		for _, in := range p.insts {
			if dg.cocoKind(in) == "" {
				notAnn[typeName(in)]++
				continue
			}
			want[*in.ID] = in
			wantImage[*in.ID] = p
		}
	}
	for _, in := range other {
		notAnn[typeName(in)]++
	}
	seen := map[int64]bool{}
	for i, a := range c.Annotations {
		where := fmt.Sprintf("annotations[%d]", i)
		id, ok := posID(where, a, "id")
		if !ok {
			continue
		}
		if seen[id] {
			add("annotation id %d twice", id)
		}
		seen[id] = true
		imgID, ok1 := posID(where, a, "image_id")
		catID, ok2 := posID(where, a, "category_id")
		if ok1 && images[imgID] == nil {
			add("%s: image_id %d resolves to no image", where, imgID)
		}
		if ok2 {
			if _, ok := cats[catID]; !ok {
				add("%s: category_id %d resolves to no category", where, catID)
			}
		}
		bbox, _ := a["bbox"].([]any)
		var bb [4]float64
		if len(bbox) != 4 {
			add("%s: bbox %v is not [x, y, w, h]", where, a["bbox"])
		} else {
			for j := range bb {
				v, ok := num(bbox[j])
				if !ok {
					add("%s: bbox[%d] is not a number", where, j)
				}
				bb[j] = v
			}
			if bb[2] < 0 || bb[3] < 0 {
				add("%s: bbox w, h must be >= 0 (got %v, %v)", where, bb[2], bb[3])
			}
		}
		area, ok := num(a["area"])
		if !ok || area < 0 {
			add("%s: area %v must be a number >= 0", where, a["area"])
		}
		if n, ok := a["iscrowd"].(json.Number); !ok || n.String() != "0" {
			add("%s: iscrowd must be 0 (got %v)", where, a["iscrowd"])
		}
		var polys [][]float64
		if seg, present := a["segmentation"]; present {
			list, ok := seg.([]any)
			if !ok {
				add("%s: segmentation must be a list of polygons", where)
			}
			for j, p := range list {
				pl, ok := p.([]any)
				if !ok || len(pl) < 6 || len(pl)%2 != 0 {
					add("%s: segmentation[%d] must be a list of at least 6 numbers, x and y pairs", where, j)
					continue
				}
				var fl []float64
				for _, v := range pl {
					f, ok := num(v)
					if !ok {
						add("%s: segmentation[%d] holds a non-number", where, j)
					}
					fl = append(fl, f)
				}
				polys = append(polys, fl)
			}
		}
		if kp, present := a["keypoints"]; present {
			list, _ := kp.([]any)
			if len(list) == 0 || len(list)%3 != 0 {
				add("%s: keypoints must be x, y, v triples", where)
			}
			visible := 0
			for j := 2; j < len(list); j += 3 {
				v, _ := num(list[j])
				if v != 0 && v != 1 && v != 2 {
					add("%s: keypoint visibility %v is not 0, 1 or 2", where, v)
				}
				if v > 0 {
					visible++
				}
			}
			n, ok := num(a["num_keypoints"])
			if !ok || int(n) != visible {
				add("%s: num_keypoints %v, %d keypoints are labelled", where, a["num_keypoints"], visible)
			}
		}
		// Against the document.
		in, ok := want[id]
		if !ok {
			add("%s: instance %d is not a box, polygon or keypoints instance with a label on a picture", where, id)
			continue
		}
		if p := wantImage[id]; ok1 && images[imgID] != nil && images[imgID].pic != p {
			add("%s: instance %d is on file %d frame %d, not on image %d", where, id, p.fileID, p.frame, imgID)
		}
		if ok2 && catID != *in.LabelFileID {
			add("%s: category_id %d, the instance's label is %d", where, catID, *in.LabelFileID)
		}
		checkGeometry(add, where, in, bb, area, polys, a)
	}
	for id := range want {
		if !seen[id] {
			add("instance %d (%s) has no annotation", id, want[id].Type)
		}
	}
	if !mapsEqual(notAnn, skipped) {
		add("skipped_instances %v, the document has %v that are no annotation", skipped, notAnn)
	}
	total := len(c.Annotations)
	for _, n := range skipped {
		total += n
	}
	if total != dg.InstanceCount {
		add("annotations + skipped_instances = %d, instance_count is %d", total, dg.InstanceCount)
	}
	return ps
}

func typeName(in dgInstance) string {
	if in.Type == "" {
		return "unknown"
	}
	return in.Type
}

func mapsEqual(a, b map[string]int) bool {
	clean := func(m map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range m {
			if v != 0 {
				out[k] = v
			}
		}
		return out
	}
	a, b = clean(a), clean(b)
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkGeometry compares an annotation's bbox, area and points with the
// instance's geometry.
func checkGeometry(add func(string, ...any), where string, in dgInstance, bb [4]float64, area float64, polys [][]float64, a map[string]any) {
	near := func(x, y float64) bool { return math.Abs(x-y) <= 1e-6*math.Max(1, math.Abs(x)) }
	var x1, y1, x2, y2 float64
	switch in.Type {
	case "box":
		x1, x2 = math.Min(in.XMin, in.XMax), math.Max(in.XMin, in.XMax)
		y1, y2 = math.Min(in.YMin, in.YMax), math.Max(in.YMin, in.YMax)
		if !near(area, (x2-x1)*(y2-y1)) {
			add("%s: area %v, the box's is %v", where, area, (x2-x1)*(y2-y1))
		}
	case "polygon":
		figs := figures(in.Points)
		x1, y1, x2, y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		sum := 0.0
		if len(polys) != len(figs) {
			add("%s: %d polygons, the instance has %d figures", where, len(polys), len(figs))
		}
		for fi, f := range figs {
			s := 0.0
			for i, p := range f {
				q := f[(i+1)%len(f)]
				s += *p.X**q.Y - *q.X**p.Y
				x1, x2 = math.Min(x1, *p.X), math.Max(x2, *p.X)
				y1, y2 = math.Min(y1, *p.Y), math.Max(y2, *p.Y)
				if fi < len(polys) && (2*i+1 >= len(polys[fi]) || !near(polys[fi][2*i], *p.X) || !near(polys[fi][2*i+1], *p.Y)) {
					add("%s: polygon %d point %d differs from the instance's", where, fi, i)
				}
			}
			sum += math.Abs(s) / 2
		}
		if !near(area, sum) {
			add("%s: area %v, the polygon's is %v", where, area, sum)
		}
	case "keypoints":
		x1, y1, x2, y2 = math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		kp, _ := a["keypoints"].([]any)
		if len(kp) != 3*len(in.Nodes) {
			add("%s: %d keypoint values, the instance has %d nodes", where, len(kp), len(in.Nodes))
		}
		for _, n := range in.Nodes {
			if n.X != nil && n.Y != nil {
				x1, x2 = math.Min(x1, *n.X), math.Max(x2, *n.X)
				y1, y2 = math.Min(y1, *n.Y), math.Max(y2, *n.Y)
			}
		}
	}
	if !near(bb[0], x1) || !near(bb[1], y1) || !near(bb[2], x2-x1) || !near(bb[3], y2-y1) {
		add("%s: bbox %v, the instance's is [%v %v %v %v]", where, bb, x1, y1, x2-x1, y2-y1)
	}
}

// YOLO is a YOLO tar as read.
type YOLO struct {
	// Names are data.yaml's names, in class-id order.
	Names []string
	// Labels are the label files by stem; each line's fields.
	Labels map[string][][]float64
	// Files is files.jsonl: label file path → the Diffgram file and frame.
	Files map[string]YOLOFile
	// Order is the tar's member names in order.
	Order []string
}

// YOLOFile is a files.jsonl line.
type YOLOFile struct {
	Label            string  `json:"label"`
	DiffgramFileID   int64   `json:"diffgram_file_id"`
	FrameNumber      *int64  `json:"frame_number"`
	OriginalFilename *string `json:"original_filename"`
}

// ReadYOLO parses a YOLO tar: data.yaml, then labels/<stem>.txt files
// whose every line is a class id in range and either a box (4 values) or
// a segment (6 or more, in pairs), every value in [0, 1], then
// files.jsonl naming each label file once. It returns the problems found.
func ReadYOLO(data []byte) (*YOLO, []string) {
	var ps []string
	add := func(f string, a ...any) { ps = append(ps, fmt.Sprintf(f, a...)) }
	y := &YOLO{Labels: map[string][][]float64{}, Files: map[string]YOLOFile{}}
	tr := tar.NewReader(bytes.NewReader(data))
	nc := -1
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			add("tar: %v", err)
			return y, ps
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			add("tar %s: %v", h.Name, err)
			return y, ps
		}
		if h.Typeflag != tar.TypeReg {
			add("%s: not a regular file", h.Name)
		}
		y.Order = append(y.Order, h.Name)
		switch {
		case h.Name == "data.yaml":
			var d struct {
				NC    int            `yaml:"nc"`
				Names map[int]string `yaml:"names"`
				Train string         `yaml:"train"`
				Val   string         `yaml:"val"`
			}
			if err := yaml.Unmarshal(body, &d); err != nil {
				add("data.yaml: %v", err)
				continue
			}
			if d.Train == "" || d.Val == "" {
				add("data.yaml: train and val must be set (ultralytics requires them)")
			}
			nc = d.NC
			if len(d.Names) != d.NC {
				add("data.yaml: nc %d, %d names", d.NC, len(d.Names))
			}
			for i := range d.NC {
				n, ok := d.Names[i]
				if !ok {
					add("data.yaml: no name for class %d", i)
				}
				y.Names = append(y.Names, n)
			}
		case strings.HasPrefix(h.Name, "labels/") && strings.HasSuffix(h.Name, ".txt"):
			if nc < 0 {
				add("%s before data.yaml", h.Name)
			}
			stem := strings.TrimSuffix(strings.TrimPrefix(h.Name, "labels/"), ".txt")
			if strings.Contains(stem, "/") || stem == "" {
				add("%s: label files sit directly in labels/", h.Name)
			}
			if _, dup := y.Labels[stem]; dup {
				add("%s twice", h.Name)
			}
			lines := [][]float64{}
			if len(body) > 0 && body[len(body)-1] != '\n' {
				add("%s: the last line has no newline", h.Name)
			}
			sc := bufio.NewScanner(bytes.NewReader(body))
			for n := 1; sc.Scan(); n++ {
				fields := strings.Fields(sc.Text())
				where := fmt.Sprintf("%s:%d", h.Name, n)
				if len(fields) != 5 && (len(fields) < 7 || len(fields)%2 != 1) {
					add("%s: %d fields: want a class and a box (4) or a segment (6 or more, in pairs)", where, len(fields))
					continue
				}
				c, err := strconv.Atoi(fields[0])
				if err != nil || c < 0 || c >= nc {
					add("%s: class %q is not in 0..%d", where, fields[0], nc-1)
				}
				vals := []float64{float64(c)}
				for _, f := range fields[1:] {
					v, err := strconv.ParseFloat(f, 64)
					if err != nil || v < 0 || v > 1 || math.IsNaN(v) {
						add("%s: %q is not a number in [0, 1]", where, f)
					}
					vals = append(vals, v)
				}
				if len(fields) == 5 {
					cx, cy, w, hh := vals[1], vals[2], vals[3], vals[4]
					if cx-w/2 < -1e-6 || cx+w/2 > 1+1e-6 || cy-hh/2 < -1e-6 || cy+hh/2 > 1+1e-6 {
						add("%s: the box leaves the picture", where)
					}
				}
				lines = append(lines, vals)
			}
			y.Labels[stem] = lines
		case h.Name == "files.jsonl":
			sc := bufio.NewScanner(bytes.NewReader(body))
			for sc.Scan() {
				var f YOLOFile
				if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
					add("files.jsonl: %v", err)
					continue
				}
				if _, dup := y.Files[f.Label]; dup {
					add("files.jsonl names %s twice", f.Label)
				}
				y.Files[f.Label] = f
			}
		default:
			add("unexpected tar member %s", h.Name)
		}
	}
	if nc < 0 {
		add("no data.yaml")
	}
	for stem := range y.Labels {
		if _, ok := y.Files["labels/"+stem+".txt"]; !ok {
			add("files.jsonl does not name labels/%s.txt", stem)
		}
	}
	if len(y.Files) != len(y.Labels) {
		add("files.jsonl names %d files, the tar has %d label files", len(y.Files), len(y.Labels))
	}
	return y, ps
}

// CheckYOLO compares a YOLO tar as read with the Diffgram document: a
// label file per picture, stems from original_filename (made unique with
// the file id), one line per box and per polygon figure whose class names
// the instance's label and whose coordinates are the instance's,
// normalised by the picture's size; skipped counts by type the
// instances that are no line. classes, when not nil, are the label ids
// the class ids must name, in order.
func CheckYOLO(y *YOLO, dg *Doc, skipped map[string]int, classes []int64) []string {
	var ps []string
	add := func(f string, a ...any) { ps = append(ps, fmt.Sprintf(f, a...)) }
	pics, other, err := dg.pictures()
	if err != nil {
		return []string{err.Error()}
	}
	if classes != nil {
		if len(y.Names) != len(classes) {
			add("%d class names, want %d", len(y.Names), len(classes))
		}
		for i, id := range classes {
			if i < len(y.Names) && y.Names[i] != dg.LabelMap[id] && dg.LabelMap[id] != "" {
				add("class %d is %q, want %q (label %d)", i, y.Names[i], dg.LabelMap[id], id)
			}
		}
	}
	classOf := map[string]int{}
	for i, n := range y.Names {
		classOf[n] = i
	}
	if len(y.Labels) != len(pics) {
		add("%d label files, want %d (image files and video frames carrying instances)", len(y.Labels), len(pics))
	}
	byFile := map[string]string{} // "file/frame" → label path
	for p, f := range y.Files {
		k := fmt.Sprintf("%d/%v", f.DiffgramFileID, f.FrameNumber != nil && *f.FrameNumber >= 0)
		if f.FrameNumber != nil {
			k = fmt.Sprintf("%d/%d", f.DiffgramFileID, *f.FrameNumber)
		}
		byFile[k] = p
	}
	notLine := map[string]int{}
	for _, in := range other {
		notLine[typeName(in)]++
	}
	for _, p := range pics {
		k := fmt.Sprintf("%d/false", p.fileID)
		if p.isFrame {
			k = fmt.Sprintf("%d/%d", p.fileID, p.frame)
		}
		label, ok := byFile[k]
		if !ok {
			add("no label file for file %d frame %d", p.fileID, p.frame)
			continue
		}
		stem := strings.TrimSuffix(strings.TrimPrefix(label, "labels/"), ".txt")
		base := strconv.FormatInt(p.fileID, 10)
		if p.name != nil {
			n := strings.NewReplacer("/", "_", "\\", "_", "\x00", "_").Replace(*p.name)
			if b := strings.TrimSuffix(n, path.Ext(n)); b != "" && b != "." && b != ".." {
				base = b
			}
		}
		if p.isFrame {
			base += "_" + strconv.FormatInt(p.frame, 10)
		}
		if stem != base && !strings.HasPrefix(stem, base+"_"+strconv.FormatInt(p.fileID, 10)) {
			add("%s: stem %q is not %q (or made unique with file id %d)", label, stem, base, p.fileID)
		}
		lines := y.Labels[stem]
		w, h := dg.size(p)
		var want [][]float64
		for _, in := range p.insts {
			kind := dg.cocoKind(in)
			if kind != "box" && kind != "polygon" {
				notLine[typeName(in)]++
				continue
			}
			c, ok := classOf[dg.LabelMap[*in.LabelFileID]]
			if !ok {
				add("%s: label %q has no class", label, dg.LabelMap[*in.LabelFileID])
			}
			cl := func(v float64) float64 { return math.Min(math.Max(v, 0), 1) }
			if kind == "box" {
				x1, x2 := cl(math.Min(in.XMin, in.XMax)/w), cl(math.Max(in.XMin, in.XMax)/w)
				y1, y2 := cl(math.Min(in.YMin, in.YMax)/h), cl(math.Max(in.YMin, in.YMax)/h)
				want = append(want, []float64{float64(c), (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1})
				continue
			}
			for _, f := range figures(in.Points) {
				l := []float64{float64(c)}
				for _, pt := range f {
					l = append(l, cl(*pt.X/w), cl(*pt.Y/h))
				}
				want = append(want, l)
			}
		}
		if len(lines) != len(want) {
			add("%s: %d lines, want %d", label, len(lines), len(want))
			continue
		}
		for i := range want {
			if len(lines[i]) != len(want[i]) {
				add("%s:%d: %d values, want %d", label, i+1, len(lines[i]), len(want[i]))
				continue
			}
			for j := range want[i] {
				if math.Abs(lines[i][j]-want[i][j]) > 2e-6 {
					add("%s:%d: value %d is %v, want %v", label, i+1, j, lines[i][j], want[i][j])
					break
				}
			}
		}
	}
	if !mapsEqual(notLine, skipped) {
		add("skipped_instances %v, the document has %v that are no line", skipped, notLine)
	}
	return ps
}

// CheckJSONL checks a JSONL export: one line per file entry of the
// Diffgram document, in its order, each {"file_id": id, "entry": entry}
// with exactly those keys and the document's entry.
func CheckJSONL(data []byte, dg *Doc) []string {
	var ps []string
	add := func(f string, a ...any) { ps = append(ps, fmt.Sprintf(f, a...)) }
	if len(data) > 0 && data[len(data)-1] != '\n' {
		add("the last line has no newline")
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(data) == 0 {
		lines = nil
	}
	if len(lines) != len(dg.FileIDs) {
		add("%d lines, the document has %d file entries", len(lines), len(dg.FileIDs))
	}
	for i, l := range lines {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(l, &m); err != nil {
			add("line %d: %v", i+1, err)
			continue
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if !slices.Equal(keys, []string{"entry", "file_id"}) {
			add("line %d: keys %v, want entry and file_id", i+1, keys)
		}
		if i >= len(dg.FileIDs) {
			continue
		}
		var id int64
		if err := json.Unmarshal(m["file_id"], &id); err != nil || id != dg.FileIDs[i] {
			add("line %d: file_id %s, want %d", i+1, m["file_id"], dg.FileIDs[i])
		}
		var a, b bytes.Buffer
		_ = json.Compact(&a, m["entry"])
		_ = json.Compact(&b, dg.Entries[i])
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			add("line %d: the entry of file %d differs from the document's", i+1, dg.FileIDs[i])
		}
	}
	return ps
}

// LatestFormat is a format's object as latest.json names it.
type LatestFormat struct {
	Key              string         `json:"key"`
	SHA256           string         `json:"sha256"`
	Bytes            int64          `json:"bytes"`
	SkippedInstances map[string]int `json:"skipped_instances"`
}

// CheckLatestFormats reads prefix+"latest.json" from b and checks that
// its Diffgram format entry is its data object (key, sha256 and bytes),
// then checks the formats it names with CheckFormats. It returns the
// formats as latest.json names them, and every problem found.
func CheckLatestFormats(ctx context.Context, b connectors.Bucket, prefix string, want []string) (map[string]LatestFormat, []string) {
	raw, err := readAll(ctx, b, prefix+"latest.json")
	if err != nil {
		return nil, []string{"latest.json: " + err.Error()}
	}
	var m struct {
		Key     string                  `json:"key"`
		SHA256  string                  `json:"sha256"`
		Bytes   int64                   `json:"bytes"`
		Formats map[string]LatestFormat `json:"formats"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, []string{"latest.json: " + err.Error()}
	}
	var ps []string
	if dg := m.Formats["diffgram"]; dg.Key != m.Key || dg.SHA256 != m.SHA256 || dg.Bytes != m.Bytes {
		ps = append(ps, fmt.Sprintf("latest.json: formats.diffgram %+v is not the data object (%s, %s, %d)", dg, m.Key, m.SHA256, m.Bytes))
	}
	for _, p := range CheckFormats(ctx, b, m.Formats, want) {
		ps = append(ps, "latest.json: "+p)
	}
	return m.Formats, ps
}

// CheckFormats checks an export's formats as its manifest, latest.json
// or record names them: exactly the formats want, each object in b with
// the SHA-256 and size given, and each object read with its reader
// (CheckCOCO, ReadYOLO and CheckYOLO, CheckJSONL) against the Diffgram
// document. It returns every problem found.
func CheckFormats(ctx context.Context, b connectors.Bucket, formats map[string]LatestFormat, want []string) []string {
	var ps []string
	add := func(f string, a ...any) { ps = append(ps, fmt.Sprintf(f, a...)) }
	names := slices.Sorted(maps.Keys(formats))
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(names, w) {
		add("formats named %v, want %v", names, w)
	}
	data := map[string][]byte{}
	for _, n := range names {
		f := formats[n]
		body, err := readAll(ctx, b, f.Key)
		if err != nil {
			add("%s object %s: %v", n, f.Key, err)
			continue
		}
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(body)) != f.Bytes {
			add("%s object %s: sha256 %x and %d bytes, named with %s and %d", n, f.Key, sum, len(body), f.SHA256, f.Bytes)
		}
		data[n] = body
	}
	doc, ok := data["diffgram"]
	if !ok {
		return append(ps, "no Diffgram document to check the other formats against")
	}
	dg, err := ReadDoc(doc)
	if err != nil {
		return append(ps, "the Diffgram document: "+err.Error())
	}
	if c, ok := data["coco"]; ok {
		for _, p := range CheckCOCO(c, dg, formats["coco"].SkippedInstances) {
			add("coco: %s", p)
		}
	}
	if y, ok := data["yolo"]; ok {
		yl, problems := ReadYOLO(y)
		for _, p := range append(problems, CheckYOLO(yl, dg, formats["yolo"].SkippedInstances, nil)...) {
			add("yolo: %s", p)
		}
	}
	if j, ok := data["jsonl"]; ok {
		for _, p := range CheckJSONL(j, dg) {
			add("jsonl: %s", p)
		}
	}
	return ps
}

func readAll(ctx context.Context, b connectors.Bucket, key string) ([]byte, error) {
	r, err := b.NewReader(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
