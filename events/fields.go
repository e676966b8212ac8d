package events

import (
	"bytes"
	"encoding/json"
)

// Field is one member of a JSON object, its value kept as raw bytes.
type Field struct {
	Key string
	Val json.RawMessage
}

// Fields splits a raw JSON object into its members, in order,
// without decoding the values. The input was validated when the event was
// decoded, so malformed input only yields fewer fields.
func Fields(raw []byte) []Field {
	return AppendFields(make([]Field, 0, 16), raw)
}

// AppendFields is Fields appending to out: with a buffer on the caller's
// stack, splitting allocates nothing.
func AppendFields(out []Field, raw []byte) []Field {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return out
	}
	i++
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) || raw[i] == '}' {
			return out
		}
		if raw[i] == ',' {
			i++
			continue
		}
		end := skipValue(raw, i)
		if end < 0 || raw[i] != '"' {
			return out
		}
		key := knownKey(raw[i+1 : end-1])
		if bytes.IndexByte(raw[i:end], '\\') >= 0 {
			var k string
			if json.Unmarshal(raw[i:end], &k) != nil {
				return out
			}
			key = k
		}
		i = skipSpace(raw, end)
		if i >= len(raw) || raw[i] != ':' {
			return out
		}
		i = skipSpace(raw, i+1)
		end = skipValue(raw, i)
		if end < 0 {
			return out
		}
		out = append(out, Field{key, json.RawMessage(raw[i:end])})
		i = end
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// SkipValue returns the index just past the JSON value that starts at i
// in b (after any whitespace it skips itself, none), or -1 if the value is
// cut short. It does not validate: b is expected to be valid JSON.
func SkipValue(b []byte, i int) int { return skipValue(b, i) }

// skipValue returns the index just past the JSON value starting at i, or
// -1 if it is cut short.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return -1
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := skipValue(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		return j
	}
}
