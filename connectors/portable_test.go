package connectors_test

import (
	"context"
	"errors"
	"testing"

	"github.com/exportstream/exportstream/connectors"
)

// recordingDriver records the options its NewWriter is called with.
type recordingDriver struct {
	connectors.Bucket // nil: only NewWriter is called
	calls             []connectors.WriteOptions
}

func (d *recordingDriver) NewWriter(_ context.Context, _ string, opts connectors.WriteOptions) (connectors.Writer, error) {
	d.calls = append(d.calls, opts)
	return nil, nil
}

func TestPortable(t *testing.T) {
	d := &recordingDriver{}
	p := connectors.NewPortable("fake", d)

	if _, err := p.NewWriter(t.Context(), "k", connectors.WriteOptions{IfAbsent: true, IfMatch: "e"}); err == nil ||
		err.Error() != `fake: write "k": IfAbsent and IfMatch cannot be combined` {
		t.Errorf("IfAbsent with IfMatch: err = %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.NewWriter(ctx, "k", connectors.WriteOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v, want context.Canceled", err)
	}
	if len(d.calls) != 0 {
		t.Fatalf("the driver was called for refused writes: %v", d.calls)
	}

	for _, opts := range []connectors.WriteOptions{{}, {ContentType: "text/csv", IfMatch: "e"}} {
		if _, err := p.NewWriter(t.Context(), "k", opts); err != nil {
			t.Fatal(err)
		}
	}
	want := []connectors.WriteOptions{{ContentType: connectors.DefaultContentType}, {ContentType: "text/csv", IfMatch: "e"}}
	if len(d.calls) != len(want) || d.calls[0] != want[0] || d.calls[1] != want[1] {
		t.Errorf("the driver got %v, want %v", d.calls, want)
	}
}
