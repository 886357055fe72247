package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerExposesRoutesRuntimeAndServiceText(t *testing.T) {
	r := New()
	r.AddText(func(w io.Writer) error {
		_, err := fmt.Fprintln(w, "praxis_test_counter 7")
		return err
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rooms/{roomId}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
	h := r.Instrument(mux)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/rooms/!secret:hs1", nil))

	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`praxis_http_request_duration_seconds_count{route="GET /rooms/{roomId}",status="4xx"} 1`,
		"go_goroutines",
		"praxis_test_counter 7",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "!secret") {
		t.Error("a room ID leaked into a metric label")
	}
}
