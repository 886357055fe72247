package admin_test

import (
	"context"
	"testing"
	"time"

	"praxis/internal/admin"
	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/ratelimit"
)

const secret = "test-shared-secret"

func withSecret(c *config.Config) { c.Registration.SharedSecret = secret }

type regRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname,omitempty"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	MAC         string `json:"mac"`
}

type regResponse struct {
	AccessToken string `json:"access_token"`
	UserID      string `json:"user_id"`
	HomeServer  string `json:"home_server"`
	DeviceID    string `json:"device_id"`
}

func TestSharedSecretRegistration(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		anon := anonymous(t, srv)
		nonce := func() string {
			t.Helper()
			var n struct{ Nonce string }
			if st, code := call(t, anon, "GET", "/_synapse/admin/v1/register", nil, &n); code != "" || n.Nonce == "" {
				t.Fatalf("nonce: %d %s %q", st, code, n.Nonce)
			}
			return n.Nonce
		}
		register := func(req regRequest, out any) (int, string) {
			t.Helper()
			return call(t, anon, "POST", "/_synapse/admin/v1/register", req, out)
		}

		// The happy path: an admin that can use the admin API at once.
		n := nonce()
		var resp regResponse
		req := regRequest{Nonce: n, Username: "boss", DisplayName: "The Boss", Password: "pw-boss", Admin: true,
			MAC: admin.RegistrationMAC(secret, n, "boss", "pw-boss", true, "")}
		if st, code := register(req, &resp); code != "" {
			t.Fatalf("register: %d %s", st, code)
		}
		if resp.UserID != "@boss:hs1.test" || resp.AccessToken == "" || resp.DeviceID == "" || resp.HomeServer != "hs1.test" {
			t.Fatalf("register response = %+v", resp)
		}
		boss := srv.Client(t, resp.UserID, resp.DeviceID, resp.AccessToken)
		var v struct {
			ServerVersion string `json:"server_version"`
		}
		if st, code := call(t, boss, "GET", "/_synapse/admin/v1/server_version", nil, &v); code != "" {
			t.Fatalf("new admin cannot use the admin API: %d %s", st, code)
		}
		if a, err := srv.Users.Account(ctx, "@boss:hs1.test"); err != nil || !a.IsAdmin || a.DisplayName != "The Boss" {
			t.Fatalf("account = %+v, %v", a, err)
		}

		// An expired nonce is refused, even with a correct MAC.
		old := time.Now().Add(-2 * time.Minute).UnixMilli()
		if _, err := srv.DB.Exec(ctx, `INSERT INTO admin_register_nonces (nonce, created_ts) VALUES ('stale', $1)`, old); err != nil {
			t.Fatal(err)
		}
		if st, code := register(regRequest{Nonce: "stale", Username: "late", Password: "pw", MAC: admin.RegistrationMAC(secret, "stale", "late", "pw", false, "")}, nil); st != 400 {
			t.Errorf("expired nonce: %d %s, want 400", st, code)
		}
		if _, err := srv.Users.Account(ctx, "@late:hs1.test"); err == nil {
			t.Error("an expired nonce created an account")
		}

		// The replayed nonce is refused, even with a correct MAC.
		if st, code := register(regRequest{Nonce: n, Username: "boss2", Password: "pw", MAC: admin.RegistrationMAC(secret, n, "boss2", "pw", false, "")}, nil); st != 400 {
			t.Errorf("replayed nonce: %d %s, want 400", st, code)
		}

		for _, tc := range []struct {
			name   string
			mutate func(r *regRequest)
			status int
			code   string
		}{
			{"wrong secret", func(r *regRequest) {
				r.MAC = admin.RegistrationMAC("guess", r.Nonce, r.Username, r.Password, r.Admin, "")
			}, 403, "M_FORBIDDEN"},
			{"admin flag flipped after signing", func(r *regRequest) { r.Admin = true }, 403, "M_FORBIDDEN"},
			{"mac not hex", func(r *regRequest) { r.MAC = "zz" }, 403, "M_FORBIDDEN"},
			{"unknown nonce", func(r *regRequest) {
				r.Nonce = "made-up"
				r.MAC = admin.RegistrationMAC(secret, r.Nonce, r.Username, r.Password, r.Admin, "")
			}, 400, "M_UNKNOWN"},
			{"taken username", func(r *regRequest) {
				r.Username = "boss"
				r.MAC = admin.RegistrationMAC(secret, r.Nonce, r.Username, r.Password, r.Admin, "")
			}, 400, "M_USER_IN_USE"},
			{"invalid username", func(r *regRequest) {
				r.Username = "Not Valid"
				r.MAC = admin.RegistrationMAC(secret, r.Nonce, r.Username, r.Password, r.Admin, "")
			}, 400, "M_INVALID_USERNAME"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n := nonce()
				r := regRequest{Nonce: n, Username: "mallory", Password: "pw-m", MAC: admin.RegistrationMAC(secret, n, "mallory", "pw-m", false, "")}
				tc.mutate(&r)
				if st, code := register(r, nil); st != tc.status || code != tc.code {
					t.Fatalf("register = %d %s, want %d %s", st, code, tc.status, tc.code)
				}
				if _, err := srv.Users.Account(ctx, "@mallory:hs1.test"); err == nil {
					t.Fatal("a refused registration created the account")
				}
				// A failed attempt spends the nonce: one guess per nonce.
				r.MAC = admin.RegistrationMAC(secret, r.Nonce, "mallory", "pw-m", false, "")
				r.Username, r.Password, r.Admin = "mallory", "pw-m", false
				if st, _ := register(r, nil); st != 400 {
					t.Errorf("nonce reused after a failed attempt: %d, want 400", st)
				}
			})
		}
	}, hstest.WithConfig(withSecret))
}

func TestSharedSecretRegistrationDisabled(t *testing.T) {
	srv := hstest.New(t)
	anon := anonymous(t, srv)
	if st, code := call(t, anon, "GET", "/_synapse/admin/v1/register", nil, nil); st != 400 {
		t.Errorf("nonce without a shared secret: %d %s, want 400", st, code)
	}
	if st, code := call(t, anon, "POST", "/_synapse/admin/v1/register", regRequest{Nonce: "x", Username: "a", Password: "b", MAC: "00"}, nil); st != 400 {
		t.Errorf("register without a shared secret: %d %s, want 400", st, code)
	}
}

// TestRegistrationMAC pins the MAC to the value Synapse's documented
// algorithm gives, so that register_new_matrix_user and other tools work.
func TestRegistrationMAC(t *testing.T) {
	for _, tc := range []struct {
		admin    bool
		userType string
		want     string
	}{
		// computed with Python: hmac.new(b"secret", b"abc\x00alice\x00pw\x00notadmin", hashlib.sha1).hexdigest()
		{false, "", "42e32623fe124933c326f9d2d67ff7c617915a10"},
		{true, "", "dc5ed98b283077684552e3f72d67f26b3366bf58"},
		// b"abc\x00alice\x00pw\x00notadmin\x00bot"
		{false, "bot", "24aa4ce0a91cc14c8d7b06e2c344d3d698805c6e"},
	} {
		got := admin.RegistrationMAC("secret", "abc", "alice", "pw", tc.admin, tc.userType)
		if got != tc.want {
			t.Errorf("MAC(admin=%v, type=%q) = %s, want %s", tc.admin, tc.userType, got, tc.want)
		}
	}
}

func TestSharedSecretRegistrationThrottled(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(withSecret))
	srv.Admin.SetLimiter(ratelimit.New(0.001, 2))
	anon := anonymous(t, srv)
	for i, want := range []int{200, 200, 429} {
		if st, code := call(t, anon, "GET", "/_synapse/admin/v1/register", nil, nil); st != want {
			t.Errorf("nonce request %d: %d %s, want %d", i+1, st, code, want)
		}
	}
	if st, code := call(t, anon, "POST", "/_synapse/admin/v1/register", regRequest{Nonce: "x", Username: "a", Password: "b", MAC: "00"}, nil); st != 429 || code != "M_LIMIT_EXCEEDED" {
		t.Errorf("register when throttled: %d %s, want 429 M_LIMIT_EXCEEDED", st, code)
	}
}
