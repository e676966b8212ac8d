package service

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"
)

// NATSConnectError is err, the failure of a connection to the NATS
// server(s) at urls (comma separated), saying where it tried (without
// user, password or token) and, when no server answered there, what to do
// about it (hint). It wraps err.
func NATSConnectError(urls string, err error, hint string) error {
	if errors.Is(err, nats.ErrNoServers) {
		return &natsConnectError{err: err, msg: fmt.Sprintf("no NATS server answers at %s: %s", RedactNATSURL(urls), hint)}
	}
	return &natsConnectError{err: err, msg: fmt.Sprintf("%v (NATS at %s)", err, RedactNATSURL(urls))}
}

type natsConnectError struct {
	err error
	msg string
}

func (e *natsConnectError) Error() string { return e.msg }
func (e *natsConnectError) Unwrap() error { return e.err }

// RedactNATSURL returns the NATS server URLs (comma separated) without
// their user information, which may hold a password or a token.
func RedactNATSURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if at := strings.LastIndexByte(p, '@'); at >= 0 {
			if u, err := url.Parse(p); err == nil && u.Host != "" {
				u.User = nil
				p = u.String()
			} else {
				// Not a URL: keep what follows the user information.
				scheme, _, hasScheme := strings.Cut(p, "://")
				p = p[at+1:]
				if hasScheme {
					p = scheme + "://" + p
				}
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
