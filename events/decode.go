// Package events owns the event contract (shared/contract/EVENTS.md): the
// entity snapshots, decoding and validation of CloudEvents bodies, and the
// JetStream consumer that feeds decoded events to the pipeline, routes bad
// input to the dead-letter stream and owns the ack policy.
//
// Decode never panics: every input is either a valid *Event or a
// *BadInputError that says why.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Event is one decoded, validated event.
type Event struct {
	ID      string // CloudEvents id (also the Nats-Msg-Id)
	Type    string // diffgram.<entity>.<action>
	Kind    Kind
	Action  string
	Project string // the project's string_id
	// EntityID is the entity's id; for instances the lineage (root) id; 0
	// for a project.
	EntityID int64
	Version  int64
	// Partial is true for a removal that carries only the entity's id and
	// version: the pipeline merges it into the snapshot it has.
	Partial bool
	// Entity is the typed snapshot, an Entity: *Project, *Directory, *LabelFile,
	// *AttributeGroup, *Job, *File, *Task, *Sequence or *Instance.
	Entity any
	// Raw is the snapshot object exactly as received.
	Raw json.RawMessage
	// Seq is the event's stream sequence (set by the consumer).
	Seq uint64
	// Redelivered is true when the stream delivered the event before
	// (set by the consumer): an earlier attempt may have stored its effect
	// partly.
	Redelivered bool
}

// BadInputError says why an event is bad input (see EVENTS.md): it is
// permanent and the event goes to the dead-letter stream.
type BadInputError struct {
	Reason string
}

func (e *BadInputError) Error() string { return "bad event: " + e.Reason }

func bad(format string, args ...any) error {
	return &BadInputError{Reason: fmt.Sprintf(format, args...)}
}

// IsBadInput reports whether err is (or wraps) a *BadInputError.
func IsBadInput(err error) bool {
	var b *BadInputError
	return errors.As(err, &b)
}

var projectRe = regexp.MustCompile(`^[a-z0-9-]+$`)

// envelope holds the CloudEvents attributes we read. Attribute names are
// matched exactly (CloudEvents requires lower case); with a repeated
// attribute, the last one counts.
type envelope struct {
	SpecVersion, ID, Source, Type, DiffgramProject attr
	Data                                           json.RawMessage
}

// attr is a CloudEvents string attribute: set is false when it is absent
// or null.
type attr struct {
	s   string
	set bool
}

// decodeEnvelope reads the attributes with one validity scan (validJSON,
// json.Valid's rules) and a member scan, without reflection.
func decodeEnvelope(body []byte) (envelope, error) {
	if !validJSON(body) {
		var v any
		return envelope{}, bad("body is not a JSON object: %s", jsonReason(json.Unmarshal(body, &v)))
	}
	if i := skipSpace(body, 0); i >= len(body) || body[i] != '{' {
		return envelope{}, bad("body is not a JSON object")
	}
	var env envelope
	var buf [16]Field
	for _, f := range AppendFields(buf[:0], body) {
		var dst *attr
		switch f.Key {
		case "specversion":
			dst = &env.SpecVersion
		case "id":
			dst = &env.ID
		case "source":
			dst = &env.Source
		case "type":
			dst = &env.Type
		case "diffgramproject":
			dst = &env.DiffgramProject
		case "data":
			env.Data = nil
			if string(f.Val) != "null" {
				env.Data = f.Val
			}
			continue
		default:
			continue
		}
		if string(f.Val) == "null" {
			*dst = attr{}
			continue
		}
		if f.Key == "specversion" && string(f.Val) == `"1.0"` {
			*dst = attr{"1.0", true} // the usual value, without a copy
			continue
		}
		str, ok := jsonString(f.Val)
		if !ok {
			return envelope{}, bad("bad CloudEvents attribute: field %s: %s is not a string", f.Key, jsonValueKind(f.Val))
		}
		*dst = attr{str, true}
	}
	return env, nil
}

// jsonString decodes a raw JSON string value.
func jsonString(v json.RawMessage) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	return s, json.Unmarshal(v, &s) == nil
}

// jsonValueKind names the kind of a raw JSON value, as encoding/json's
// errors do.
func jsonValueKind(v json.RawMessage) string {
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	}
	return "number"
}

// Decode is DecodeWith with a size limit of maxBytes (0: no limit) and the
// default depth limit, DefaultMaxDepth.
func Decode(subject string, body []byte, maxBytes int) (*Event, error) {
	return DecodeWith(subject, body, Limits{MaxBytes: maxBytes})
}

// DefaultMaxDepth is the depth limit used when Limits.MaxDepth is 0.
const DefaultMaxDepth = 64

// maxJSONDepth is encoding/json's own nesting limit: a deeper MaxDepth
// would let the validity scan, not the depth check, reject the body.
const maxJSONDepth = 10000

// Limits bound the bodies DecodeWith accepts.
type Limits struct {
	// MaxBytes: a larger body is bad input; 0: no limit.
	MaxBytes int
	// MaxDepth: a body whose arrays and objects nest deeper is bad input
	// ("nested deeper than N"). The body's own object counts as 1, so
	// an entity snapshot starts at depth 3 (body, data, snapshot). 0 (or
	// less): DefaultMaxDepth; above 10000 (encoding/json's limit): 10000.
	MaxDepth int
}

// DecodeWith validates one message: subject
// "<prefix>.<project>.<entity>.<action>" and a CloudEvents 1.0 structured
// JSON body within lim. It returns a *BadInputError for any bad input,
// including a body that is not valid UTF-8 anywhere, even inside a string
// (the reason names the offset of the first invalid byte).
//
// JSON escapes that denote no valid character (a lone surrogate such as
// "\udc00") are accepted: the body's bytes, and so Event.Raw, hold the
// escape text, which is valid JSON and valid UTF-8, and encoding/json
// decodes it to U+FFFD. Event.Raw is therefore always valid UTF-8.
func DecodeWith(subject string, body []byte, lim Limits) (*Event, error) {
	if lim.MaxBytes > 0 && len(body) > lim.MaxBytes {
		return nil, bad("body is %d bytes, over the limit of %d", len(body), lim.MaxBytes)
	}
	// json.Valid accepts invalid UTF-8 inside strings, and Raw is copied
	// into exports as it is: check the whole body first. utf8.Valid is the
	// fast path; the offset is looked for only when it fails.
	if !utf8.Valid(body) {
		return nil, bad("body is not valid UTF-8: invalid byte at offset %d", invalidUTF8(body))
	}
	maxDepth := lim.MaxDepth
	switch {
	case maxDepth <= 0:
		maxDepth = DefaultMaxDepth
	case maxDepth > maxJSONDepth:
		maxDepth = maxJSONDepth
	}
	if nestedDeeper(body, maxDepth) {
		return nil, bad("nested deeper than %d", maxDepth)
	}
	env, err := decodeEnvelope(body)
	if err != nil {
		return nil, err
	}
	switch {
	case !env.SpecVersion.set:
		return nil, bad("not a CloudEvent: missing specversion")
	case env.SpecVersion.s != "1.0":
		return nil, bad("specversion %q is not 1.0", env.SpecVersion.s)
	case env.ID.s == "":
		return nil, bad("missing id")
	case env.Source.s == "":
		return nil, bad("missing source")
	case env.Type.s == "":
		return nil, bad("missing type")
	}
	ev := &Event{ID: env.ID.s, Type: env.Type.s}
	entity, action, ok := strings.Cut(strings.TrimPrefix(ev.Type, "diffgram."), ".")
	if !strings.HasPrefix(ev.Type, "diffgram.") || !ok {
		return nil, bad("unknown type %q", ev.Type)
	}
	spec := kinds[Kind(entity)]
	if !spec.known(action) {
		return nil, bad("unknown type %q", ev.Type)
	}
	ev.Kind, ev.Action = Kind(entity), action

	tok := strings.Split(subject, ".")
	if len(tok) < 4 {
		return nil, bad("subject %q is not <prefix>.<project>.<entity>.<action>", subject)
	}
	sp, se, sa := tok[len(tok)-3], tok[len(tok)-2], tok[len(tok)-1]
	if se != entity || sa != action {
		return nil, bad("subject %q and type %q disagree", subject, ev.Type)
	}
	if env.DiffgramProject.s == "" {
		return nil, bad("missing diffgramproject")
	}
	if sp != env.DiffgramProject.s {
		return nil, bad("subject project %q and diffgramproject %q disagree", sp, env.DiffgramProject.s)
	}
	if !projectRe.MatchString(sp) {
		return nil, bad("project %q is not [a-z0-9-]+", sp)
	}
	ev.Project = sp

	if env.Data == nil {
		return nil, bad("missing data")
	}
	if i := skipSpace(env.Data, 0); i >= len(env.Data) || env.Data[i] != '{' {
		return nil, bad("data is not an object")
	}
	var raw json.RawMessage
	var dataBuf [4]Field
	for _, f := range AppendFields(dataBuf[:0], env.Data) {
		if f.Key == spec.dataKey {
			raw = f.Val // the last of repeated members counts
		}
	}
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return nil, bad("data has no %q", spec.dataKey)
	}
	ev.Raw = raw
	if err := decodeEntity(ev, true); err != nil {
		return nil, err
	}
	return ev, nil
}

// subjectType is the event type that subject
// ("<prefix>.<project>.<entity>.<action>") names, "diffgram.<entity>.<action>",
// or "" when its last two tokens are not a known entity and action. It
// trusts nothing else of the message: it labels bad input in metrics, whose
// label values must stay a known few.
func subjectType(subject string) string {
	tok := strings.Split(subject, ".")
	if len(tok) < 4 {
		return ""
	}
	entity, action := tok[len(tok)-2], tok[len(tok)-1]
	if !kinds[Kind(entity)].known(action) {
		return ""
	}
	return "diffgram." + entity + "." + action
}

// DecodeEntity decodes a stored snapshot of the given kind (as kept by the
// pipeline) into its typed form. It applies the same validation of the
// snapshot as Decode; the checks of the whole body (size, UTF-8, depth) are
// Decode's alone, made before the snapshot was stored.
func DecodeEntity(kind Kind, project string, raw []byte) (any, error) {
	ev := &Event{Kind: kind, Project: project, Raw: raw}
	if err := decodeEntity(ev, false); err != nil {
		return nil, err
	}
	return ev.Entity, nil
}

// fieldDecoder is implemented by the snapshots decoded from the member
// scan instead of by encoding/json.
type fieldDecoder interface{ decode([]Field) error }

// decodeMember sets one member (key and its JSON value) of a decoded
// snapshot, as decoding a body holding it would.
func decodeMember(target Entity, key, value string) error {
	if fd, ok := target.(fieldDecoder); ok {
		return fd.decode([]Field{{key, json.RawMessage(value)}})
	}
	return json.Unmarshal([]byte(`{"`+key+`":`+value+`}`), target)
}

// decodeEntity decodes ev.Raw into ev.Entity. received: ev came in now
// (DecodeWith), and gets the checks made only of received events.
func decodeEntity(ev *Event, received bool) error {
	spec := kinds[ev.Kind]
	if spec == nil {
		return bad("unknown kind %q", ev.Kind)
	}
	if i := skipSpace(ev.Raw, 0); i >= len(ev.Raw) || ev.Raw[i] != '{' {
		return bad("%s is not an object", ev.Kind)
	}
	var fieldBuf [24]Field
	fields := AppendFields(fieldBuf[:0], ev.Raw)
	present := func(k string) bool {
		for _, f := range fields {
			if f.Key == k {
				return string(f.Val) != "null"
			}
		}
		return false
	}
	if !present("version") {
		return bad("%s has no version", ev.Kind)
	}
	if ev.Kind == KindProject {
		if !present("string_id") {
			return bad("project has no string_id")
		}
	} else if !present("id") {
		return bad("%s has no id", ev.Kind)
	}
	ev.Partial = spec.removal != nil && ev.Action == spec.removal.action && len(fields) == 2
	target := spec.new()
	// The most frequent event, the instance, is decoded from the member
	// scan, with encoding/json's rules (null leaves the zero value, the
	// last of repeated members counts), without reflection. It is called
	// on the concrete type so that the member buffer stays on the stack
	// (through the interface it escaped: 960 bytes per event).
	var err error
	switch t := target.(type) {
	case *Instance:
		err = t.decode(fields)
	case fieldDecoder:
		err = t.decode(slices.Clone(fields))
	default:
		if err := json.Unmarshal(ev.Raw, target); err != nil {
			return bad("%s: %s", ev.Kind, jsonReason(err))
		}
	}
	if err != nil {
		return bad("%s: %s", ev.Kind, err)
	}
	if ev.Partial {
		// The removal's own member, which the event does not carry.
		if err := decodeMember(target, spec.removal.key, spec.removal.value); err != nil {
			return bad("%s: %s", ev.Kind, err)
		}
	}
	ev.Entity = target
	ev.EntityID, ev.Version = target.EntityID(), target.EntityVersion()
	if c, ok := target.(checker); ok {
		if err := c.check(ev); err != nil {
			return err
		}
	}
	if ev.Kind != KindProject && ev.EntityID <= 0 {
		return bad("%s id %d is not positive", ev.Kind, ev.EntityID)
	}
	if ev.Version < 0 {
		return bad("%s version %d is negative", ev.Kind, ev.Version)
	}
	if received {
		return checkBox(ev, fields)
	}
	return nil
}

// invalidUTF8 returns the offset of the first byte of b that does not start
// a valid UTF-8 sequence (the lead byte of a truncated sequence, a stray
// continuation byte, 0xff, ...), or -1 if b is valid UTF-8.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// nestedDeeper reports whether the arrays and objects of b, JSON text,
// nest deeper than limit: a byte scan counting the "[" and "{" open outside
// strings. When b does not hold more than limit of them in all, it cannot,
// and only they are counted. Malformed JSON may or may not be reported as
// too deep; it is bad input either way.
func nestedDeeper(b []byte, limit int) bool {
	if bytes.Count(b, []byte{'{'})+bytes.Count(b, []byte{'['}) <= limit {
		return false
	}
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			// Skip to the closing quote: the next quote not escaped by
			// an odd run of backslashes.
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					return false
				}
				i += 1 + j
				k := i - 1
				for b[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '{', '[':
			depth++
			if depth > limit {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// jsonKind names a Go type as the JSON value it decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Name() == "RawMessage" {
			return "JSON"
		}
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// jsonReason turns a JSON error into a short reason naming the field.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("field %s: %s is not %s", field, te.Value, jsonKind(te.Type))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "invalid JSON at offset " + strconv.FormatInt(se.Offset, 10)
	}
	return err.Error()
}
