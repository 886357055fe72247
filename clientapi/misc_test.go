package clientapi_test

import (
	"testing"

	"praxis/internal/hstest"
)

// TestLegacyR0Paths: /versions advertises r0.6.1, so an r0 path must answer
// like its v3 twin (Complement's older tests and r0-only clients use them).
func TestLegacyR0Paths(t *testing.T) {
	srv := hstest.New(t)
	alice := srv.Register(t, "alice")
	for _, tc := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"whoami", "GET", "/_matrix/client/r0/account/whoami", alice.AccessToken, nil, 200, ""},
		{"needs a token like v3", "GET", "/_matrix/client/r0/account/whoami", "", nil, 401, "M_MISSING_TOKEN"},
		{"login", "POST", "/_matrix/client/r0/login", "", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password-alice"}, 200, ""},
		{"path values survive", "GET", "/_matrix/client/r0/rooms/%21nope:hs1.test/joined_members", alice.AccessToken, nil, 403, "M_FORBIDDEN"},
		{"unknown r0 endpoint", "GET", "/_matrix/client/r0/no/such/thing", alice.AccessToken, nil, 404, "M_UNRECOGNIZED"},
		{"wrong method", "DELETE", "/_matrix/client/r0/account/whoami", alice.AccessToken, nil, 405, "M_UNRECOGNIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want(t, tc.name, call(t, srv, tc.method, tc.path, tc.token, tc.body), tc.status, tc.errcode)
		})
	}
}
