package simulate

// The snapshots the simulator publishes, shaped as EVENTS.md describes them.
// Each is marshalled whole at the moment it changes; fields not exported to
// JSON are the simulator's own bookkeeping.

// Fixed ids of the demo world, created by the setup events.
const (
	// DirectoryLuckfrill is the directory every upload is linked to, except
	// the few that go straight to DirectoryArchive.
	DirectoryLuckfrill = 7
	// DirectoryArchive is the job's completion directory: a file whose
	// JobNightReview task completes is linked here too.
	DirectoryArchive = 8
	// JobNightReview is the only job; its completion directory is
	// DirectoryArchive.
	JobNightReview = 12
	// AttributeGroupOcclusion is a select group on the car, person and
	// bicycle labels.
	AttributeGroupOcclusion = 3
	// AttributeGroupWeather is a global radio group (video global
	// instances).
	AttributeGroupWeather = 4
)

// Label file ids of the demo world: car, person, bicycle, traffic light.
const (
	LabelCar          = 101
	LabelPerson       = 102
	LabelBicycle      = 103
	LabelTrafficLight = 104
)

// Id ranges of the things the stream creates; each grows by one.
const (
	firstFileID     = 5001
	firstTaskID     = 9001
	firstSequenceID = 701
	firstInstanceID = 900001
)

type project struct {
	StringID string `json:"string_id"`
	Name     string `json:"name"`
	Version  int    `json:"version"`
}

type directory struct {
	ID          int    `json:"id"`
	Nickname    string `json:"nickname"`
	CreatedTime string `json:"created_time"`
	Version     int    `json:"version"`
}

type labelRef struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

type rgba struct {
	R int `json:"r"`
	G int `json:"g"`
	B int `json:"b"`
	A int `json:"a"`
}

type colour struct {
	Hex  string `json:"hex"`
	RGBA rgba   `json:"rgba"`
}

type labelFile struct {
	ID      int      `json:"id"`
	Type    string   `json:"type"`
	Label   labelRef `json:"label"`
	Colour  colour   `json:"colour"`
	State   string   `json:"state"`
	Version int      `json:"version"`
}

type attributeTemplate struct {
	ID           int     `json:"id"`
	Name         string  `json:"name"`
	ValueType    *string `json:"value_type"`
	Archived     bool    `json:"archived"`
	ParentID     *int    `json:"parent_id"`
	GroupID      int     `json:"group_id"`
	DisplayOrder *int    `json:"display_order"`
}

type attributeGroup struct {
	ID                    int                 `json:"id"`
	Kind                  string              `json:"kind"`
	Name                  string              `json:"name"`
	Prompt                string              `json:"prompt"`
	IsGlobal              bool                `json:"is_global"`
	GlobalType            string              `json:"global_type"`
	Archived              bool                `json:"archived"`
	AttributeTemplateList []attributeTemplate `json:"attribute_template_list"`
	LabelFileIDs          []int               `json:"label_file_ids"`
	Version               int                 `json:"version"`
}

type job struct {
	ID                    int    `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	CompletionDirectoryID int    `json:"completion_directory_id"`
	Version               int    `json:"version"`
}

type imageBlock struct {
	Width             int    `json:"width"`
	Height            int    `json:"height"`
	RotationDegrees   int    `json:"rotation_degrees"`
	ImageSignedURL    string `json:"image_signed_url"`
	ImageSignedExpiry int64  `json:"image_signed_expiry"`
}

type videoBlock struct {
	Width                int     `json:"width"`
	Height               int     `json:"height"`
	FrameRate            float64 `json:"frame_rate"`
	FrameCount           int     `json:"frame_count"`
	OriginalFPS          float64 `json:"original_fps"`
	FPSConversionRatio   float64 `json:"fps_conversion_ratio"`
	OffsetInSeconds      float64 `json:"offset_in_seconds"`
	GlobalFrameStart     int     `json:"global_frame_start"`
	MP4VideoSignedURL    string  `json:"mp4_video_signed_url"`
	MP4VideoSignedExpiry int64   `json:"mp4_video_signed_expiry"`
}

type word struct {
	ID        int    `json:"id"`
	Value     string `json:"value"`
	StartChar int    `json:"start_char"`
	EndChar   int    `json:"end_char"`
	Sentence  int    `json:"sentence"`
}

type sentence struct {
	ID        int `json:"id"`
	StartChar int `json:"start_char"`
	EndChar   int `json:"end_char"`
}

type tokens struct {
	Words     []word     `json:"words"`
	Sentences []sentence `json:"sentences"`
}

type textBlock struct {
	SignedURL    string `json:"signed_url"`
	SignedExpiry int64  `json:"signed_expiry"`
	Tokens       tokens `json:"tokens"`
}

type file struct {
	ID               int         `json:"id"`
	Type             string      `json:"type"`
	OriginalFilename string      `json:"original_filename"`
	CreatedTime      string      `json:"created_time"`
	State            string      `json:"state"`
	AnnIsComplete    *bool       `json:"ann_is_complete"`
	DirectoryIDs     []int       `json:"directory_ids"`
	ParentID         *int        `json:"parent_id"`
	BlobURL          *string     `json:"blob_url"`
	BlobPath         *string     `json:"blob_path,omitempty"` // Options.BlobPaths (media.go)
	Image            *imageBlock `json:"image,omitempty"`
	Video            *videoBlock `json:"video,omitempty"`
	Text             *textBlock  `json:"text,omitempty"`
	Version          int         `json:"version"`

	children  []int // compound: the child files, in upload order
	roots     []int // lineages (root ids) of the instances on this file
	sequences []int // video: sequence ids
	busy      bool  // a plan is working on it (root files only)
}

func (f *file) complete() bool { return f.AnnIsComplete != nil && *f.AnnIsComplete }

func (f *file) inDirectory(id int) bool {
	for _, d := range f.DirectoryIDs {
		if d == id {
			return true
		}
	}
	return false
}

type task struct {
	ID          int    `json:"id"`
	JobID       int    `json:"job_id"`
	FileID      int    `json:"file_id"`
	Status      string `json:"status"`
	CreatedTime string `json:"created_time"`
	Version     int    `json:"version"`
}

type sequence struct {
	ID           int   `json:"id"`
	FileID       int   `json:"file_id"`
	LabelFileID  int   `json:"label_file_id"`
	Number       int   `json:"number"`
	KeyframeList []int `json:"keyframe_list"`
	SingleFrame  bool  `json:"single_frame"`
	Archived     bool  `json:"archived"`
	Version      int   `json:"version"`
}

type option struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

type point struct {
	X        int  `json:"x"`
	Y        int  `json:"y"`
	FigureID *int `json:"figure_id"`
}

type bbox struct {
	XMin int `json:"x_min"`
	YMin int `json:"y_min"`
	XMax int `json:"x_max"`
	YMax int `json:"y_max"`
}

type textSpan struct {
	StartChar     int `json:"start_char"`
	EndChar       int `json:"end_char"`
	StartToken    int `json:"start_token"`
	EndToken      int `json:"end_token"`
	StartSentence int `json:"start_sentence"`
	EndSentence   int `json:"end_sentence"`
	Sentence      int `json:"sentence"`
}

type relation struct {
	FromInstanceID int `json:"from_instance_id"`
	ToInstanceID   int `json:"to_instance_id"`
}

// frame is on every instance of a video; all null on a global instance.
type frame struct {
	FrameNumber       *int  `json:"frame_number"`
	GlobalFrameNumber *int  `json:"global_frame_number"`
	SequenceID        *int  `json:"sequence_id"`
	Number            *int  `json:"number"`
	Interpolated      *bool `json:"interpolated"`
}

// instance is one row of an annotation's lineage. The embedded pointers
// carry the geometry of the instance's type; nil ones are left out.
type instance struct {
	ID              int               `json:"id"`
	RootID          int               `json:"root_id"`
	PreviousID      *int              `json:"previous_id"`
	Version         int               `json:"version"`
	FileID          int               `json:"file_id"`
	SoftDelete      bool              `json:"soft_delete"`
	Type            string            `json:"type"`
	LabelFileID     *int              `json:"label_file_id"`
	AttributeGroups map[string]option `json:"attribute_groups"`
	*bbox
	Points []point `json:"points,omitempty"`
	*textSpan
	*relation
	*frame
}

// clone copies the row deeply enough that changing the copy's geometry
// leaves the original alone.
func (in *instance) clone() *instance {
	c := *in
	if in.AttributeGroups != nil {
		c.AttributeGroups = make(map[string]option, len(in.AttributeGroups))
		for k, v := range in.AttributeGroups {
			c.AttributeGroups[k] = v
		}
	}
	if in.bbox != nil {
		b := *in.bbox
		c.bbox = &b
	}
	c.Points = append([]point(nil), in.Points...)
	if len(c.Points) == 0 {
		c.Points = nil
	}
	if in.textSpan != nil {
		t := *in.textSpan
		c.textSpan = &t
	}
	if in.relation != nil {
		r := *in.relation
		c.relation = &r
	}
	if in.frame != nil {
		f := *in.frame
		c.frame = &f
	}
	return &c
}

// editable reports whether the simulator may edit or delete the row: text
// tokens and relations are left alone so relations never dangle.
func (in *instance) editable() bool {
	switch in.Type {
	case "box", "polygon", "point", "tag", "global":
		return true
	}
	return false
}

func ptr[T any](v T) *T { return &v }
