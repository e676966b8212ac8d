package azure

import (
	"context"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

func init() {
	connectors.Register(config.TypeAzure, connectors.Provider{
		Validate: func(c config.Connection) error { return options(c.Azure).Validate() },
		Open: func(ctx context.Context, c config.Connection, _ connectors.Env) (connectors.Bucket, error) {
			b, err := New(ctx, options(c.Azure))
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	})
}

// options are the Options an azure connection's config block maps to.
func options(a *config.Azure) Options {
	return Options{
		Container: a.Container, ConnectionString: a.ConnectionString.Reveal(),
		AccountName: a.AccountName, AccountKey: a.AccountKey.Reveal(), SASToken: a.SASToken.Reveal(),
		Endpoint: a.Endpoint, EncryptionScope: a.EncryptionScope,
	}
}
