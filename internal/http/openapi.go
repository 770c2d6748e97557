package http

import (
	_ "embed"
	"net/http"
)

// openAPI is the API's OpenAPI 3.1 document; openapi_test.go holds it to
// the routes, parameters and result types the code has.
//
//go:embed openapi.json
var openAPI []byte

// serveOpenAPI answers GET /openapi.json with the document.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
