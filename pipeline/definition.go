package pipeline

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/exportstream/exportstream/events"
)

// Completion is which files an export holds by their completion: only
// complete ones, all, or only incomplete ones.
type Completion string

// Completion filters.
const (
	CompletionComplete   Completion = "complete"
	CompletionAll        Completion = "all"
	CompletionIncomplete Completion = "incomplete"
)

// SourceKind is what an export's files come from.
type SourceKind string

// The source kinds of EXPORTS.md.
const (
	SourceDirectory SourceKind = "directory"
	SourceJob       SourceKind = "job"
	SourceTask      SourceKind = "task"
	SourceProject   SourceKind = "project"
)

// Source selects an export's files: a directory or job by Name (nickname,
// job name) or ID, a task by ID, or the whole project.
type Source struct {
	Kind SourceKind
	Name string
	ID   int64
}

// ErrSourceKind is returned (wrapped) by ParseSource for a kind it does
// not know.
var ErrSourceKind = errors.New("unknown source kind")

// ParseSource returns the source named by kind and value, as the config
// file, the API and the CLI name a source: directory or job with a name
// (directory=NAME, job=NAME); directory_id, job_id or task_id with a
// positive id (directory_id=N); or project, the whole project, with no
// value ("" or "true"). The error says what is wrong in those terms
// ("job_id=N: \"x\" is not a positive number"); for an unknown kind it
// wraps ErrSourceKind.
func ParseSource(kind, value string) (Source, error) {
	switch kind {
	case "project":
		if value != "" && value != "true" {
			return Source{}, errors.New("project takes no value (the whole project)")
		}
		return Source{Kind: SourceProject}, nil
	case "directory", "job":
		if value == "" {
			return Source{}, fmt.Errorf("%s=NAME: the name is missing", kind)
		}
		return Source{Kind: SourceKind(kind), Name: value}, nil
	case "directory_id", "job_id", "task_id":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n <= 0 {
			return Source{}, fmt.Errorf("%s=N: %q is not a positive number", kind, value)
		}
		return Source{Kind: idKinds[kind], ID: n}, nil
	}
	return Source{}, fmt.Errorf("%w %q: want directory, directory_id, job, job_id, task_id or project", ErrSourceKind, kind)
}

// idKinds are the source kinds named by an id.
var idKinds = map[string]SourceKind{"directory_id": SourceDirectory, "job_id": SourceJob, "task_id": SourceTask}

// Definition is one export definition.
type Definition struct {
	Name                    string
	Project                 string
	Source                  Source
	Completion              Completion
	IncludeRemovedInstances bool
	Connection              string
	Path                    string // key prefix in the bucket, "" or ending in "/"
	Quiet                   time.Duration
	MaxDelay                time.Duration
	// KeepLast, when > 0, is how many of its newest exports the
	// definition keeps in the bucket; older ones it wrote are deleted.
	KeepLast int
	// Media, when set, signs fresh media links from the files'
	// blob_path (media.go); nil: links are copied as received.
	Media *Media
	// Formats are the formats each export writes beside the Diffgram
	// document: coco, yolo, jsonl (FormatCOCO, ...). Diffgram is always
	// written, listed or not (NormalizeFormats).
	Formats []string
}

var refUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// ref is the source's reference in object names: directory nickname, job
// name, task id or project string id, with every character outside
// [A-Za-z0-9._-] turned into "-".
func (d *Definition) ref(pl *plan) string {
	var r string
	switch d.Source.Kind {
	case SourceDirectory:
		r = d.Source.Name
		if pl != nil && pl.dir != nil {
			r = pl.dir.val.(*events.Directory).Nickname
		} else if r == "" {
			r = strconv.FormatInt(d.Source.ID, 10)
		}
	case SourceJob:
		r = d.Source.Name
		if pl != nil && pl.job != nil {
			r = pl.job.val.(*events.Job).Name
		} else if r == "" {
			r = strconv.FormatInt(d.Source.ID, 10)
		}
	case SourceTask:
		r = strconv.FormatInt(d.Source.ID, 10)
	default:
		r = d.Project
	}
	if r == "" {
		r = "-"
	}
	return refUnsafe.ReplaceAllString(r, "-")
}

// objectStem is the data object's key without ".json":
// <prefix><export_id>_diffgram_annotations__source_<source>_<ref>_datetime_<datetime>
func (d *Definition) objectStem(id int64, ref string, at time.Time) string {
	return d.Path + strconv.FormatInt(id, 10) + "_diffgram_annotations__source_" + string(d.Source.Kind) +
		"_" + ref + "_datetime_" + at.UTC().Format("2006-01-02T15-04-05.000000")
}

// change is one stored snapshot replacing another (old may be nil).
type change struct {
	project  string
	kind     events.Kind
	old, new *snap
}

// touches reports whether a change can alter the definition's export.
// It errs on the side of yes: an unneeded export is skipped when its
// content is unchanged. pv is the project's view after the change.
func (d *Definition) touches(pv ProjectView, c change) bool {
	if d.Project != c.project {
		return false
	}
	info := kindInfos[c.kind]
	if info.touches != nil {
		return info.touches(d)
	}
	if d.Source.Kind == SourceProject {
		return true
	}
	if info.touchesVia == nil {
		return true // a kind that says nothing: err on the side of yes
	}
	var files []int64
	for _, s := range []*snap{c.old, c.new} {
		if s == nil {
			continue
		}
		touch, fs := info.touchesVia(d, pv, s.val)
		if touch {
			return true
		}
		files = append(files, fs...)
	}
	for _, fid := range files {
		if d.touchesFile(pv, fid, c) {
			return true
		}
	}
	return false
}

func (d *Definition) touchesFile(pv ProjectView, fid int64, c change) bool {
	switch d.Source.Kind {
	case SourceDirectory:
		dir := findDir(pv, d.Source)
		if dir == nil {
			return false
		}
		dirs := func(s *snap) bool {
			return s != nil && slices.Contains(s.val.(*events.File).DirectoryIDs, dir.id)
		}
		if c.kind == events.KindFile && (dirs(c.old) || dirs(c.new)) {
			return true
		}
		f := pv.File(fid)
		if dirs(f) {
			return true
		}
		if f != nil {
			if v := f.val.(*events.File); v.ParentID != nil {
				return dirs(pv.File(*v.ParentID))
			}
		}
		return false
	case SourceJob:
		j := findJob(pv, d.Source)
		if j == nil {
			return false
		}
		for t := range pv.FileTasks(fid) {
			if t.val.(*events.Task).JobID == j.id {
				return true
			}
		}
		return false
	case SourceTask:
		t := pv.Task(d.Source.ID)
		return t != nil && t.val.(*events.Task).FileID == fid
	}
	return true
}
