package simulate

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// A plan is one annotator's piece of work on one root file (and its compound
// children): a list of steps, each of which changes the world and returns
// exactly one event. Up to `workers` plans run interleaved; a file belongs
// to at most one plan at a time (file.busy), so a plan's decisions made when
// it is built still hold when its steps run.
type plan struct {
	root  int   // the root file; set by the upload step of an upload plan
	fam   []int // the root file, then its children
	task  *task
	seqs  []int        // video: the plan's sequences, by number-1
	ids   []int        // instance ids the plan made, for relations
	words map[int]bool // text: words already tagged
	steps []func() Event
	pos   int
}

func (p *plan) add(steps ...func() Event) { p.steps = append(p.steps, steps...) }

// The team never removes a file when that would leave fewer than
// minLiveRoots live root files, or fewer than 90% of Options.Files.
const minLiveRoots = 10

// work returns the next event of the steady stream.
func (s *Simulator) work() Event {
	if len(s.active) < workers && (len(s.active) == 0 || s.rng.IntN(3) == 0) {
		if p := s.newPlan(); p != nil {
			s.active = append(s.active, p)
		}
	}
	if len(s.active) == 0 {
		// Every live file is taken and no upload is left: cannot happen with
		// workers < minLiveRoots, but never stall the stream.
		s.project.Version++
		return s.emit("project", "upserted", &s.project)
	}
	i := s.rng.IntN(len(s.active))
	p := s.active[i]
	ev := p.steps[p.pos]()
	p.pos++
	if p.pos == len(p.steps) {
		s.active = slices.Delete(s.active, i, i+1)
		if f := s.files[p.root]; f != nil {
			f.busy = false
		}
	}
	return ev
}

func (s *Simulator) newPlan() *plan {
	if s.uploaded < s.opts.Files {
		if s.uploaded >= workers && s.rng.IntN(10) == 0 {
			if p := s.reworkPlan(); p != nil {
				return p
			}
		}
		return s.uploadPlan()
	}
	return s.reworkPlan()
}

func (s *Simulator) pickKind() string {
	if len(s.kindsQueue) > 0 {
		k := s.kindsQueue[0]
		s.kindsQueue = s.kindsQueue[1:]
		return k
	}
	switch r := s.rng.IntN(100); {
	case r < 70:
		return "image"
	case r < 80:
		return "video"
	case r < 88:
		return "text"
	case r < 95:
		return "compound"
	default:
		return "audio"
	}
}

// uploadPlan uploads a new root file and works it to completion, through a
// task of the job (most files) or directly.
func (s *Simulator) uploadPlan() *plan {
	n := s.uploaded
	s.uploaded++
	kind := s.pickKind()
	viaJob := s.rng.IntN(10) < 7
	dir := DirectoryLuckfrill
	if s.rng.IntN(10) == 0 {
		dir = DirectoryArchive
	}
	// The demo shows both paths to completion within its first seconds.
	switch n {
	case 0:
		viaJob, dir = true, DirectoryLuckfrill
	case 2:
		viaJob, dir = false, DirectoryLuckfrill
	}

	p := &plan{}
	famSize := 1
	p.add(func() Event { return s.upload(p, kind, dir) })
	if kind == "compound" {
		famSize = 3
		p.add(func() Event { return s.upload(p, "image", dir) })
		p.add(func() Event { return s.upload(p, "image", dir) })
	}
	work := s.workSteps(p, kind)
	if viaJob {
		s.jobFlow(p, famSize, work, false, dir != s.job.CompletionDirectoryID)
	} else {
		p.add(work...)
		s.completeAll(p, famSize, true)
	}
	return p
}

// reworkPlan picks an idle live root file and reworks it: a new review task,
// a reopen and edit, a few edits, a link to the Archive, or (rarely, and
// never below the limits of minLiveRoots) removal.
// It returns nil when every live file is taken.
func (s *Simulator) reworkPlan() *plan {
	var idle []int
	for _, id := range s.rootFiles {
		if f := s.files[id]; f.State != "removed" && !f.busy {
			idle = append(idle, id)
		}
	}
	if len(idle) == 0 {
		return nil
	}
	f := s.files[idle[s.rng.IntN(len(idle))]]
	f.busy = true
	p := &plan{root: f.ID, fam: append([]int{f.ID}, f.children...)}
	famSize := len(p.fam)
	touches := func(n int) []func() Event {
		steps := make([]func() Event, n)
		for i := range steps {
			steps[i] = func() Event { return s.touch(p) }
		}
		return steps
	}

	switch r := s.rng.IntN(100); {
	case r < 2 && s.liveRoots > minLiveRoots && s.liveRoots > s.opts.Files*9/10:
		s.liveRoots--
		for i := famSize - 1; i >= 0; i-- { // children first
			p.add(func() Event { return s.remove(p.fam[i]) })
		}
	case r < 12 && !f.inDirectory(DirectoryArchive):
		for i := range famSize {
			p.add(func() Event { return s.link(p.fam[i], DirectoryArchive) })
		}
	case r < 40:
		s.jobFlow(p, famSize, touches(2+s.rng.IntN(4)), f.complete(), !f.inDirectory(s.job.CompletionDirectoryID))
	case r < 70:
		if f.complete() {
			s.completeAll(p, famSize, false)
		}
		p.add(touches(2 + s.rng.IntN(4))...)
		s.completeAll(p, famSize, true)
	default:
		p.add(touches(2 + s.rng.IntN(3))...)
	}
	return p
}

// jobFlow adds a task of the job around work: created (resetting the file's
// completion if it was complete), in progress, work, review requested,
// sometimes a round of changes, complete; then the file is complete and
// linked to the job's completion directory; sometimes the task is archived.
func (s *Simulator) jobFlow(p *plan, famSize int, work []func() Event, reset, link bool) {
	p.add(func() Event { return s.createTask(p) })
	if reset {
		s.completeAll(p, famSize, false)
	}
	status := func(st string) func() Event { return func() Event { return s.taskStatus(p, st) } }
	p.add(status("in_progress"))
	p.add(work...)
	p.add(status("review_requested"))
	if s.rng.IntN(4) == 0 {
		p.add(status("in_review"), status("requires_changes"), status("in_progress"),
			func() Event { return s.touch(p) }, status("review_requested"))
	}
	p.add(status("complete"))
	s.completeAll(p, famSize, true)
	if link {
		for i := range famSize {
			p.add(func() Event { return s.link(p.fam[i], s.job.CompletionDirectoryID) })
		}
	}
	if s.rng.IntN(10) == 0 {
		p.add(status("archived"))
	}
}

func (s *Simulator) completeAll(p *plan, famSize int, complete bool) {
	for i := range famSize {
		p.add(func() Event { return s.setComplete(p.fam[i], complete) })
	}
}

// workSteps is the annotation of a freshly uploaded file of the kind.
func (s *Simulator) workSteps(p *plan, kind string) []func() Event {
	var steps []func() Event
	touch := func() Event { return s.touch(p) }
	switch kind {
	case "image":
		for range 2 + s.rng.IntN(4) {
			steps = append(steps, func() Event { return s.drawOn(p.root) })
		}
		for range s.rng.IntN(3) {
			steps = slices.Insert(steps, 1+s.rng.IntN(len(steps)), touch)
		}
	case "compound":
		steps = append(steps, func() Event { return s.drawTyped(p.fam[0], "tag") })
		for c := 1; c <= 2; c++ {
			for range 1 + s.rng.IntN(2) {
				steps = append(steps, func() Event { return s.drawOn(p.fam[c]) })
			}
		}
		if s.rng.IntN(2) == 0 {
			steps = append(steps, touch)
		}
	case "video":
		for number := 1; number <= 2; number++ {
			label := []int{LabelCar, LabelPerson}[number-1]
			steps = append(steps, func() Event { return s.newSequence(p, label) })
			f := s.rng.IntN(10)
			keyframes := 2 + s.rng.IntN(2)
			for k := range keyframes {
				frame := f
				steps = append(steps,
					func() Event { return s.drawFrame(p.root, p.seqs[number-1], frame, false) },
					func() Event { return s.addKeyframe(p.seqs[number-1], frame) })
				gap := 10 + s.rng.IntN(11)
				if k == 0 {
					// One interpolated frame between the first two keyframes.
					mid := f + gap/2
					steps = append(steps, func() Event { return s.drawFrame(p.root, p.seqs[number-1], mid, true) })
				}
				f += gap
			}
		}
		steps = append(steps, func() Event { return s.drawGlobal(p.root) })
		if s.rng.IntN(2) == 0 {
			steps = append(steps, touch)
		}
	case "text":
		for range 2 + s.rng.IntN(2) {
			steps = append(steps, func() Event { return s.drawToken(p, p.root) })
		}
		steps = append(steps, func() Event { return s.drawRelation(p, p.root) })
	case "audio":
		steps = append(steps, func() Event { return s.drawTyped(p.root, "tag") })
	}
	return steps
}

// texts are the documents of text files: sentences of space-separated tokens.
var texts = [][]string{
	{"A red car waits at the light .", "A cyclist crosses in front of it ."},
	{"The bus stops near the station .", "Two people get off and walk north ."},
	{"A person on a bicycle overtakes a parked van .", "The traffic light turns green ."},
}

func (s *Simulator) upload(p *plan, kind string, dir int) Event {
	id := s.nextFile
	s.nextFile++
	url := fmt.Sprintf("https://media.example/%s/%d", s.opts.Project, id)
	expiry := s.clock.Add(7 * 24 * time.Hour).Unix()
	f := &file{
		ID:           id,
		Type:         kind,
		CreatedTime:  s.now(),
		State:        "added",
		DirectoryIDs: []int{dir},
		BlobURL:      &url,
		Version:      1,
	}
	switch kind {
	case "image":
		f.OriginalFilename = fmt.Sprintf("cam_%d.jpg", id)
		f.Image = &imageBlock{Width: 1920, Height: 1080, ImageSignedURL: url, ImageSignedExpiry: expiry}
	case "video":
		offset := s.rng.IntN(600)
		f.OriginalFilename = fmt.Sprintf("drive_%d.mp4", id)
		f.Video = &videoBlock{
			Width: 1280, Height: 720, FrameRate: 5, FrameCount: 60 + s.rng.IntN(181),
			OriginalFPS: 30, FPSConversionRatio: 6, OffsetInSeconds: float64(offset),
			GlobalFrameStart: offset * 30, MP4VideoSignedURL: url, MP4VideoSignedExpiry: expiry,
		}
	case "text":
		f.OriginalFilename = fmt.Sprintf("report_%d.txt", id)
		f.Text = &textBlock{SignedURL: url, SignedExpiry: expiry, Tokens: tokenize(texts[s.rng.IntN(len(texts))])}
	case "audio":
		f.OriginalFilename = fmt.Sprintf("street_%d.wav", id)
	case "compound":
		f.OriginalFilename = fmt.Sprintf("rig_%d", id)
		f.BlobURL = nil
	}
	if s.opts.BlobPaths {
		f.BlobPath = blobPath(s.opts.Project, kind, id)
	}
	if p.root == 0 {
		p.root = id
		f.busy = true
		s.rootFiles = append(s.rootFiles, id)
		s.liveRoots++
	} else {
		parent := s.files[p.root]
		f.ParentID = ptr(parent.ID)
		f.DirectoryIDs = slices.Clone(parent.DirectoryIDs)
		f.OriginalFilename = fmt.Sprintf("rig_%d_cam%d.jpg", parent.ID, len(parent.children)+1)
		parent.children = append(parent.children, id)
	}
	p.fam = append(p.fam, id)
	s.files[id] = f
	return s.emit("file", "uploaded", f)
}

func tokenize(sentences []string) tokens {
	var t tokens
	pos := 0
	for si, sent := range sentences {
		if si > 0 {
			pos++ // the space between sentences
		}
		start := pos
		for wi, w := range strings.Fields(sent) {
			if wi > 0 {
				pos++
			}
			t.Words = append(t.Words, word{ID: len(t.Words), Value: w, StartChar: pos, EndChar: pos + len(w), Sentence: si})
			pos += len(w)
		}
		t.Sentences = append(t.Sentences, sentence{ID: si, StartChar: start, EndChar: pos})
	}
	return t
}

func (s *Simulator) setComplete(id int, complete bool) Event {
	f := s.files[id]
	f.AnnIsComplete = ptr(complete)
	f.Version++
	return s.emit("file", "completion_changed", f)
}

func (s *Simulator) link(id, dir int) Event {
	f := s.files[id]
	if !f.inDirectory(dir) {
		f.DirectoryIDs = append(slices.Clone(f.DirectoryIDs), dir)
		slices.Sort(f.DirectoryIDs)
	}
	f.Version++
	return s.emit("file", "updated", f)
}

func (s *Simulator) remove(id int) Event {
	f := s.files[id]
	f.State = "removed"
	f.Version++
	return s.emit("file", "removed", f)
}

func (s *Simulator) createTask(p *plan) Event {
	t := &task{ID: s.nextTask, JobID: s.job.ID, FileID: p.root, Status: "created", CreatedTime: s.now(), Version: 1}
	s.nextTask++
	s.tasks[t.ID] = t
	p.task = t
	return s.emit("task", "created", t)
}

func (s *Simulator) taskStatus(p *plan, status string) Event {
	p.task.Status = status
	p.task.Version++
	action := "status_changed"
	if status == "archived" {
		action = "archived"
	}
	return s.emit("task", action, p.task)
}

func (s *Simulator) newSequence(p *plan, label int) Event {
	q := &sequence{ID: s.nextSeq, FileID: p.root, LabelFileID: label, Number: len(p.seqs) + 1,
		KeyframeList: []int{}, Version: 1}
	s.nextSeq++
	s.sequences[q.ID] = q
	p.seqs = append(p.seqs, q.ID)
	f := s.files[p.root]
	f.sequences = append(f.sequences, q.ID)
	return s.emit("sequence", "upserted", q)
}

func (s *Simulator) addKeyframe(seqID, frame int) Event {
	q := s.sequences[seqID]
	q.KeyframeList = append(slices.Clone(q.KeyframeList), frame)
	q.Version++
	return s.emit("sequence", "upserted", q)
}

// newRow starts a new lineage on the file.
func (s *Simulator) newRow(fileID int, typ string, label *int) *instance {
	id := s.nextInst
	s.nextInst++
	return &instance{ID: id, RootID: id, Version: 1, FileID: fileID, Type: typ, LabelFileID: label}
}

func (s *Simulator) created(in *instance) Event {
	s.instances[in.RootID] = in
	f := s.files[in.FileID]
	f.roots = append(f.roots, in.RootID)
	return s.emit("instance", "created", in)
}

func (s *Simulator) randomLabel() int {
	// Traffic lights are rarer than the rest.
	return []int{LabelCar, LabelCar, LabelCar, LabelPerson, LabelPerson, LabelBicycle, LabelTrafficLight}[s.rng.IntN(7)]
}

// occlusion sometimes sets the occlusion attribute of a labelled instance.
func (s *Simulator) occlusion(label int) map[string]option {
	if label == LabelTrafficLight || s.rng.IntN(3) != 0 {
		return nil
	}
	k := s.rng.IntN(3)
	return map[string]option{
		fmt.Sprint(AttributeGroupOcclusion): {ID: AttributeGroupOcclusion*10 + k + 1, Name: []string{"none", "partial", "heavy"}[k]},
	}
}

func (s *Simulator) randomBox(w, h int) *bbox {
	x, y := s.rng.IntN(w-250), s.rng.IntN(h-200)
	return &bbox{XMin: x, YMin: y, XMax: x + 40 + s.rng.IntN(200), YMax: y + 40 + s.rng.IntN(160)}
}

// drawOn draws a new instance fit for the file's type.
func (s *Simulator) drawOn(fileID int) Event {
	f := s.files[fileID]
	switch f.Type {
	case "image":
		switch r := s.rng.IntN(100); {
		case r < 55:
			return s.drawTyped(fileID, "box")
		case r < 75:
			return s.drawTyped(fileID, "polygon")
		case r < 90:
			return s.drawTyped(fileID, "point")
		default:
			return s.drawTyped(fileID, "tag")
		}
	case "video":
		if len(f.sequences) == 0 {
			return s.drawGlobal(fileID)
		}
		frameCount := f.Video.FrameCount
		return s.drawFrame(fileID, f.sequences[s.rng.IntN(len(f.sequences))], s.rng.IntN(frameCount), false)
	case "text":
		return s.drawToken(&plan{}, fileID)
	default:
		return s.drawTyped(fileID, "tag")
	}
}

// drawTyped draws a box, polygon, point or tag on an image-like file.
func (s *Simulator) drawTyped(fileID int, typ string) Event {
	label := s.randomLabel()
	in := s.newRow(fileID, typ, &label)
	in.AttributeGroups = s.occlusion(label)
	switch typ {
	case "box":
		in.bbox = s.randomBox(1920, 1080)
	case "polygon":
		cx, cy := 200+s.rng.IntN(1500), 150+s.rng.IntN(780)
		n := 3 + s.rng.IntN(4)
		b := &bbox{XMin: cx, YMin: cy, XMax: cx, YMax: cy}
		for i := range n {
			// Points on a rough circle, in order, so the polygon is simple.
			angle := float64(i) / float64(n) * 2 * math.Pi
			r := float64(40 + s.rng.IntN(100))
			x := cx + int(r*math.Cos(angle))
			y := cy + int(r*math.Sin(angle))
			in.Points = append(in.Points, point{X: x, Y: y})
			b.XMin, b.YMin = min(b.XMin, x), min(b.YMin, y)
			b.XMax, b.YMax = max(b.XMax, x), max(b.YMax, y)
		}
		in.bbox = b
	case "point":
		in.Points = []point{{X: s.rng.IntN(1920), Y: s.rng.IntN(1080)}}
	}
	return s.created(in)
}

// drawFrame draws the box of a sequence on one frame of a video.
func (s *Simulator) drawFrame(fileID, seqID, frameNumber int, interpolated bool) Event {
	f := s.files[fileID]
	q := s.sequences[seqID]
	in := s.newRow(fileID, "box", ptr(q.LabelFileID))
	b := s.randomBox(f.Video.Width, f.Video.Height)
	in.bbox = b
	in.frame = &frame{
		FrameNumber:       ptr(frameNumber),
		GlobalFrameNumber: ptr(f.Video.GlobalFrameStart + frameNumber*int(f.Video.FPSConversionRatio)),
		SequenceID:        ptr(q.ID),
		Number:            ptr(q.Number),
		Interpolated:      ptr(interpolated),
	}
	return s.created(in)
}

var weather = []string{"sunny", "rainy", "night"}

// drawGlobal draws the video's global instance: the weather, on no frame.
func (s *Simulator) drawGlobal(fileID int) Event {
	in := s.newRow(fileID, "global", nil)
	k := s.rng.IntN(len(weather))
	in.AttributeGroups = map[string]option{fmt.Sprint(AttributeGroupWeather): {ID: AttributeGroupWeather*10 + k + 1, Name: weather[k]}}
	in.frame = &frame{}
	return s.created(in)
}

// drawToken tags one word of a text file not yet tagged by the plan.
func (s *Simulator) drawToken(p *plan, fileID int) Event {
	words := s.files[fileID].Text.Tokens.Words
	if p.words == nil {
		p.words = map[int]bool{}
	}
	w := s.rng.IntN(len(words))
	for tries := 0; p.words[w] && tries < len(words); tries++ {
		w = (w + 1) % len(words)
	}
	p.words[w] = true
	wd := words[w]
	label := []int{LabelCar, LabelPerson, LabelBicycle}[s.rng.IntN(3)]
	in := s.newRow(fileID, "text_token", &label)
	in.textSpan = &textSpan{
		StartChar: wd.StartChar, EndChar: wd.EndChar,
		StartToken: w, EndToken: w,
		StartSentence: wd.Sentence, EndSentence: wd.Sentence, Sentence: wd.Sentence,
	}
	p.ids = append(p.ids, in.ID)
	return s.created(in)
}

// drawRelation relates the plan's first two text tokens.
func (s *Simulator) drawRelation(p *plan, fileID int) Event {
	if len(p.ids) < 2 {
		return s.drawToken(p, fileID)
	}
	in := s.newRow(fileID, "relation", ptr(LabelPerson))
	in.relation = &relation{FromInstanceID: p.ids[0], ToInstanceID: p.ids[1]}
	return s.created(in)
}

// touch is one annotator action on the plan's files: edit, delete or
// undelete an existing instance, or draw a new one.
func (s *Simulator) touch(p *plan) Event {
	var live, deleted []int
	for _, id := range p.fam {
		for _, root := range s.files[id].roots {
			in := s.instances[root]
			switch {
			case !in.editable():
			case in.SoftDelete:
				deleted = append(deleted, root)
			default:
				live = append(live, root)
			}
		}
	}
	switch r := s.rng.IntN(100); {
	case r < 15 && len(deleted) > 0:
		return s.setDeleted(deleted[s.rng.IntN(len(deleted))], false)
	case r < 30 && len(live) > 1:
		return s.setDeleted(live[s.rng.IntN(len(live))], true)
	case r < 85 && len(live) > 0:
		return s.edit(live[s.rng.IntN(len(live))])
	default:
		return s.drawOn(p.fam[s.rng.IntN(len(p.fam))])
	}
}

// edit replaces the newest row of a lineage with a new row.
func (s *Simulator) edit(root int) Event {
	old := s.instances[root]
	in := old.clone()
	in.ID = s.nextInst
	s.nextInst++
	in.PreviousID = ptr(old.ID)
	in.Version = old.Version + 1
	// Nudge the geometry, keeping it inside the picture.
	w, h := s.dims(in.FileID)
	dx, dy := s.rng.IntN(41)-20, s.rng.IntN(41)-20
	if in.bbox != nil {
		dx = min(max(dx, -in.XMin), w-1-in.XMax)
		dy = min(max(dy, -in.YMin), h-1-in.YMax)
		in.XMin, in.XMax = in.XMin+dx, in.XMax+dx
		in.YMin, in.YMax = in.YMin+dy, in.YMax+dy
	}
	for i := range in.Points {
		in.Points[i].X = min(max(in.Points[i].X+dx, 0), w-1)
		in.Points[i].Y = min(max(in.Points[i].Y+dy, 0), h-1)
	}
	switch in.Type {
	case "tag":
		in.LabelFileID = ptr(s.randomLabel())
	case "global":
		k := s.rng.IntN(len(weather))
		in.AttributeGroups = map[string]option{fmt.Sprint(AttributeGroupWeather): {ID: AttributeGroupWeather*10 + k + 1, Name: weather[k]}}
	default:
		if in.frame == nil && s.rng.IntN(5) == 0 {
			// Relabel (never on a video, where the sequence owns the label).
			in.LabelFileID = ptr(s.randomLabel())
			in.AttributeGroups = s.occlusion(*in.LabelFileID)
		}
	}
	s.instances[root] = in
	return s.emit("instance", "edited", in)
}

// dims is the size of the picture an instance on the file is drawn on.
func (s *Simulator) dims(fileID int) (w, h int) {
	if v := s.files[fileID].Video; v != nil {
		return v.Width, v.Height
	}
	return 1920, 1080
}

// setDeleted soft-deletes or undeletes the newest row of a lineage in place.
func (s *Simulator) setDeleted(root int, deleted bool) Event {
	in := s.instances[root]
	in.SoftDelete = deleted
	in.Version++
	if deleted {
		return s.emit("instance", "deleted", in)
	}
	return s.emit("instance", "undeleted", in)
}
