package api

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed ui
var uiFiles embed.FS

// registerPage serves the export page at / and its assets under /ui/,
// from the binary (no CDN: it works offline).
func (s *Server) registerPage(mux *http.ServeMux) {
	sub, _ := fs.Sub(uiFiles, "ui")
	assets := http.FileServerFS(sub)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", assets))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
		http.ServeFileFS(w, r, sub, "index.html")
	})
}
