package local

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/exportstream/exportstream/connectors"
)

// A local folder has no server of its own, so its signed URLs point at the
// service's HTTP server, which serves them with Handler:
//
//	<BaseURL>/<key, path-escaped>?expires=<unix seconds>&signature=<hex>
//
// signature is HMAC-SHA256 under SignKey of "<key>\n<expires>". Handler
// answers 403 for a wrong signature or an expired link, 404 for a missing
// object or a symbolic link (the file, or a folder on the way to it), and
// serves the object (with ranges and its content type) otherwise.
// Nothing else in the folder, and nothing outside it, is reachable
// through it.

// sign returns the hex HMAC of key and expires.
func (b *driver) sign(key string, expires int64) string {
	m := hmac.New(sha256.New, b.opts.SignKey)
	m.Write([]byte(key))
	m.Write([]byte{'\n'})
	m.Write([]byte(strconv.FormatInt(expires, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// SignedURL returns an HMAC-signed link to key under Options.BaseURL,
// valid for expiry. Without Options.BaseURL or Options.SignKey it returns
// an error wrapping connectors.ErrNotSupported.
func (b *driver) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if b.opts.BaseURL == "" || len(b.opts.SignKey) == 0 {
		return "", fmt.Errorf("local: signed URL for %q: %w: the folder has no base URL and signing key (the service serves them on http.public_url)", key, connectors.ErrNotSupported)
	}
	if _, err := b.path(key); err != nil {
		return "", err
	}
	expires := time.Now().Add(expiry).Unix()
	u := strings.TrimSuffix(b.opts.BaseURL, "/") + "/" + escapeKey(key)
	return u + "?expires=" + strconv.FormatInt(expires, 10) + "&signature=" + b.sign(key, expires), nil
}

// escapeKey path-escapes each segment of key.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// Handler serves the links SignedURL makes. Mount it where BaseURL points,
// with the base path stripped (http.StripPrefix): the request path is
// "/<key>".
func (b *Bucket) Handler() http.Handler { return b.d.handler() }

func (b *driver) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if len(b.opts.SignKey) == 0 {
			http.Error(w, "signed links are not enabled", http.StatusNotFound)
			return
		}
		key := strings.TrimPrefix(r.URL.Path, "/")
		q := r.URL.Query()
		expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
		sig, herr := hex.DecodeString(q.Get("signature"))
		want, _ := hex.DecodeString(b.sign(key, expires))
		switch {
		case err != nil || herr != nil || !hmac.Equal(sig, want):
			http.Error(w, "signature does not match", http.StatusForbidden)
			return
		case time.Now().Unix() > expires:
			http.Error(w, "link expired", http.StatusForbidden)
			return
		}
		p, err := b.path(key)
		if err != nil {
			http.Error(w, "invalid key", http.StatusBadRequest)
			return
		}
		// Never through a symbolic link (openObject).
		f, fi, err := b.openObject(key, p)
		if err != nil {
			if errors.Is(err, connectors.ErrNotFound) {
				http.Error(w, "object not found", http.StatusNotFound)
				return
			}
			http.Error(w, "cannot read object", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", contentType(p, key))
		w.Header().Set("ETag", `"`+etag(fi)+`"`)
		w.Header().Set("Cache-Control", "private, no-store")
		http.ServeContent(w, r, path.Base(key), fi.ModTime(), f)
	})
}

// contentType is the stored type of the file at p, else a guess from the
// key's extension, else connectors.DefaultContentType.
func contentType(p, key string) string {
	if ct := storedContentType(p); ct != "" {
		return ct
	}
	if ct := mime.TypeByExtension(path.Ext(key)); ct != "" {
		return ct
	}
	return connectors.DefaultContentType
}
