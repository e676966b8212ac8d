package pipelinetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DiffgramCommit is the commit of github.com/diffgram/diffgram whose
// frontend/src/components/input/DiffgramExportFileIngestor.ts and
// diffgram_export_validator.vue the line numbers below refer to.
// AttributeGroupManager.ts is not stored at that commit; its line numbers
// refer to the version stored at commit cf3b59c4cdcfc9f999a11fe6b0ee5023ec695952
// (the newest of it that was readable: it compares min_value and max_value).
//
// Short names in comments and messages:
//
//	ingestor.ts   frontend/src/components/input/DiffgramExportFileIngestor.ts
//	agm.ts        frontend/src/components/input/AttributeGroupManager.ts
//	validator.vue frontend/src/components/input/diffgram_export_validator.vue
const DiffgramCommit = "0289ac65da5a29eb3ce4a777dc6fdbb2accd68e5"

// diffgramMetadataKeys are the ingestor's metadata_keys (ingestor.ts:10), in
// its order.
var diffgramMetadataKeys = []string{"readme", "label_map", "export_info", "attribute_groups_reference", "label_colour_map"}

// diffgramInstanceTypes are the instance types add_to_instance_count_list
// accepts (ingestor.ts:260-281); any other type throws "Invalid instance
// type" at ingestor.ts:280 when the wizard's summary counts instances
// (get_instance_count_per_file, ingestor.ts:414-424).
var diffgramInstanceTypes = []string{"box", "point", "polygon", "line", "cuboid", "cuboid_3d", "ellipse", "global"}

// DiffgramImportCheck applies to an export document every check that
// Diffgram's export re-import wizard (diffgram_export_validator.vue, which
// drives DiffgramExportFileIngestor and AttributeGroupManager) applies, and
// returns one string per problem the wizard would refuse or crash on, naming
// the file id, sequence and instance (or their list index). Where the wizard
// only needs a key to be there (AttributeGroupManager compares group keys
// with !==, so a missing key never equals the null the platform's API
// returns) the key must be present. Line numbers are at DiffgramCommit.
//
// Only image and video entries can be imported: the ingestor rejects every
// other file type. An entry whose file.type is text, compound,
// sensor_fusion, geospatial (or anything but "image" and "video") throws
// "Invalid File type" in check_instances_based_on_type (ingestor.ts:234-241,
// the throw at 240), and again in get_payload_for_batch_creation
// (ingestor.ts:370-378), get_instance_count_per_file (ingestor.ts:414-428)
// and update_attribute_ids (ingestor.ts:566-572). An audio file is written as
// the value null (EXPORTS.md), which the wizard cannot even read: get_file_names
// evaluates file_data.file on it and throws a TypeError (ingestor.ts:70);
// an audio entry with a file object would be rejected at ingestor.ts:240 like
// the others. DiffgramImportCheck reports every such entry as a problem, so
// run it only on exports of image and video files.
//
// Not checked because the wizard does not read them: parent_instance_list
// (the ingestor imports a video's instances from sequence_list only, so
// instances there are not imported), sequence fields other than
// instance_list, export_info and readme contents (only their truthiness,
// ingestor.ts:101), instance ids and attribute_groups values.
//
// Stricter than the wizard, and said so in the message: a file key must be a
// canonical decimal id (the wizard accepts whatever parseInt reads, like
// "12abc"); frame_number and number must be JSON numbers (isNaN lets null,
// booleans and numeric strings through, but the frame packet map is keyed by
// String(frame_number), ingestor.ts:327-334); points must be an array.
// Parsing is encoding/json's (duplicate keys: the last wins, as JSON.parse);
// use StrictJSONCheck for UTF-8, syntax and duplicate keys.
func DiffgramImportCheck(doc []byte) []string {
	c := &diffgramChecker{}

	// Pass 1: the top-level keys in order, the metadata values, and which
	// occurrence of a repeated key JSON.parse keeps (the last).
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		// The wizard JSON.parses the file and hands the object to the
		// ingestor, which indexes it by the metadata keys (ingestor.ts:101).
		if err != nil {
			return []string{fmt.Sprintf("document is not valid JSON: %v", err)}
		}
		return []string{"document is not a JSON object: the ingestor reads it as one (ingestor.ts:100-118)"}
	}
	var keys []string
	last := map[string]int{}
	meta := map[string]any{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return []string{fmt.Sprintf("document is not valid JSON: %v", err)}
		}
		k := t.(string)
		last[k] = len(keys)
		keys = append(keys, k)
		if slices.Contains(diffgramMetadataKeys, k) {
			var v any
			if err := dec.Decode(&v); err != nil {
				return []string{fmt.Sprintf("document is not valid JSON: %v", err)}
			}
			meta[k] = v
			continue
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return []string{fmt.Sprintf("document is not valid JSON: %v", err)}
		}
	}
	if _, err := dec.Token(); err != nil {
		return []string{fmt.Sprintf("document is not valid JSON: %v", err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		// JSON.parse refuses anything after the top-level value.
		return []string{"document is not valid JSON: data after the top-level object"}
	}

	c.checkMetadata(meta)

	// Every non-metadata key is a file id: parseInt(key, 10) must not be NaN
	// (ingestor.ts:112-117, run by the constructor, ingestor.ts:15).
	for i, k := range keys {
		if slices.Contains(diffgramMetadataKeys, k) || last[k] != i {
			continue
		}
		switch {
		case !jsParseIntOK(k):
			c.addf("top-level key %q is neither a metadata key nor a file id: the wizard throws \"unrecognized key\" (ingestor.ts:113-116)", k)
		case !isDecimalID(k):
			c.addf("top-level key %q is not a decimal file id (the wizard's parseInt reads it, ingestor.ts:114; EXPORTS.md wants the id as a decimal string)", k)
		}
	}

	// Pass 2: the file entries, one at a time.
	dec = json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	dec.Token() // '{', checked above
	for i := 0; dec.More(); i++ {
		t, _ := dec.Token()
		k := t.(string)
		if slices.Contains(diffgramMetadataKeys, k) || last[k] != i || !jsParseIntOK(k) {
			// Metadata, an earlier duplicate JSON.parse drops, or a key the
			// wizard already refused (reported above).
			var skip json.RawMessage
			dec.Decode(&skip)
			continue
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			c.addf("file %s: %v", k, err)
			return c.problems
		}
		c.checkFile(k, v)
	}
	return c.problems
}

type diffgramChecker struct {
	problems []string
	labelMap map[string]any
}

func (c *diffgramChecker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *diffgramChecker) checkMetadata(meta map[string]any) {
	// check_export_meta_data: each metadata key must be there and truthy
	// (ingestor.ts:96-105; the wizard's first step, validator.vue:218, and
	// the constructor, ingestor.ts:15 -> 109).
	for _, k := range diffgramMetadataKeys {
		v, ok := meta[k]
		switch {
		case !ok:
			c.addf("top-level key %q is missing: the wizard throws \"Invalid Export Format\" (ingestor.ts:101-102)", k)
		case !jsTruthy(v):
			c.addf("top-level key %q is %s, which is falsy: the wizard throws \"Invalid Export Format\" (ingestor.ts:101-102)", k, jsonText(v))
		}
	}

	// label_map: the label names come from its values (get_label_names,
	// ingestor.ts:55-57), which the wizard looks up among the project's label
	// names with includes, i.e. ===, and creates when missing
	// (validator.vue:365-367, 307); instances look their label up in it
	// (ingestor.ts:197).
	if v, ok := meta["label_map"]; ok && jsTruthy(v) {
		lm, isObj := v.(map[string]any)
		if !isObj {
			c.addf("label_map is %s, not an object of label file id -> name (ingestor.ts:55, 197)", jsonKind(v))
		} else {
			c.labelMap = lm
			for _, id := range sortedKeys(lm) {
				if s, ok := lm[id].(string); !ok || s == "" {
					c.addf("label_map[%q] is %s, not a label name: the wizard matches names with === against the project's labels (ingestor.ts:55-57, validator.vue:365-367)", id, jsonText(lm[id]))
				}
			}
		}
	}

	// label_colour_map: the wizard reads the colour of each label it creates
	// (get_color_map, ingestor.ts:46; validator.vue:306-313).
	if v, ok := meta["label_colour_map"]; ok && jsTruthy(v) {
		cm, isObj := v.(map[string]any)
		if !isObj {
			c.addf("label_colour_map is %s, not an object keyed by label file id (ingestor.ts:46)", jsonKind(v))
		} else {
			for _, id := range sortedKeys(c.labelMap) {
				if _, ok := cm[id]; !ok {
					c.addf("label_colour_map has no entry for label file %s: the wizard posts its colour when it creates the label (ingestor.ts:46, validator.vue:307-313)", id)
				}
			}
		}
	}

	if v, ok := meta["attribute_groups_reference"]; ok && jsTruthy(v) {
		c.checkGroups(v)
	}
}

// diffgramGroupKeys are the attribute group keys the wizard reads, each
// with where: AttributeGroupManager.attributes_groups_are_equal compares the
// export's group with each of the project's groups with !== (a missing key
// is undefined, never equal to the API's null), and the wizard copies them
// onto the groups it creates.
var diffgramGroupKeys = []struct{ key, where string }{
	{"id", "ingestor.ts:481 (add_new_attr_id_mapping), validator.vue:543"},
	{"name", "agm.ts:65"},
	{"kind", "agm.ts:70 (which compares the project's kind with itself), validator.vue:514, 547"},
	{"prompt", "agm.ts:75"},
	{"label_file_list", "agm.ts:81 -> 9-27, ingestor.ts:23"},
	{"attribute_template_list", "agm.ts:86 -> 30-55, ingestor.ts:457-466"},
	{"default_value", "agm.ts:92"},
	{"default_id", "agm.ts:97"},
	{"min_value", "agm.ts:103"},
	{"max_value", "agm.ts:109"},
	{"is_global", "validator.vue:519"},
}

func (c *diffgramChecker) checkGroups(v any) {
	// has_missing_attributes iterates attribute_groups_reference with for-of
	// (ingestor.ts:471-475), as does substitute_label_file_ids_on_attributes
	// (ingestor.ts:22): it must be an array.
	groups, ok := v.([]any)
	if !ok {
		c.addf("attribute_groups_reference is %s, not an array: the wizard iterates it (ingestor.ts:471-475, 22)", jsonKind(v))
		return
	}
	for i, gv := range groups {
		name := fmt.Sprintf("attribute_groups_reference[%d]", i)
		// attributes_groups_are_equal reads attr_obj_1.name first (agm.ts:65).
		g, ok := gv.(map[string]any)
		if !ok {
			c.addf("%s is %s, not an object (agm.ts:65 reads its name)", name, jsonKind(gv))
			continue
		}
		if id, ok := g["id"].(json.Number); ok {
			name = "attribute group " + id.String()
		}
		for _, k := range diffgramGroupKeys {
			if _, ok := g[k.key]; !ok {
				c.addf("%s: key %q is missing (read at %s)", name, k.key, k.where)
			}
		}
		// The group id keys the id mapping (add_new_attr_id_mapping,
		// ingestor.ts:449-454 via 481) that instance attribute_groups keys,
		// parsed with parseInt, are looked up in (ingestor.ts:501-503).
		if id, ok := g["id"]; ok && !isInteger(id) {
			c.addf("%s: id is %s, not an integer: instance attribute_groups keys are parseInt-ed and looked up by it (ingestor.ts:481, 501-503)", name, jsonText(id))
		}
		// are_label_list_equal maps each linked label to l_file.label.name
		// (agm.ts:12-20); substitute_label_file_ids_on_attributes reads the
		// same (ingestor.ts:24-29).
		if l, ok := g["label_file_list"]; ok && jsTruthy(l) {
			list, ok := l.([]any)
			if !ok {
				c.addf("%s: label_file_list is %s, not an array (agm.ts:19 calls map on it)", name, jsonKind(l))
			} else {
				for j, e := range list {
					em, _ := e.(map[string]any)
					lab, _ := em["label"].(map[string]any)
					if _, ok := lab["name"]; !ok {
						c.addf("%s: label_file_list[%d] has no label.name (agm.ts:19-20, ingestor.ts:29 read it)", name, j)
					}
				}
			}
		}
		// are_attribute_lists_equal filters the templates on attr.archived and
		// compares their names (agm.ts:38-39); map_attribute_options maps each
		// template's id by name (ingestor.ts:460-464).
		if l, ok := g["attribute_template_list"]; ok && jsTruthy(l) {
			list, ok := l.([]any)
			if !ok {
				c.addf("%s: attribute_template_list is %s, not an array (agm.ts:39 calls filter on it)", name, jsonKind(l))
			} else {
				for j, e := range list {
					em, ok := e.(map[string]any)
					if !ok {
						c.addf("%s: attribute_template_list[%d] is %s, not an object (agm.ts:39 reads attr.archived)", name, j, jsonKind(e))
						continue
					}
					for _, k := range []string{"id", "name"} {
						if _, ok := em[k]; !ok {
							c.addf("%s: attribute_template_list[%d] has no %q (agm.ts:39, ingestor.ts:462-463)", name, j, k)
						}
					}
				}
			}
		}
	}
}

func (c *diffgramChecker) checkFile(key string, v any) {
	// get_file_names reads file_data.file and file.original_filename
	// (ingestor.ts:69-71): a null entry (how the export writes audio and
	// other types) throws a TypeError there.
	if v == nil {
		c.addf("file %s: entry is null (an audio or other unsupported file): the wizard reads file_data.file and throws a TypeError (ingestor.ts:70); Diffgram's importer takes only image and video entries", key)
		return
	}
	entry, ok := v.(map[string]any)
	if !ok {
		c.addf("file %s: entry is %s, not an object (ingestor.ts:69-71)", key, jsonKind(v))
		return
	}
	f, ok := entry["file"].(map[string]any)
	if !ok {
		c.addf("file %s: no \"file\" object: the wizard throws \"has no file.original_filename\" (ingestor.ts:70-71)", key)
		return
	}
	// get_file_names: file.original_filename must be truthy (ingestor.ts:70-71).
	if !jsTruthy(f["original_filename"]) {
		c.addf("file %s: file.original_filename is %s: the wizard throws \"has no file.original_filename\" (ingestor.ts:70-71)", key, member(f, "original_filename"))
	}
	// get_blob_list: file.blob_url must be truthy (ingestor.ts:87-88).
	if !jsTruthy(f["blob_url"]) {
		c.addf("file %s: file.blob_url is %s: the wizard throws \"has no blob\" (ingestor.ts:87-88)", key, member(f, "blob_url"))
	}
	// check_instances_based_on_type: only image and video (ingestor.ts:234-241;
	// also 370-378, 414-428, 566-572).
	switch t, _ := f["type"].(string); t {
	case "image":
		c.checkImage(key, entry)
	case "video":
		c.checkVideo(key, entry)
	default:
		c.addf("file %s: file.type is %s, not image or video: the wizard throws \"Invalid File type\" (ingestor.ts:240; also 377, 427, 571)", key, member(f, "type"))
	}
}

func (c *diffgramChecker) checkImage(key string, entry map[string]any) {
	// check_image_instances iterates file_data.instance_list with for-of
	// (ingestor.ts:205-206).
	list, ok := entry["instance_list"].([]any)
	if !ok {
		c.addf("file %s: instance_list is %s, not an array: the wizard iterates it (ingestor.ts:205-206, 415)", key, member(entry, "instance_list"))
		return
	}
	for i, in := range list {
		c.checkInstance(fmt.Sprintf("file %s", key), fmt.Sprintf("instance_list[%d]", i), in, false)
	}
}

func (c *diffgramChecker) checkVideo(key string, entry map[string]any) {
	// check_valid_frames and check_video_instances iterate
	// file_data.sequence_list and each sequence.instance_list with for-of
	// (ingestor.ts:213-214, 223-226). parent_instance_list is never read.
	seqs, ok := entry["sequence_list"].([]any)
	if !ok {
		c.addf("file %s: sequence_list is %s, not an array: the wizard iterates it (ingestor.ts:213, 223-225)", key, member(entry, "sequence_list"))
		return
	}
	for j, sv := range seqs {
		where := fmt.Sprintf("file %s sequence_list[%d]", key, j)
		s, ok := sv.(map[string]any)
		if !ok {
			c.addf("%s is %s, not an object (ingestor.ts:214 reads its instance_list)", where, jsonKind(sv))
			continue
		}
		if id, ok := s["id"].(json.Number); ok {
			where = fmt.Sprintf("file %s sequence %s", key, id)
		}
		list, ok := s["instance_list"].([]any)
		if !ok {
			c.addf("%s: instance_list is %s, not an array: the wizard iterates it (ingestor.ts:214, 226)", where, member(s, "instance_list"))
			continue
		}
		for i, in := range list {
			c.checkInstance(where, fmt.Sprintf("instance_list[%d]", i), in, true)
		}
	}
}

func (c *diffgramChecker) checkInstance(where, index string, v any, video bool) {
	in, ok := v.(map[string]any)
	if !ok {
		// check_instance_spacial_data and check_label_is_valid use the `in`
		// operator on it, which throws on a non-object (ingestor.ts:141-176, 193).
		c.addf("%s %s is %s, not an object (ingestor.ts:193 applies `in` to it)", where, index, jsonKind(v))
		return
	}
	name := where + " " + index
	if id, ok := in["id"].(json.Number); ok {
		name = where + " instance " + id.String()
	}
	typ, _ := in["type"].(string)

	// add_to_instance_count_list: any other type throws "Invalid instance
	// type" (ingestor.ts:260-281, throw at 280), called for every instance
	// of an image (ingestor.ts:415-416) and every sequence instance of a
	// video (ingestor.ts:420-422) when the wizard's summary counts them.
	if !slices.Contains(diffgramInstanceTypes, typ) {
		c.addf("%s: type %s is not one of %v: the wizard throws \"Invalid instance type\" (ingestor.ts:280)", name, jsonText(in["type"]), diffgramInstanceTypes)
	}

	// check_instance_spacial_data (ingestor.ts:139-181).
	need := func(keys []string, at string) {
		for _, k := range keys {
			if _, ok := in[k]; !ok {
				c.addf("%s (%s): %s is missing (ingestor.ts:%s)", name, typ, k, at)
			}
		}
	}
	switch typ {
	case "box":
		// ingestor.ts:140-146.
		need([]string{"x_min", "x_max", "y_min", "y_max"}, "141-145")
	case "point", "line", "polygon":
		// check_points_type_instance (ingestor.ts:147-150, 170-171 -> 122-136):
		// points must be there, and each point must have x and y; points
		// of null throws at instance.points.length (ingestor.ts:131).
		p, ok := in["points"]
		if !ok {
			c.addf("%s (%s): points is missing (ingestor.ts:123-127)", name, typ)
			break
		}
		pts, ok := p.([]any)
		if !ok {
			c.addf("%s (%s): points is %s, not an array of {x, y} (ingestor.ts:131-132)", name, typ, jsonKind(p))
			break
		}
		for i, pv := range pts {
			pm, ok := pv.(map[string]any)
			if !ok {
				c.addf("%s (%s): points[%d] is %s, not an object (ingestor.ts:132 applies `in` to it)", name, typ, i, jsonKind(pv))
				continue
			}
			for _, k := range []string{"x", "y"} {
				if _, ok := pm[k]; !ok {
					c.addf("%s (%s): points[%d] has no %s (ingestor.ts:130-133)", name, typ, i, k)
				}
			}
		}
	case "cuboid":
		// ingestor.ts:151-169: front_face and rear_face, each with the four
		// corners, each corner with x and y.
		for _, face := range []string{"front_face", "rear_face"} {
			fv, ok := in[face]
			if !ok {
				c.addf("%s (cuboid): %s is missing (ingestor.ts:156-157)", name, face)
				continue
			}
			fm, ok := fv.(map[string]any)
			if !ok {
				c.addf("%s (cuboid): %s is %s, not an object (ingestor.ts:160 applies `in` to it)", name, face, jsonKind(fv))
				continue
			}
			for _, corner := range []string{"top_right", "top_left", "bot_right", "bot_left"} {
				cv, ok := fm[corner]
				if !ok {
					c.addf("%s (cuboid): %s.%s is missing (ingestor.ts:160-161)", name, face, corner)
					continue
				}
				cm, ok := cv.(map[string]any)
				if !ok {
					c.addf("%s (cuboid): %s.%s is %s, not an object (ingestor.ts:164 applies `in` to it)", name, face, corner, jsonKind(cv))
					continue
				}
				for _, k := range []string{"x", "y"} {
					if _, ok := cm[k]; !ok {
						c.addf("%s (cuboid): %s.%s has no %s (ingestor.ts:164-165)", name, face, corner, k)
					}
				}
			}
		}
	case "ellipse":
		// ingestor.ts:172-178: angle included (0 must be written).
		need([]string{"center_x", "center_y", "width", "height", "angle"}, "173-177")
	}

	// check_label_is_valid (ingestor.ts:192-202): the key must be there; a
	// truthy label_file_id must name a label_map entry with a truthy name.
	if lf, ok := in["label_file_id"]; !ok {
		c.addf("%s: label_file_id is missing: the wizard throws \"Label File ID missing\" (ingestor.ts:193-194)", name)
	} else if jsTruthy(lf) {
		k, ok := jsPropertyKey(lf)
		if !ok || c.labelMap == nil || !jsTruthy(c.labelMap[k]) {
			c.addf("%s: label_file_id %s is not in label_map: the wizard throws \"Invalid label_file_id\" (ingestor.ts:196-199)", name, jsonText(lf))
		}
	}

	if !video {
		return
	}
	// check_valid_frames: isNaN(instance.frame_number) throws "Invalid
	// frame_number" (ingestor.ts:212-220); the frame packet map is keyed by
	// it (ingestor.ts:327-334), so it must be a number.
	if fn, ok := in["frame_number"]; !ok {
		c.addf("%s: frame_number is missing: the wizard throws \"Invalid frame_number\" (ingestor.ts:215-216)", name)
	} else if jsIsNaN(fn) {
		c.addf("%s: frame_number is %s: the wizard throws \"Invalid frame_number\" (ingestor.ts:215-216)", name, jsonText(fn))
	} else if _, isNum := fn.(json.Number); !isNum {
		c.addf("%s: frame_number is %s, not a number: isNaN lets it through (ingestor.ts:215) but the frame packet map is keyed by String(frame_number) (ingestor.ts:327-334)", name, jsonText(fn))
	}
	// check_instance_sequences: 'number' in instance and !isNaN(number)
	// (ingestor.ts:183-190).
	if n, ok := in["number"]; !ok {
		c.addf("%s: number (the sequence number) is missing: the wizard throws \"Sequence number missing\" (ingestor.ts:184-185)", name)
	} else if jsIsNaN(n) {
		c.addf("%s: number is %s: the wizard throws \"Instance sequence number must be a number\" (ingestor.ts:187-188)", name, jsonText(n))
	} else if _, isNum := n.(json.Number); !isNum {
		c.addf("%s: number is %s, not a number: isNaN lets it through (ingestor.ts:187) but it is the sequence number", name, jsonText(n))
	}
}

// jsTruthy is JavaScript's truthiness of a decoded JSON value.
func jsTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return !(err == nil && f == 0) // an out-of-range literal is ±Infinity
	}
	return true // objects and arrays, empty ones too
}

// jsPropertyKey is the property name JavaScript makes of a value used as an
// object index (label_map[instance.label_file_id]).
func jsPropertyKey(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return "", false
		}
		if f == math.Trunc(f) && math.Abs(f) < 1e21 {
			return strconv.FormatFloat(f, 'f', -1, 64), true
		}
		return strconv.FormatFloat(f, 'g', -1, 64), true
	}
	return "", false
}

// jsParseIntOK says whether parseInt(s, 10) is not NaN: after JavaScript
// white space and an optional sign comes at least one decimal digit.
func jsParseIntOK(s string) bool {
	s = strings.TrimLeftFunc(s, func(r rune) bool {
		switch r {
		case '\t', '\n', '\v', '\f', '\r', ' ', 0xa0, 0xfeff, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
			return true
		}
		return r >= 0x2000 && r <= 0x200a
	})
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	return s != "" && s[0] >= '0' && s[0] <= '9'
}

// isDecimalID says whether s is a canonical non-negative decimal integer.
func isDecimalID(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isInteger(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	_, err := strconv.ParseInt(string(n), 10, 64)
	return err == nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// member shows m[k] with jsonText, or "missing".
func member(m map[string]any, k string) string {
	v, ok := m[k]
	if !ok {
		return "missing"
	}
	return jsonText(v)
}

// jsIsNaN is JavaScript's isNaN of a decoded JSON value: Number(v) is NaN.
func jsIsNaN(v any) bool {
	switch x := v.(type) {
	case nil, bool, json.Number:
		return false
	case string:
		// Number(string): white space trimmed; "" is 0; decimal literals,
		// Infinity and 0x/0o/0b integers are numbers, anything else NaN.
		s := strings.TrimSpace(x)
		switch {
		case s == "", jsDecimal.MatchString(s), s == "Infinity", s == "+Infinity", s == "-Infinity":
			return false
		case jsRadix.MatchString(s):
			return false
		}
		return true
	case []any:
		// Number([]) is 0, Number([x]) is Number(String(x)), longer arrays NaN.
		if len(x) == 0 {
			return false
		}
		if len(x) == 1 {
			switch x[0].(type) {
			case []any, map[string]any:
				return true // near enough: nested containers
			}
			return jsIsNaN(jsString(x[0]))
		}
		return true
	}
	return true // objects
}

var (
	jsDecimal = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
	jsRadix   = regexp.MustCompile(`^0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)$`)
)

// jsString is String(v) for a JSON scalar.
func jsString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case json.Number:
		return x.String()
	}
	return "[object]"
}

// jsonText shows a scalar as JSON, a container by kind.
func jsonText(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case []any, map[string]any:
		return jsonKind(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// StrictJSONCheck reports whether doc is valid UTF-8 and exactly one valid
// JSON value, and whether any object in it names a key twice (keys compared
// after unescaping, as JSON.parse compares them), giving the JSON path of each
// duplicate, e.g. $["5001"].instance_list[2].id. It never builds the tree:
// encoding/json's json.Valid checks the syntax, then one pass over the bytes
// keeps a key set per open object only, so a document of any size is
// checked in memory proportional to its nesting and widest object.
func StrictJSONCheck(doc []byte) []string {
	var problems []string
	if !utf8.Valid(doc) {
		off := 0
		for off < len(doc) {
			r, n := utf8.DecodeRune(doc[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		// encoding/json reads bad bytes as U+FFFD without complaint.
		problems = append(problems, fmt.Sprintf("invalid UTF-8 at byte offset %d (0x%02x)", off, doc[off]))
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return append(problems, "not valid JSON: empty document")
	}
	if !json.Valid(doc) {
		// Unmarshal validates the whole input before decoding anything and
		// says where it fails (trailing data after the value included).
		err := json.Unmarshal(doc, new(json.RawMessage))
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return append(problems, fmt.Sprintf("not valid JSON at byte offset %d: %v", se.Offset, err))
		}
		return append(problems, fmt.Sprintf("not valid JSON: %v", err))
	}
	return append(problems, duplicateKeys(doc)...)
}

// jsonFrame is one open container in duplicateKeys.
type jsonFrame struct {
	object  bool
	wantKey bool                // object: the next string is a key
	key     string              // object: the current member's key
	few     []string            // object: its keys while there are few
	many    map[string]struct{} // object: its keys once there are many
	index   int                 // array: the current element's index
}

// seen records k in the frame's key set and says whether it was there.
func (f *jsonFrame) seen(k string) bool {
	if f.many != nil {
		if _, ok := f.many[k]; ok {
			return true
		}
		f.many[k] = struct{}{}
		return false
	}
	if slices.Contains(f.few, k) {
		return true
	}
	f.few = append(f.few, k)
	if len(f.few) > 16 {
		f.many = make(map[string]struct{}, 2*len(f.few))
		for _, x := range f.few {
			f.many[x] = struct{}{}
		}
		f.few = nil
	}
	return false
}

// duplicateKeys scans a document json.Valid accepted and reports every key
// named twice in one object, with its JSON path.
func duplicateKeys(doc []byte) []string {
	var problems []string
	var stack []*jsonFrame
	path := func(last string) string {
		var b strings.Builder
		b.WriteString("$")
		for _, f := range stack[:len(stack)-1] {
			if f.object {
				b.WriteString(pathKey(f.key))
			} else {
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		b.WriteString(pathKey(last))
		return b.String()
	}
	for i := 0; i < len(doc); i++ {
		switch c := doc[i]; c {
		case '{':
			stack = append(stack, &jsonFrame{object: true, wantKey: true})
		case '[':
			stack = append(stack, &jsonFrame{})
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			if top := stack[len(stack)-1]; top.object {
				top.wantKey = true
			} else {
				top.index++
			}
		case '"':
			start, escaped := i, false
			for i++; doc[i] != '"'; i++ {
				if doc[i] == '\\' {
					escaped = true
					i++
				}
			}
			if len(stack) == 0 {
				break
			}
			top := stack[len(stack)-1]
			if !top.object || !top.wantKey {
				break // a string value
			}
			top.wantKey = false
			k := string(doc[start+1 : i])
			if escaped {
				json.Unmarshal(doc[start:i+1], &k) // valid: json.Valid said so
			}
			if top.seen(k) {
				problems = append(problems, fmt.Sprintf("duplicate key %q at %s", k, path(k)))
			}
			top.key = k
		}
		// White space, ':', numbers and literals need nothing.
	}
	return problems
}

// pathKey is one step of a JSON path: .name for plain identifiers,
// ["..."] otherwise.
func pathKey(k string) string {
	plain := k != ""
	for i, r := range k {
		if !(r == '_' || r == '$' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9')) {
			plain = false
			break
		}
	}
	if plain {
		return "." + k
	}
	return "[" + strconv.Quote(k) + "]"
}

// ImagesAndVideos returns the export document with only its image and
// video file entries (the file types Diffgram's importer takes back), for
// DiffgramImportCheck. The metadata keys stay as they are.
func ImagesAndVideos(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object")
	}
	out := []byte{'{'}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if !slices.Contains(diffgramMetadataKeys, k) {
			var entry struct {
				File struct {
					Type string `json:"type"`
				} `json:"file"`
			}
			if json.Unmarshal(v, &entry) != nil || entry.File.Type != "image" && entry.File.Type != "video" {
				continue
			}
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		key, _ := json.Marshal(k)
		out = append(append(append(out, key...), ':'), v...)
	}
	return append(out, '}'), nil
}
