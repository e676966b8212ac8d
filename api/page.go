package api

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed ui
var uiFiles embed.FS

// pageCSP allows the page its own files only: no inline script or style,
// nothing from elsewhere, no framing.
const pageCSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// registerPage serves the export page at / and its assets under /ui/,
// from the binary (no CDN: it works offline). The page holds no data:
// it calls the API, with the token the user gives it.
func (s *Server) registerPage(mux *http.ServeMux) {
	sub, _ := fs.Sub(uiFiles, "ui")
	assets := http.StripPrefix("/ui/", http.FileServerFS(sub))
	mux.Handle("GET /ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		assets.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		http.ServeFileFS(w, r, sub, "index.html")
	})
}

// pageHeaders: revalidate on every load (a new binary serves new files),
// and the page's security policy.
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
