package gcs

import (
	"context"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

func init() {
	connectors.Register(config.TypeGCS, connectors.Provider{
		Validate: func(c config.Connection) error { return options(c.GCS).Validate() },
		Open: func(ctx context.Context, c config.Connection, _ connectors.Env) (connectors.Bucket, error) {
			b, err := New(ctx, options(c.GCS))
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	})
}

// options are the Options a gcs connection's config block maps to.
func options(g *config.GCS) Options {
	return Options{
		Bucket: g.Bucket, CredentialsFile: g.CredentialsFile, Endpoint: g.Endpoint,
		KMSKeyName: g.KMSKeyName, SigningAccount: g.SigningAccount,
	}
}
