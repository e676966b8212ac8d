package events

import "encoding/json"

// Kind is the kind of entity an event carries a snapshot of.
type Kind string

// The entity kinds of the event contract.
const (
	KindProject        Kind = "project"
	KindDirectory      Kind = "directory"
	KindLabel          Kind = "label"
	KindAttributeGroup Kind = "attribute_group"
	KindJob            Kind = "job"
	KindFile           Kind = "file"
	KindTask           Kind = "task"
	KindSequence       Kind = "sequence"
	KindInstance       Kind = "instance"
)

// kinds maps each entity kind to the key of its snapshot under "data" and
// the actions the contract defines for it.
var kinds = map[Kind]struct {
	dataKey string
	actions []string
}{
	KindProject:        {"project", []string{"upserted"}},
	KindDirectory:      {"directory", []string{"upserted"}},
	KindLabel:          {"label_file", []string{"upserted"}},
	KindAttributeGroup: {"attribute_group", []string{"upserted"}},
	KindJob:            {"job", []string{"upserted"}},
	KindFile:           {"file", []string{"uploaded", "updated", "removed", "completion_changed"}},
	KindTask:           {"task", []string{"created", "status_changed", "archived"}},
	KindSequence:       {"sequence", []string{"upserted"}},
	KindInstance:       {"instance", []string{"created", "edited", "deleted", "undeleted"}},
}

// Kinds returns every entity kind, in a fixed order.
func Kinds() []Kind {
	return []Kind{KindProject, KindDirectory, KindLabel, KindAttributeGroup, KindJob,
		KindFile, KindTask, KindSequence, KindInstance}
}

// Project is a project snapshot.
type Project struct {
	StringID string `json:"string_id"`
	Name     string `json:"name"`
	Version  int64  `json:"version"`
}

// Directory is a dataset directory snapshot.
type Directory struct {
	ID          int64           `json:"id"`
	Nickname    string          `json:"nickname"`
	CreatedTime json.RawMessage `json:"created_time"`
	Version     int64           `json:"version"`
}

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

// Job is a job snapshot.
type Job struct {
	ID                    int64  `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	CompletionDirectoryID *int64 `json:"completion_directory_id"`
	Version               int64  `json:"version"`
}

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

// Root returns the instance's lineage id: root_id, or id when absent.
func (in *Instance) Root() int64 {
	if in.RootID != nil {
		return *in.RootID
	}
	return in.ID
}
