package config

import (
	"bytes"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Redacted renders the configuration as YAML, the way check-config --print
// shows it: the configuration the service runs with. Every key has its
// effective value, after defaults and environment expansion: a zero that
// stands for a default shows the default (a connection's uploads: 2,
// signed_url_expiry: 1h0m0s). A key whose value is empty, false or zero
// is left out when leaving it out gives the same value (an unset source
// kind, an empty nats.url or credentials_file, unset secrets), and so is
// a block that is not set (a connection's other types); one whose absence
// would mean something else (create_stream: false, quiet: 0s) is kept.
// nats.embedded is left out when nats.url is set and it holds the
// defaults, as it is not used. Secrets that are set show as "<secret>",
// and so does a password inside a URL (nats://user:<secret>@host:4222).
// Durations render as Go durations ("1m0s"); a literal "${" renders as
// "$${". Redacted does not modify c.
//
// The result parses back to the same effective configuration, secrets
// aside: they read back as the text "<secret>", and a URL holding
// "<secret>" as its password is not valid.
func (c *Config) Redacted() string {
	r := c.effective()
	r.NATS.URL = redactURLs(r.NATS.URL)
	for i := range r.Connections {
		conn := &r.Connections[i]
		for _, b := range conn.blocks() {
			if b.block != nil {
				b.block.redact()
			}
		}
	}
	var n yaml.Node
	if err := n.Encode(r); err != nil {
		// Config holds only strings, numbers, booleans, lists and
		// structs, which always encode.
		return "# cannot render the configuration: " + err.Error() + "\n"
	}
	base := Default()
	pruneDefaults(&n, reflect.ValueOf(r).Elem(), reflect.ValueOf(base).Elem())
	if r.NATS.URL != "" && r.NATS.Embedded == base.NATS.Embedded {
		// Not used with a NATS server of its own: noise.
		deleteKey(&n, "nats", "embedded")
	}
	escapeEnv(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return "# cannot render the configuration: " + err.Error() + "\n"
	}
	_ = enc.Close()
	return buf.String()
}

// effective returns a copy of c, sharing nothing c could change through
// it, with the defaults a zero value stands for filled in: a connection's
// uploads (DefaultUploads) and signed_url_expiry (DefaultSignedURLExpiry).
func (c *Config) effective() *Config {
	r := *c
	r.NATS.Subjects = slices.Clone(c.NATS.Subjects)
	r.Connections = slices.Clone(c.Connections)
	for i := range r.Connections {
		conn := &r.Connections[i]
		if conn.Uploads == 0 {
			conn.Uploads = DefaultUploads
		}
		if conn.SignedURLExpiry == 0 {
			conn.SignedURLExpiry = DefaultSignedURLExpiry
		}
		for _, b := range conn.blocks() {
			b.clone()
		}
	}
	r.Exports = slices.Clone(c.Exports)
	for i := range r.Exports {
		s := &r.Exports[i].Source
		s.DirectoryID, s.JobID, s.TaskID = clonePtr(s.DirectoryID), clonePtr(s.JobID), clonePtr(s.TaskID)
	}
	return &r
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// pruneDefaults removes from n, the mapping or list v encodes to, the
// entries that Parse would give the same value without: those whose value
// is zero (or null) where base, what Parse starts from when the key is
// missing, is zero too. It recurses into the entries it keeps.
func pruneDefaults(n *yaml.Node, v, base reflect.Value) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
		if base.Kind() == reflect.Pointer && !base.IsNil() {
			base = base.Elem()
		} else {
			base = itemBase(v)
		}
	}
	switch {
	case v.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		byName, _ := fieldNames(v.Type())
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := byName[k.Value]
			if !ok {
				kept = append(kept, k, val)
				continue
			}
			fv, fb := v.Field(f), base.Field(f)
			if fv.IsZero() && fb.IsZero() || val.Kind == yaml.ScalarNode && val.ShortTag() == nullTag {
				continue
			}
			pruneDefaults(val, fv, fb)
			kept = append(kept, k, val)
		}
		n.Content = kept
	case v.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			if i < v.Len() {
				pruneDefaults(item, v.Index(i), itemBase(v.Index(i)))
			}
		}
	}
}

// itemBase returns what Parse starts a list item or block like v from:
// newValue's defaults, and, for an export, the path fillExportPaths gives
// it when the file sets none.
func itemBase(v reflect.Value) reflect.Value {
	base := newValue(v.Type()).Elem()
	if v.Type() == exportType {
		e := base.Addr().Interface().(*Export)
		if name := v.Interface().(Export).Name; exportNameRE.MatchString(name) {
			e.Path = "exports/" + name + "/"
		}
	}
	return base
}

// deleteKey removes the entry at the path of mapping keys from n.
func deleteKey(n *yaml.Node, keys ...string) {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != keys[0] {
			continue
		}
		if len(keys) == 1 {
			n.Content = slices.Delete(n.Content, i, i+2)
			return
		}
		deleteKey(n.Content[i+1], keys[1:]...)
		return
	}
}

// escapeEnv writes every "${" in a scalar as "$${", which Parse reads
// back as "${".
func escapeEnv(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = strings.ReplaceAll(n.Value, "${", "$${")
	}
	for _, c := range n.Content {
		escapeEnv(c)
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
