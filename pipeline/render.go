package pipeline

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"slices"
	"time"

	"github.com/exportstream/exportstream/events"
)

// FormatVersion is the export format version written into export_info.
const FormatVersion = "1.0"

// Version of the connector, written into export_info.
var Version = "dev"

// plan is one export of a definition from a consistent view of the
// state: the files it shows (their ids, in export order) and what the
// header shows beside them. Its entries are read from the view as they
// are written, one file at a time, so memory does not grow with the
// export: the view stays open until the plan is released.
type plan struct {
	def     *Definition
	pv      ProjectView // nil when the project is unknown
	project *snap
	labels  []*snap // state != removed, by id
	groups  []*snap // not archived, by id
	allLbls map[int64]*snap
	dir     *snap
	job     *snap
	task    *snap
	ids     fileList // the files shown, in export order
	nInst   int
	content string // the content hash (see measure)
	rev     uint64 // the state revision the plan reflects
	// watermark is the highest event stream sequence of the batches this
	// replica had applied when the view was taken (Pipeline.plan; 0 for
	// other views).
	watermark uint64
	// empty, when the source matches no file, says why: then nothing is
	// written (EXPORTS.md, "No empty export").
	empty string
	// progress, when set, is told how many files are rendered so far
	// (at each flush of the write buffer).
	progress func(done, total int)
	// links, when set, signs the media links the render pass writes and
	// notes their earliest expiry (media.go).
	links *mediaLinks
	// disk is the disk store's view the plan reads, which the plan
	// releases (nil: the in-memory state's, which needs no release).
	disk *diskView
	// classes is the YOLO class map: label_file_ids in class-id order
	// (nil: the labels by id; see Pipeline.classes).
	classes []int64
}

// close releases the plan's view and reports the first error a read met.
func (pl *plan) close() error {
	if pl.disk == nil {
		return nil
	}
	v := pl.disk
	pl.disk = nil
	return v.Close()
}

// check reports the first error the plan's reads met: when it is not nil,
// what was rendered lacks entities and must not be committed.
func (pl *plan) check() error {
	if pl.disk == nil {
		return nil
	}
	return pl.disk.err
}

type planFile struct {
	f        *snap
	file     *events.File
	insts    []*snap // instance_list / parent_instance_list, in export order
	seqs     []planSeq
	children []planFile
	// removed are a video's removed instances, when the export includes
	// them: written in the entry's own instance_list, never in
	// parent_instance_list or a sequence (see video below).
	removed []*snap
	// withRemoved: the export includes removed instances.
	withRemoved bool
}

type planSeq struct {
	s     *snap
	insts []*snap
}

// buildPlan selects the definition's files from a consistent view of the
// in-memory state (for tests and benchmarks: the plan reads the state
// without its lock after this returns, so nothing may write meanwhile).
func (s *State) buildPlan(d *Definition) *plan {
	var pl *plan
	s.Read(func(v View) { pl = buildPlan(v, d) })
	return pl
}

// buildPlan selects the definition's files and everything shown beside
// them, counts their instances and hashes the content (measure). It reads
// the state only through v, and renders from it later: v must stay open
// until the plan is rendered.
func buildPlan(v View, d *Definition) *plan {
	pl := selectFiles(v, d)
	pl.measure()
	return pl
}

// selectFiles selects the definition's files and what the header shows.
func selectFiles(v View, d *Definition) *plan {
	pl := &plan{def: d, allLbls: map[int64]*snap{}, rev: v.Rev()}
	pv := v.Project(d.Project)
	if pv == nil {
		pl.empty = emptyReason(v, d, nil, pl)
		return pl
	}
	pl.pv = pv
	pl.project = pv.Info()
	for l := range pv.Labels() {
		pl.allLbls[l.id] = l
		if l.val.(*events.LabelFile).State != "removed" {
			pl.labels = append(pl.labels, l)
		}
	}
	for g := range pv.Groups() {
		if !g.val.(*events.AttributeGroup).Archived {
			pl.groups = append(pl.groups, g)
		}
	}
	var ids fileList
	keep := func(m fileMark) bool { return true }
	switch d.Completion {
	case CompletionComplete:
		keep = func(m fileMark) bool { return m.complete }
	case CompletionIncomplete:
		keep = func(m fileMark) bool { return !m.complete }
	}
	switch d.Source.Kind {
	case SourceProject:
		for m := range pv.FileMarks() {
			if !m.removed && keep(m) {
				ids.add(m.id)
			}
		}
	case SourceDirectory:
		pl.dir = findDir(pv, d.Source)
		if pl.dir == nil {
			break
		}
		for m := range pv.FileMarks() {
			if m.removed || !keep(m) {
				continue
			}
			linked := slices.Contains(m.dirs, pl.dir.id)
			if !linked && m.parent != nil {
				if par, ok := pv.FileMark(*m.parent); ok && !par.removed {
					linked = slices.Contains(par.dirs, pl.dir.id)
				}
			}
			if linked {
				ids.add(m.id)
			}
		}
	case SourceJob:
		pl.job = findJob(pv, d.Source)
		if pl.job == nil {
			break
		}
		ids = jobFiles(pv, pl.job.id, d.Completion)
	case SourceTask:
		pl.task = pv.Task(d.Source.ID)
		if pl.task == nil {
			break
		}
		t := pl.task.val.(*events.Task)
		pl.job = pv.Job(t.JobID)
		if t.Status == "archived" {
			break
		}
		done := t.Status == "complete"
		if d.Completion == CompletionComplete && !done || d.Completion == CompletionIncomplete && done {
			break
		}
		if m, ok := pv.FileMark(t.FileID); ok && !m.removed {
			ids.add(t.FileID)
		}
	}
	if ids.Len() == 0 {
		pl.empty = emptyReason(v, d, pv, pl)
		return pl
	}
	pl.ids = ids
	return pl
}

// own returns the number of instances the file's own entry shows (not
// its children's); a file written as null shows none.
func (pf *planFile) own() int {
	if !hasEntry(pf.file.Type) {
		return 0
	}
	n := len(pf.insts) + len(pf.removed)
	for _, s := range pf.seqs {
		n += len(s.insts)
	}
	return n
}

// tally returns n, the instances a file's entry shows, unless the file is
// a compound file's child already in counted (then 0): a child's
// instances appear in its own entry and in its parent's, and count once.
// With counted nil nothing is counted.
func tally(id int64, n int, child bool, counted map[int64]bool) int {
	if counted == nil {
		return 0
	}
	if child {
		if counted[id] {
			return 0
		}
		counted[id] = true
	}
	return n
}

// hasEntry reports whether files of the type have an export form; the
// others (audio, unknown types) are written as null.
func hasEntry(typ string) bool {
	_, media := mediaKey[typ]
	return media || typ == "compound"
}

// jobFiles returns the files of the job's tasks that are not archived, in
// task created_time order (then task id), each file once at its first
// task. With completion complete, a file is kept when that task is
// complete; incomplete keeps the others.
func jobFiles(pv ProjectView, jobID int64, completion Completion) fileList {
	var tasks []*events.Task
	for ts := range pv.JobTasks(jobID) {
		if t := ts.val.(*events.Task); t.Status != "archived" {
			tasks = append(tasks, t)
		}
	}
	slices.SortFunc(tasks, func(a, b *events.Task) int {
		if c := bytes.Compare(a.CreatedTime, b.CreatedTime); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	seen := map[int64]bool{}
	var ids fileList
	for _, t := range tasks {
		if seen[t.FileID] {
			continue
		}
		seen[t.FileID] = true
		if m, ok := pv.FileMark(t.FileID); !ok || m.removed {
			continue
		}
		done := t.Status == "complete"
		if completion == CompletionComplete && !done || completion == CompletionIncomplete && done {
			continue
		}
		ids.add(t.FileID)
	}
	return ids
}

// planFile gathers one file's entry: its instances, sequences and, for a
// compound file, its children's entries.
func planFileOf(pv ProjectView, id int64, withRemoved, top bool) planFile {
	f := pv.File(id)
	pf := planFile{f: f, file: f.val.(*events.File)}
	var insts []*snap
	for in := range pv.Instances(id) {
		if in.val.(*events.Instance).SoftDelete && !withRemoved {
			continue
		}
		insts = append(insts, in)
	}
	byID := func(a, b *snap) int {
		return cmp.Compare(a.val.(*events.Instance).ID, b.val.(*events.Instance).ID)
	}
	switch pf.file.Type {
	case "video":
		// Every sequence of the video, archived ones too (as Diffgram's
		// own export does). A frame instance goes to its sequence's list;
		// one without a frame number, or whose sequence is null or not a
		// sequence of this video, goes to parent_instance_list, so that no
		// live instance is ever left out.
		seqIdx := map[int64]int{}
		for sq := range pv.Sequences(id) {
			seqIdx[sq.id] = len(pf.seqs)
			pf.seqs = append(pf.seqs, planSeq{s: sq})
		}
		//
		// With removed instances included, a video's removed instances go
		// to the entry's own instance_list: Diffgram's importer takes
		// sequence_list back as live annotations, and the live lists read
		// the same with and without removed instances.
		pf.withRemoved = withRemoved
		for _, in := range insts {
			v := in.val.(*events.Instance)
			if v.SoftDelete {
				pf.removed = append(pf.removed, in)
				continue
			}
			if v.FrameNumber != nil && v.SequenceID != nil {
				if i, ok := seqIdx[*v.SequenceID]; ok {
					pf.seqs[i].insts = append(pf.seqs[i].insts, in)
					continue
				}
			}
			pf.insts = append(pf.insts, in)
		}
		slices.SortFunc(pf.insts, byID)
		slices.SortFunc(pf.removed, byID)
		for i := range pf.seqs {
			slices.SortFunc(pf.seqs[i].insts, func(a, b *snap) int {
				fa, fb := *a.val.(*events.Instance).FrameNumber, *b.val.(*events.Instance).FrameNumber
				if c := cmp.Compare(fa, fb); c != 0 {
					return c
				}
				return byID(a, b)
			})
		}
	case "text":
		pf.insts = insts
		slices.SortFunc(pf.insts, func(a, b *snap) int {
			ra := a.val.(*events.Instance).Type == "relation"
			rb := b.val.(*events.Instance).Type == "relation"
			if ra != rb {
				if ra {
					return 1
				}
				return -1
			}
			return byID(a, b)
		})
	default:
		pf.insts = insts
		slices.SortFunc(pf.insts, byID)
	}
	if pf.file.Type == "compound" && top {
		for c := range pv.Children(id) {
			if !c.val.(*events.File).Removed() {
				pf.children = append(pf.children, planFileOf(pv, c.id, withRemoved, false))
			}
		}
	}
	return pf
}

// header renders the document up to and including export_info and
// attribute_groups_reference, without the closing brace. With canonical,
// the export id and time are zeroed: the content hash covers that form.
func (pl *plan) header(id int64, created time.Time, canonical bool) []byte {
	d := pl.def
	b := make([]byte, 0, 4096)
	b = append(b, `{"readme":{"format":"Diffgram export, kind Annotations, format version 1.0",`...)
	b = append(b, `"layout":"readme, label_map, label_colour_map, export_info and attribute_groups_reference, then one key per file: its id",`...)
	b = append(b, `"file_list_length":"export_info.file_list_length is the number of file entries: check it after reading",`...)
	b = append(b, `"writer":"written by exportstream from annotation events; see its README for the manifest and latest.json"},`...)
	b = append(b, `"label_map":{`...)
	for i, l := range pl.labels {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendIDKey(b, l.id)
		b = appendString(b, l.val.(*events.LabelFile).Label.Name)
	}
	b = append(b, `},"label_colour_map":{`...)
	for i, l := range pl.labels {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendIDKey(b, l.id)
		b = appendRaw(b, l.val.(*events.LabelFile).Colour)
	}
	// export_info: Diffgram's keys in Diffgram's order (those that do not
	// apply to a connector are null or false), then ours.
	b = append(b, `},"export_info":{"id":`...)
	ts := ""
	if canonical {
		id = 0
	} else {
		ts = created.UTC().Format("2006-01-02T15:04:05.000000Z")
	}
	b = appendInt(b, id)
	b = append(b, `,"export_format_version":"1.0","user_created_email":null,"created_time":`...)
	b = appendString(b, ts)
	b = append(b, `,"kind":"Annotations","masks":false,"source":`...)
	b = appendString(b, string(d.Source.Kind))
	b = append(b, `,"file_comparison_mode":"latest","project":{"name":`...)
	if pl.project != nil {
		b = appendString(b, pl.project.val.(*events.Project).Name)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"project_string_id":`...)
	b = appendString(b, d.Project)
	b = append(b, `},"directory":`...)
	if pl.dir != nil {
		dir := pl.dir.val.(*events.Directory)
		b = append(b, `{"id":`...)
		b = appendInt(b, dir.ID)
		b = append(b, `,"directory_id":`...)
		b = appendInt(b, dir.ID)
		b = append(b, `,"nickname":`...)
		b = appendString(b, dir.Nickname)
		b = append(b, `,"jobs_to_sync":null,"has_changes":null,"created_time":`...)
		b = appendRaw(b, dir.CreatedTime)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"job":`...)
	if pl.job != nil {
		j := pl.job.val.(*events.Job)
		b = append(b, `{"id":`...)
		b = appendInt(b, j.ID)
		b = append(b, `,"name":`...)
		b = appendString(b, j.Name)
		b = append(b, `,"status":`...)
		b = appendString(b, j.Status)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"task":`...)
	if pl.task != nil {
		t := pl.task.val.(*events.Task)
		b = append(b, `{"id":`...)
		b = appendInt(b, t.ID)
		b = append(b, `,"job_id":`...)
		b = appendInt(b, t.JobID)
		b = append(b, `,"file_id":`...)
		b = appendInt(b, t.FileID)
		b = append(b, `,"status":`...)
		b = appendString(b, t.Status)
		// Diffgram's task carries its job as {id, name}.
		b = append(b, `,"job":{"id":`...)
		b = appendInt(b, t.JobID)
		b = append(b, `,"name":`...)
		if pl.job != nil && pl.job.id == t.JobID {
			b = appendString(b, pl.job.val.(*events.Job).Name)
		} else {
			b = append(b, "null"...)
		}
		b = append(b, `}}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"file_list_length":`...)
	b = appendInt(b, int64(pl.ids.Len()))
	b = append(b, `,"ann_is_complete":`...)
	switch d.Completion {
	case CompletionComplete:
		b = append(b, "true"...)
	case CompletionIncomplete:
		b = append(b, "false"...)
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"instance_count":`...)
	b = appendInt(b, int64(pl.nInst))
	b = append(b, `,"include_removed_instances":`...)
	b = strconvBool(b, d.IncludeRemovedInstances)
	b = append(b, `,"export_name":`...)
	b = appendString(b, d.Name)
	b = append(b, `},"attribute_groups_reference":[`...)
	for i, g := range pl.groups {
		if i > 0 {
			b = append(b, ',')
		}
		b = pl.appendGroup(b, g)
	}
	b = append(b, ']')
	return b
}

func strconvBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// appendRaw appends a raw JSON value, or null when it is empty.
func appendRaw(b []byte, v json.RawMessage) []byte {
	if len(v) == 0 {
		return append(b, "null"...)
	}
	return append(b, v...)
}

// groupKeys are Diffgram's attribute group keys, written on every group in
// this order (null when the snapshot lacks them): Diffgram's importer
// compares them with !==, so a missing key is a mismatch.
var groupKeys = []string{"id", "kind", "name", "prompt", "is_global", "global_type",
	"default_value", "default_id", "min_value", "max_value", "archived",
	"attribute_template_list", "label_file_list"}

// groupSkip are the snapshot members never passed through: the ones
// written above, the version, and label_file_ids (written as
// label_file_list).
var groupSkip = func() map[string]bool {
	m := map[string]bool{"version": true, "label_file_ids": true}
	for _, k := range groupKeys {
		m[k] = true
	}
	return m
}()

// appendGroup renders an attribute group: Diffgram's keys first, with only
// the non-archived templates and label_file_ids turned into
// label_file_list, then the snapshot's other members as received.
func (pl *plan) appendGroup(b []byte, g *snap) []byte {
	gv := g.val.(*events.AttributeGroup)
	fs := events.Fields(g.raw)
	b = append(b, '{')
	for i, k := range groupKeys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, k)
		switch k {
		case "id":
			b = appendInt(b, gv.ID)
		case "archived":
			b = strconvBool(b, gv.Archived)
		case "attribute_template_list":
			b = append(b, '[')
			m := 0
			for _, t := range objectArray(rawOrNull(fs, k)) {
				var tv events.AttributeTemplate
				if json.Unmarshal(t, &tv) != nil || tv.Archived {
					continue
				}
				if m > 0 {
					b = append(b, ',')
				}
				m++
				b = append(b, t...)
			}
			b = append(b, ']')
		case "label_file_list":
			b = pl.appendLabelList(b, gv.LabelFileIDs)
		default:
			b = append(b, rawOrNull(fs, k)...)
		}
	}
	for _, f := range fs {
		if groupSkip[f.Key] {
			continue
		}
		b = append(b, ',')
		b = appendKey(b, f.Key)
		b = append(b, f.Val...)
	}
	return append(b, '}')
}

// appendLabelList appends the group's labels as Diffgram's label_file_list.
func (pl *plan) appendLabelList(b []byte, ids []int64) []byte {
	b = append(b, '[')
	m := 0
	for _, id := range ids {
		l := pl.allLbls[id]
		if l == nil {
			continue
		}
		lv := l.val.(*events.LabelFile)
		if m > 0 {
			b = append(b, ',')
		}
		m++
		b = append(b, `{"id":`...)
		b = appendInt(b, lv.ID)
		b = append(b, `,"type":"label","state":`...)
		b = appendString(b, lv.State)
		b = append(b, `,"colour":`...)
		b = appendRaw(b, lv.Colour)
		b = append(b, `,"label":{"id":`...)
		b = appendInt(b, lv.Label.ID)
		b = append(b, `,"name":`...)
		b = appendString(b, lv.Label.Name)
		b = append(b, `}}`...)
	}
	return append(b, ']')
}

func objectArray(raw json.RawMessage) []json.RawMessage {
	var out []json.RawMessage
	_ = json.Unmarshal(raw, &out)
	return out
}

// mediaKey is the key of each file type's media block.
var mediaKey = map[string]string{
	"image":         "image",
	"video":         "video",
	"text":          "text",
	"geospatial":    "geo_assets",
	"sensor_fusion": "point_cloud",
}

// appendEntry renders one file's entry (the value under its id key).
func (pl *plan) appendEntry(b []byte, pf *planFile) []byte {
	typ := pf.file.Type
	if !hasEntry(typ) {
		return append(b, "null"...)
	}
	b = append(b, fileFragment(pf.f)...)
	video := typ == "video"
	if video {
		b = append(b, `,"parent_instance_list":`...)
		b = pl.appendInstances(b, pf.insts, true)
		b = append(b, `,"sequence_list":[`...)
		for i, s := range pf.seqs {
			if i > 0 {
				b = append(b, ',')
			}
			sv := s.s.val.(*events.Sequence)
			b = append(b, `{"id":`...)
			b = appendInt(b, sv.ID)
			b = append(b, `,"label_file_id":`...)
			b = appendOptInt(b, sv.LabelFileID)
			b = append(b, `,"number":`...)
			b = appendOptInt(b, sv.Number)
			b = append(b, `,"keyframe_list":`...)
			b = appendRaw(b, sv.KeyframeList)
			b = append(b, `,"single_frame":`...)
			b = appendRaw(b, sv.SingleFrame)
			b = append(b, `,"instance_list":`...)
			b = pl.appendInstances(b, s.insts, true)
			b = append(b, '}')
		}
		b = append(b, ']')
		if pf.withRemoved {
			b = append(b, `,"instance_list":`...)
			b = pl.appendInstances(b, pf.removed, true)
		}
	} else {
		b = append(b, `,"instance_list":`...)
		b = pl.appendInstances(b, pf.insts, false)
	}
	for i := range pf.children {
		b = append(b, ',')
		b = appendIDKey(b, pf.children[i].file.ID)
		b = pl.appendEntry(b, &pf.children[i])
	}
	return append(b, '}')
}

// mediaFields are the members each media block always carries, in
// Diffgram's order (null when the snapshot lacks them); the block's other
// members follow as received. original_filename, where Diffgram writes it
// in the block, is the file's when the block lacks it.
var mediaFields = map[string][]string{
	"image": {"width", "height", "image_signed_expiry", "image_signed_url", "original_filename"},
	"video": {"width", "height", "frame_rate", "frame_count", "original_fps", "fps_conversion_ratio",
		"mp4_video_signed_url", "mp4_video_signed_expiry", "offset_in_seconds", "global_frame_start"},
	"text": {"original_filename", "signed_expiry", "signed_url", "tokens"},
}

// fileFragment returns the start of a file's entry: "{" then its "file"
// object and media block, cached on the immutable snapshot.
func fileFragment(f *snap) []byte {
	if c := f.frag.Load(); c != nil {
		return c[0]
	}
	b := renderHead(f, nil)
	f.frag.Store(&[2][]byte{b})
	return b
}

// renderHead renders fileFragment, with the media link as received, or
// with link (a signed one: media.go) when it is not nil.
func renderHead(f *snap, link *signedLink) []byte {
	fs := events.Fields(f.raw)
	file := f.val.(*events.File)
	b := make([]byte, 0, len(f.raw)+64)
	b = append(b, `{"file":{"id":`...)
	b = appendInt(b, file.ID)
	for _, k := range []string{"original_filename", "blob_url", "created_time", "ann_is_complete", "type"} {
		b = append(b, ',')
		b = appendKey(b, k)
		if k == "blob_url" && link != nil {
			b = appendString(b, link.url)
			continue
		}
		b = append(b, rawOrNull(fs, k)...)
	}
	b = append(b, '}')
	if key, ok := mediaKey[file.Type]; ok {
		b = append(b, ',')
		b = appendKey(b, key)
		b = appendMedia(b, key, rawOrNull(fs, key), rawOrNull(fs, "original_filename"), link)
	}
	return b
}

// appendMedia appends a file's media block under key: geo_assets a list
// ([] when absent), point_cloud an object ({} when absent), and the image,
// video and text blocks normalised with mediaFields; with link, the
// block's link and expiry (mediaLinkFields) are link's.
func appendMedia(b []byte, key string, raw, filename json.RawMessage, link *signedLink) []byte {
	isObject := len(raw) > 0 && raw[0] == '{'
	switch key {
	case "geo_assets":
		if len(raw) > 0 && raw[0] == '[' {
			return append(b, raw...)
		}
		return append(b, "[]"...)
	case "point_cloud":
		if isObject {
			return append(b, raw...)
		}
		return append(b, "{}"...)
	}
	var fs []events.Field
	if isObject {
		fs = events.Fields(raw)
	}
	want := mediaFields[key]
	b = append(b, '{')
	for i, k := range want {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, k)
		v, ok := lookup(fs, k)
		if k == "original_filename" && (!ok || string(v) == "null") {
			v, ok = filename, true
		}
		if link != nil {
			switch k {
			case mediaLinkFields[key][0]:
				b = appendString(b, link.url)
				continue
			case mediaLinkFields[key][1]:
				b = appendInt(b, link.expires)
				continue
			}
		}
		if ok {
			b = append(b, v...)
		} else {
			b = append(b, "null"...)
		}
	}
	for _, f := range fs {
		if slices.Contains(want, f.Key) {
			continue
		}
		b = append(b, ',')
		b = appendKey(b, f.Key)
		b = append(b, f.Val...)
	}
	return append(b, '}')
}

func appendOptInt(b []byte, v *int64) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	return appendInt(b, *v)
}

func (pl *plan) appendInstances(b []byte, list []*snap, video bool) []byte {
	b = append(b, '[')
	for i, in := range list {
		if i > 0 {
			b = append(b, ',')
		}
		frag := instanceFragment(in, video)
		if in.val.(*events.Instance).SoftDelete {
			b = append(b, frag[:len(frag)-1]...)
			b = append(b, `,"soft_delete":true}`...)
		} else {
			b = append(b, frag...)
		}
	}
	return append(b, ']')
}

// Fields never exported from an instance snapshot: lineage, bookkeeping,
// and the ones rendered in fixed places.
var instanceSkip = map[string]bool{
	"id": true, "type": true, "attribute_groups": true, "label_file_id": true,
	"x_min": true, "y_min": true, "x_max": true, "y_max": true, "points": true,
	"root_id": true, "previous_id": true, "version": true, "soft_delete": true,
	"sequence_id": true, "file_id": true,
	"frame_number": true, "global_frame_number": true, "number": true,
	"interpolated": true, "local_sequence_number": true,
}

// typeFields are the geometry members each instance type always carries,
// as Diffgram's build_instance writes them (null when the snapshot lacks
// them; an ellipse's angle 0, which Diffgram's importer requires).
var typeFields = map[string][]string{
	"cuboid":     {"front_face", "rear_face"},
	"ellipse":    {"center_x", "center_y", "width", "height", "angle"},
	"text_token": {"start_char", "end_char", "start_token", "end_token", "start_sentence", "end_sentence", "sentence"},
	"keypoints":  {"nodes", "edges"},
	"cuboid_3d":  {"rotation_euler_angles", "position_3d", "center_3d", "max_point_3d", "min_point_3d", "dimensions_3d"},
}

// truthyOnly are exported only when truthy (and not in typeFields).
var truthyOnly = map[string]bool{"radius": true, "bounds": true, "angle": true, "mask": true}

// instanceFragment returns the instance's rendered JSON object (without
// soft_delete), cached on the immutable snapshot.
func instanceFragment(in *snap, video bool) []byte {
	i := 0
	if video {
		i = 1
	}
	if c := in.frag.Load(); c != nil && c[i] != nil {
		return c[i]
	}
	frag := renderInstance(in, video)
	for {
		old := in.frag.Load()
		var next [2][]byte
		if old != nil {
			next = *old
		}
		next[i] = frag
		if in.frag.CompareAndSwap(old, &next) {
			return frag
		}
	}
}

func renderInstance(in *snap, video bool) []byte {
	fs := events.Fields(in.raw)
	v := in.val.(*events.Instance)
	b := make([]byte, 0, len(in.raw))
	if v.Type == "relation" {
		b = append(b, `{"type":"relation","label_file_id":`...)
		b = append(b, rawOrNull(fs, "label_file_id")...)
		b = append(b, `,"attribute_groups":`...)
		b = append(b, rawOrNull(fs, "attribute_groups")...)
		b = append(b, `,"from_instance_id":`...)
		b = append(b, rawOrNull(fs, "from_instance_id")...)
		b = append(b, `,"to_instance_id":`...)
		b = append(b, rawOrNull(fs, "to_instance_id")...)
		return append(b, '}')
	}
	b = append(b, `{"id":`...)
	b = appendInt(b, v.ID)
	b = append(b, `,"type":`...)
	b = append(b, rawOrNull(fs, "type")...)
	b = append(b, `,"attribute_groups":`...)
	b = append(b, rawOrNull(fs, "attribute_groups")...)
	b = append(b, `,"label_file_id":`...)
	b = append(b, rawOrNull(fs, "label_file_id")...)
	box := []string{"x_min", "y_min", "x_max", "y_max"}
	anyBox := false
	for _, k := range box {
		if val, ok := lookup(fs, k); ok && truthy(val) {
			anyBox = true
		}
	}
	if anyBox {
		for _, k := range box {
			b = append(b, ',')
			b = appendKey(b, k)
			if val, ok := lookup(fs, k); ok && !bytes.Equal(val, []byte("null")) {
				b = append(b, val...)
			} else {
				b = append(b, '0')
			}
		}
	}
	if pts, ok := lookup(fs, "points"); ok && truthy(pts) {
		b = append(b, `,"points":`...)
		b = append(b, pts...)
	}
	always := typeFields[v.Type]
	for _, f := range fs {
		if instanceSkip[f.Key] || isTimeField(f.Key) {
			continue
		}
		if truthyOnly[f.Key] && !truthy(f.Val) && !slices.Contains(always, f.Key) {
			continue
		}
		if f.Key == "angle" && v.Type == "ellipse" && string(f.Val) == "null" {
			continue // written below, as 0
		}
		b = append(b, ',')
		b = appendKey(b, f.Key)
		b = append(b, f.Val...)
	}
	for _, k := range always {
		if val, ok := lookup(fs, k); ok && !(k == "angle" && string(val) == "null") {
			continue
		}
		b = append(b, ',')
		b = appendKey(b, k)
		if k == "angle" {
			b = append(b, '0') // the importer requires a number; unrotated
		} else {
			b = append(b, "null"...)
		}
	}
	if video {
		b = append(b, `,"frame_number":`...)
		b = append(b, rawOrNull(fs, "frame_number")...)
		b = append(b, `,"global_frame_number":`...)
		b = append(b, rawOrNull(fs, "global_frame_number")...)
		b = append(b, `,"local_sequence_number":`...)
		b = append(b, rawOrNull(fs, "number")...)
		b = append(b, `,"number":`...)
		b = append(b, rawOrNull(fs, "number")...)
		b = append(b, `,"interpolated":`...)
		b = append(b, rawOrNull(fs, "interpolated")...)
	}
	return append(b, '}')
}

func isTimeField(k string) bool {
	return len(k) > 5 && k[len(k)-5:] == "_time"
}

// appendFile appends the file's entry, from the view's kept entries when
// it has a valid one (the disk store), else rendered (and kept), and
// returns the number of instances it adds to counted's tally.
func (pl *plan) appendFile(b []byte, id int64, counted map[int64]bool) ([]byte, int) {
	b, n, _ := pl.entry(b, id, counted, nil)
	return b, n
}

// entry is appendFile; when it renders and keeps the entry, it also sets
// *sum (if sum is not nil) to the entry's SHA-256 and reports true.
func (pl *plan) entry(b []byte, id int64, counted map[int64]bool, sum *[32]byte) ([]byte, int, bool) {
	removed := pl.def.IncludeRemovedInstances
	c, _ := pl.pv.(entryCacher)
	if c != nil {
		if frag, n, child, ok := c.cachedEntry(id, removed); ok {
			return append(b, frag...), tally(id, n, child, counted), false
		}
	}
	pf := planFileOf(pl.pv, id, removed, true)
	start := len(b)
	b = pl.appendEntry(b, &pf)
	child := pf.file.ParentID != nil
	summed := false
	if c != nil && pf.file.Type != "compound" {
		s := sha256.Sum256(b[start:])
		c.storeEntry(id, removed, b[start:], s, pf.own(), child)
		if sum != nil {
			*sum, summed = s, true
		}
	}
	n := tally(id, pf.own(), child, counted)
	for i := range pf.children {
		n += tally(pf.children[i].file.ID, pf.children[i].own(), true, counted)
	}
	return b, n, summed
}

// measure counts the instances the export shows and computes its content
// hash: SHA-256 over each file in export order (its id, 8 bytes
// big-endian, then the SHA-256 of its entry as written, the value after
// its key), then over the header with the export id and time zeroed.
// One pass, before anything is uploaded, so that an unchanged export is
// known without writing; it reads the kept summaries of unchanged
// entries, not the entries.
func (pl *plan) measure() {
	h := sha256.New()
	counted := map[int64]bool{}
	removed := pl.def.IncludeRemovedInstances
	c, _ := pl.pv.(entryCacher)
	var buf []byte
	var rec [8 + sha256.Size]byte
	for _, id := range pl.ids.All() {
		var sum [32]byte
		n, ok := 0, false
		if c != nil {
			var kept int
			var child bool
			if sum, kept, child, ok = c.cachedSum(id, removed); ok {
				n = tally(id, kept, child, counted)
			}
		}
		if !ok {
			var summed bool
			buf, n, summed = pl.entry(buf[:0], id, counted, &sum)
			if !summed {
				sum = sha256.Sum256(buf)
			}
		}
		pl.nInst += n
		binary.BigEndian.PutUint64(rec[:8], uint64(id))
		copy(rec[8:], sum[:])
		h.Write(rec[:])
	}
	if c != nil {
		c.endPass()
	}
	h.Write(pl.header(0, time.Time{}, true))
	pl.content = hex.EncodeToString(h.Sum(nil))
}

// renderBody streams the file entries and the closing brace to w, in
// pieces of about 256 KiB, telling progress the files done after each.
func (pl *plan) renderBody(w io.Writer) error {
	const bufSize = 256 << 10
	b := make([]byte, 0, bufSize+64<<10)
	flush := func(done int) error {
		if _, err := w.Write(b); err != nil {
			return err
		}
		if pl.progress != nil {
			pl.progress(done, pl.ids.Len())
		}
		b = b[:0]
		return nil
	}
	for i, id := range pl.ids.All() {
		b = append(b, ',')
		b = appendIDKey(b, id)
		start := len(b)
		b, _ = pl.appendFile(b, id, nil)
		if pl.links != nil {
			if b = pl.linkEntry(b, start, id); pl.links.err != nil {
				return pl.links.err
			}
		}
		if len(b) >= bufSize {
			if err := flush(i + 1); err != nil {
				return err
			}
		}
	}
	if c, ok := pl.pv.(entryCacher); ok {
		c.endPass()
	}
	b = append(b, '}')
	return flush(pl.ids.Len())
}

// Result describes a rendered export document.
type Result struct {
	Files     int
	Instances int
	Bytes     int64
	SHA256    string // of the bytes written
	// ContentHash covers the document with export_info.id and created_time
	// zeroed: equal content hashes mean the same export content.
	ContentHash string
	Ref         string // the source's reference, as in object names
	// Empty, when the source matched no file, says why; an export of it
	// is skipped (EXPORTS.md, "No empty export"), though Render still
	// writes the document with no file entries.
	Empty string
}

// countingHash feeds every write into hashes and counts the bytes.
type countingHash struct {
	w      io.Writer
	hashes []hash.Hash
	n      int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	for _, h := range c.hashes {
		h.Write(p)
	}
	c.n += int64(len(p))
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}

// Render writes the definition's export document, as export id at time
// at, to w, streaming it: memory does not grow with the document. The
// state's read lock is held throughout.
func (s *State) Render(w io.Writer, d *Definition, id int64, at time.Time) (res Result, err error) {
	s.Read(func(v View) { res, err = buildPlan(v, d).render(w, id, at) })
	return res, err
}

// render writes the export document to w (the plan's measure pass has
// counted and hashed the content already).
func (pl *plan) render(w io.Writer, id int64, at time.Time) (Result, error) {
	full := sha256.New()
	out := &countingHash{w: w, hashes: []hash.Hash{full}}
	if _, err := out.Write(pl.header(id, at, false)); err != nil {
		return Result{}, err
	}
	if err := pl.renderBody(out); err != nil {
		return Result{}, err
	}
	if err := pl.check(); err != nil {
		return Result{}, err
	}
	return Result{
		Files:       pl.ids.Len(),
		Instances:   pl.nInst,
		Bytes:       out.n,
		SHA256:      hex.EncodeToString(full.Sum(nil)),
		ContentHash: pl.content,
		Ref:         pl.def.ref(pl),
		Empty:       pl.empty,
	}, nil
}
