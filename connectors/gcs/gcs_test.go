package gcs_test

import (
	"os"
	"testing"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/gcs/gcstest"
)

func TestMain(m *testing.M) { os.Exit(gcstest.Main(m)) }

// realBucketEnv names a real GCS bucket to run the suite against as well,
// with Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS).
const realBucketEnv = "EXPORTSTREAM_TEST_GCS_BUCKET"

func TestConformance(t *testing.T) {
	connectorstest.Run(t, newBucket, connectorstest.Options{
		// More than one page: List asks for pages of ListPageSize, and
		// fake-gcs-server pages as asked.
		ListObjects: gcs.ListPageSize + 100,
		// fake-gcs-server serves signed URLs without checking them;
		// TestSignedURLSignature checks the signature itself.
		SignaturesUnverified: true,
		// Four writers told they share (WriteOptions.Writers) stream
		// without chunk buffers: 4.4 MiB, against 36 MiB with a chunk
		// each.
		MaxSharedHeapGrowth: 12 << 20,
	})
	if name := os.Getenv(realBucketEnv); name != "" {
		t.Run("RealGCS", func(t *testing.T) {
			connectorstest.Run(t, func(t *testing.T) connectors.Bucket {
				b, err := gcs.New(t.Context(), gcs.Options{Bucket: name})
				if err != nil {
					t.Fatal(err)
				}
				return connectorstest.RealCloudPrefix(t, b)
			}, connectorstest.Options{ListObjects: gcs.ListPageSize + 100})
		})
	}
}

func newBucket(t *testing.T) connectors.Bucket {
	b, err := gcs.New(t.Context(), gcstest.NewBucket(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func BenchmarkUpload1GiB(b *testing.B) {
	bucket, err := gcs.New(b.Context(), gcstest.NewBucket(b))
	if err != nil {
		b.Fatal(err)
	}
	defer bucket.Close()
	connectorstest.BenchmarkUpload(b, bucket, 1<<30)
}
