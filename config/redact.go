package config

import (
	"bytes"
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted renders the configuration as YAML, the way check-config prints
// the effective configuration: every key with its value after defaults and
// environment expansion, except that secrets show as "<secret>" ("" when
// unset), so does a password inside a URL (nats://user:<secret>@host:4222),
// and blocks that are not set (a connection's other types, unset source
// ids) are left out. Durations render as Go durations ("1m0s"). Redacted
// does not modify c.
//
// The result parses back to the same configuration, secrets aside: it is
// meant to be read, and a value that held "$${" has lost its escape.
func (c *Config) Redacted() string {
	r := *c
	r.NATS.URL = redactURLs(c.NATS.URL)
	r.Connections = make([]Connection, len(c.Connections))
	for i, conn := range c.Connections {
		if conn.S3 != nil {
			s3 := *conn.S3
			s3.Endpoint = redactURLs(s3.Endpoint)
			conn.S3 = &s3
		}
		if conn.GCS != nil {
			gcs := *conn.GCS
			gcs.Endpoint = redactURLs(gcs.Endpoint)
			conn.GCS = &gcs
		}
		if conn.Azure != nil {
			az := *conn.Azure
			az.Endpoint = redactURLs(az.Endpoint)
			conn.Azure = &az
		}
		r.Connections[i] = conn
	}
	var n yaml.Node
	if err := n.Encode(&r); err != nil {
		// Config holds only strings, numbers, booleans, lists and
		// structs, which always encode.
		return "# cannot render the configuration: " + err.Error() + "\n"
	}
	pruneNulls(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return "# cannot render the configuration: " + err.Error() + "\n"
	}
	_ = enc.Close()
	return buf.String()
}

// pruneNulls removes the mapping entries whose value is null, recursively.
func pruneNulls(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.ShortTag() == nullTag {
				continue
			}
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		pruneNulls(c)
	}
}

// redactURLs replaces the password in each URL of a comma separated list
// with "<secret>".
func redactURLs(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactURL(p)
	}
	return strings.Join(parts, ",")
}

// redactURL replaces the password in URL s with "<secret>"; a URL that does
// not parse becomes "<secret>" whole if it may hold one.
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return redactedText
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redactedText)
		return strings.Replace(u.String(), url.QueryEscape(redactedText), redactedText, 1)
	}
	return s
}
