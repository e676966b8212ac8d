package local

import (
	"context"
	"crypto/rand"
	"strings"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"
)

func init() {
	connectors.Register(config.TypeLocal, connectors.Provider{Open: open})
}

// open opens a local connection. Its download links are signed for
// <env.PublicURL>/files/<name>/, which the service serves with
// Bucket.Handler; without local.sign_key they are signed with a random
// key, so they die with the process (documented).
func open(_ context.Context, c config.Connection, env connectors.Env) (connectors.Bucket, error) {
	opts := Options{SignKey: []byte(c.Local.SignKey.Reveal())}
	if env.PublicURL != "" {
		opts.BaseURL = strings.TrimSuffix(env.PublicURL, "/") + "/files/" + c.Name
	}
	if len(opts.SignKey) == 0 {
		opts.SignKey = make([]byte, 32)
		_, _ = rand.Read(opts.SignKey)
	}
	b, err := NewWithOptions(c.Local.Dir, opts)
	if err != nil {
		return nil, err
	}
	return b, nil
}
