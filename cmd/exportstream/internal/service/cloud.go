package service

import (
	"context"
	"fmt"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

// openCloudBucket opens the gcs and azure connections.
func openCloudBucket(ctx context.Context, c config.Connection) (connectors.Bucket, error) {
	return nil, fmt.Errorf("connection type %q is not supported yet", c.Type)
}
