package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"praxis/internal/hstest"
)

// fuzzAdminEndpoints take a JSON body. "@target" is a user that exists;
// the admin never deactivates itself (the handler refuses anyway).
var fuzzAdminEndpoints = []struct{ method, path string }{
	{"PUT", "/_synapse/admin/v2/users/@target:hs1.test"},
	{"PUT", "/_synapse/admin/v2/users/@fresh:hs1.test"},
	{"POST", "/_synapse/admin/v1/reset_password/@target:hs1.test"},
	{"PUT", "/_synapse/admin/v1/users/@target:hs1.test/admin"},
	{"POST", "/_synapse/admin/v2/users/@target:hs1.test/delete_devices"},
	{"POST", "/_synapse/admin/v1/registration_tokens/new"},
	{"PUT", "/_synapse/admin/v1/registration_tokens/tok1"},
	{"POST", "/_synapse/admin/v1/register"},
	{"POST", "/_synapse/admin/v1/media/delete"},
}

// FuzzAdminRequestJSON: whatever body an admin tool sends, the admin API
// answers 2xx or a 4xx Matrix error, never a 5xx.
func FuzzAdminRequestJSON(f *testing.F) {
	for i := range fuzzAdminEndpoints {
		for _, seed := range []string{
			`{}`, `{`, ``, `null`, `[]`, `{"password":"pw","logout_devices":false}`, `{"admin":"yes"}`,
			`{"displayname":5}`, `{"deactivated":true}`, `{"new_password":""}`, `{"devices":["A",1]}`,
			`{"uses_allowed":-1}`, `{"expiry_time":1e999}`, `{"length":65}`, `{"token":"bad token"}`,
			`{"nonce":"x","username":"u","password":"p","mac":"00"}`, `{"before_ts":"soon"}`, `{"threepids":[{}]}`,
		} {
			f.Add(uint8(i), []byte(seed))
		}
	}
	srv := hstest.New(f)
	ctx := context.Background()
	if _, err := srv.Users.CreateAccount(ctx, "root", "password-root", true, "user"); err != nil {
		f.Fatal(err)
	}
	root := srv.Login(f, "root")
	if _, err := srv.Users.CreateAccount(ctx, "target", "password-target", false, "user"); err != nil {
		f.Fatal(err)
	}
	httpc := &http.Client{Timeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		ep := fuzzAdminEndpoints[int(which)%len(fuzzAdminEndpoints)]
		req, err := http.NewRequest(ep.method, srv.URL+ep.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+root.AccessToken)
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatalf("%s %s with %q: %v", ep.method, ep.path, body, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s with %q: %d %s", ep.method, ep.path, body, resp.StatusCode, out)
		}
		if resp.StatusCode >= 300 {
			var e struct {
				Errcode string `json:"errcode"`
			}
			if json.Unmarshal(out, &e) != nil || !strings.HasPrefix(e.Errcode, "M_") {
				t.Fatalf("%s %s with %q: %d without a Matrix error: %s", ep.method, ep.path, body, resp.StatusCode, out)
			}
		}
	})
}
