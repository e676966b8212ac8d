package connectors

import (
	"context"
	"fmt"
	"sync"

	"github.com/exportstream/exportstream/config"
)

// Provider opens the buckets of one connection type (config.Connection.Type).
// Each provider package registers its own in an init function, so a
// program supports the types whose packages it imports.
type Provider struct {
	// Validate checks the connection's settings with the provider's own
	// rules (bucket and container names, key formats, combinations the
	// config schema cannot see), without network I/O, and returns every
	// problem, one per line. Nil: nothing beyond config.Validate.
	Validate func(c config.Connection) error
	// Open opens the connection's bucket, without network I/O.
	Open func(ctx context.Context, c config.Connection, env Env) (Bucket, error)
}

// Env is what opening a bucket may need beyond the connection's settings.
type Env struct {
	// PublicURL is the base URL the service's HTTP server is reached at;
	// local connections sign their download links for
	// <PublicURL>/files/<name>/. Empty when nothing will serve them, as
	// in check-config.
	PublicURL string
}

var (
	providersMu sync.RWMutex
	providers   = map[string]Provider{}
)

// Register makes p the provider of connection type typ. It panics if p
// has no Open or typ already has a provider: both are programming errors.
func Register(typ string, p Provider) {
	providersMu.Lock()
	defer providersMu.Unlock()
	if p.Open == nil {
		panic("connectors: Register of type " + typ + " without Open")
	}
	if _, dup := providers[typ]; dup {
		panic("connectors: Register called twice for type " + typ)
	}
	providers[typ] = p
}

func lookup(typ string) (Provider, error) {
	providersMu.RLock()
	defer providersMu.RUnlock()
	p, ok := providers[typ]
	if !ok {
		return Provider{}, fmt.Errorf("connection type %q is not supported", typ)
	}
	return p, nil
}

// Open opens the bucket of connection c with the provider registered for
// its type. No network I/O happens here. If no provider is registered for
// the type, an error saying so is returned.
func Open(ctx context.Context, c config.Connection, env Env) (Bucket, error) {
	p, err := lookup(c.Type)
	if err != nil {
		return nil, err
	}
	return p.Open(ctx, c, env)
}

// Validate checks connection c with its provider's own rules (see
// Provider.Validate), without network I/O. A type without a provider, or
// whose provider has no Validate, has nothing to report here: an unknown
// type is config.Validate's to report.
func Validate(c config.Connection) error {
	p, err := lookup(c.Type)
	if err != nil || p.Validate == nil {
		return nil
	}
	return p.Validate(c)
}
