package pipeline

import (
	"strconv"
	"strings"
)

// The keys of the records bucket (<prefix>_EXPORTS, BucketExports):
//
//	export.<id>                an export record (Record)
//	pending.<definition>       the id of the definition's export in progress
//	definition.<definition>    what the definition's newest export holds (definitionState)
//	classes.<definition>       a YOLO class map (classesKey); ad-hoc exports:
//	classes.adhoc.<project>
//	next_id                    the export id counter (nextID)
const (
	// RecordKeyPrefix begins the key of every export record.
	RecordKeyPrefix  = "export."
	pendingPrefix    = "pending."
	definitionPrefix = "definition."
	classesPrefix    = "classes."
	nextIDKey        = "next_id"
)

// RecordKey returns the records bucket key of export record id.
func RecordKey(id int64) string { return RecordKeyPrefix + strconv.FormatInt(id, 10) }

// recordID returns the export id a record's key names.
func recordID(key string) (int64, error) {
	return strconv.ParseInt(strings.TrimPrefix(key, RecordKeyPrefix), 10, 64)
}

// pendingKey is the key of the id of definition name's export in progress.
func pendingKey(name string) string { return pendingPrefix + name }

// definitionKey is the key of definition name's definitionState.
func definitionKey(name string) string { return definitionPrefix + name }

// classesKey is the records bucket key of a YOLO class map: per
// definition, and per project for ad-hoc exports.
func classesKey(d *Definition) string {
	if d.Name == AdhocName {
		return classesPrefix + AdhocName + "." + d.Project
	}
	return classesPrefix + d.Name
}
