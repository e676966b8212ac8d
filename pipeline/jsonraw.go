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

// uniqueKeys returns raw with every object in it naming each key once:
// of repeated members the last counts (as encoding/json decodes them), at
// the place of the last. raw is returned as it is, without copying, when
// no object repeats a key, which is the usual case. raw must be valid
// compact JSON.
func uniqueKeys(raw []byte) []byte {
	if !repeatsKey(raw) {
		return raw
	}
	return appendUnique(make([]byte, 0, len(raw)), raw)
}

// repeatsKey reports whether any object in the compact JSON value raw
// names a key twice (keys compared as decoded text). It allocates nothing
// for the usual snapshot, where no key has an escape and no object has
// more than 16 members.
func repeatsKey(raw []byte) bool {
	_, dup := scanKeys(raw, 0)
	return dup
}

// scanKeys scans the compact JSON value at raw[i] and returns the index
// just past it, and whether an object in it names a key twice.
func scanKeys(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return len(b), false
	}
	switch b[i] {
	case '{':
		var buf [16][]byte
		keys := buf[:0]
		i++
		for i < len(b) {
			switch b[i] {
			case '}':
				return i + 1, false
			case ',':
				i++
				continue
			}
			end := events.SkipValue(b, i)
			if end < 0 || b[i] != '"' {
				return len(b), false
			}
			key := b[i+1 : end-1]
			if bytes.IndexByte(key, '\\') >= 0 {
				var k string
				if json.Unmarshal(b[i:end], &k) != nil {
					return len(b), false
				}
				key = []byte(k)
			}
			for _, k := range keys {
				if bytes.Equal(k, key) {
					return end, true
				}
			}
			keys = append(keys, key)
			i = end + 1 // past the ':'
			var dup bool
			if i, dup = scanKeys(b, i); dup {
				return i, true
			}
		}
		return len(b), false
	case '[':
		i++
		for i < len(b) {
			switch b[i] {
			case ']':
				return i + 1, false
			case ',':
				i++
				continue
			}
			var dup bool
			if i, dup = scanKeys(b, i); dup {
				return i, true
			}
		}
		return len(b), false
	}
	end := events.SkipValue(b, i)
	if end < 0 {
		return len(b), false
	}
	return end, false
}

// appendUnique appends raw to b with repeated object members dropped but
// the last.
func appendUnique(b, raw []byte) []byte {
	if len(raw) == 0 {
		return b
	}
	switch raw[0] {
	case '{':
		fs := events.Fields(raw)
		b = append(b, '{')
		n := 0
		for i, f := range fs {
			later := false
			for _, g := range fs[i+1:] {
				if g.Key == f.Key {
					later = true
					break
				}
			}
			if later {
				continue
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendKey(b, f.Key)
			b = appendUnique(b, f.Val)
		}
		return append(b, '}')
	case '[':
		b = append(b, '[')
		n := 0
		eachElement(raw, func(v []byte) bool {
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendUnique(b, v)
			return true
		})
		return append(b, ']')
	}
	return append(b, raw...)
}

// eachElement calls fn with each element of the JSON array raw, in
// order, until fn returns false.
func eachElement(raw []byte, fn func(v []byte) bool) {
	i := 1
	for i < len(raw) {
		for i < len(raw) && (raw[i] == ',' || raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r') {
			i++
		}
		if i >= len(raw) || raw[i] == ']' {
			return
		}
		end := events.SkipValue(raw, i)
		if end < 0 || !fn(raw[i:end]) {
			return
		}
		i = end
	}
}
