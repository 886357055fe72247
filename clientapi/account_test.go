package clientapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/users"
)

func asHTTP(err error, target *mautrix.HTTPError) bool { return errors.As(err, target) }

// rawResp is an HTTP answer decoded as a JSON object.
type rawResp struct {
	Status int
	Body   map[string]any
}

func (r rawResp) errcode() string { s, _ := r.Body["errcode"].(string); return s }
func (r rawResp) str(k string) string {
	s, _ := r.Body[k].(string)
	return s
}

// call sends a raw request: the tests need exact status codes and bodies
// (UIA 401s, malformed JSON) that a typed client hides.
func call(t *testing.T, srv *hstest.Server, method, path, token string, body any) rawResp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := rawResp{Status: resp.StatusCode, Body: map[string]any{}}
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &out.Body); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %s", method, path, b)
		}
	}
	return out
}

func want(t *testing.T, what string, got rawResp, status int, errcode string) {
	t.Helper()
	if got.Status != status || got.errcode() != errcode {
		t.Fatalf("%s: got %d %q (%v), want %d %q", what, got.Status, got.errcode(), got.Body, status, errcode)
	}
}

const v3 = "/_matrix/client/v3"

// registerUIA registers through POST /register with the dummy stage and
// returns the final answer.
func registerUIA(t *testing.T, srv *hstest.Server, body map[string]any) rawResp {
	t.Helper()
	first := call(t, srv, "POST", v3+"/register", "", body)
	if first.Status != http.StatusUnauthorized {
		return first
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.str("session")}
	return call(t, srv, "POST", v3+"/register", "", body)
}

func TestRegisterUserInteractive(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		first := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "alice", "password": "secret-pw"})
		if first.Status != http.StatusUnauthorized || first.str("session") == "" || first.Body["params"] == nil || first.errcode() != "" {
			t.Fatalf("first register answer: %d %v", first.Status, first.Body)
		}
		flows, _ := json.Marshal(first.Body["flows"])
		if string(flows) != `[{"stages":["m.login.dummy"]}]` {
			t.Errorf("flows = %s", flows)
		}
		done := call(t, srv, "POST", v3+"/register", "", map[string]any{
			"username": "alice", "password": "secret-pw", "device_id": "ALICEDEV", "initial_device_display_name": "Laptop",
			"auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")},
		})
		if done.Status != 200 || done.str("user_id") != "@alice:hs1.test" || done.str("access_token") == "" || done.str("device_id") != "ALICEDEV" {
			t.Fatalf("completed register: %d %v", done.Status, done.Body)
		}
		// The session is used up.
		again := call(t, srv, "POST", v3+"/register", "", map[string]any{
			"username": "alice2", "auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")},
		})
		want(t, "reused session", again, 400, "M_UNKNOWN")

		alice := srv.Client(t, done.str("user_id"), done.str("device_id"), done.str("access_token"))
		who, err := alice.Whoami(t.Context())
		if err != nil || who.UserID != "@alice:hs1.test" || who.DeviceID != "ALICEDEV" {
			t.Fatalf("whoami: %+v %v", who, err)
		}
		dev, err := alice.GetDeviceInfo(t.Context(), "ALICEDEV")
		if err != nil || dev.DisplayName != "Laptop" {
			t.Errorf("device after register: %+v %v", dev, err)
		}
		// The password works for login.
		c, _ := mautrix.NewClient(srv.URL, "", "")
		if _, err := c.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "secret-pw"}); err != nil {
			t.Errorf("login with registered password: %v", err)
		}

		for _, tc := range []struct {
			name     string
			username string
			errcode  string
		}{
			{"taken", "alice", "M_USER_IN_USE"},
			{"bad character", "bob smith", "M_INVALID_USERNAME"},
			{"leading underscore", "_bot", "M_INVALID_USERNAME"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": tc.username, "password": "x"})
				want(t, "register "+tc.username, got, 400, tc.errcode)
				avail := call(t, srv, "GET", v3+"/register/available?username="+url.QueryEscape(tc.username), "", nil)
				want(t, "available "+tc.username, avail, 400, tc.errcode)
			})
		}
		want(t, "available with capitals", call(t, srv, "GET", v3+"/register/available?username=Bob", "", nil), 400, "M_INVALID_USERNAME")
		// One request with the dummy stage and no session suffices; capitals are folded.
		upper := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "user-UPPER", "password": "pw", "auth": map[string]any{"type": "m.login.dummy"}})
		if upper.Status != 200 || upper.str("user_id") != "@user-upper:hs1.test" {
			t.Errorf("register user-UPPER in one step: %d %v", upper.Status, upper.Body)
		}
		avail := call(t, srv, "GET", v3+"/register/available?username=carol", "", nil)
		if avail.Status != 200 || avail.Body["available"] != true {
			t.Errorf("available carol: %d %v", avail.Status, avail.Body)
		}

		// Without a username the server picks one; inhibit_login gives no token.
		anon := registerUIA(t, srv, map[string]any{"password": "pw", "inhibit_login": true})
		if anon.Status != 200 || anon.str("user_id") == "" || anon.str("access_token") != "" || anon.str("device_id") != "" {
			t.Errorf("random localpart with inhibit_login: %d %v", anon.Status, anon.Body)
		}

		// Refresh tokens on request.
		withRefresh := registerUIA(t, srv, map[string]any{"username": "dave", "password": "pw", "refresh_token": true})
		if withRefresh.str("refresh_token") == "" || withRefresh.Body["expires_in_ms"] == nil {
			t.Errorf("refresh_token requested: %v", withRefresh.Body)
		}

		guest := call(t, srv, "POST", v3+"/register?kind=guest", "", map[string]any{})
		want(t, "guest registration", guest, 403, "M_GUEST_ACCESS_FORBIDDEN")
		want(t, "malformed JSON", call(t, srv, "POST", v3+"/register", "", `{"username":`), 400, "M_NOT_JSON")
		want(t, "wrong shape", call(t, srv, "POST", v3+"/register", "", `{"username": 5}`), 400, "M_BAD_JSON")
		want(t, "unoffered stage", call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "erin", "auth": map[string]any{"type": "m.login.password"}}), 401, "M_UNRECOGNIZED")
	})
}

func TestRegisterWithMautrix(t *testing.T) {
	srv := hstest.New(t)
	c, _ := mautrix.NewClient(srv.URL, "", "")
	resp, err := c.RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: "frank", Password: "pw-frank"})
	if err != nil || resp.UserID != "@frank:hs1.test" || resp.AccessToken == "" {
		t.Fatalf("RegisterDummy: %+v %v", resp, err)
	}
}

func TestRegistrationClosed(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Registration.Open = false }))
	want(t, "closed registration", call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "x"}), 403, "M_FORBIDDEN")
	want(t, "token validity without tokens", call(t, srv, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil), 403, "M_FORBIDDEN")
}

func TestRegistrationToken(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		one := 1
		if _, err := srv.Users.CreateRegistrationToken(t.Context(), users.RegistrationToken{Token: "welcome", UsesAllowed: &one}); err != nil {
			t.Fatal(err)
		}
		validity := func(token string) rawResp {
			return call(t, srv, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+token, "", nil)
		}
		if v := validity("welcome"); v.Status != 200 || v.Body["valid"] != true {
			t.Fatalf("validity of a fresh token: %d %v", v.Status, v.Body)
		}
		if v := validity("nope"); v.Status != 200 || v.Body["valid"] != false {
			t.Errorf("validity of an unknown token: %d %v", v.Status, v.Body)
		}
		want(t, "validity without token", validity(""), 400, "M_MISSING_PARAM")

		first := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "gina", "password": "pw"})
		flows, _ := json.Marshal(first.Body["flows"])
		if first.Status != 401 || string(flows) != `[{"stages":["m.login.registration_token"]}]` {
			t.Fatalf("flows with tokens required: %d %s", first.Status, flows)
		}
		sess := first.str("session")
		// Dummy is not enough when a token is required.
		want(t, "dummy stage", call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "gina", "auth": map[string]any{"type": "m.login.dummy", "session": sess}}), 401, "M_UNRECOGNIZED")
		bad := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "gina", "auth": map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": sess}})
		want(t, "wrong token", bad, 401, "M_UNAUTHORIZED")
		if bad.str("session") != sess || bad.Body["flows"] == nil {
			t.Errorf("failed stage answer lacks session or flows: %v", bad.Body)
		}
		ok := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "gina", "password": "pw", "auth": map[string]any{"type": "m.login.registration_token", "token": "welcome", "session": sess}})
		if ok.Status != 200 || ok.str("user_id") != "@gina:hs1.test" {
			t.Fatalf("register with token: %d %v", ok.Status, ok.Body)
		}
		got, _ := srv.Users.RegistrationToken(t.Context(), "welcome")
		if got.Completed != 1 || got.Pending != 0 {
			t.Errorf("token after use: %+v", got)
		}
		if v := validity("welcome"); v.Body["valid"] != false {
			t.Errorf("used-up token still valid: %v", v.Body)
		}
		// The used-up token lets nobody else in.
		next := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "hank"})
		again := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "hank", "auth": map[string]any{"type": "m.login.registration_token", "token": "welcome", "session": next.str("session")}})
		want(t, "used-up token", again, 401, "M_UNAUTHORIZED")
	}, hstest.WithConfig(func(c *config.Config) { c.Registration.Open = false; c.Registration.RequiresToken = true }))
}

func TestLogin(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		srv.Register(t, "ivy") // password "password-ivy"
		flows := call(t, srv, "GET", v3+"/login", "", nil)
		if flows.Status != 200 {
			t.Fatalf("GET /login: %d", flows.Status)
		}
		fl, _ := json.Marshal(flows.Body["flows"])
		if string(fl) != `[{"type":"m.login.password"}]` {
			t.Errorf("login flows: %s", fl)
		}
		for _, tc := range []struct {
			name    string
			body    map[string]any
			status  int
			errcode string
		}{
			{"identifier localpart", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "ivy"}, "password": "password-ivy"}, 200, ""},
			{"identifier full ID", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@ivy:hs1.test"}, "password": "password-ivy"}, 200, ""},
			{"legacy user", map[string]any{"type": "m.login.password", "user": "ivy", "password": "password-ivy"}, 200, ""},
			{"upper-case name", map[string]any{"type": "m.login.password", "user": "IVY", "password": "password-ivy"}, 200, ""},
			{"device_id too long", map[string]any{"type": "m.login.password", "user": "ivy", "password": "password-ivy", "device_id": strings.Repeat("D", 300)}, 400, "M_INVALID_PARAM"},
			{"wrong password", map[string]any{"type": "m.login.password", "user": "ivy", "password": "nope"}, 403, "M_FORBIDDEN"},
			{"unknown user", map[string]any{"type": "m.login.password", "user": "nobody", "password": "nope"}, 403, "M_FORBIDDEN"},
			{"other server", map[string]any{"type": "m.login.password", "user": "@ivy:elsewhere", "password": "password-ivy"}, 403, "M_FORBIDDEN"},
			{"unknown type", map[string]any{"type": "m.login.token", "token": "x"}, 400, "M_UNKNOWN"},
			{"3pid identifier", map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email"}, "password": "x"}, 400, "M_UNKNOWN"},
			{"no user", map[string]any{"type": "m.login.password", "password": "x"}, 400, "M_MISSING_PARAM"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := call(t, srv, "POST", v3+"/login", "", tc.body)
				want(t, tc.name, got, tc.status, tc.errcode)
				if tc.status == 200 && (got.str("user_id") != "@ivy:hs1.test" || got.str("access_token") == "" || got.str("device_id") == "") {
					t.Errorf("login answer: %v", got.Body)
				}
			})
		}
		want(t, "malformed JSON", call(t, srv, "POST", v3+"/login", "", `not json`), 400, "M_NOT_JSON")
		want(t, "wrong shape", call(t, srv, "POST", v3+"/login", "", `{"type": ["m.login.password"]}`), 400, "M_BAD_JSON")

		// An existing device ID is reused, a display name set.
		c, _ := mautrix.NewClient(srv.URL, "", "")
		resp, err := c.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "ivy"},
			Password: "password-ivy", DeviceID: "IVYPHONE", InitialDeviceDisplayName: "Phone", StoreCredentials: true})
		if err != nil || resp.DeviceID != "IVYPHONE" {
			t.Fatalf("login with device_id: %+v %v", resp, err)
		}
		d, err := c.GetDeviceInfo(t.Context(), "IVYPHONE")
		if err != nil || d.DisplayName != "Phone" {
			t.Errorf("device: %+v %v", d, err)
		}
	})
}

func TestTokens(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		want(t, "no token", call(t, srv, "GET", v3+"/account/whoami", "", nil), 401, "M_MISSING_TOKEN")
		want(t, "unknown token", call(t, srv, "GET", v3+"/account/whoami", "syt_bogus", nil), 401, "M_UNKNOWN_TOKEN")

		srv.Register(t, "jack")
		login := call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "jack", "password": "password-jack", "refresh_token": true})
		if login.Status != 200 || login.str("refresh_token") == "" || login.Body["expires_in_ms"] == nil {
			t.Fatalf("login with refresh_token: %d %v", login.Status, login.Body)
		}
		oldAccess, oldRefresh := login.str("access_token"), login.str("refresh_token")
		ref := call(t, srv, "POST", v3+"/refresh", "", map[string]any{"refresh_token": oldRefresh})
		if ref.Status != 200 || ref.str("access_token") == "" || ref.str("refresh_token") == "" || ref.str("refresh_token") == oldRefresh {
			t.Fatalf("refresh: %d %v", ref.Status, ref.Body)
		}
		want(t, "old refresh token", call(t, srv, "POST", v3+"/refresh", "", map[string]any{"refresh_token": oldRefresh}), 401, "M_UNKNOWN_TOKEN")
		want(t, "old access token", call(t, srv, "GET", v3+"/account/whoami", oldAccess, nil), 401, "M_UNKNOWN_TOKEN")
		who := call(t, srv, "GET", v3+"/account/whoami", ref.str("access_token"), nil)
		if who.Status != 200 || who.str("device_id") != login.str("device_id") || who.Body["is_guest"] != false {
			t.Errorf("whoami with refreshed token: %v", who.Body)
		}
		if got := call(t, srv, "GET", v3+"/account/3pid", ref.str("access_token"), nil); got.Status != 200 || got.Body["threepids"] == nil {
			t.Errorf("GET /account/3pid: %d %v", got.Status, got.Body)
		}
		want(t, "refresh without token", call(t, srv, "POST", v3+"/refresh", "", map[string]any{}), 400, "M_MISSING_PARAM")

		// logout ends the device; logout/all ends every device.
		a := srv.Login(t, "jack")
		b := srv.Login(t, "jack")
		if _, err := a.Logout(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Whoami(t.Context()); hstest.ErrCode(err) != "M_UNKNOWN_TOKEN" {
			t.Errorf("whoami after logout: %v", err)
		}
		if _, err := b.Whoami(t.Context()); err != nil {
			t.Errorf("other device after logout: %v", err)
		}
		if _, err := b.LogoutAll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Whoami(t.Context()); hstest.ErrCode(err) != "M_UNKNOWN_TOKEN" {
			t.Errorf("whoami after logout/all: %v", err)
		}
		devs, _ := srv.Users.Devices(t.Context(), "@jack:hs1.test")
		if len(devs) != 0 {
			t.Errorf("devices after logout/all: %v", devs)
		}
	})
}

func passwordAuth(user, password, session string) map[string]any {
	return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password, "session": session}
}

func TestChangePassword(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		kim := srv.Register(t, "kim")
		other := srv.Login(t, "kim")
		tok := kim.AccessToken

		want(t, "missing new_password", call(t, srv, "POST", v3+"/account/password", tok, map[string]any{}), 400, "M_MISSING_PARAM")
		first := call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresh"})
		flows, _ := json.Marshal(first.Body["flows"])
		if first.Status != 401 || string(flows) != `[{"stages":["m.login.password"]}]` {
			t.Fatalf("password change challenge: %d %v", first.Status, first.Body)
		}
		sess := first.str("session")
		wrong := call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresh", "auth": passwordAuth("kim", "bad", sess)})
		want(t, "wrong current password", wrong, 401, "M_FORBIDDEN")
		// Authenticating as somebody else does not count.
		srv.Register(t, "lou")
		want(t, "another user's password", call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresh", "auth": passwordAuth("lou", "password-lou", sess)}), 403, "M_FORBIDDEN")

		ok := call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresh", "auth": passwordAuth("@KIM:hs1.test", "password-kim", sess)})
		if ok.Status != 200 {
			t.Fatalf("password change: %d %v", ok.Status, ok.Body)
		}
		if _, err := kim.Whoami(t.Context()); err != nil {
			t.Errorf("calling device logged out: %v", err)
		}
		if _, err := other.Whoami(t.Context()); hstest.ErrCode(err) != "M_UNKNOWN_TOKEN" {
			t.Errorf("other device after password change: %v", err)
		}
		want(t, "old password", call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "kim", "password": "password-kim"}), 403, "M_FORBIDDEN")
		if got := call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "kim", "password": "fresh"}); got.Status != 200 {
			t.Errorf("new password login: %d %v", got.Status, got.Body)
		}

		// logout_devices: false keeps the others.
		third := srv.Login(t, "kim")
		first = call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresher"})
		// Without an identifier the password is checked for the caller.
		ok = call(t, srv, "POST", v3+"/account/password", tok, map[string]any{"new_password": "fresher", "logout_devices": false,
			"auth": map[string]any{"type": "m.login.password", "password": "fresh", "session": first.str("session")}})
		if ok.Status != 200 {
			t.Fatalf("password change keeping devices: %d %v", ok.Status, ok.Body)
		}
		if _, err := third.Whoami(t.Context()); err != nil {
			t.Errorf("logout_devices false logged out a device: %v", err)
		}
	})
}

func TestDeactivate(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		mia := srv.Register(t, "mia")
		first := call(t, srv, "POST", v3+"/account/deactivate", mia.AccessToken, map[string]any{})
		if first.Status != 401 {
			t.Fatalf("deactivate challenge: %d %v", first.Status, first.Body)
		}
		// A session from another purpose does not authorise deactivation.
		pw := call(t, srv, "POST", v3+"/account/password", mia.AccessToken, map[string]any{"new_password": "x"})
		want(t, "foreign session", call(t, srv, "POST", v3+"/account/deactivate", mia.AccessToken, map[string]any{"auth": passwordAuth("mia", "password-mia", pw.str("session"))}), 400, "M_UNKNOWN")

		done := call(t, srv, "POST", v3+"/account/deactivate", mia.AccessToken, map[string]any{"auth": passwordAuth("mia", "password-mia", first.str("session"))})
		if done.Status != 200 || done.str("id_server_unbind_result") != "no-support" {
			t.Fatalf("deactivate: %d %v", done.Status, done.Body)
		}
		want(t, "token after deactivation", call(t, srv, "GET", v3+"/account/whoami", mia.AccessToken, nil), 401, "M_UNKNOWN_TOKEN")
		want(t, "login after deactivation", call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "mia", "password": "password-mia"}), 403, "M_FORBIDDEN")
		want(t, "re-register the ID", call(t, srv, "GET", v3+"/register/available?username=mia", "", nil), 400, "M_USER_IN_USE")
	})
}

func TestDeactivatedLogin(t *testing.T) {
	srv := hstest.New(t)
	srv.Register(t, "ned")
	// Deactivation through the service (as the admin API does) keeps the
	// password check meaningful: only a correct password learns the state.
	if _, err := srv.Users.CreateAccount(t.Context(), "olga", "pw-olga", false, "user"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.DB.Exec(t.Context(), `UPDATE accounts SET deactivated = TRUE WHERE user_id = $1`, "@olga:hs1.test"); err != nil {
		t.Fatal(err)
	}
	want(t, "deactivated, right password", call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "olga", "password": "pw-olga"}), 403, "M_USER_DEACTIVATED")
	want(t, "deactivated, wrong password", call(t, srv, "POST", v3+"/login", "", map[string]any{"type": "m.login.password", "user": "olga", "password": "x"}), 403, "M_FORBIDDEN")
}

func TestDevices(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		pia := srv.Register(t, "pia")
		second := srv.Login(t, "pia")
		third := srv.Login(t, "pia")
		ctx := t.Context()
		list, err := pia.GetDevicesInfo(ctx)
		if err != nil || len(list.Devices) != 3 {
			t.Fatalf("devices: %+v %v", list, err)
		}
		if err := pia.SetDeviceInfo(ctx, second.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Tablet"}); err != nil {
			t.Fatal(err)
		}
		d, err := pia.GetDeviceInfo(ctx, second.DeviceID)
		if err != nil || d.DisplayName != "Tablet" {
			t.Errorf("renamed device: %+v %v", d, err)
		}
		_, err = pia.GetDeviceInfo(ctx, "NOPE")
		if hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("unknown device: %v", err)
		}
		want(t, "rename unknown device", call(t, srv, "PUT", v3+"/devices/NOPE", pia.AccessToken, map[string]any{"display_name": "x"}), 404, "M_NOT_FOUND")
		// Another user's device is unknown to this user.
		quinn := srv.Register(t, "quinn")
		want(t, "someone else's device", call(t, srv, "GET", v3+"/devices/"+string(quinn.DeviceID), pia.AccessToken, nil), 404, "M_NOT_FOUND")

		path := v3 + "/devices/" + string(second.DeviceID)
		first := call(t, srv, "DELETE", path, pia.AccessToken, map[string]any{})
		if first.Status != 401 || first.str("session") == "" {
			t.Fatalf("delete device challenge: %d %v", first.Status, first.Body)
		}
		want(t, "delete unknown device", call(t, srv, "DELETE", v3+"/devices/NOPE", pia.AccessToken, map[string]any{}), 404, "M_NOT_FOUND")
		if got := call(t, srv, "DELETE", path, pia.AccessToken, map[string]any{"auth": passwordAuth("pia", "password-pia", first.str("session"))}); got.Status != 200 {
			t.Fatalf("delete device: %d %v", got.Status, got.Body)
		}
		if _, err := second.Whoami(ctx); hstest.ErrCode(err) != "M_UNKNOWN_TOKEN" {
			t.Errorf("deleted device still logged in: %v", err)
		}

		want(t, "delete_devices without devices", call(t, srv, "POST", v3+"/delete_devices", pia.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")
		err = pia.DeleteDevices(ctx, &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{third.DeviceID, "UNKNOWN"}})
		var httpErr mautrix.HTTPError
		if !asHTTP(err, &httpErr) || httpErr.Response.StatusCode != 401 {
			t.Fatalf("delete_devices without auth: %v", err)
		}
		uia := call(t, srv, "POST", v3+"/delete_devices", pia.AccessToken, map[string]any{"devices": []string{string(third.DeviceID)}})
		got := call(t, srv, "POST", v3+"/delete_devices", pia.AccessToken, map[string]any{"devices": []string{string(third.DeviceID), "UNKNOWN"}, "auth": passwordAuth("pia", "password-pia", uia.str("session"))})
		if got.Status != 200 {
			t.Fatalf("delete_devices: %d %v", got.Status, got.Body)
		}
		list, _ = pia.GetDevicesInfo(ctx)
		if len(list.Devices) != 1 || list.Devices[0].DeviceID != pia.DeviceID {
			t.Errorf("devices left: %+v", list.Devices)
		}
	})
}

func TestAuthRateLimit(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) {
		c.RateLimit = config.RateLimit{Enabled: true, PerSecond: 0.001, Burst: 3}
	}))
	body := map[string]any{"type": "m.login.password", "user": "nobody", "password": "x"}
	var codes []string
	for range 4 {
		codes = append(codes, call(t, srv, "POST", v3+"/login", "", body).errcode())
	}
	if !slices.Equal(codes, []string{"M_FORBIDDEN", "M_FORBIDDEN", "M_FORBIDDEN", "M_LIMIT_EXCEEDED"}) {
		t.Fatalf("errcodes of 4 logins with burst 3: %v", codes)
	}
	got := call(t, srv, "POST", v3+"/register", "", map[string]any{"username": "x"})
	want(t, "register after the burst", got, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := got.Body["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms = %v", got.Body["retry_after_ms"])
	}
	// Authenticated endpoints are not throttled by the login bucket.
	r := srv.Register(t, "rita")
	if _, err := r.Whoami(t.Context()); err != nil {
		t.Errorf("whoami while login is throttled: %v", err)
	}
}

// TestUIASessionAcrossProcesses: the second step of a registration may
// reach another process on the same database.
func TestUIASessionAcrossProcesses(t *testing.T) {
	hstest.Each(t, func(t *testing.T, one *hstest.Server) {
		two := hstest.New(t, hstest.WithDatabase(one.Config.Database))
		first := call(t, one, "POST", v3+"/register", "", map[string]any{"username": "sam", "password": "pw"})
		if first.Status != 401 {
			t.Fatalf("challenge: %d %v", first.Status, first.Body)
		}
		done := call(t, two, "POST", v3+"/register", "", map[string]any{"username": "sam", "password": "pw",
			"auth": map[string]any{"type": "m.login.dummy", "session": first.str("session")}})
		if done.Status != 200 || done.str("user_id") != "@sam:hs1.test" {
			t.Fatalf("completion on the second process: %d %v", done.Status, done.Body)
		}
		if who := call(t, one, "GET", v3+"/account/whoami", done.str("access_token"), nil); who.Status != 200 {
			t.Errorf("token from process two on process one: %d %v", who.Status, who.Body)
		}
	})
}

func TestDeactivateLeavesRooms(t *testing.T) {
	srv := hstest.New(t)
	ctx := t.Context()
	owner, tom := srv.Register(t, "owner"), srv.Register(t, "tom")
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Skipf("createRoom not available: %v", err)
	}
	if _, err := tom.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	first := call(t, srv, "POST", v3+"/account/deactivate", tom.AccessToken, map[string]any{})
	done := call(t, srv, "POST", v3+"/account/deactivate", tom.AccessToken, map[string]any{"auth": passwordAuth("tom", "password-tom", first.str("session"))})
	if done.Status != 200 {
		t.Fatalf("deactivate: %d %v", done.Status, done.Body)
	}
	members, err := owner.JoinedMembers(ctx, room.RoomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, still := members.Joined[tom.UserID]; still || len(members.Joined) != 1 {
		t.Errorf("joined members after tom's deactivation: %v", members.Joined)
	}
}
