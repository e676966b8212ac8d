package pipeline

// Formats beside the Diffgram document (EXPORTS.md, "Formats beside the
// Diffgram one"): COCO, YOLO and JSONL, each rendered from the same plan
// (the same view of the state, the same export id and time) as the
// Diffgram document, and written to its own object beside it.
//
// Every format reads the plan's file entries, the bytes the Diffgram
// document shows under each file id: the formats cannot disagree with the
// document about what a file holds, and an entry kept by the local state
// store is read, not rendered again. A pass (renderFormats) reads each
// entry once and hands it to every format it writes; each format streams
// its output in pieces, so memory does not grow with the export.

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"
)

// Format names, as a definition lists them (Definition.Formats).
const (
	FormatDiffgram = "diffgram"
	FormatCOCO     = "coco"
	FormatYOLO     = "yolo"
	FormatJSONL    = "jsonl"
)

// formatOrder is every format, in the order an export writes them: the
// Diffgram document first.
var formatOrder = []string{FormatDiffgram, FormatCOCO, FormatYOLO, FormatJSONL}

// NormalizeFormats returns the formats an export of the list writes:
// diffgram first (always written, listed or not), then the others the
// list names, in the order coco, yolo, jsonl, each once. Unknown names are
// left out (the configuration and the API reject them before).
func NormalizeFormats(list []string) []string {
	out := []string{FormatDiffgram}
	for _, f := range formatOrder[1:] {
		if slices.Contains(list, f) {
			out = append(out, f)
		}
	}
	return out
}

// formatKey is the object key of the format's object of an export whose
// Diffgram object is stem+".json": the format before the extension.
func formatKey(stem, format string) string {
	switch format {
	case FormatCOCO:
		return stem + ".coco.json"
	case FormatYOLO:
		return stem + ".yolo.tar"
	case FormatJSONL:
		return stem + ".jsonl"
	}
	return stem + ".json"
}

// formatContentType is the content type the format's object is written
// with.
func formatContentType(format string) string {
	switch format {
	case FormatYOLO:
		return "application/x-tar"
	case FormatJSONL:
		return "application/jsonl"
	}
	return "application/json"
}

// FormatObject is one format's object of an export, as the export record,
// the manifest and latest.json name it.
type FormatObject struct {
	Key    string `json:"key"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
	// SkippedInstances counts, by instance type, the instances of the
	// Diffgram document this format does not hold (coco and yolo; see
	// docs/contract-decisions.md for why an instance is skipped).
	SkippedInstances map[string]int `json:"skipped_instances,omitempty"`
}

// formatOut is one format a pass writes, and where.
type formatOut struct {
	format string
	w      io.Writer
}

// sink writes one format from the plan's file entries.
type sink interface {
	// entry takes the entry of one file the plan shows (the value under
	// its id key in the Diffgram document), in document order; child
	// says the file is a compound file's child. entry is valid only
	// during the call.
	entry(id int64, entry []byte, child bool) error
	// finish writes what follows the last entry and flushes.
	finish() error
	// skipped is what the format left out, by instance type.
	skipped() map[string]int
}

// flushSize is how much of its output a sink gathers before writing it.
const flushSize = 256 << 10

// bufOut gathers a sink's output and hands it to its outStage in pieces
// of about flushSize.
type bufOut struct {
	dst *outStage
	b   []byte
}

func newBufOut(dst *outStage) *bufOut {
	return &bufOut{dst: dst, b: make([]byte, 0, flushSize+64<<10)}
}

// maybeFlush hands the gathered output over once it is flushSize or
// more.
func (o *bufOut) maybeFlush() error {
	if len(o.b) < flushSize {
		return nil
	}
	return o.flush()
}

func (o *bufOut) flush() error {
	if len(o.b) == 0 {
		return nil
	}
	var err error
	o.b, err = o.dst.swap(o.b)
	return err
}

// Write makes a bufOut an io.Writer (the YOLO tar writes through it).
func (o *bufOut) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), o.maybeFlush()
}

// renderFormats writes the plan in each of outs' formats, as export id at
// time at, in one pass over its files: each file's entry is read once
// and handed to every format. It returns each format's size and SHA-256
// (its key is the caller's), in outs' order. Its Diffgram document is
// byte for byte the one render writes. Each output is hashed and written
// by a stage of its own, and the picture formats walk the entries in
// another (format_stages.go); all of them have ended when it returns.
func (pl *plan) renderFormats(outs []formatOut, id int64, at time.Time) (res []FormatObject, err error) {
	stages := make([]*outStage, len(outs))
	sinks := make([]sink, len(outs))
	defer func() {
		for i, o := range stages {
			if o == nil {
				continue
			}
			if serr := o.stop(); err == nil && serr != nil {
				err = serr
			}
			if sinks[i] != nil {
				closeSink(sinks[i])
			}
		}
		if err != nil {
			res = nil
		}
	}()
	for i, o := range outs {
		stages[i] = startOutStage(o.w)
		if sinks[i], err = pl.newSink(o.format, stages[i], id, at); err != nil {
			return nil, err
		}
	}
	fed, pictures := shareWalk(sinks)
	if pictures != nil {
		ps := startPictureStage(pictures)
		err = pl.feed(fed, ps)
		if perr := ps.stop(); err == nil {
			err = perr
		}
	} else {
		err = pl.feed(fed, nil)
	}
	for _, s := range sinks {
		if err == nil {
			err = s.finish()
		}
	}
	if err == nil {
		err = pl.check()
	}
	if err != nil {
		return nil, err
	}
	for _, o := range stages {
		if err := o.stop(); err != nil {
			return nil, err
		}
	}
	res = make([]FormatObject, len(outs))
	for i := range outs {
		res[i] = FormatObject{Bytes: stages[i].n, SHA256: stages[i].sum(), SkippedInstances: sinks[i].skipped()}
	}
	return res, nil
}

// shareWalk splits the sinks a pass feeds: those fed in the pass's own
// goroutine (the Diffgram document, JSONL), and the picture sink fed in
// a stage (nil when there is none): COCO's or YOLO's, or, with both, a
// bothPictures that feeds both from one walk of each entry.
func shareWalk(sinks []sink) (own []sink, pictures sink) {
	var coco *cocoSink
	var yolo *yoloSink
	for _, s := range sinks {
		switch s := s.(type) {
		case *cocoSink:
			coco = s
		case *yoloSink:
			yolo = s
		default:
			own = append(own, s)
		}
	}
	switch {
	case coco != nil && yolo != nil:
		both := &bothPictures{wk: newWalker(), coco: coco, yolo: yolo}
		both.pic = func(p *picture) error {
			if err := both.coco.picture(p); err != nil {
				return err
			}
			return both.yolo.picture(p)
		}
		both.other = func(typ string) {
			both.coco.other(typ)
			both.yolo.other(typ)
		}
		return own, both
	case coco != nil:
		return own, coco
	case yolo != nil:
		return own, yolo
	}
	return own, nil
}

// bothPictures feeds a COCO and a YOLO sink the pictures of one walk.
// Only its entry is called: each sink's own finish and skipped are.
type bothPictures struct {
	wk    *walker
	coco  *cocoSink
	yolo  *yoloSink
	pic   func(*picture) error
	other func(typ string)
}

func (b *bothPictures) entry(id int64, entry []byte, child bool) error {
	if err := b.wk.walk(id, entry, child, b.pic, b.other); err != nil {
		return err
	}
	return b.coco.out.maybeFlush()
}

func (b *bothPictures) finish() error           { return nil }
func (b *bothPictures) skipped() map[string]int { return nil }

// closeSink releases what a sink holds besides its output (a spill
// file); finish does not.
func closeSink(s sink) {
	if c, ok := s.(interface{ close() }); ok {
		c.close()
	}
}

// feed hands each file's entry to every sink and to the picture stage ps
// (nil: none), in document order, telling progress the files done every
// 1024 files. With a stage, each entry is rendered into the stage's
// batch, not copied there.
func (pl *plan) feed(sinks []sink, ps *pictureStage) error {
	var buf []byte
	for i, id := range pl.ids.All() {
		start := 0
		if ps != nil {
			buf = ps.batch()
			start = len(buf)
		} else {
			buf = buf[:0]
		}
		var child bool
		buf, child = pl.formatEntry(buf, id)
		// The same links as the Diffgram document's: signed when the
		// definition signs.
		if pl.links != nil {
			if buf = pl.linkEntry(buf, start, id); pl.links.err != nil {
				return pl.links.err
			}
		}
		for _, s := range sinks {
			if err := s.entry(id, buf[start:], child); err != nil {
				return err
			}
		}
		if ps != nil {
			if err := ps.add(id, buf, child); err != nil {
				return err
			}
		}
		if pl.progress != nil && (i+1)%1024 == 0 {
			pl.progress(i+1, pl.ids.Len())
		}
	}
	if c, ok := pl.pv.(entryCacher); ok {
		c.endPass()
	}
	if pl.progress != nil {
		pl.progress(pl.ids.Len(), pl.ids.Len())
	}
	return nil
}

// formatEntry appends the file's entry (as the Diffgram document shows
// it) and reports whether the file is a compound file's child.
func (pl *plan) formatEntry(b []byte, id int64) ([]byte, bool) {
	if c, ok := pl.pv.(entryCacher); ok {
		if frag, _, child, ok := c.cachedEntry(id, pl.def.IncludeRemovedInstances); ok {
			return append(b, frag...), child
		}
	}
	b, _, _ = pl.entry(b, id, nil, nil)
	m, _ := pl.pv.FileMark(id)
	return b, m.parent != nil
}

// newSink returns the sink of format writing to dst.
func (pl *plan) newSink(format string, dst *outStage, id int64, at time.Time) (sink, error) {
	switch format {
	case FormatDiffgram:
		return newDiffgramSink(pl, dst, id, at), nil
	case FormatCOCO:
		return newCOCOSink(pl, dst, id, at)
	case FormatYOLO:
		return newYOLOSink(pl, dst, at)
	case FormatJSONL:
		return newJSONLSink(dst), nil
	}
	return nil, fmt.Errorf("unknown export format %q", format)
}

// diffgramSink writes the Diffgram document: what render writes.
type diffgramSink struct {
	pl  *plan
	out *bufOut
}

func newDiffgramSink(pl *plan, dst *outStage, id int64, at time.Time) *diffgramSink {
	s := &diffgramSink{pl: pl, out: newBufOut(dst)}
	s.out.b = append(s.out.b, pl.header(id, at, false)...)
	return s
}

func (s *diffgramSink) entry(id int64, entry []byte, _ bool) error {
	s.out.b = append(s.out.b, ',')
	s.out.b = appendIDKey(s.out.b, id)
	s.out.b = append(s.out.b, entry...)
	return s.out.maybeFlush()
}

func (s *diffgramSink) finish() error {
	s.out.b = append(s.out.b, '}')
	return s.out.flush()
}

func (s *diffgramSink) skipped() map[string]int { return nil }

// jsonlSink writes one line per file entry: {"file_id": ..., "entry": ...}.
type jsonlSink struct{ out *bufOut }

func newJSONLSink(dst *outStage) *jsonlSink { return &jsonlSink{out: newBufOut(dst)} }

func (s *jsonlSink) entry(id int64, entry []byte, _ bool) error {
	s.out.b = append(s.out.b, `{"file_id":`...)
	s.out.b = strconv.AppendInt(s.out.b, id, 10)
	s.out.b = append(s.out.b, `,"entry":`...)
	s.out.b = append(s.out.b, entry...)
	s.out.b = append(s.out.b, "}\n"...)
	return s.out.maybeFlush()
}

func (s *jsonlSink) finish() error           { return s.out.flush() }
func (s *jsonlSink) skipped() map[string]int { return nil }
