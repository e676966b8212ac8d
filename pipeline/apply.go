package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/exportstream/exportstream/events"
)

// snapFromEvent makes the snapshot an event carries. A partial removal
// (id and version only) is merged into cur, the snapshot held so far.
func snapFromEvent(ev *events.Event, cur *snap) (*snap, error) {
	if !ev.Partial {
		return newSnap(ev.Kind, compact(ev.Raw), ev.Entity)
	}
	base := ev.Raw
	if cur != nil {
		base = cur.raw
	}
	set := map[string]string{"version": strconv.FormatInt(ev.Version, 10)}
	order := []string{"version"}
	if k, v, ok := ev.Kind.Removal(); ok {
		set[k] = string(v)
		order = append(order, k)
	}
	// Replace the members in place, keeping the snapshot's order; add the
	// missing ones at the end.
	b := []byte{'{'}
	for i, f := range events.Fields(base) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendKey(b, f.Key)
		if v, ok := set[f.Key]; ok {
			b = append(b, v...)
			delete(set, f.Key)
		} else {
			b = append(b, f.Val...)
		}
	}
	for _, k := range order {
		if v, ok := set[k]; ok {
			if len(b) > 1 {
				b = append(b, ',')
			}
			b = appendKey(b, k)
			b = append(b, v...)
		}
	}
	b = append(b, '}')
	return decodeSnap(ev.Project, ev.Kind, b)
}

// compact returns a copy of raw without insignificant whitespace and with
// each object naming each key once (of repeated members the last counts,
// as when decoding), so that the same snapshot always renders the same
// bytes and no export ever names a key twice. It always copies: raw
// usually points into a whole message, which must not stay pinned.
func compact(raw []byte) []byte {
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return uniqueKeys(bytes.Clone(raw))
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(raw)))
	if json.Compact(buf, raw) != nil {
		return bytes.Clone(raw)
	}
	return uniqueKeys(bytes.Clone(buf.Bytes()))
}

// decodeSnap builds a snapshot from stored (or received) bytes.
func decodeSnap(project string, k events.Kind, raw []byte) (*snap, error) {
	raw = compact(raw)
	val, err := events.DecodeEntity(k, project, raw)
	if err != nil {
		return nil, err
	}
	return newSnap(k, raw, val)
}

// newSnap wraps a decoded entity.
func newSnap(k events.Kind, raw []byte, val any) (*snap, error) {
	e, ok := val.(events.Entity)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", k)
	}
	return &snap{kind: k, raw: raw, val: val, id: e.EntityID(), version: e.EntityVersion()}, nil
}

// applyLocal stores an event's snapshot in memory only (no key-value
// write), for tests, benchmarks and replay. It reports the change, or nil
// when the event was stale.
func (s *State) applyLocal(ev *events.Event) (*change, error) {
	cur := s.current(ev.Project, ev.Kind, ev.EntityID)
	if cur != nil && cur.version >= ev.Version {
		return nil, nil
	}
	sn, err := snapFromEvent(ev, cur)
	if err != nil {
		return nil, err
	}
	old, stored := s.offer(ev.Project, sn)
	if !stored {
		return nil, nil
	}
	return &change{project: ev.Project, kind: ev.Kind, old: old, new: sn}, nil
}
