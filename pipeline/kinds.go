package pipeline

import (
	"slices"

	"github.com/exportstream/exportstream/events"
)

// kindInfo is what the pipeline needs of one kind of entity, beyond what
// events' kind table says of it (its data key, actions and decoding): how
// the local store keys it, which indexes the state keeps of it, which
// files' rendered entries show it and which definitions a change of it
// touches. A new kind is a row of kindInfos, beside its row in events, its
// struct and its rendering.
type kindInfo struct {
	// code is the kind's letter in the local store's keys: "p P <code>
	// <id>". It is on disk: never change or reuse one.
	code byte
	// owner, for a kind stored under its file ("p P f <file> <code> <id>",
	// so that a file's instances are one scan), is that file; locator is
	// the letter of the key naming it ("p P <locator> <id>" → file).
	// A kind without an owner is stored by id.
	owner   func(v any) int64
	locator byte
	// links are the indexes the state keeps of the kind: its entities by
	// the entity each belongs to (a task by its file and by its job).
	links []link
	// mark, if set, is one more index key of the snapshot with its value
	// (a file's mark).
	mark func(p []byte, sn *snap) diskIndex
	// entryFile, if set, is the file whose rendered entry shows the
	// entity: a change of it invalidates that entry's cache.
	entryFile func(v any) int64
	// touches, if set, says whether a change of the kind touches the
	// definition whatever the snapshots hold (project-wide kinds, sources).
	touches func(d *Definition) bool
	// touchesVia, for the kinds touches leaves unset, looks at one
	// snapshot of the change (old or new): touch true when it touches the
	// definition, else the files whose membership in the export decides.
	touchesVia func(d *Definition, pv ProjectView, v any) (touch bool, files []int64)
}

// rel names one of the state's indexes (link.rel).
type rel int

// The state's indexes.
const (
	relFileInsts rel = iota // file id → newest instance of each lineage
	relFileSeqs             // file id → sequences
	relFileTasks            // file id → tasks
	relJobTasks             // job id → tasks
	relChildren             // compound file id → child files
	numRels
)

// link is one index of a kind: rel maps owner's result to the entity.
type link struct {
	rel rel
	// owner is the id the entity is indexed by; ok false: not indexed
	// (a file without a parent).
	owner func(v any) (id int64, ok bool)
	// key is the index's key in the local store, or nil when the
	// entities are found by scanning their owner's keys (kinds stored
	// under their file).
	key func(p []byte, owner, id int64) []byte
}

// touchesAlways is the touches of the kinds every export shows.
func touchesAlways(*Definition) bool { return true }

// kindInfos is the pipeline's kind table: a row for each of
// events.Kinds().
var kindInfos = map[events.Kind]kindInfo{
	events.KindProject:        {code: 'P', touches: touchesAlways},
	events.KindLabel:          {code: 'l', touches: touchesAlways},
	events.KindAttributeGroup: {code: 'g', touches: touchesAlways},
	events.KindDirectory: {code: 'd', touches: func(d *Definition) bool {
		return d.Source.Kind == SourceDirectory
	}},
	events.KindJob: {code: 'j', touches: func(d *Definition) bool {
		return d.Source.Kind == SourceJob || d.Source.Kind == SourceTask
	}},
	events.KindFile: {
		code: 'f',
		links: []link{{rel: relChildren,
			owner: func(v any) (int64, bool) {
				if p := v.(*events.File).ParentID; p != nil {
					return *p, true
				}
				return 0, false
			},
			key: func(p []byte, parent, id int64) []byte { return fileSubKey(p, parent, 'c', id) }}},
		mark: func(p []byte, sn *snap) diskIndex {
			return diskIndex{appendID(append(slices.Clip(p), 'F'), sn.id), encodeMark(markOf(sn.val.(*events.File)))}
		},
		entryFile: func(v any) int64 { return v.(*events.File).ID },
		touchesVia: func(_ *Definition, _ ProjectView, v any) (bool, []int64) {
			f := v.(*events.File)
			if f.ParentID != nil {
				return false, []int64{f.ID, *f.ParentID}
			}
			return false, []int64{f.ID}
		},
	},
	events.KindTask: {
		code: 't',
		links: []link{
			{rel: relFileTasks, owner: always(func(v any) int64 { return v.(*events.Task).FileID }),
				key: func(p []byte, file, id int64) []byte { return fileSubKey(p, file, 't', id) }},
			{rel: relJobTasks, owner: always(func(v any) int64 { return v.(*events.Task).JobID }),
				key: func(p []byte, job, id int64) []byte { return appendID(appendID(append(slices.Clip(p), 'J'), job), id) }},
		},
		touchesVia: func(d *Definition, pv ProjectView, v any) (bool, []int64) {
			t := v.(*events.Task)
			switch d.Source.Kind {
			case SourceTask:
				return t.ID == d.Source.ID, nil
			case SourceJob:
				j := findJob(pv, d.Source)
				return j != nil && j.id == t.JobID, nil
			}
			return false, nil
		},
	},
	events.KindSequence: {
		code:       's',
		owner:      sequenceFile,
		locator:    'S',
		links:      []link{{rel: relFileSeqs, owner: always(sequenceFile)}},
		entryFile:  sequenceFile,
		touchesVia: viaFile(sequenceFile),
	},
	events.KindInstance: {
		code:       'i',
		owner:      instanceFile,
		locator:    'I',
		links:      []link{{rel: relFileInsts, owner: always(instanceFile)}},
		entryFile:  instanceFile,
		touchesVia: viaFile(instanceFile),
	},
}

func sequenceFile(v any) int64 { return v.(*events.Sequence).FileID }
func instanceFile(v any) int64 { return v.(*events.Instance).FileID }

// always is a link's owner for an id every entity has.
func always(id func(v any) int64) func(v any) (int64, bool) {
	return func(v any) (int64, bool) { return id(v), true }
}

// viaFile is the touchesVia of a kind shown in its file's entry.
func viaFile(file func(v any) int64) func(*Definition, ProjectView, any) (bool, []int64) {
	return func(_ *Definition, _ ProjectView, v any) (bool, []int64) { return false, []int64{file(v)} }
}
