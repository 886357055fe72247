package turn_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"praxis/internal/call/turn"
	"praxis/internal/config"
	"praxis/internal/hstest"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cfg         func(*config.Config)
		wantErr     bool
		wantVerdict string
	}{
		{"embedded relay works", func(c *config.Config) {
			c.TURN.Enabled = true
			c.TURN.SharedSecret = "check-test-secret-0123456789"
			c.TURN.ListenUDP = "127.0.0.1:0"
			c.TURN.ListenTCP = "127.0.0.1:0"
			c.TURN.RelayPorts = ""
		}, false, "verdict: TURN works on every URI"},
		{"turn off", func(c *config.Config) {}, true, "FAIL  /voip/turnServer: 404 M_NOT_FOUND"},
		{"nothing listens at the URI", func(c *config.Config) {
			c.TURN.Enabled = true
			c.TURN.SharedSecret = "check-test-secret-0123456789"
			c.TURN.URIs = []string{"turn:127.0.0.1:1?transport=tcp"}
		}, true, "verdict: TURN is broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := hstest.New(t, hstest.WithConfig(tc.cfg))
			admin := srv.Register(t, "admin")
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var out strings.Builder
			err := turn.Check(ctx, nil, srv.URL, admin.AccessToken, nil, &out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Check error = %v, want error %v\n%s", err, tc.wantErr, out.String())
			}
			if !strings.Contains(out.String(), tc.wantVerdict) {
				t.Fatalf("output lacks %q:\n%s", tc.wantVerdict, out.String())
			}
		})
	}
}
