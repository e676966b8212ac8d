package pipeline

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
)

// The disk store keeps each file's rendered entry (the value under its id
// in the export document), so that an export after a small change reads
// the unchanged entries back instead of decoding and rendering every
// instance again, and no rendered bytes are kept on the heap.
//
// An entry is stamped with the write transaction its view held (diskView.
// seq); every transaction that changes the file, one of its instances or
// one of its sequences records its own number under the file (fragMod, in
// the same batch as the change). An entry is valid for a view when it was
// rendered at or after the file's last change and not after the view:
// mod <= stamp <= view.seq. Entries are written beside the state, outside
// its write transactions, so an entry rendered from an older view never
// passes for a newer one. Compound files, whose entries hold their
// children's, are not kept: they are rendered each time.

// fragMod is the key code of a file's last-change mark; fragPlain and
// fragRemoved those of its entry without and with removed instances;
// sumPlain and sumRemoved those of the entry's summary (its stamp,
// instance count, child flag and SHA-256: what the measure pass reads,
// without the entry).
const (
	fragMod     = 'm'
	fragPlain   = '0'
	fragRemoved = '1'
	sumPlain    = 'a'
	sumRemoved  = 'b'
)

// fragKey is "r P <file> <code>" (p is the project's "p P" prefix).
func fragKey(p []byte, file int64, code byte) []byte {
	return append(appendID(fragPrefix(p, 14), file), code)
}

// fragPrefix is "r P", the project's cached entries (p is its "p P"
// prefix), in a slice with room for size bytes.
func fragPrefix(p []byte, size int) []byte {
	return append(append(make([]byte, 0, size), 'r'), p[1:]...)
}

// entryFiles are the files whose entries a change from old to sn changes.
func entryFiles(old, sn *snap) []int64 {
	var out []int64
	for _, s := range []*snap{old, sn} {
		if s == nil {
			continue
		}
		entryFile := kindInfos[s.kind].entryFile
		if entryFile == nil {
			continue
		}
		f := entryFile(s.val)
		if len(out) == 0 || out[0] != f {
			out = append(out, f)
		}
	}
	return out
}

// entryCacher is implemented by the project views that keep rendered
// entries (the disk store's).
type entryCacher interface {
	// cachedEntry returns the file's entry valid for the view, the number
	// of instances it shows, and whether the file is a compound file's
	// child. frag is valid until the next call.
	cachedEntry(file int64, removed bool) (frag []byte, n int, child, ok bool)
	// cachedSum is cachedEntry's summary: the entry's SHA-256 in place
	// of the entry.
	cachedSum(file int64, removed bool) (sum [32]byte, n int, child, ok bool)
	// storeEntry keeps an entry rendered from the view, and its summary
	// (sum is the entry's SHA-256).
	storeEntry(file int64, removed bool, frag []byte, sum [32]byte, n int, child bool)
	// endPass makes the entries stored so far readable by the next pass.
	endPass()
}

// entryCache is a diskView's access to the kept entries: the marks are
// read from the view's snapshot, the entries from the store as it is at
// the start of a pass (so that a pass reads what the passes before it
// wrote).
type entryCache struct {
	mod   *pebble.Iterator // over the snapshot
	live  *pebble.Iterator // over the store, renewed by endPass and with the view's generation
	gen   int              // the view's generation mod and live were made in (see diskView.gen)
	batch *pebble.Batch    // entries stored, not committed yet
}

// entryBatchSize is how many bytes of entries are committed at once: well
// under half a memtable (8 MB), so that the batch goes through the memtable
// instead of being kept whole as one of its own (a 4 MB batch grew an 8 MB
// buffer and made a flushable batch: 11 MB of the heap in a profile taken
// while an export ran beside a 1 M-file drain).
const entryBatchSize = 1 << 20

func (c *entryCache) close() error {
	var errs []error
	if c.mod != nil {
		errs = append(errs, c.mod.Close())
	}
	if c.live != nil {
		errs = append(errs, c.live.Close())
	}
	if c.batch != nil {
		errs = append(errs, c.batch.Close())
	}
	*c = entryCache{}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// seekExact positions it on key, reporting whether the key is there.
func seekExact(it *pebble.Iterator, key []byte) bool {
	return it.SeekGE(key) && bytes.Equal(it.Key(), key)
}

func (dp *diskProject) cachedEntry(file int64, removed bool) ([]byte, int, bool, bool) {
	val, ok := dp.cached(file, entryCode(removed))
	if !ok {
		return nil, 0, false, false
	}
	return val[17:], int(binary.BigEndian.Uint64(val[8:])), val[16] == 1, true
}

func (dp *diskProject) cachedSum(file int64, removed bool) (sum [32]byte, n int, child, ok bool) {
	val, ok := dp.cached(file, sumCode(removed))
	if !ok || len(val) != 17+32 {
		return sum, 0, false, false
	}
	copy(sum[:], val[17:])
	return sum, int(binary.BigEndian.Uint64(val[8:])), val[16] == 1, true
}

// cached returns the value kept under the file's code when it is valid
// for the view: its stamp (the value's first 8 bytes, then the instance
// count and the child flag) is no earlier than the file's last change
// and no later than the view.
func (dp *diskProject) cached(file int64, code byte) ([]byte, bool) {
	v, c := dp.v, &dp.v.cache
	var err error
	if gen := v.tick(); c.gen != gen {
		// Older than iterRenew: made anew, so as not to hold on to
		// flushed memtables (reading the store later is as valid: see
		// the stamps below).
		c.gen = gen
		for _, it := range []**pebble.Iterator{&c.mod, &c.live} {
			if *it != nil {
				v.fail((*it).Close())
				*it = nil
			}
		}
	}
	if c.mod == nil {
		if c.mod, err = v.s.NewIter(&pebble.IterOptions{LowerBound: []byte("r"), UpperBound: []byte("s")}); err != nil {
			v.fail(err)
			return nil, false
		}
	}
	if c.live == nil {
		if c.live, err = v.d.db.NewIter(&pebble.IterOptions{LowerBound: []byte("r"), UpperBound: []byte("s")}); err != nil {
			v.fail(err)
			return nil, false
		}
	}
	var mod uint64
	if seekExact(c.mod, fragKey(dp.p, file, fragMod)) {
		if len(c.mod.Value()) == 8 {
			mod = binary.BigEndian.Uint64(c.mod.Value())
		}
	}
	if !seekExact(c.live, fragKey(dp.p, file, code)) {
		return nil, false
	}
	val, err := c.live.ValueAndErr()
	if err != nil {
		v.fail(err)
		return nil, false
	}
	if len(val) < 17 {
		return nil, false
	}
	stamp := binary.BigEndian.Uint64(val)
	if stamp < mod || stamp > v.seq {
		return nil, false
	}
	return val, true
}

func entryCode(removed bool) byte {
	if removed {
		return fragRemoved
	}
	return fragPlain
}

func sumCode(removed bool) byte {
	if removed {
		return sumRemoved
	}
	return sumPlain
}

func (dp *diskProject) storeEntry(file int64, removed bool, frag []byte, sum [32]byte, n int, child bool) {
	dp.keep(file, entryCode(removed), frag, n, child)
	dp.keep(file, sumCode(removed), sum[:], n, child)
}

// keep stores val under the file's code, stamped with the view's
// transaction, with the instance count and the child flag.
func (dp *diskProject) keep(file int64, code byte, val []byte, n int, child bool) {
	v, c := dp.v, &dp.v.cache
	if c.batch == nil {
		c.batch = v.d.db.NewBatch()
	}
	key := fragKey(dp.p, file, code)
	op := c.batch.SetDeferred(len(key), 17+len(val))
	copy(op.Key, key)
	binary.BigEndian.PutUint64(op.Value[0:8], v.seq)
	binary.BigEndian.PutUint64(op.Value[8:16], uint64(n))
	op.Value[16] = 0
	if child {
		op.Value[16] = 1
	}
	copy(op.Value[17:], val)
	if err := op.Finish(); err != nil {
		v.fail(err)
		return
	}
	if c.batch.Len() >= entryBatchSize {
		dp.v.commitEntries()
	}
}

// commitEntries commits the entries stored so far (without sync: they
// are a cache of a cache).
func (v *diskView) commitEntries() {
	c := &v.cache
	if c.batch == nil {
		return
	}
	if !c.batch.Empty() {
		v.fail(c.batch.Commit(pebble.NoSync))
	}
	v.fail(c.batch.Close())
	c.batch = nil
}

func (dp *diskProject) endPass() {
	v, c := dp.v, &dp.v.cache
	v.commitEntries()
	if c.live != nil {
		v.fail(c.live.Close())
		c.live = nil
	}
}
