package service

import (
	"fmt"
	"strings"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors/azure"
	"github.com/exportstream/exportstream/connectors/gcs"
	"github.com/exportstream/exportstream/connectors/s3"
)

// The provider options each connection's config block maps to.

func s3Options(s *config.S3) s3.Options {
	return s3.Options{
		Bucket: s.Bucket, Region: s.Region, Endpoint: s.Endpoint, PathStyle: s.PathStyle,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey.Reveal(),
		SessionToken: s.SessionToken.Reveal(), PartSize: s.PartSize,
		RoleARN: s.RoleARN, ExternalID: s.ExternalID, SSE: s.SSE, KMSKeyID: s.KMSKeyID,
	}
}

func gcsOptions(g *config.GCS) gcs.Options {
	return gcs.Options{
		Bucket: g.Bucket, CredentialsFile: g.CredentialsFile, Endpoint: g.Endpoint,
		KMSKeyName: g.KMSKeyName, SigningAccount: g.SigningAccount,
	}
}

func azureOptions(a *config.Azure) azure.Options {
	return azure.Options{
		Container: a.Container, ConnectionString: a.ConnectionString.Reveal(),
		AccountName: a.AccountName, AccountKey: a.AccountKey.Reveal(), SASToken: a.SASToken.Reveal(),
		Endpoint: a.Endpoint, EncryptionScope: a.EncryptionScope,
	}
}

// ProviderProblems checks each connection's settings with its provider's
// own rules (bucket and container names, key formats, combinations the
// config schema cannot see), without any network I/O, and returns the
// problems as check-config lines: "connections[1].azure: ...".
func ProviderProblems(conns []config.Connection) []string {
	var out []string
	for i, c := range conns {
		var err error
		switch c.Type {
		case config.TypeS3:
			err = s3Options(c.S3).Validate()
		case config.TypeGCS:
			err = gcsOptions(c.GCS).Validate()
		case config.TypeAzure:
			err = azureOptions(c.Azure).Validate()
		}
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			out = append(out, fmt.Sprintf("connections[%d].%s: %s", i, c.Type, line))
		}
	}
	return out
}
