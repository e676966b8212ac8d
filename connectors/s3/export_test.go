package s3

import "time"

// PartBuffers returns how many part buffers b's writers hold now and the
// most they have held at once, for the tests of the shared budget.
func (b *Bucket) PartBuffers() (held, peak int) { return b.d.budget.stats() }

// SmallSize is how much a writer keeps before it takes a part buffer.
const SmallSize = smallSize

// SetMaxParts lowers b's limit on the parts of one upload (S3's is
// 10,000), so that a test reaches it with small parts.
func (b *Bucket) SetMaxParts(n int32) { b.d.maxParts = n }

// SetPartDrain changes how long b's discarded writes let their parts in
// flight go on before they are cut.
func (b *Bucket) SetPartDrain(d time.Duration) { b.d.partDrain = d }
