package local_test

import (
	"testing"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/connectorstest"
	"github.com/exportstream/exportstream/connectors/local"
)

func TestConformance(t *testing.T) {
	connectorstest.Run(t, func(t *testing.T) connectors.Bucket {
		b, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, connectorstest.Options{MaxHeapGrowth: 8 << 20})
}
