package pipeline

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/exportstream/exportstream/events"
)

// The state bucket holds one entry per chunk of entities: the entities of
// one kind in one project whose ids share a chunk (id / chunkIDs), as a
// JSON array of their snapshots in id order, under
// <project>.<kind>.c<chunk>. An event changes one entity, but a backlog
// brings an annotation's instances (and a dataset's files) in runs of
// neighbouring ids: a batch's events land in a few entries, so the bucket
// stores, acknowledges and echoes back to every replica's watch about a
// tenth of the messages one entry per entity did (docs/performance.md).
//
// Two kinds of entry hold one entity alone, <project>.<kind>.<id>: the
// project (<project>.project._), and a snapshot too large to share an
// entry (above chunkMemberMax), so that an entry stays far below the
// server's largest message. Entries of the earlier layout, one per
// entity, are the same keys: a bucket written by an earlier version is
// read as it is, and every entity is taken at its highest version
// wherever it is found. An entity may so be in two entries (its chunk and
// its own key, after it grew or shrank across chunkMemberMax): the newer
// version wins, as between any two writes.
const (
	chunkIDs       = 16
	chunkMemberMax = 32 << 10
)

// entryKey names one entry of the state bucket.
type entryKey struct {
	project string
	kind    events.Kind
	id      int64 // the chunk (chunk set), else the entity's id
	chunk   bool
}

// chunkOf is the chunk of an entity's id (floor division: negative ids
// have chunks of their own).
func chunkOf(id int64) int64 { return id >> 4 }

// entryOf is the entry that holds a snapshot of rawLen bytes of the entity.
func entryOf(project string, k events.Kind, id int64, rawLen int) entryKey {
	if k == events.KindProject || rawLen > chunkMemberMax {
		return entryKey{project: project, kind: k, id: id}
	}
	return entryKey{project: project, kind: k, id: chunkOf(id), chunk: true}
}

// String is the entry's key in the bucket.
func (e entryKey) String() string {
	switch {
	case e.kind == events.KindProject:
		return e.project + ".project._"
	case e.chunk:
		return e.project + "." + string(e.kind) + ".c" + strconv.FormatInt(e.id, 10)
	}
	return e.project + "." + string(e.kind) + "." + strconv.FormatInt(e.id, 10)
}

// parseEntryKey reads a state bucket key (ok false for a foreign key).
func parseEntryKey(key string) (entryKey, bool) {
	project, rest, ok := strings.Cut(key, ".")
	if !ok || project == "" {
		return entryKey{}, false
	}
	kind, idPart, ok := strings.Cut(rest, ".")
	if !ok || kind == "" {
		return entryKey{}, false
	}
	e := entryKey{project: project, kind: events.Kind(kind)}
	if e.kind == events.KindProject {
		if idPart != "_" {
			return entryKey{}, false
		}
		return e, true
	}
	if c, ok := strings.CutPrefix(idPart, "c"); ok {
		e.chunk, idPart = true, c
	}
	id, err := strconv.ParseInt(idPart, 10, 64)
	if err != nil {
		return entryKey{}, false
	}
	e.id = id
	return e, true
}

// has reports whether the entry holds (or may hold) the entity.
func (e entryKey) has(id int64) bool {
	if e.chunk {
		return chunkOf(id) == e.id
	}
	return e.kind == events.KindProject || e.id == id
}

// encodeChunk is a chunk entry's value: the members' snapshots (compact
// JSON objects) as one JSON array, in id order.
func encodeChunk(members []*snap) []byte {
	slices.SortFunc(members, func(a, b *snap) int { return cmp.Compare(a.id, b.id) })
	n := 2
	for _, m := range members {
		n += len(m.raw) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, m.raw...)
	}
	return append(b, ']')
}

// entryMembers splits an entry's value into its snapshots' JSON.
func entryMembers(e entryKey, value []byte) ([][]byte, error) {
	if !e.chunk {
		return [][]byte{value}, nil
	}
	value = bytes.TrimSpace(value)
	if len(value) == 0 || value[0] != '[' {
		return nil, errors.New("a chunk entry is not a JSON array")
	}
	var members []json.RawMessage
	if err := json.Unmarshal(value, &members); err != nil {
		return nil, err
	}
	out := make([][]byte, len(members))
	for i, m := range members {
		out[i] = m
	}
	return out, nil
}
