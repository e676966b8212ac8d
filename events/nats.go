package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StartEmbedded starts an in-process NATS server with JetStream, storing
// its data under storeDir and listening on listen (host:port; port 0
// picks a free one). It returns once the server accepts connections.
// Stop it with Shutdown and WaitForShutdown.
func StartEmbedded(listen, storeDir string) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen %q: bad port", listen)
	}
	if port == 0 {
		port = -1 // the server's "random port"
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "exportstream-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start listening on %s (port in use?)", listen)
	}
	return ns, nil
}

// ConnectOptions say how to reach a NATS server.
type ConnectOptions struct {
	URL             string
	Name            string // client name shown by the server
	CredentialsFile string
	User, Password  string
	Token           string
	CAFile          string
	CertFile        string
	KeyFile         string
}

// Connect connects to NATS and keeps reconnecting forever after a drop.
func Connect(o ConnectOptions, onEvent func(msg string, err error)) (*nats.Conn, error) {
	if o.URL == "" {
		return nil, errors.New("no NATS URL")
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if onEvent != nil && err != nil {
				onEvent("NATS disconnected", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if onEvent != nil {
				onEvent("NATS reconnected to "+withoutUserInfo(nc.ConnectedUrl()), nil)
			}
		}),
	}
	if o.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

// withoutUserInfo returns URL u without its user information, which may
// hold a password or a token (nats.go's own redaction keeps a token).
func withoutUserInfo(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(the server URL cannot be shown)"
	}
	p.User = nil
	return p.String()
}

// AskAgain calls fn up to three times while NATS does not answer in time
// (a timeout or no responders), or a just-formed cluster cannot place a
// replicated stream yet (waiting 1 s, then 2 s): a stream or bucket of several replicas
// answers once it has a leader, which a busy or just-started cluster
// (several replicas creating their streams at once) may take longer to
// elect than one request waits. fn must be safe to repeat. It returns
// fn's last error.
func AskAgain(ctx context.Context, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || ctx.Err() != nil || attempt == 3 || !notYet(err) {
			return err
		}
		if noPeers(err) {
			// The cluster has not seen every node yet: give it a moment.
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
	}
}

// notYet reports whether err says NATS did not answer in time, or a
// just-formed cluster cannot place a stream yet.
func notYet(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || noPeers(err)
}

// jsErrCodeNoPeers is JetStream's "no suitable peers for placement"
// (a node of the cluster not online yet, or not enough of them).
const jsErrCodeNoPeers = 10005

func noPeers(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeNoPeers
}
