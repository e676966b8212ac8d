package pipeline

// The COCO format: one COCO "instances" JSON document (EXPORTS.md,
// "Formats beside the Diffgram one"):
//
//	{"info": {...}, "licenses": [], "categories": [...],
//	 "annotations": [...], "images": [...]}
//
// Categories are the label_map's labels (id: the label_file_id). Images
// are the image files, with id 1, 2, ... in document order, then each
// video's frames that carry instances, by frame number; annotations are
// the boxes, polygons and keypoints on them (id: the Diffgram instance
// id). Annotations are written as the files are read; the images, which
// COCO readers find by key, not by position, are gathered in a spill
// file and written after them, so memory does not grow with the export.

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/exportstream/exportstream/events"
)

type cocoSink struct {
	out     *bufOut
	cats    map[int64]bool
	wk      *walker
	spill   *os.File
	images  *bufio.Writer
	nImages int64
	nAnns   int
	skip    map[string]int
	img     []byte
	num     []byte
	// pic and other are the walker's callbacks, bound once.
	pic   func(*picture) error
	other func(typ string)
}

func newCOCOSink(pl *plan, dst *outStage, id int64, at time.Time) (*cocoSink, error) {
	f, err := os.CreateTemp("", "exportstream-coco-images-*")
	if err != nil {
		return nil, err
	}
	_ = os.Remove(f.Name()) // unlinked: gone when closed, whatever happens
	s := &cocoSink{out: newBufOut(dst), cats: map[int64]bool{}, wk: newWalker(), spill: f,
		images: bufio.NewWriterSize(f, 64<<10), skip: map[string]int{}}
	s.pic = s.picture
	s.other = func(typ string) { s.skip[typ]++ }
	b := s.out.b
	b = append(b, `{"info":{"description":"COCO instances of a Diffgram export, written by exportstream","version":"1.0","year":`...)
	b = strconv.AppendInt(b, int64(at.UTC().Year()), 10)
	b = append(b, `,"date_created":`...)
	b = appendString(b, at.UTC().Format("2006-01-02T15:04:05.000000Z"))
	b = append(b, `,"diffgram_export_id":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"diffgram_project":`...)
	b = appendString(b, pl.def.Project)
	b = append(b, `},"licenses":[],"categories":[`...)
	for i, l := range pl.labels {
		if i > 0 {
			b = append(b, ',')
		}
		s.cats[l.id] = true
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, l.id, 10)
		b = append(b, `,"name":`...)
		b = appendString(b, labelName(l))
		b = append(b, `,"supercategory":""}`...)
	}
	b = append(b, `],"annotations":[`...)
	s.out.b = b
	return s, nil
}

func (s *cocoSink) entry(id int64, entry []byte, child bool) error {
	err := s.wk.walk(id, entry, child, s.pic, s.other)
	if err != nil {
		return err
	}
	return s.out.maybeFlush()
}

// picture writes the picture's annotations, then its image (to the
// spill file).
func (s *cocoSink) picture(p *picture) error {
	s.nImages++
	imgID := s.nImages
	for i := range p.shapes {
		sh := &p.shapes[i]
		if !sh.held(s.cats) {
			s.skip[sh.typ]++
			continue
		}
		s.annotation(imgID, sh)
	}
	w, h := pictureSize(p, s.cats)
	b := s.img[:0]
	if s.nImages > 1 {
		b = append(b, ',')
	}
	b = append(b, `{"id":`...)
	b = appendDec(b, imgID)
	b = append(b, `,"file_name":`...)
	switch {
	case p.isFrame:
		b = append(b, '"')
		b = appendDec(b, p.fileID)
		b = append(b, '_')
		b = appendDec(b, p.frame)
		b = append(b, '"')
	case len(p.name) > 0 && p.name[0] == '"':
		b = append(b, p.name...)
	default:
		b = append(b, '"')
		b = appendDec(b, p.fileID)
		b = append(b, '"')
	}
	b = append(b, `,"width":`...)
	b = appendSize(b, w, p.w, p.wRaw)
	b = append(b, `,"height":`...)
	b = appendSize(b, h, p.h, p.hRaw)
	b = append(b, `,"diffgram_file_id":`...)
	b = appendDec(b, p.fileID)
	if p.isFrame {
		b = append(b, `,"frame_number":`...)
		b = appendDec(b, p.frame)
		b = append(b, `,"video_file_name":`...)
		b = append(b, p.name...)
	}
	b = append(b, '}')
	s.img = b
	_, err := s.images.Write(b)
	return err
}

// appendSize appends a picture's width or height v: the media block's
// (media, raw) as the document writes it when v is that and it is an
// integer (exact beyond 2^53), else v.
func appendSize(b []byte, v, media float64, raw []byte) []byte {
	if raw != nil && v == media {
		return append(b, raw...)
	}
	return appendNum(b, v)
}

// annotation writes one annotation.
func (s *cocoSink) annotation(imgID int64, sh *shape) {
	b := s.out.b
	if s.nAnns > 0 {
		b = append(b, ',')
	}
	s.nAnns++
	b = append(b, `{"id":`...)
	b = appendDec(b, sh.id)
	b = append(b, `,"image_id":`...)
	b = appendDec(b, imgID)
	b = append(b, `,"category_id":`...)
	b = appendDec(b, sh.label)
	b = append(b, `,"bbox":[`...)
	if sh.kind == shapeBox {
		// A box's corners show in bbox and segmentation: each is
		// formatted once.
		n := appendNum(s.num[:0], sh.x1)
		i1 := len(n)
		n = appendNum(n, sh.y1)
		i2 := len(n)
		n = appendNum(n, sh.x2)
		i3 := len(n)
		n = appendNum(n, sh.y2)
		s.num = n
		x1, y1, x2, y2 := n[:i1], n[i1:i2], n[i2:i3], n[i3:]
		b = append(b, x1...)
		b = append(b, ',')
		b = append(b, y1...)
		b = append(b, ',')
		b = appendNum(b, sh.x2-sh.x1)
		b = append(b, ',')
		b = appendNum(b, sh.y2-sh.y1)
		b = append(b, `],"area":`...)
		b = appendNum(b, sh.area())
		// The box as a polygon too, for readers that want masks.
		b = append(b, `,"iscrowd":0,"segmentation":[[`...)
		b = append(append(append(b, x1...), ','), y1...)
		b = append(append(append(append(b, ','), x2...), ','), y1...)
		b = append(append(append(append(b, ','), x2...), ','), y2...)
		b = append(append(append(append(b, ','), x1...), ','), y2...)
		s.out.b = append(b, "]]}"...)
		return
	}
	b = appendNum(b, sh.x1)
	b = append(b, ',')
	b = appendNum(b, sh.y1)
	b = append(b, ',')
	b = appendNum(b, sh.x2-sh.x1)
	b = append(b, ',')
	b = appendNum(b, sh.y2-sh.y1)
	b = append(b, `],"area":`...)
	b = appendNum(b, sh.area())
	b = append(b, `,"iscrowd":0`...)
	switch sh.kind {
	case shapePolygon:
		b = append(b, `,"segmentation":[`...)
		for i, p := range sh.polys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			for j, v := range p {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendNum(b, v)
			}
			b = append(b, ']')
		}
		b = append(b, ']')
	case shapeKeypoints:
		b = append(b, `,"keypoints":[`...)
		for j, v := range sh.kps {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendNum(b, v)
		}
		b = append(b, `],"num_keypoints":`...)
		b = strconv.AppendInt(b, int64(sh.nkp), 10)
	}
	s.out.b = append(b, '}')
}

func (s *cocoSink) finish() error {
	s.out.b = append(s.out.b, `],"images":[`...)
	if err := s.images.Flush(); err != nil {
		return err
	}
	if _, err := s.spill.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(s.out, s.spill); err != nil {
		return err
	}
	s.out.b = append(s.out.b, "]}"...)
	return s.out.flush()
}

func (s *cocoSink) close() { _ = s.spill.Close() }

func (s *cocoSink) skipped() map[string]int { return s.skip }

// labelName is a label snapshot's name.
func labelName(l *snap) string {
	return l.val.(*events.LabelFile).Label.Name
}
