package pipeline

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/exportstream/exportstream/events"
)

func lookup(fs []events.Field, key string) (json.RawMessage, bool) {
	for _, f := range fs {
		if f.Key == key {
			return f.Val, true
		}
	}
	return nil, false
}

// rawOrNull returns the member's raw value, or null when absent.
func rawOrNull(fs []events.Field, key string) json.RawMessage {
	if v, ok := lookup(fs, key); ok {
		return v
	}
	return json.RawMessage("null")
}

// truthy reports whether a raw JSON value is truthy in Python's sense (the
// export format's origin): not null, false, 0, "", [] or {}.
func truthy(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return false
	}
	switch v[0] {
	case 'n', 'f':
		return false
	case '"':
		return len(v) > 2
	case '[', '{':
		inner := bytes.TrimSpace(v[1 : len(v)-1])
		return len(inner) > 0
	default:
		f, err := strconv.ParseFloat(string(v), 64)
		return err != nil || f != 0
	}
}

// appendString appends s as a JSON string (no HTML escaping).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, "0123456789abcdef"[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendKey appends "key": .
func appendKey(b []byte, key string) []byte {
	b = appendString(b, key)
	return append(b, ':')
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// appendIDKey appends "123": .
func appendIDKey(b []byte, id int64) []byte {
	b = append(b, '"')
	b = strconv.AppendInt(b, id, 10)
	return append(b, '"', ':')
}
