package admin_test

import (
	"testing"

	"praxis/internal/admin"
	"praxis/internal/hstest"
)

// TestSharedSecretRegistrationDowncases: a name with capitals registers in
// lower case, like /register (Complement TestRegistration "shared secret
// downcases capitals"); the MAC is still over the name as sent.
func TestSharedSecretRegistrationDowncases(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(withSecret))
	anon := anonymous(t, srv)
	var n struct{ Nonce string }
	if st, code := call(t, anon, "GET", "/_synapse/admin/v1/register", nil, &n); code != "" {
		t.Fatalf("nonce: %d %s", st, code)
	}
	var resp regResponse
	req := regRequest{Nonce: n.Nonce, Username: "Dr-MEYER", Password: "pw-meyer",
		MAC: admin.RegistrationMAC(secret, n.Nonce, "Dr-MEYER", "pw-meyer", false, "")}
	if st, code := call(t, anon, "POST", "/_synapse/admin/v1/register", req, &resp); code != "" {
		t.Fatalf("register: %d %s", st, code)
	}
	if resp.UserID != "@dr-meyer:hs1.test" {
		t.Errorf("user_id %q, want @dr-meyer:hs1.test", resp.UserID)
	}
}
