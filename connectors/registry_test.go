package connectors_test

import (
	"context"
	"strings"
	"testing"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/local"
)

func TestRegistry(t *testing.T) {
	// local and s3 are imported by this package's tests, so registered.
	c := config.Connection{Name: "disk", Type: config.TypeLocal,
		Local: &config.Local{Dir: t.TempDir(), SignKey: "k"}}
	b, err := connectors.Open(t.Context(), c, connectors.Env{PublicURL: "http://x.test/"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := b.(*local.Bucket); !ok {
		t.Fatalf("Open of a local connection gave %T, want *local.Bucket", b)
	}
	u, err := b.SignedURL(t.Context(), "a.json", 60e9)
	if err != nil || !strings.HasPrefix(u, "http://x.test/files/disk/") {
		t.Errorf("SignedURL = %q, %v; want a link under http://x.test/files/disk/", u, err)
	}

	s3c := config.Connection{Name: "s", Type: config.TypeS3, S3: &config.S3{Bucket: "b", SSE: "bogus", PartSize: config.MinPartSize}}
	if err := connectors.Validate(s3c); err == nil {
		t.Error("Validate of an s3 connection with sse \"bogus\" found nothing")
	}

	odd := config.Connection{Name: "o", Type: "ftp"}
	if _, err := connectors.Open(t.Context(), odd, connectors.Env{}); err == nil || err.Error() != `connection type "ftp" is not supported` {
		t.Errorf("Open of type ftp: err = %v", err)
	}
	if err := connectors.Validate(odd); err != nil {
		t.Errorf("Validate of type ftp: err = %v, want nil (config.Validate reports it)", err)
	}

	defer func() {
		if recover() == nil {
			t.Error("a second Register of type local did not panic")
		}
	}()
	connectors.Register(config.TypeLocal, connectors.Provider{
		Open: func(context.Context, config.Connection, connectors.Env) (connectors.Bucket, error) { return nil, nil },
	})
}
