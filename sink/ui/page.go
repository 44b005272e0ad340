package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// csp keeps the page to its own files: it loads nothing from elsewhere, so
// it works offline, and an injected label value cannot run a script.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// PageHandler serves the page at / and its files under /static/, from the
// binary.
func PageHandler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("BUG: " + err.Error())
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What is not the page is not found, whatever the method: a POST to
		// /api/v1/read with the history off is a 404, as without the page.
		page, file := r.URL.Path == "/", strings.HasPrefix(r.URL.Path, "/static/") && len(r.URL.Path) > len("/static/")
		if !page && !file {
			http.NotFound(w, r)
			return
		}
		if getOnly(w, r) {
			return
		}
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if file {
			files.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(index)
	})
}
