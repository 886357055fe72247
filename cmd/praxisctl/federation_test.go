package main

import (
	"path/filepath"
	"strings"
	"testing"

	"praxis/federation/keyring"
)

func TestFederationCommands(t *testing.T) {
	srv, tok := bootstrap(t)
	admin := []string{"--server", srv.URL, "--token", tok}
	mustCtl(t, append(admin, "federation", "allow", "partner.example")...)
	mustCtl(t, append(admin, "federation", "deny", "gone.example")...)
	if !srv.Fed.Allow.Allowed("partner.example") || srv.Fed.Allow.Allowed("gone.example") {
		t.Fatal("allow/deny did not take effect without a restart")
	}
	out := mustCtl(t, append(admin, "federation", "list")...)
	for _, want := range []string{"partner.example", "gone.example", "@boss:hs1.test", "runtime"} {
		if !strings.Contains(out, want) {
			t.Errorf("federation list lacks %q:\n%s", want, out)
		}
	}
	mustCtl(t, append(admin, "federation", "deny", "partner.example")...)
	if srv.Fed.Allow.Allowed("partner.example") {
		t.Fatal("deny did not take effect")
	}
	for _, tc := range []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"federation", "allow"}, 2, "server name"},
		{[]string{"federation", "allow", "not a name"}, 1, "M_INVALID_PARAM"},
		{[]string{"federation", "allow", "hs1.test"}, 1, "own server"},
	} {
		code, _, errOut := ctl(t, append(admin, tc.args...)...)
		if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("%v: exit %d %q, want %d and %q", tc.args, code, errOut, tc.wantCode, tc.wantErr)
		}
	}
	// only admins
	user := srv.Register(t, "plain")
	code, _, errOut := ctl(t, "--server", srv.URL, "--token", user.AccessToken, "federation", "list")
	if code != 1 || !strings.Contains(errOut, "M_FORBIDDEN") {
		t.Errorf("non-admin: exit %d %q", code, errOut)
	}
}

func TestFederationRotateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	mustCtl(t, "keygen", "--out", path)
	out := mustCtl(t, "federation", "rotate-key", "--key", path)
	if !strings.Contains(out, "retired") {
		t.Fatalf("rotate-key printed %q", out)
	}
	olds, err := keyring.LoadOldKeys(path)
	if err != nil || len(olds) != 1 {
		t.Fatalf("old keys %v %v", olds, err)
	}
	code, _, errOut := ctl(t, "federation", "rotate-key")
	if code != 2 || !strings.Contains(errOut, "--key") {
		t.Fatalf("without --key: exit %d %q", code, errOut)
	}
}
