// Package pipelinetest holds test helpers for the pipeline: the contract's
// example streams and a checker for export documents against their
// expected.json.
package pipelinetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
)

// Expected is a scenario's expected.json.
type Expected struct {
	Project     string                `json:"project"`
	LabelMap    map[string]string     `json:"label_map"`
	AttrGroups  []int64               `json:"attribute_group_ids"`
	Definitions map[string]Definition `json:"definitions"`
	Poison      int                   `json:"poison_count"`
	// Videos says, per video file id, which instances sit in
	// parent_instance_list and in which sequence (archived ones too).
	Videos map[string]Video `json:"videos"`
	// EllipseAngles are the angles ellipses must carry, by instance id.
	EllipseAngles map[string]float64 `json:"ellipse_angles"`
	// GroupKeys are the keys every attribute group must carry.
	GroupKeys []string `json:"attribute_group_keys"`
}

// Video is where a video's instances must be.
type Video struct {
	ParentInstanceList []int64            `json:"parent_instance_list"`
	Sequences          map[string][]int64 `json:"sequences"`
}

// Definition is one expected export.
type Definition struct {
	Source         map[string]any     `json:"source"`
	Completion     string             `json:"completion"`
	IncludeRemoved bool               `json:"include_removed_instances"`
	FileIDs        []string           `json:"file_ids"`
	FileListLength int                `json:"file_list_length"`
	Instances      map[string][]int64 `json:"instances"`
	NullEntries    []string           `json:"null_entries"`
	InstanceCount  int                `json:"instance_count"`
	// NoExport: the source matches no file, so nothing may be written.
	NoExport bool `json:"no_export"`
}

// ExamplesDir is shared/contract/examples beside the repository.
func ExamplesDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "contract", "examples")
}

// Scenarios lists the example scenario directories.
func Scenarios() ([]string, error) {
	entries, err := os.ReadDir(ExamplesDir())
	if err != nil {
		return nil, fmt.Errorf("the contract's examples must be at %s (shared/ beside the repo): %w", ExamplesDir(), err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(ExamplesDir(), e.Name()))
		}
	}
	return out, nil
}

// EventsFile returns path, or path/events.jsonl when path is a scenario
// directory.
func EventsFile(path string) string {
	if info, err := os.Stat(path); err == nil && info.IsDir() {
		return filepath.Join(path, "events.jsonl")
	}
	return path
}

// LoadExpected reads dir/expected.json.
func LoadExpected(dir string) (*Expected, error) {
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		return nil, err
	}
	var e Expected
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Check compares an export document with the expected definition and
// returns every difference.
func Check(doc []byte, exp *Expected, d Definition) []string {
	if d.NoExport {
		return []string{"the source matches no file, so no export may be written"}
	}
	errs := StrictJSONCheck(doc)
	// Every image and video entry passes Diffgram's own import wizard.
	if sub, err := ImagesAndVideos(doc); err != nil {
		errs = append(errs, err.Error())
	} else {
		for _, p := range DiffgramImportCheck(sub) {
			errs = append(errs, "Diffgram's importer: "+p)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return []string{"export is not a JSON object"}
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return []string{fmt.Sprintf("bad JSON: %v", err)}
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return []string{fmt.Sprintf("bad JSON: %v", err)}
		}
	}
	meta := []string{"readme", "label_map", "label_colour_map", "export_info", "attribute_groups_reference"}
	if len(keys) < 5 || !slices.Equal(keys[:5], meta) {
		return []string{fmt.Sprintf("top-level keys %v, want %v first", keys, meta)}
	}
	files := keys[5:]
	if !slices.Equal(files, d.FileIDs) {
		errs = append(errs, fmt.Sprintf("file keys %v, want %v", files, d.FileIDs))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return append(errs, err.Error())
	}
	var info struct {
		FileListLength int `json:"file_list_length"`
		InstanceCount  int `json:"instance_count"`
	}
	json.Unmarshal(top["export_info"], &info)
	if info.FileListLength != d.FileListLength {
		errs = append(errs, fmt.Sprintf("file_list_length %d, want %d", info.FileListLength, d.FileListLength))
	}
	if info.InstanceCount != d.InstanceCount {
		errs = append(errs, fmt.Sprintf("export_info.instance_count %d, want %d", info.InstanceCount, d.InstanceCount))
	}
	var lm map[string]string
	json.Unmarshal(top["label_map"], &lm)
	if fmt.Sprint(lm) != fmt.Sprint(exp.LabelMap) {
		errs = append(errs, fmt.Sprintf("label_map %v, want %v", lm, exp.LabelMap))
	}
	var groups []map[string]json.RawMessage
	json.Unmarshal(top["attribute_groups_reference"], &groups)
	var gids []int64
	for _, g := range groups {
		var id int64
		json.Unmarshal(g["id"], &id)
		gids = append(gids, id)
		for _, k := range exp.GroupKeys {
			if _, ok := g[k]; !ok {
				errs = append(errs, fmt.Sprintf("attribute group %d lacks key %q", id, k))
			}
		}
	}
	if fmt.Sprint(gids) != fmt.Sprint(exp.AttrGroups) {
		errs = append(errs, fmt.Sprintf("attribute group ids %v, want %v", gids, exp.AttrGroups))
	}
	for _, id := range files {
		raw := top[id]
		if slices.Contains(d.NullEntries, id) {
			if string(raw) != "null" {
				errs = append(errs, fmt.Sprintf("file %s: entry should be null", id))
			}
			continue
		}
		var entry struct {
			InstanceList       []map[string]any `json:"instance_list"`
			ParentInstanceList []map[string]any `json:"parent_instance_list"`
			SequenceList       []struct {
				ID           int64            `json:"id"`
				InstanceList []map[string]any `json:"instance_list"`
			} `json:"sequence_list"`
		}
		if err := json.Unmarshal(raw, &entry); err != nil {
			errs = append(errs, fmt.Sprintf("file %s: %v", id, err))
			continue
		}
		var got []int64
		add := func(l []map[string]any) {
			for _, in := range l {
				if v, ok := in["id"].(float64); ok {
					if want, ok := exp.EllipseAngles[fmt.Sprint(int64(v))]; ok {
						if got, ok := in["angle"].(float64); !ok || got != want {
							errs = append(errs, fmt.Sprintf("file %s: ellipse %d angle %v, want %v", id, int64(v), in["angle"], want))
						}
					}
				}
				for _, k := range []string{"root_id", "previous_id", "version", "sequence_id", "file_id"} {
					if _, ok := in[k]; ok {
						errs = append(errs, fmt.Sprintf("file %s: instance exports bookkeeping field %q", id, k))
					}
				}
				if v, ok := in["id"].(float64); ok {
					got = append(got, int64(v))
				}
			}
		}
		add(entry.InstanceList)
		add(entry.ParentInstanceList)
		for _, s := range entry.SequenceList {
			add(s.InstanceList)
		}
		slices.Sort(got)
		if want := d.Instances[id]; !slices.Equal(got, want) && (len(got) > 0 || len(want) > 0) {
			errs = append(errs, fmt.Sprintf("file %s: instances %v, want %v", id, got, want))
		}
		if video, ok := exp.Videos[id]; ok {
			var parent []int64
			for _, in := range entry.ParentInstanceList {
				parent = append(parent, int64(in["id"].(float64)))
			}
			if !slices.Equal(parent, video.ParentInstanceList) {
				errs = append(errs, fmt.Sprintf("video %s parent_instance_list %v, want %v", id, parent, video.ParentInstanceList))
			}
			seqs := map[string][]int64{}
			for _, s := range entry.SequenceList {
				var ids []int64
				for _, in := range s.InstanceList {
					ids = append(ids, int64(in["id"].(float64)))
				}
				seqs[fmt.Sprint(s.ID)] = ids
			}
			if fmt.Sprint(seqs) != fmt.Sprint(video.Sequences) {
				errs = append(errs, fmt.Sprintf("video %s sequences %v, want %v", id, seqs, video.Sequences))
			}
		}
	}
	return errs
}
