package pipelinetest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// MediaFile is one file of MediaEvents.
type MediaFile struct {
	ID   int64
	Type string // image, video, text or compound
	// BlobPath is the key of the file's media object in the media
	// bucket, sent as the snapshot's blob_path ("": none: its links are
	// copied as received); Data is what a test stores there.
	BlobPath string
	Data     []byte
	// URL and Expiry are the link the snapshot carries (blob_url and the
	// media block's signed url and expiry, Unix seconds).
	URL    string
	Expiry int64
	// Parent is a compound file's id for its child (0: none).
	Parent int64
}

// Event is one event of MediaEvents, as published.
type Event struct {
	Subject string
	ID      string // also the Nats-Msg-Id
	Body    []byte
}

// MediaFiles are the files the media tests export: an image, a video and
// a text file with blob_path, an image without (its links are copied),
// and a compound file whose child image has blob_path. Each file with
// blob_path has its own bytes; the copied links expire at different
// times, the earliest on the image without blob_path.
func MediaFiles() []MediaFile {
	data := func(seed int) []byte {
		b := make([]byte, 2048+seed*100)
		for i := range b {
			b[i] = byte(i*31 + seed)
		}
		return b
	}
	return []MediaFile{
		{ID: 101, Type: "image", BlobPath: "media/cam 101.jpg", Data: data(1), URL: "https://media.example/101", Expiry: 1900000101},
		{ID: 102, Type: "image", URL: "https://media.example/102", Expiry: 1890000102},
		{ID: 103, Type: "video", BlobPath: "media/drive_103.mp4", Data: data(3), URL: "https://media.example/103", Expiry: 1900000103},
		{ID: 104, Type: "text", BlobPath: "media/report_104.txt", Data: data(4), URL: "https://media.example/104", Expiry: 1900000104},
		{ID: 105, Type: "compound"},
		{ID: 106, Type: "image", BlobPath: "media/rig/cam_106.jpg", Data: data(6), URL: "https://media.example/106", Expiry: 1895000106, Parent: 105},
	}
}

// MediaEvents returns the events of project: the project, directory
// "all" (id 1) linking every file, a label "car" (id 1), and each file,
// complete, with one box instance on each image.
func MediaEvents(project string, files []MediaFile) []Event {
	var out []Event
	add := func(entity, action string, data any) {
		body, _ := json.Marshal(data)
		id := fmt.Sprintf("%s-%d", project, len(out)+1)
		ev := map[string]any{
			"specversion": "1.0", "id": id, "source": "diffgram/projects/" + project,
			"type": "diffgram." + entity + "." + action, "time": time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC).Format(time.RFC3339Nano),
			"datacontenttype": "application/json", "diffgramproject": project, "data": json.RawMessage(body),
		}
		b, _ := json.Marshal(ev)
		out = append(out, Event{Subject: "diffgram.events." + project + "." + entity + "." + action, ID: id, Body: b})
	}
	add("project", "upserted", map[string]any{"project": map[string]any{"string_id": project, "name": "Media", "version": 1}})
	add("directory", "upserted", map[string]any{"directory": map[string]any{"id": 1, "nickname": "all", "created_time": "2026-01-01T00:00:00Z", "version": 1}})
	add("label", "upserted", map[string]any{"label_file": map[string]any{"id": 1, "label": map[string]any{"id": 1, "name": "car"},
		"colour": map[string]any{"hex": "#ff0000"}, "state": "added", "version": 1}})
	inst := int64(9000)
	for _, f := range files {
		snap := map[string]any{"id": f.ID, "type": f.Type, "original_filename": "file_" + strconv.FormatInt(f.ID, 10),
			"created_time": "2026-02-01T00:00:00Z", "state": "added", "ann_is_complete": true, "directory_ids": []int{1},
			"parent_id": nil, "blob_url": nil, "version": 1}
		if f.Parent != 0 {
			snap["parent_id"] = f.Parent
		}
		if f.BlobPath != "" {
			snap["blob_path"] = f.BlobPath
		}
		if f.URL != "" {
			snap["blob_url"] = f.URL
		}
		switch f.Type {
		case "image":
			snap["image"] = map[string]any{"width": 640, "height": 480, "rotation_degrees": 0, "image_signed_url": f.URL, "image_signed_expiry": f.Expiry}
		case "video":
			snap["video"] = map[string]any{"width": 640, "height": 480, "frame_rate": 5, "frame_count": 10, "original_fps": 30,
				"fps_conversion_ratio": 6, "offset_in_seconds": 0, "global_frame_start": 0, "mp4_video_signed_url": f.URL, "mp4_video_signed_expiry": f.Expiry}
		case "text":
			snap["text"] = map[string]any{"signed_url": f.URL, "signed_expiry": f.Expiry,
				"tokens": map[string]any{"words": []any{}, "sentences": []any{}}}
		}
		add("file", "uploaded", map[string]any{"file": snap})
		if f.Type == "image" {
			inst++
			add("instance", "created", map[string]any{"instance": map[string]any{"id": inst, "root_id": inst, "previous_id": nil,
				"version": 1, "file_id": f.ID, "soft_delete": false, "type": "box", "label_file_id": 1, "attribute_groups": nil,
				"x_min": 10, "y_min": 20, "x_max": 110, "y_max": 120}})
		}
	}
	return out
}

// EntryLinks is what a file entry shows of its media links (EXPORTS.md,
// "Media links"): file.blob_url, and its media block's signed url and
// expiry (Unix seconds).
type EntryLinks struct {
	BlobURL, URL string
	Expiry       int64
}

// mediaBlockLinks are the members of a media block of each file type
// that hold its link and the link's expiry.
var mediaBlockLinks = map[string][2]string{
	"image": {"image_signed_url", "image_signed_expiry"},
	"video": {"mp4_video_signed_url", "mp4_video_signed_expiry"},
	"text":  {"signed_url", "signed_expiry"},
}

// LinksOf reads the links of a file entry whose file is of type typ (a
// type with no media block, such as compound, has only blob_url).
func LinksOf(entry json.RawMessage, typ string) (EntryLinks, error) {
	var e map[string]json.RawMessage
	if err := json.Unmarshal(entry, &e); err != nil {
		return EntryLinks{}, fmt.Errorf("entry: %w", err)
	}
	var file struct {
		BlobURL *string `json:"blob_url"`
	}
	_ = json.Unmarshal(e["file"], &file)
	var out EntryLinks
	if file.BlobURL != nil {
		out.BlobURL = *file.BlobURL
	}
	if f, ok := mediaBlockLinks[typ]; ok {
		var block map[string]json.RawMessage
		if err := json.Unmarshal(e[typ], &block); err != nil {
			return out, fmt.Errorf("%s block: %w", typ, err)
		}
		_ = json.Unmarshal(block[f[0]], &out.URL)
		_ = json.Unmarshal(block[f[1]], &out.Expiry)
	}
	return out, nil
}
