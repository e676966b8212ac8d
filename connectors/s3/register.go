package s3

import (
	"context"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

func init() {
	connectors.Register(config.TypeS3, connectors.Provider{
		Validate: func(c config.Connection) error { return options(c.S3).Validate() },
		Open: func(ctx context.Context, c config.Connection, _ connectors.Env) (connectors.Bucket, error) {
			b, err := New(ctx, options(c.S3))
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	})
}

// options are the Options an s3 connection's config block maps to.
func options(s *config.S3) Options {
	return Options{
		Bucket: s.Bucket, Region: s.Region, Endpoint: s.Endpoint, PathStyle: s.PathStyle,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey.Reveal(),
		SessionToken: s.SessionToken.Reveal(), PartSize: s.PartSize,
		RoleARN: s.RoleARN, ExternalID: s.ExternalID, SSE: s.SSE, KMSKeyID: s.KMSKeyID,
	}
}
