package pipeline

import (
	"encoding/binary"
	"iter"
)

// fileList is a plan's files, in export order: each id as its difference
// from the one before, a varint. Files are mostly numbered in the order
// they are exported, so an id takes one or two bytes instead of eight: a
// million-file export's list is about 1 MB, not 8 MB (and not 16 MB while
// a slice doubles).
type fileList struct {
	b    []byte
	n    int
	last int64
}

// add appends id.
func (l *fileList) add(id int64) {
	l.b = binary.AppendVarint(l.b, id-l.last)
	l.last = id
	l.n++
}

// Len returns the number of ids.
func (l *fileList) Len() int { return l.n }

// All yields the ids in the order they were added, with their index.
func (l *fileList) All() iter.Seq2[int, int64] {
	return func(yield func(int, int64) bool) {
		b, id := l.b, int64(0)
		for i := range l.n {
			d, k := binary.Varint(b)
			b, id = b[k:], id+d
			if !yield(i, id) {
				return
			}
		}
	}
}
