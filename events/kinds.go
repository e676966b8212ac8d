package events

import (
	"encoding/json"
	"slices"
)

// Kind is the kind of entity an event carries a snapshot of.
type Kind string

// The entity kinds of the event contract.
const (
	KindProject        Kind = "project"
	KindDirectory      Kind = "directory"
	KindLabel          Kind = "label"
	KindAttributeGroup Kind = "attribute_group"
	KindJob            Kind = "job"
	KindFile           Kind = "file"
	KindTask           Kind = "task"
	KindSequence       Kind = "sequence"
	KindInstance       Kind = "instance"
)

// Entity is an entity snapshot: the typed form of every kind (*Project,
// *Directory, ...). EntityID is the id the entity is keyed by (an
// instance's lineage id, 0 for the project); EntityVersion its version.
type Entity interface {
	EntityID() int64
	EntityVersion() int64
}

// kindSpec is what the contract says of one kind. A new kind is a row of
// kindTable, its snapshot struct (schema.go, with the Entity methods and,
// if it has any, its own checks) and, in the pipeline, its row of the
// pipeline's kind table and its rendering.
type kindSpec struct {
	kind Kind
	// dataKey is the key of the snapshot under "data".
	dataKey string
	// actions are the actions the contract defines for the kind.
	actions []string
	// new returns an empty snapshot to decode into.
	new func() Entity
	// removal, when the kind has one, is the action that may carry only
	// the entity's id and version (a partial removal), and the member it
	// sets on the snapshot held so far.
	removal *removal
}

// removal is a kind's removal action and the member (key and JSON value)
// it sets.
type removal struct {
	action, key, value string
}

// kindTable is every kind, in the order Kinds lists them.
var kindTable = []kindSpec{
	{kind: KindProject, dataKey: "project", actions: []string{"upserted"},
		new: func() Entity { return &Project{} }},
	{kind: KindDirectory, dataKey: "directory", actions: []string{"upserted"},
		new: func() Entity { return &Directory{} }},
	{kind: KindLabel, dataKey: "label_file", actions: []string{"upserted"},
		new: func() Entity { return &LabelFile{} }},
	{kind: KindAttributeGroup, dataKey: "attribute_group", actions: []string{"upserted"},
		new: func() Entity { return &AttributeGroup{} }},
	{kind: KindJob, dataKey: "job", actions: []string{"upserted"},
		new: func() Entity { return &Job{} }},
	{kind: KindFile, dataKey: "file", actions: []string{"uploaded", "updated", "removed", "completion_changed"},
		new:     func() Entity { return &File{} },
		removal: &removal{"removed", "state", `"removed"`}},
	{kind: KindTask, dataKey: "task", actions: []string{"created", "status_changed", "archived"},
		new:     func() Entity { return &Task{} },
		removal: &removal{"archived", "status", `"archived"`}},
	{kind: KindSequence, dataKey: "sequence", actions: []string{"upserted"},
		new: func() Entity { return &Sequence{} }},
	{kind: KindInstance, dataKey: "instance", actions: []string{"created", "edited", "deleted", "undeleted"},
		new:     func() Entity { return &Instance{} },
		removal: &removal{"deleted", "soft_delete", `true`}},
}

// kinds indexes kindTable by kind.
var kinds = func() map[Kind]*kindSpec {
	m := make(map[Kind]*kindSpec, len(kindTable))
	for i := range kindTable {
		m[kindTable[i].kind] = &kindTable[i]
	}
	return m
}()

// Kinds returns every entity kind, in a fixed order.
func Kinds() []Kind {
	out := make([]Kind, len(kindTable))
	for i, s := range kindTable {
		out[i] = s.kind
	}
	return out
}

// known reports whether action is one of the kind's actions.
func (s *kindSpec) known(action string) bool {
	return s != nil && slices.Contains(s.actions, action)
}

// Removal returns the member a partial removal of the kind sets on the
// snapshot held so far (for a file, "state" and "removed" as JSON), or
// ok false when the kind has no partial removal.
func (k Kind) Removal() (key string, value json.RawMessage, ok bool) {
	s := kinds[k]
	if s == nil || s.removal == nil {
		return "", nil, false
	}
	return s.removal.key, json.RawMessage(s.removal.value), true
}
