package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"praxis/internal/config"
	"praxis/internal/hstest"
)

func TestTurnTest(t *testing.T) {
	relay := func(c *config.Config) {
		c.TURN.Enabled = true
		c.TURN.SharedSecret = "ctl-turn-test-secret-0123456789"
		c.TURN.ListenUDP = "127.0.0.1:0"
		c.TURN.ListenTCP = "127.0.0.1:0"
		c.TURN.RelayPorts = ""
	}
	t.Run("embedded relay on loopback", func(t *testing.T) {
		srv := hstest.New(t, hstest.WithConfig(relay))
		// any user's token will do: the credentials are the ones a caller gets
		alice := srv.Register(t, "alice")
		code, out, errOut := ctl(t, "--server", srv.URL, "--token", alice.AccessToken, "turn", "test")
		if code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		for _, want := range []string{"ok    /voip/turnServer", "relayed through", "verdict: TURN works on every URI"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("turn off", func(t *testing.T) {
		srv, tok := bootstrap(t)
		code, out, errOut := ctl(t, "--server", srv.URL, "--token", tok, "turn", "test")
		if code != 1 || !strings.Contains(errOut, "TURN is not configured on this node") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("exit %d, stderr %q; want exit 1 with one line saying TURN is off", code, errOut)
		}
		if !strings.Contains(out, "FAIL  /voip/turnServer: 404") {
			t.Errorf("report lacks the failed credentials request:\n%s", out)
		}
	})
	t.Run("no client API at the address", func(t *testing.T) {
		// what an admin.listen address answers to client API paths
		admin := httptest.NewServer(http.NotFoundHandler())
		defer admin.Close()
		code, _, errOut := ctl(t, "--server", admin.URL, "--token", "x", "turn", "test")
		if code != 1 || !strings.Contains(errOut, "no client API at") || !strings.Contains(errOut, "admin.listen") {
			t.Errorf("exit %d, stderr %q; want exit 1 pointing at the client listener", code, errOut)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		srv := hstest.New(t, hstest.WithConfig(relay))
		code, _, errOut := ctl(t, "--server", srv.URL, "--token", "nope", "turn", "test")
		if code != 1 || !strings.Contains(errOut, "M_UNKNOWN_TOKEN") {
			t.Errorf("exit %d, stderr %q; want exit 1 with M_UNKNOWN_TOKEN", code, errOut)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"argument", []string{"--token", "x", "turn", "test", "extra"}, "want no arguments"},
		{"json", []string{"--token", "x", "--json", "turn", "test"}, "not JSON"},
		{"timeout", []string{"--token", "x", "turn", "test", "--timeout", "0s"}, "--timeout"},
		{"no token", []string{"turn", "test"}, "no admin token"},
	} {
		t.Run("usage/"+tc.name, func(t *testing.T) {
			t.Setenv("PRAXIS_ADMIN_TOKEN", "")
			if code, _, errOut := ctl(t, tc.args...); code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 mentioning %q", code, errOut, tc.want)
			}
		})
	}
}
