package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// redactedText is what every rendering of a non-empty Secret shows.
const redactedText = "<secret>"

// Secret is a string that must not leak: a password, token, key or
// connection string. It decodes from YAML (and JSON) as a plain string, but
// every way of printing it — fmt (String, GoString and Format; but see the
// two exceptions below), encoding/json, go.yaml.in/yaml/v3, encoding.TextMarshaler users and
// log/slog — shows "<secret>", or "" when the secret is empty, so that an
// unset secret is visible as unset. Reveal returns the real value; call it
// only where the value is handed to the client library that needs it.
//
// Two fmt paths bypass every method, of any type. %p on a non-pointer
// prints the value raw: never use %p on a Secret or a struct holding one.
// And a verb that does not suit a pointer (%s, %q, ...) applied to a
// struct holding a pointer to a struct holding a Secret prints the pointee
// raw. Connection guards its *S3 and *Azure against the latter with its
// own Format; a struct elsewhere that holds a *S3 or *Azure should be
// printed with %v, or guard itself the same way.
type Secret string

// String returns "<secret>", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redactedText
}

// GoString returns the same as String, so %#v does not leak the value.
func (s Secret) GoString() string { return s.String() }

// Format implements fmt.Formatter: every verb prints String; %q quotes it.
// It makes %x, %d and friends as safe as %v and %s.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = io.WriteString(f, strconv.Quote(s.String()))
		return
	}
	_, _ = io.WriteString(f, s.String())
}

// Reveal returns the secret's real value.
func (s Secret) Reveal() string { return string(s) }

// MarshalJSON encodes the secret as the JSON string "<secret>" ("" when
// empty).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalYAML encodes the secret as the YAML string "<secret>" ("" when
// empty).
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalText returns "<secret>" ("" when empty), for encoders that use
// encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue implements slog.LogValuer: the secret logs as "<secret>" ("" when
// empty) with every handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// connectionFields is Connection without its methods.
type connectionFields Connection

// Format implements fmt.Formatter. It prints a Connection as %v (or %+v,
// %#v) would, whatever the verb, so that a verb unsuited to pointers never
// makes fmt print the S3 or Azure block, and its secrets, raw. Blocks print
// as addresses, as %v prints any pointer inside a struct.
func (c Connection) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		s := fmt.Sprintf("%#v", connectionFields(c))
		_, _ = io.WriteString(f, "config.Connection"+s[strings.IndexByte(s, '{'):])
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, 'v'), connectionFields(c))
}

// SecretValues returns every secret value in the configuration, plus the
// secret parts of composite ones (an Azure connection string's AccountKey
// and SharedAccessSignature, a SAS token's sig) and the passwords and
// tokens in the user information of URLs (nats.url, endpoints: see
// urlSecrets), longest first, without
// empty or very short values. Output filters use it to blank secrets that
// reach a log line or error by a path Secret cannot guard, such as an
// SDK's error message.
func (c *Config) SecretValues() []string {
	seen := map[string]bool{}
	add := func(s string) {
		if len(s) >= 4 {
			seen[s] = true
		}
	}
	// addSig adds the sig of a query string, as written and unescaped.
	addSig := func(q string) {
		for _, kv := range strings.Split(strings.TrimPrefix(q, "?"), "&") {
			if k, v, ok := strings.Cut(kv, "="); ok && strings.EqualFold(k, "sig") {
				add(v)
				if u, err := url.QueryUnescape(v); err == nil {
					add(u)
				}
			}
		}
	}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.String:
			if v.Type() != reflect.TypeFor[Secret]() {
				// A URL may carry a password or token in its user
				// information (nats://user:password@host).
				for _, sec := range urlSecrets(v.String()) {
					add(sec)
				}
				return
			}
			s := v.String()
			add(s)
			for _, part := range strings.Split(s, ";") {
				k, val, ok := strings.Cut(part, "=")
				if ok && (strings.EqualFold(k, "AccountKey") || strings.EqualFold(k, "SharedAccessSignature")) {
					add(val)
					addSig(val)
				}
			}
			addSig(s)
		}
	}
	walk(reflect.ValueOf(c).Elem())
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// urlSecrets returns the secrets in the user information of the URLs in
// s (a comma separated list, as nats.url is): the password of
// scheme://user:password@host, or the whole user information of
// scheme://token@host, each as written and percent-decoded. The user
// name beside a password is not a secret. Text without "@" in a URL's
// authority holds none.
func urlSecrets(s string) []string {
	if !strings.Contains(s, "@") {
		return nil
	}
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if _, rest, ok := strings.Cut(part, "://"); ok {
			part = rest
		}
		authority := part
		if i := strings.IndexAny(part, "/?#"); i >= 0 {
			authority = part[:i]
		}
		at := strings.LastIndexByte(authority, '@')
		if at < 0 {
			continue
		}
		info := authority[:at]
		secret := info
		if _, pw, ok := strings.Cut(info, ":"); ok {
			secret = pw
		}
		if secret == "" {
			continue
		}
		out = append(out, secret)
		if dec, err := url.PathUnescape(secret); err == nil && dec != secret {
			out = append(out, dec)
		}
	}
	return out
}
