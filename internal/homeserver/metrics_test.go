package homeserver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"praxis/internal/hstest"
)

func TestMetricsNeedAnAdminToken(t *testing.T) {
	srv := hstest.New(t)
	ctx := context.Background()
	if _, err := srv.Users.CreateAccount(ctx, "root", "root-password", true, "user"); err != nil {
		t.Fatal(err)
	}
	admin := srv.Login(t, "root")
	alice := srv.Register(t, "alice")
	// one request so a route histogram exists
	if _, err := alice.Whoami(ctx); err != nil {
		t.Fatal(err)
	}
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name       string
		token      string
		wantStatus int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"ordinary user", alice.AccessToken, http.StatusForbidden},
		{"admin", admin.AccessToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.token)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tc.wantStatus, body)
			}
			if status == http.StatusOK && !strings.Contains(body, `route="GET /_matrix/client/v3/account/whoami"`) {
				t.Fatalf("metrics lack the whoami route:\n%.2000s", body)
			}
		})
	}
}
