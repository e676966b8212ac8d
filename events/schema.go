package events

import "encoding/json"

// Project is a project snapshot.
type Project struct {
	StringID string `json:"string_id"`
	Name     string `json:"name"`
	Version  int64  `json:"version"`
}

// EntityID is 0: the project is keyed by its string_id.
func (p *Project) EntityID() int64 { return 0 }

// EntityVersion is the snapshot's version.
func (p *Project) EntityVersion() int64 { return p.Version }

func (p *Project) check(ev *Event) error {
	if ev.Project != "" && p.StringID != ev.Project {
		return bad("project string_id %q and event project %q disagree", p.StringID, ev.Project)
	}
	return nil
}

// Directory is a dataset directory snapshot.
type Directory struct {
	ID          int64           `json:"id"`
	Nickname    string          `json:"nickname"`
	CreatedTime json.RawMessage `json:"created_time"`
	Version     int64           `json:"version"`
}

// EntityID is the Directory's id.
func (d *Directory) EntityID() int64 { return d.ID }

// EntityVersion is the snapshot's version.
func (d *Directory) EntityVersion() int64 { return d.Version }

// LabelFile is a label snapshot.
type LabelFile struct {
	ID    int64 `json:"id"`
	Label struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	} `json:"label"`
	Colour  json.RawMessage `json:"colour"`
	State   string          `json:"state"`
	Version int64           `json:"version"`
}

// EntityID is the LabelFile's id.
func (l *LabelFile) EntityID() int64 { return l.ID }

// EntityVersion is the snapshot's version.
func (l *LabelFile) EntityVersion() int64 { return l.Version }

// AttributeTemplate is one option of an attribute group.
type AttributeTemplate struct {
	ID       int64 `json:"id"`
	Archived bool  `json:"archived"`
}

// AttributeGroup is an attribute group snapshot. Fields beyond the typed
// ones pass through to the export from the raw snapshot.
type AttributeGroup struct {
	ID                    int64               `json:"id"`
	Kind                  string              `json:"kind"`
	Name                  string              `json:"name"`
	Archived              bool                `json:"archived"`
	AttributeTemplateList []AttributeTemplate `json:"attribute_template_list"`
	LabelFileIDs          []int64             `json:"label_file_ids"`
	Version               int64               `json:"version"`
}

// EntityID is the AttributeGroup's id.
func (g *AttributeGroup) EntityID() int64 { return g.ID }

// EntityVersion is the snapshot's version.
func (g *AttributeGroup) EntityVersion() int64 { return g.Version }

// Job is a job snapshot.
type Job struct {
	ID                    int64  `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	CompletionDirectoryID *int64 `json:"completion_directory_id"`
	Version               int64  `json:"version"`
}

// EntityID is the Job's id.
func (j *Job) EntityID() int64 { return j.ID }

// EntityVersion is the snapshot's version.
func (j *Job) EntityVersion() int64 { return j.Version }

// File is a file snapshot. The media block (image, video, text,
// point_cloud, geo_assets) passes through from the raw snapshot.
type File struct {
	ID               int64   `json:"id"`
	Type             string  `json:"type"`
	OriginalFilename string  `json:"original_filename"`
	State            string  `json:"state"`
	AnnIsComplete    *bool   `json:"ann_is_complete"`
	DirectoryIDs     []int64 `json:"directory_ids"`
	ParentID         *int64  `json:"parent_id"`
	Version          int64   `json:"version"`
}

// EntityID is the File's id.
func (f *File) EntityID() int64 { return f.ID }

// EntityVersion is the snapshot's version.
func (f *File) EntityVersion() int64 { return f.Version }

// Removed reports whether the file is removed.
func (f *File) Removed() bool { return f.State == "removed" }

// Complete reports whether the file's annotation is complete.
func (f *File) Complete() bool { return f.AnnIsComplete != nil && *f.AnnIsComplete }

// Task is a task snapshot.
type Task struct {
	ID          int64           `json:"id"`
	JobID       int64           `json:"job_id"`
	FileID      int64           `json:"file_id"`
	Status      string          `json:"status"`
	CreatedTime json.RawMessage `json:"created_time"`
	Version     int64           `json:"version"`
}

// EntityID is the Task's id.
func (t *Task) EntityID() int64 { return t.ID }

// EntityVersion is the snapshot's version.
func (t *Task) EntityVersion() int64 { return t.Version }

func (t *Task) check(ev *Event) error {
	if !ev.Partial && (t.JobID == 0 || t.FileID == 0) {
		return bad("task %d has no job_id or file_id", t.ID)
	}
	return nil
}

// Sequence is a video sequence snapshot.
type Sequence struct {
	ID           int64           `json:"id"`
	FileID       int64           `json:"file_id"`
	LabelFileID  *int64          `json:"label_file_id"`
	Number       *int64          `json:"number"`
	KeyframeList json.RawMessage `json:"keyframe_list"`
	SingleFrame  json.RawMessage `json:"single_frame"`
	Archived     bool            `json:"archived"`
	Version      int64           `json:"version"`
}

// EntityID is the Sequence's id.
func (s *Sequence) EntityID() int64 { return s.ID }

// EntityVersion is the snapshot's version.
func (s *Sequence) EntityVersion() int64 { return s.Version }

func (s *Sequence) check(*Event) error {
	if s.FileID == 0 {
		return bad("sequence %d has no file_id", s.ID)
	}
	return nil
}

// checker is implemented by the snapshots that have checks of their own
// beyond an id and a version; decoding calls check after the snapshot is
// decoded (and a partial removal applied).
type checker interface{ check(ev *Event) error }

// Instance is an annotation instance snapshot: the newest row of its
// lineage (RootID). Geometry and other fields pass through from the raw
// snapshot.
type Instance struct {
	ID          int64  `json:"id"`
	RootID      *int64 `json:"root_id"`
	PreviousID  *int64 `json:"previous_id"`
	Version     int64  `json:"version"`
	FileID      int64  `json:"file_id"`
	SoftDelete  bool   `json:"soft_delete"`
	Type        string `json:"type"`
	LabelFileID *int64 `json:"label_file_id"`
	SequenceID  *int64 `json:"sequence_id"`
	FrameNumber *int64 `json:"frame_number"`
}

// EntityID is the instance's lineage (root) id.
func (in *Instance) EntityID() int64 { return in.Root() }

// EntityVersion is the snapshot's version.
func (in *Instance) EntityVersion() int64 { return in.Version }

func (in *Instance) check(ev *Event) error {
	if !ev.Partial && in.FileID == 0 {
		return bad("instance %d has no file_id", in.ID)
	}
	return nil
}

// Root returns the instance's lineage id: root_id, or id when absent.
func (in *Instance) Root() int64 {
	if in.RootID != nil {
		return *in.RootID
	}
	return in.ID
}
