package pipeline

// The key-value buckets the pipeline keeps in NATS are named
// <Options.StatePrefix>_<suffix>; each is a JetStream stream KV_<bucket>
// whose subjects are $KV.<bucket>.<key>.

// The suffixes of the key-value buckets' names (see BucketName).
const (
	BucketState    = "STATE"    // the entities' snapshots (store.go)
	BucketDirty    = "DIRTY"    // the dirty marks, by definition
	BucketExports  = "EXPORTS"  // the export records (recordkeys.go)
	BucketLeases   = "LEASES"   // one exporting replica per definition (lease.go)
	BucketReplicas = "REPLICAS" // the replicas' heartbeats (liveness.go)
)

// BucketName returns the name of prefix's key-value bucket with the
// given suffix (BucketState, …): "<prefix>_<suffix>".
func BucketName(prefix, suffix string) string { return prefix + "_" + suffix }

// KVSubject returns the subject under which the key-value bucket stores
// key; a key pattern ("export.>", ">") gives the pattern of the subjects.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// KVStream returns the name of the stream that holds the key-value bucket.
func KVStream(bucket string) string { return "KV_" + bucket }
