package s3

// PartBuffers returns how many part buffers b's writers hold now and the
// most they have held at once, for the tests of the shared budget.
func (b *Bucket) PartBuffers() (held, peak int) { return b.d.budget.stats() }

// SmallSize is how much a writer keeps before it takes a part buffer.
const SmallSize = smallSize
