// Package web is serve's dashboard: one page per protection group, built
// from files embedded in the binary (no build step, nothing fetched from
// elsewhere), that reads and acts through serve's HTTP API (/api/v1).
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Routes are the dashboard's routes: the page at / and its files under
// /ui/.
func Routes() map[string]http.Handler {
	static, _ := fs.Sub(files, "static")
	page, _ := fs.ReadFile(static, "index.html")
	return map[string]http.Handler{
		"GET /{$}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
			w.Write(page)
		}),
		"GET /ui/": http.StripPrefix("/ui/", http.FileServerFS(static)),
	}
}
