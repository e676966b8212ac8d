package service

import (
	"context"
	"fmt"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
	"github.com/exportstream/exportstream/connectors/azure"
)

// openCloudBucket opens the gcs and azure connections.
func openCloudBucket(ctx context.Context, c config.Connection) (connectors.Bucket, error) {
	switch c.Type {
	case config.TypeAzure:
		a := c.Azure
		return azure.New(ctx, azure.Options{
			Container: a.Container, ConnectionString: a.ConnectionString.Reveal(),
			AccountName: a.AccountName, AccountKey: a.AccountKey.Reveal(), SASToken: a.SASToken.Reveal(),
			Endpoint: a.Endpoint, EncryptionScope: a.EncryptionScope,
		})
	}
	return nil, fmt.Errorf("connection type %q is not supported yet", c.Type)
}
