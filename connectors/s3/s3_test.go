package s3_test

import (
	"os"
	"testing"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/s3"
	"github.com/exportstream/exportstream/connectors/s3/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

func TestConformance(t *testing.T) {
	connectorstest.Run(t, newBucket, connectorstest.Options{
		ListObjects: 1100, // more than one ListObjectsV2 page
		// s3test sets PartSize to 5 MiB: the Bucket's one Writer holds
		// at most its budget, (Concurrency+2) parts, plus the SDK's and
		// the in-process gateway's buffers.
		MaxHeapGrowth: (s3.DefaultConcurrency+2)*s3.MinPartSize + 8<<20,
	})
}

func newBucket(t *testing.T) connectors.Bucket {
	b, err := s3.New(t.Context(), s3test.NewBucket(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// go test ./connectors/s3 -run '^$' -bench Upload -benchtime 1x
// (the gateway runs in-process, so its buffers count in the peak heap).
func BenchmarkUpload1GiB(b *testing.B) {
	o := s3test.NewBucket(b)
	o.PartSize = s3.DefaultPartSize
	bucket, err := s3.New(b.Context(), o)
	if err != nil {
		b.Fatal(err)
	}
	connectorstest.BenchmarkUpload(b, bucket, 1<<30)
}
