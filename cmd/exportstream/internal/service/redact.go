package service

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
)

// RedactWriter returns a writer that blanks every occurrence of the
// secrets (raw, or as they appear inside a JSON string) with "<secret>"
// before writing to w. Log handlers write whole lines, so a secret is
// never split across writes. It is the last line of defence for secrets
// that reach a log line through an SDK's error text; config.Secret guards
// the rest.
func RedactWriter(w io.Writer, secrets []string) io.Writer {
	var pats [][]byte
	for _, s := range secrets {
		pats = append(pats, []byte(s))
		if j, err := json.Marshal(s); err == nil {
			if esc := j[1 : len(j)-1]; !bytes.Equal(esc, []byte(s)) {
				pats = append(pats, esc)
			}
		}
	}
	if len(pats) == 0 {
		return w
	}
	return &redactWriter{w: w, pats: pats}
}

type redactWriter struct {
	mu   sync.Mutex
	w    io.Writer
	pats [][]byte
}

var redacted = []byte("<secret>")

func (r *redactWriter) Write(p []byte) (int, error) {
	out := p
	for _, pat := range r.pats {
		if bytes.Contains(out, pat) {
			out = bytes.ReplaceAll(out, pat, redacted)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// RedactString returns a function that blanks every occurrence of the
// secrets in a string with "<secret>", raw or as they appear inside a JSON
// string, as RedactWriter does for a stream (so it also filters an
// encoded JSON answer).
func RedactString(secrets []string) func(string) string {
	var pats []string
	for _, s := range secrets {
		pats = append(pats, s)
		if j, err := json.Marshal(s); err == nil {
			if esc := string(j[1 : len(j)-1]); esc != s {
				pats = append(pats, esc)
			}
		}
	}
	return func(s string) string {
		for _, pat := range pats {
			if strings.Contains(s, pat) {
				s = strings.ReplaceAll(s, pat, "<secret>")
			}
		}
		return s
	}
}
