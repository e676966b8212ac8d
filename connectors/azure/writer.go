package azure

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/exportstream/exportstream/connectors"
)

// NewWriter starts a streaming upload of key into a block blob. See
// connectors.Bucket.NewWriter for the contract, and the package
// documentation for how it is sent (connectors.Portable has checked ctx
// and opts). The caller must call Close or Abort (or cancel ctx): until
// then a goroutine feeds the upload. Close of an IfAbsent write on an
// existing key fails with an error wrapping ErrExists; of an IfMatch write
// with another ETag with ErrPrecondition, and on a missing key with both
// ErrPrecondition and ErrNotFound (Azure answers 412 to both: Close then
// asks for the blob's properties to tell them apart).
func (b *driver) NewWriter(ctx context.Context, key string, opts connectors.WriteOptions) (connectors.Writer, error) {
	uploadOpts := &blockblob.UploadStreamOptions{
		BlockSize:    shareBlock(b.blockSize, opts.Writers),
		Concurrency:  b.conc,
		HTTPHeaders:  &blob.HTTPHeaders{BlobContentType: to.Ptr(opts.ContentType)},
		CPKScopeInfo: b.scope,
	}
	switch {
	case opts.IfAbsent:
		uploadOpts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	case opts.IfMatch != "":
		uploadOpts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(opts.IfMatch))}}
	}
	client := b.client.NewBlockBlobClient(key)
	upload := func(uctx context.Context, r io.Reader) error {
		_, err := client.UploadStream(uctx, r, uploadOpts)
		return err
	}
	// A discarded stream ends in an error instead of EOF: UploadStream
	// then never sends Put Blob or Put Block List.
	return connectors.NewPipeWriter(ctx, upload, connectors.PipeHooks{
		Name:   fmt.Sprintf("azure: write %q", key),
		MapErr: func(err error) error { return b.mapErr("write", key, err, &opts) },
		Failed: func(_, mapped error) error {
			// Azure answers a refused If-Match with 412 ConditionNotMet
			// whether the blob changed or is missing: tell them apart.
			if errors.Is(mapped, connectors.ErrPrecondition) && !errors.Is(mapped, connectors.ErrNotFound) {
				if _, err := b.Attributes(context.WithoutCancel(ctx), key); errors.Is(err, connectors.ErrNotFound) {
					return fmt.Errorf("%w: %w", connectors.ErrNotFound, mapped)
				}
			}
			return mapped
		},
	}), nil
}

// shareBlock is the block size of one of writers writers open at once
// (WriteOptions.Writers): size divided by writers, at least MinBlockSize
// (or size, if that is smaller). A blob holds at most 50,000 blocks, so
// the largest object shrinks with it (97 GiB with 2 MiB blocks).
func shareBlock(size int64, writers int) int64 {
	if writers <= 1 {
		return size
	}
	return max(size/int64(writers), min(size, MinBlockSize))
}
