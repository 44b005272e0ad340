package ui

import (
	"embed"
	"io/fs"
	"net/http"
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
		if getOnly(w, r) {
			return
		}
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		switch {
		case r.URL.Path == "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(index)
		case len(r.URL.Path) > len("/static/") && r.URL.Path[:len("/static/")] == "/static/":
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
