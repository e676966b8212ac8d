package events

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// typeError words a wrongly typed member as encoding/json would.
func typeError(key string, v json.RawMessage, want string) error {
	got := jsonValueKind(v)
	if got == "number" {
		got = "number " + string(v)
	}
	return fmt.Errorf("field %s: %s is not %s", key, got, want)
}

func isNull(v json.RawMessage) bool { return string(v) == "null" }

func rawInt(key string, v json.RawMessage) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, typeError(key, v, "an integer")
	}
	return n, nil
}

func setInt(dst *int64, key string, v json.RawMessage) error {
	if isNull(v) {
		return nil
	}
	n, err := rawInt(key, v)
	if err == nil {
		*dst = n
	}
	return err
}

func setOptInt(dst **int64, key string, v json.RawMessage) error {
	if isNull(v) {
		*dst = nil
		return nil
	}
	n, err := rawInt(key, v)
	if err == nil {
		*dst = &n
	}
	return err
}

func setBool(dst *bool, key string, v json.RawMessage) error {
	switch string(v) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	case "null":
	default:
		return typeError(key, v, "a boolean")
	}
	return nil
}

func setString(dst *string, key string, v json.RawMessage) error {
	if isNull(v) {
		return nil
	}
	s, ok := jsonString(v)
	if !ok {
		return typeError(key, v, "a string")
	}
	*dst = s
	return nil
}

// instanceTypes maps the quoted instance types of EVENTS.md to shared
// strings.
var instanceTypes = func() map[string]string {
	m := map[string]string{}
	for _, t := range []string{"box", "polygon", "point", "line", "tag", "cuboid", "ellipse", "curve",
		"keypoints", "cuboid_3d", "text_token", "global", "relation", "geo_point", "geo_circle",
		"geo_polyline", "geo_polygon", "geo_box", "audio"} {
		m[`"`+t+`"`] = t
	}
	return m
}()

// decode fills the instance from its members.
func (in *Instance) decode(fields []Field) error {
	for _, f := range fields {
		var err error
		switch f.Key {
		case "id":
			err = setInt(&in.ID, f.Key, f.Val)
		case "root_id":
			err = setOptInt(&in.RootID, f.Key, f.Val)
		case "previous_id":
			err = setOptInt(&in.PreviousID, f.Key, f.Val)
		case "version":
			err = setInt(&in.Version, f.Key, f.Val)
		case "file_id":
			err = setInt(&in.FileID, f.Key, f.Val)
		case "soft_delete":
			err = setBool(&in.SoftDelete, f.Key, f.Val)
		case "type":
			if t, ok := instanceTypes[string(f.Val)]; ok {
				in.Type = t // shared: no string per instance
			} else {
				err = setString(&in.Type, f.Key, f.Val)
			}
		case "label_file_id":
			err = setOptInt(&in.LabelFileID, f.Key, f.Val)
		case "sequence_id":
			err = setOptInt(&in.SequenceID, f.Key, f.Val)
		case "frame_number":
			err = setOptInt(&in.FrameNumber, f.Key, f.Val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// boxCoordinates are the members that place a box instance (EVENTS.md).
var boxCoordinates = [...]string{"x_min", "y_min", "x_max", "y_max"}

// checkBox refuses a box instance whose coordinates are not numbers
// ("wrong field types", EVENTS.md, "Bad input"): a "12", true or an
// object would be copied into the Diffgram document as it is and read by
// no COCO or YOLO reader. A coordinate that is null or absent is left as
// it is, as encoding/json leaves a null. Every occurrence of a repeated
// member is checked. Only received events are checked (DecodeWith): a
// stored snapshot accepted before this check still loads. fields are the
// snapshot's members.
func checkBox(ev *Event, fields []Field) error {
	in, ok := ev.Entity.(*Instance)
	if !ok || in.Type != "box" {
		return nil
	}
	for _, f := range fields {
		for _, k := range boxCoordinates {
			if f.Key == k && !isNull(f.Val) && jsonValueKind(f.Val) != "number" {
				return bad("instance %d: %s", in.ID, typeError(k, f.Val, "a number"))
			}
		}
	}
	return nil
}
