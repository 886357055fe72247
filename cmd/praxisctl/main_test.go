package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"praxis/federation/keyring"
	"praxis/internal/config"
	"praxis/internal/hstest"
)

// ctl runs praxisctl with args and returns exit code, stdout and stderr.
func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustCtl runs praxisctl and fails the test unless it exits 0.
func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := ctl(t, args...)
	if code != 0 {
		t.Fatalf("praxisctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

const secret = "ctl-test-secret"

// bootstrap starts a fresh node with a shared secret and creates its first
// admin through praxisctl, returning the server and the admin's token.
func bootstrap(t *testing.T) (*hstest.Server, string) {
	t.Helper()
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Registration.SharedSecret = secret }))
	out := mustCtl(t, "--server", srv.URL, "--json", "user", "create", "boss", "--admin", "--shared-secret", secret, "--password", "pw-boss")
	var reg struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg.AccessToken == "" || reg.UserID != "@boss:hs1.test" {
		t.Fatalf("user create --json printed %q (%v)", out, err)
	}
	return srv, reg.AccessToken
}

func TestUserCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	admin := []string{"--server", srv.URL, "--token", tok}
	ctlA := func(args ...string) (int, string, string) { return ctl(t, append(admin, args...)...) }
	mustA := func(args ...string) string { return mustCtl(t, append(admin, args...)...) }

	out := mustA("user", "create", "carol", "--displayname", "Carol C")
	if !strings.Contains(out, "created @carol:hs1.test (admin: no)") || !strings.Contains(out, "password: ") {
		t.Errorf("user create printed %q, want the user and a generated password", out)
	}
	generated := strings.TrimSpace(out[strings.Index(out, "password: ")+len("password: "):])
	if err := srv.Users.CheckPassword(context.Background(), "@carol:hs1.test", generated); err != nil {
		t.Errorf("the printed password does not work: %v", err)
	}

	code, _, errOut := ctlA("user", "create", "@carol:hs1.test", "--password", "x")
	if code != 1 || !strings.Contains(errOut, "already exists") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("duplicate create: exit %d, stderr %q; want exit 1 with one line", code, errOut)
	}

	out = mustA("user", "list")
	for _, want := range []string{"USER ID", "@boss:hs1.test", "@carol:hs1.test", "Carol C", "2 of 2 users"} {
		if !strings.Contains(out, want) {
			t.Errorf("user list lacks %q:\n%s", want, out)
		}
	}
	out = mustA("user", "show", "carol")
	if !strings.Contains(out, "display name:") || !strings.Contains(out, "Carol C") {
		t.Errorf("user show printed %q", out)
	}
	mustA("user", "make-admin", "carol")
	if a, _ := srv.Users.Account(context.Background(), "@carol:hs1.test"); !a.IsAdmin {
		t.Error("make-admin did not make carol an admin")
	}
	mustA("user", "reset-password", "carol", "--password", "pw-new")
	if err := srv.Users.CheckPassword(context.Background(), "@carol:hs1.test", "pw-new"); err != nil {
		t.Errorf("reset-password: %v", err)
	}
	// devices and remote logout
	srv.Login(t, "carol")
	second := srv.Login(t, "carol")
	out = mustA("user", "devices", "carol")
	if !strings.Contains(out, second.DeviceID.String()) || !strings.Contains(out, "2 devices") {
		t.Errorf("user devices printed:\n%s", out)
	}
	// "--": a device ID may start with "-" (it is random base64url)
	out = mustA("user", "logout", "carol", "--", second.DeviceID.String())
	if !strings.Contains(out, "logged out 1 device(s)") {
		t.Errorf("user logout printed %q", out)
	}
	if _, err := srv.Users.Authenticate(context.Background(), second.AccessToken); err == nil {
		t.Error("the logged-out device's token still works")
	}
	mustA("user", "logout", "carol", "--all")
	if out = mustA("user", "devices", "carol"); !strings.Contains(out, "0 devices") {
		t.Errorf("after logout --all:\n%s", out)
	}
	if code, _, _ := ctlA("user", "logout", "carol"); code != 2 {
		t.Errorf("logout without devices or --all: exit %d, want 2", code)
	}
	mustA("user", "deactivate", "carol")
	if a, _ := srv.Users.Account(context.Background(), "@carol:hs1.test"); !a.Deactivated {
		t.Error("deactivate did not deactivate carol")
	}

	// login prints a token that works for admin commands
	out = mustCtl(t, "--server", srv.URL, "login", "boss", "--password", "pw-boss")
	loginTok := strings.TrimSpace(out[strings.Index(out, "access token: ")+len("access token: "):])
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(loginTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, "--server", srv.URL, "--token-file", tokenFile, "user", "show", "boss")
	t.Setenv("PRAXIS_ADMIN_TOKEN", loginTok)
	mustCtl(t, "--server", srv.URL, "user", "show", "boss")

	// audit: every action above is there and the chain holds
	out = mustA("audit", "list")
	for _, want := range []string{"user.register", "user.create", "user.set_admin", "user.reset_password", "user.delete_devices", "user.deactivate"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pw-") {
		t.Errorf("audit list shows a password:\n%s", out)
	}
	out = mustA("audit", "list", "--action", "user.deactivate", "--since", "1h")
	if !strings.Contains(out, "user.deactivate") || strings.Contains(out, "user.create") || !strings.Contains(out, "1 entries") {
		t.Errorf("audit list --action --since:\n%s", out)
	}
	if out = mustA("audit", "list", "--until", "2000-01-01"); !strings.Contains(out, "0 entries") {
		t.Errorf("audit list --until 2000:\n%s", out)
	}
	out = mustA("audit", "verify")
	if !strings.Contains(out, "audit log intact: 7 entries") {
		t.Errorf("audit verify printed %q", out)
	}
	if _, err := srv.DB.Exec(context.Background(), `UPDATE audit_log SET actor = '@someone:else' WHERE seq = 2`); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = ctlA("audit", "verify")
	if code != 1 || !strings.Contains(errOut, "NOT intact") || !strings.Contains(errOut, "row 2") {
		t.Errorf("verify after tampering: exit %d, stderr %q; want exit 1 naming row 2", code, errOut)
	}
}

func TestFailures(t *testing.T) {
	srv, _ := bootstrap(t)
	alice := srv.Register(t, "alice")
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no token", []string{"--server", srv.URL, "user", "list"}, 2, "no admin token"},
		{"non-admin", []string{"--server", srv.URL, "--token", alice.AccessToken, "user", "list"}, 1, "M_FORBIDDEN"},
		{"bad token", []string{"--server", srv.URL, "--token", "nope", "room", "list"}, 1, "M_UNKNOWN_TOKEN"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"group without subcommand", []string{"token"}, 2, "want a subcommand: create, delete, list, show"},
		{"missing argument", []string{"--server", srv.URL, "--token", "x", "user", "show"}, 2, "want one user"},
		{"unknown flag", []string{"user", "list", "--bogus"}, 2, "bogus"},
		{"bad server URL", []string{"--server", "ftp://x", "--token", "x", "user", "list"}, 2, "not an http(s) URL"},
		{"server down", []string{"--server", "http://127.0.0.1:1", "--token", "x", "user", "list"}, 1, "cannot reach the server"},
		{"staff without --practice", []string{"--server", srv.URL, "--token", "x", "staff", "list"}, 2, "--practice is required"},
		{"couple code without --practice", []string{"--server", srv.URL, "--token", "x", "couple", "code"}, 2, "--practice is required"},
		{"wrong shared secret", []string{"--server", srv.URL, "user", "create", "eve", "--shared-secret", "guess", "--password", "x"}, 1, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := ctl(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.wantCode, tc.wantErr)
			}
			if lines := strings.Count(errOut, "\n"); tc.wantCode == 1 && lines != 1 {
				t.Errorf("stderr has %d lines, want a one-line reason: %q", lines, errOut)
			}
		})
	}
}

func TestRoomCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Reception", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	admin := []string{"--server", srv.URL, "--token", tok}
	out := mustCtl(t, append(admin, "room", "list")...)
	for _, want := range []string{"ROOM ID", room.RoomID.String(), "Reception", "1 of 1 rooms"} {
		if !strings.Contains(out, want) {
			t.Errorf("room list lacks %q:\n%s", want, out)
		}
	}
	out = mustCtl(t, append(admin, "room", "show", room.RoomID.String())...)
	if !strings.Contains(out, "joined members:") || !strings.Contains(out, "Reception") {
		t.Errorf("room show printed:\n%s", out)
	}
	out = mustCtl(t, append(admin, "room", "members", room.RoomID.String())...)
	if !strings.Contains(out, "@alice:hs1.test\n@bob:hs1.test\n2 joined members") {
		t.Errorf("room members printed:\n%s", out)
	}
	out = mustCtl(t, append(admin, "user", "rooms", "bob")...)
	if !strings.Contains(out, room.RoomID.String()+"\n1 joined rooms") {
		t.Errorf("user rooms printed:\n%s", out)
	}
	out = mustCtl(t, append(admin, "--json", "room", "list", "--search", "nothing-matches")...)
	var list struct {
		Rooms      []any `json:"rooms"`
		TotalRooms int   `json:"total_rooms"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.TotalRooms != 0 {
		t.Errorf("room list --json --search: %q (%v)", out, err)
	}
	code, _, errOut := ctl(t, append(admin, "room", "show", "!missing:hs1.test")...)
	if code != 1 || !strings.Contains(errOut, "M_NOT_FOUND") {
		t.Errorf("room show of a missing room: exit %d, %q", code, errOut)
	}
}

func TestTokenCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	admin := []string{"--server", srv.URL, "--token", tok}
	out := mustCtl(t, append(admin, "token", "create", "welcome-1", "--uses", "2", "--expires", "7d")...)
	if !strings.Contains(out, "created registration token welcome-1 (uses: 2, expires: ") {
		t.Errorf("token create printed %q", out)
	}
	out = mustCtl(t, append(admin, "--json", "token", "create")...)
	var gen struct{ Token string }
	if err := json.Unmarshal([]byte(out), &gen); err != nil || len(gen.Token) != 16 {
		t.Fatalf("token create --json printed %q", out)
	}
	out = mustCtl(t, append(admin, "token", "list")...)
	for _, want := range []string{"TOKEN", "welcome-1", gen.Token, "unlimited", "2 tokens"} {
		if !strings.Contains(out, want) {
			t.Errorf("token list lacks %q:\n%s", want, out)
		}
	}
	mustCtl(t, append(admin, "token", "create", "--", "-dash")...)
	mustCtl(t, append(admin, "token", "delete", "--", "-dash")...)
	mustCtl(t, append(admin, "token", "delete", "welcome-1")...)
	out = mustCtl(t, append(admin, "token", "list")...)
	if strings.Contains(out, "welcome-1") {
		t.Errorf("deleted token still listed:\n%s", out)
	}
	code, _, errOut := ctl(t, append(admin, "token", "delete", "welcome-1")...)
	if code != 1 || !strings.Contains(errOut, "M_NOT_FOUND") {
		t.Errorf("deleting a missing token: exit %d, %q", code, errOut)
	}
	code, _, errOut = ctl(t, append(admin, "token", "create", "--expires", "someday")...)
	if code != 2 || !strings.Contains(errOut, "someday") {
		t.Errorf("bad --expires: exit %d, %q", code, errOut)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, body string
		wantCode   int
		wantOut    []string
	}{
		{"good", "server_name: clinic.example\ndata_dir: " + dir + "\n", 0, []string{"OK", "clinic.example"}},
		{"bad values name their keys", "server_name: clinic.example\nlog:\n  level: loud\nlimits:\n  max_body_bytes: 10\n", 1, []string{"log.level", "limits.max_body_bytes"}},
		{"unknown key", "server_name: clinic.example\nregistration:\n  opne: true\n", 1, []string{"opne"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := ctl(t, "check-config", "--config", write(tc.name+".yaml", tc.body))
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.wantCode, out, errOut)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("output does not name %q: stdout %q stderr %q", w, out, errOut)
				}
			}
		})
	}
	if code, _, errOut := ctl(t, "check-config"); code != 2 || !strings.Contains(errOut, "--config") {
		t.Errorf("check-config without --config: exit %d, %q", code, errOut)
	}
	if code, _, _ := ctl(t, "check-config", "--config", filepath.Join(dir, "missing.yaml")); code != 1 {
		t.Errorf("check-config of a missing file: exit %d, want 1", code)
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.key")
	out := mustCtl(t, "keygen", "--out", path)
	if !strings.Contains(out, "key ID: ed25519:") {
		t.Errorf("keygen printed %q", out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.Parse(data); err != nil {
		t.Fatalf("written key does not parse: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if code, _, errOut := ctl(t, "keygen", "--out", path); code != 1 || !strings.Contains(errOut, "--force") {
		t.Errorf("keygen over an existing key: exit %d, %q", code, errOut)
	}
	mustCtl(t, "keygen", "--out", path, "--force")
	if again, _ := os.ReadFile(path); bytes.Equal(again, data) {
		t.Error("keygen --force did not replace the key")
	}
	out = mustCtl(t, "keygen")
	if _, err := keyring.Parse([]byte(out)); err != nil {
		t.Errorf("keygen to stdout printed %q: %v", out, err)
	}
}

func TestMigrate(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "praxis.yaml")
	if err := os.WriteFile(cfgPath, []byte("server_name: clinic.example\ndata_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustCtl(t, "migrate", "--config", cfgPath)
	for _, want := range []string{"schema version 0", "applied 0001_stream.sql", "applied 0060_admin.sql", "schema migrated from version 0 to"} {
		if !strings.Contains(out, want) {
			t.Errorf("first migrate lacks %q:\n%s", want, out)
		}
	}
	out = mustCtl(t, "migrate", "--config", cfgPath)
	if !strings.Contains(out, "schema is up to date") || strings.Contains(out, "applied") {
		t.Errorf("second migrate printed:\n%s", out)
	}
}

func TestAdminURL(t *testing.T) {
	for _, tc := range []struct {
		client, admin, want string
	}{
		{"127.0.0.1:8008", "", "http://127.0.0.1:8008"},
		{"0.0.0.0:8008", "", "http://127.0.0.1:8008"},
		{"[::]:8008", "", "http://127.0.0.1:8008"},
		{":8008", "", "http://127.0.0.1:8008"},
		{"10.0.0.5:8008", "127.0.0.1:8009", "http://127.0.0.1:8009"},
		{"praxis.internal:8008", "", "http://praxis.internal:8008"},
		{"[::1]:8008", "", "http://[::1]:8008"},
	} {
		cfg := &config.Config{Listen: config.Listen{Client: tc.client}, Admin: config.Admin{Listen: tc.admin}}
		if got := adminURL(cfg); got != tc.want {
			t.Errorf("adminURL(client %s, admin %q) = %s, want %s", tc.client, tc.admin, got, tc.want)
		}
	}
}

// TestCreateFirstAdminFromConfig: on the node's own machine, the config
// file alone tells praxisctl the secret and where the server listens.
func TestCreateFirstAdminFromConfig(t *testing.T) {
	srv := hstest.New(t, hstest.WithConfig(func(c *config.Config) { c.Registration.SharedSecret = secret }))
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "praxis.yaml")
	body := "server_name: hs1.test\ndata_dir: " + dir + "\nlisten:\n  client: " + strings.TrimPrefix(srv.URL, "http://") +
		"\nregistration:\n  shared_secret: " + secret + "\n"
	if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PRAXIS_ADMIN_URL", "")
	out := mustCtl(t, "user", "create", "root", "--admin", "--config", cfgPath, "--password", "pw-root")
	if !strings.Contains(out, "created @root:hs1.test (admin: yes)") {
		t.Errorf("user create --config printed %q", out)
	}
}
