package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWrongListenerHint: a plain 404 means the command reached a listener
// without the API it needs. With admin.listen set, login needs the client
// listener and the admin commands the admin one; the hint names which.
func TestWrongListenerHint(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	defer ts.Close()
	a := &api{base: ts.URL, http: &http.Client{Timeout: 5 * time.Second}}
	for _, tc := range []struct{ path, want string }{
		{"/_matrix/client/v3/login", "no client API at " + ts.URL},
		{"/_synapse/admin/v2/users", "no admin API at " + ts.URL},
	} {
		_, err := a.do(context.Background(), http.MethodGet, tc.path, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want the hint %q", tc.path, err, tc.want)
		}
	}
}
