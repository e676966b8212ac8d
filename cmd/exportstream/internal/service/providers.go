package service

import (
	"fmt"
	"strings"

	"github.com/exportstream/exportstream/config"
	"github.com/exportstream/exportstream/connectors"

	// The connection types the service supports: each package registers
	// its provider (connectors.Register). A new type is one line here.
	_ "github.com/exportstream/exportstream/connectors/azure"
	_ "github.com/exportstream/exportstream/connectors/gcs"
	_ "github.com/exportstream/exportstream/connectors/local"
	_ "github.com/exportstream/exportstream/connectors/s3"
)

// ProviderProblems checks each connection's settings with its provider's
// own rules (bucket and container names, key formats, combinations the
// config schema cannot see), without any network I/O, and returns the
// problems as check-config lines: "connections[1].azure: ...".
func ProviderProblems(conns []config.Connection) []string {
	var out []string
	for i, c := range conns {
		err := connectors.Validate(c)
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			out = append(out, fmt.Sprintf("connections[%d].%s: %s", i, c.Type, line))
		}
	}
	return out
}
