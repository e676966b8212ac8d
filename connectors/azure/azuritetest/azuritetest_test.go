package azuritetest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure"
	"github.com/exportstream/exportstream/connectors/azure/azuritetest"
)

func TestMain(m *testing.M) { os.Exit(azuritetest.Main(m)) }

// ownServer starts a server that only t uses, and closes it after t.
func ownServer(t *testing.T) *azuritetest.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("Azurite, a cloud emulator, left out by -short")
	}
	srv, err := azuritetest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

func TestNewBucket(t *testing.T) {
	a, b := azuritetest.NewBucket(t), azuritetest.NewBucket(t)
	if a.Container == b.Container {
		t.Fatalf("two NewBucket calls gave the same container %q", a.Container)
	}
	if err := a.Validate(); err != nil {
		t.Fatalf("NewBucket options do not validate: %v", err)
	}
	bucket, err := azure.New(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if r := connectors.Probe(t.Context(), bucket, "", 30*time.Second); !r.OK() {
		t.Fatalf("Probe of a new container: %v", r)
	}
}

// TestStopStart: what was committed just before Stop is there after
// Start, at the same endpoint; while stopped, requests fail to connect.
func TestStopStart(t *testing.T) {
	srv := ownServer(t)
	opts := srv.NewBucket(t)
	opts.Retry.MaxRetries = -1
	b, err := azure.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"committed":"just before the stop"}`)
	w, err := b.NewWriter(t.Context(), "kept.json", connectors.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	endpoint := srv.Endpoint

	start := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %v", time.Since(start).Round(time.Millisecond))
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	_, err = b.Attributes(t.Context(), "kept.json")
	if got := connectors.Classify(err); got != connectors.ProbeUnreachable {
		t.Errorf("Attributes while stopped: %v (%s), want %s", err, got, connectors.ProbeUnreachable)
	}

	start = time.Now()
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %v", time.Since(start).Round(time.Millisecond))
	if srv.Endpoint != endpoint {
		t.Errorf("endpoint changed from %s to %s", endpoint, srv.Endpoint)
	}
	r, err := b.NewReader(t.Context(), "kept.json")
	if err != nil {
		t.Fatalf("NewReader after restart: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("read after restart: %q, %v; want %q", got, err, data)
	}
}

// TestStopMidStream: Stop cuts an upload in progress; the writer fails,
// and after Start the key is as it was and can be written again.
func TestStopMidStream(t *testing.T) {
	srv := ownServer(t)
	opts := srv.NewBucket(t)
	opts.Retry.MaxRetries = -1
	opts.BlockSize = azure.MinBlockSize
	b, err := azure.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.NewWriter(t.Context(), "cut.json", connectors.WriteOptions{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("c"), 256<<10)
	for range 8 { // two blocks staged, or being staged
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("Write before the stop: %v", err)
		}
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	var werr error
	for i := 0; i < 64 && werr == nil; i++ { // at most 16 MiB more
		_, werr = w.Write(chunk)
	}
	if werr == nil {
		werr = w.Close()
	} else {
		w.Abort()
	}
	if werr == nil {
		t.Fatal("an upload across the stop succeeded")
	}
	t.Logf("upload across the stop: %v", werr)

	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := b.Attributes(t.Context(), "cut.json"); !errors.Is(err, connectors.ErrNotFound) {
		t.Errorf("Attributes of the cut upload: err = %v, want ErrNotFound", err)
	}
	w, err = b.NewWriter(t.Context(), "cut.json", connectors.WriteOptions{IfAbsent: true})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(w, strings.NewReader(strings.Repeat("again", 1<<19)))
	if err := w.Close(); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
}

// TestClientOnRestartedServer: the server's own SDK client works across
// a restart too.
func TestClientOnRestartedServer(t *testing.T) {
	srv := ownServer(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	opts := srv.NewBucket(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := srv.Client.NewContainerClient(opts.Container).NewBlockBlobClient("x.json")
	if _, err := c.UploadStream(ctx, strings.NewReader("{}"), &blockblob.UploadStreamOptions{}); err != nil {
		t.Fatalf("upload after a restart: %v", err)
	}
}
