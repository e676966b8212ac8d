package pipeline

import "time"

// Status is where an export stands (Record.Status).
type Status string

// Export statuses, in the order an export passes through them.
const (
	StatusPending    Status = "pending"
	StatusGenerating Status = "generating"
	StatusUploading  Status = "uploading"
	StatusComplete   Status = "complete"
	StatusFailed     Status = "failed"
	// StatusSkipped marks an attempt that wrote nothing because its source
	// matched no file; StatusText says why.
	StatusSkipped Status = "skipped"
)

// Final reports whether status is one an export ends in.
func Final(status Status) bool {
	return status == StatusComplete || status == StatusFailed || status == StatusSkipped
}

// Trigger is what started an export (Record.Trigger).
type Trigger string

// Triggers: what started an export.
const (
	TriggerEvent   Trigger = "event"
	TriggerManual  Trigger = "manual"
	TriggerStartup Trigger = "startup"
)

// Record is the export record (EXPORTS.md): kept in the key-value store,
// written into the manifest and latest.json, and published with the
// completion event.
type Record struct {
	ID              int64      `json:"id"`
	Name            string     `json:"name"`
	Project         string     `json:"project"`
	Source          string     `json:"source"`
	Ref             string     `json:"ref"`
	Completion      Completion `json:"completion"`
	IncludeRemoved  bool       `json:"include_removed_instances"`
	Status          Status     `json:"status"`
	StatusText      string     `json:"status_text,omitempty"`
	PercentComplete int        `json:"percent_complete"`
	CreatedTime     time.Time  `json:"created_time"`
	CompletedTime   *time.Time `json:"completed_time"`
	FileListLength  int        `json:"file_list_length"`
	InstanceCount   int        `json:"instance_count"`
	Bytes           int64      `json:"bytes"`
	SHA256          string     `json:"sha256"`
	ContentHash     string     `json:"content_sha256"`
	Connection      string     `json:"connection"`
	Key             string     `json:"key"`
	ManifestKey     string     `json:"manifest_key"`
	// Watermark is the highest event stream sequence known to be reflected.
	Watermark uint64 `json:"watermark"`
	// StateRevision is the state revision the export was rendered at (0
	// for a point-in-time export, rendered from a replay of the stream).
	StateRevision uint64 `json:"state_revision"`
	// AsOf, on a point-in-time export (asof.go), is the point asked for
	// as given (a stream sequence or an RFC 3339 time); Watermark is then
	// the stream sequence it resolved to, which the export reflects.
	AsOf string `json:"as_of,omitempty"`
	// Definition, on a point-in-time export of a configured definition,
	// names it: the export has its settings (Name is AdhocName).
	Definition    string  `json:"definition,omitempty"`
	Trigger       Trigger `json:"trigger"`
	FormatVersion string  `json:"export_format_version"`
	// DeletedTime is when retention (keep_last) deleted the export's
	// objects from the bucket; nil while they are there.
	DeletedTime *time.Time `json:"deleted_time,omitempty"`
	// MediaLinksExpireAt is the earliest expiry of the media links the
	// export shows, signed or copied as received (EXPORTS.md, "Media
	// links"); null when it shows no link with an expiry.
	MediaLinksExpireAt *time.Time `json:"media_links_expire_at"`
	// MediaLinksSigned counts the media links the export signed (a
	// definition with media); they expire at created_time + its expiry.
	MediaLinksSigned int `json:"media_links_signed,omitempty"`
	// Formats are the export's objects by format name: the Diffgram
	// document (Key, Bytes, SHA256 again) and each other format the
	// export writes beside it (EXPORTS.md, "Formats beside the Diffgram
	// one"). Each key is set when the export starts, its size and
	// SHA-256 once the object is written.
	Formats map[string]FormatObject `json:"formats,omitempty"`
}

// definitionState is kept per definition: what its newest export holds.
type definitionState struct {
	LastID      int64  `json:"last_id"`
	ContentHash string `json:"content_sha256"`
	Key         string `json:"key"`
	// Fingerprint of the definition's settings that shape the content.
	Fingerprint string `json:"fingerprint"`
	// Kept are the exports of this definition still in the bucket, oldest
	// first, as far as retention (keep_last) knows: those written since
	// it began keeping this list, minus those it deleted.
	Kept []keptExport `json:"kept,omitempty"`
	// Skipped is set while the definition's newest attempt found its
	// source empty: the record that says so and why.
	Skipped *skippedAttempt `json:"skipped,omitempty"`
	// Media is the media setting the newest export was written with
	// (Definition.mediaSetting; "": links copied as received), and
	// LinksSignedAt when its signed links were signed from (nil: it
	// signed none): what tells when its links are due (media.go).
	Media         string     `json:"media,omitempty"`
	LinksSignedAt *time.Time `json:"links_signed_at,omitempty"`
	// Formats are the formats the newest export wrote (NormalizeFormats;
	// nil: diffgram only): an export asking for others is not unchanged.
	Formats []string `json:"formats,omitempty"`
}

// skippedAttempt is a definition's newest attempt that wrote nothing.
type skippedAttempt struct {
	ID          int64  `json:"id"`
	Reason      string `json:"reason"`
	Fingerprint string `json:"fingerprint"`
}

// keptExport is an export's objects, which retention may delete.
type keptExport struct {
	ID          int64  `json:"id"`
	Key         string `json:"key"`
	ManifestKey string `json:"manifest_key"`
	// Extra are the objects of its other formats (coco, yolo, jsonl).
	Extra []string `json:"extra_keys,omitempty"`
}

// dirtyMark is the durable note that a definition's export is stale.
type dirtyMark struct {
	StateRevision uint64    `json:"state_revision"`
	Watermark     uint64    `json:"watermark"`
	Time          time.Time `json:"time"`
}

// skipped marks r as an attempt of d that wrote nothing because its
// source matched no file: the plan pl says why and at which state
// revision.
func (r *Record) skipped(d *Definition, pl *plan) {
	now := time.Now().UTC()
	r.Ref, r.StateRevision = d.ref(pl), pl.rev
	r.Status, r.StatusText, r.PercentComplete, r.CompletedTime = StatusSkipped, pl.empty, 100, &now
	r.Key, r.ManifestKey, r.FileListLength, r.InstanceCount = "", "", 0, 0
	r.Formats = nil
}
