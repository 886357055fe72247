package config

import (
	"strings"
	"testing"
	"time"
)

func TestTURNValidate(t *testing.T) {
	const secret = "0123456789abcdef"
	embedded := func(t *TURN) {
		t.Enabled, t.SharedSecret, t.ListenUDP, t.PublicIP = true, secret, "0.0.0.0:3478", "203.0.113.7"
	}
	for _, tc := range []struct {
		name    string
		edit    func(*TURN)
		wantKey string // "" = valid
	}{
		{"off needs nothing", func(t *TURN) {}, ""},
		{"external coturn", func(t *TURN) { t.Enabled, t.SharedSecret, t.URIs = true, secret, []string{"turn:turn.example.org"} }, ""},
		{"embedded", embedded, ""},
		{"embedded on a specific IP needs no public_ip", func(t *TURN) { embedded(t); t.ListenUDP, t.PublicIP = "127.0.0.1:0", "" }, ""},
		{"embedded on all interfaces needs public_ip", func(t *TURN) { embedded(t); t.PublicIP = "" }, "turn.public_ip"},
		{"public_ip must be an IP", func(t *TURN) { embedded(t); t.PublicIP = "turn.example.org" }, "turn.public_ip"},
		{"no secret", func(t *TURN) { embedded(t); t.SharedSecret = "" }, "turn.shared_secret"},
		{"short secret", func(t *TURN) { embedded(t); t.SharedSecret = "short" }, "turn.shared_secret"},
		{"secret twice", func(t *TURN) { embedded(t); t.SharedSecretFile = "/etc/praxis/turn.secret" }, "turn.shared_secret"},
		{"enabled with neither uris nor listener", func(t *TURN) { t.Enabled, t.SharedSecret = true, secret }, "turn.uris"},
		{"uri with another scheme", func(t *TURN) { embedded(t); t.URIs = []string{"https://turn.example.org"} }, "turn.uris"},
		{"ttl too short", func(t *TURN) { embedded(t); t.TTL = time.Second }, "turn.ttl"},
		{"tls without certificate", func(t *TURN) { embedded(t); t.ListenTLS = "0.0.0.0:443" }, "turn.listen_tls"},
		{"relay ports reversed", func(t *TURN) { embedded(t); t.RelayPorts = "60000-50000" }, "turn.relay_ports"},
		{"relay ports privileged", func(t *TURN) { embedded(t); t.RelayPorts = "1-2000" }, "turn.relay_ports"},
		{"relay ports not a range", func(t *TURN) { embedded(t); t.RelayPorts = "49152" }, "turn.relay_ports"},
		{"negative quota", func(t *TURN) { embedded(t); t.UserQuota = -1 }, "turn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.edit(&c.TURN)
			c.fillDerived()
			err := c.Validate()
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "config key "+tc.wantKey) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.wantKey)
			}
		})
	}
}

func TestTURNFromEnvironment(t *testing.T) {
	c, err := Load(Flags{}, []string{
		"PRAXIS_TURN_ENABLED=true",
		"PRAXIS_TURN_SHARED_SECRET=0123456789abcdef",
		"PRAXIS_TURN_LISTEN_UDP=127.0.0.1:3478",
		"PRAXIS_TURN_RELAY_PORTS=50000-50100",
		"PRAXIS_TURN_USER_QUOTA=3",
	})
	if err != nil {
		t.Fatal(err)
	}
	lo, hi, ok, err := c.TURN.RelayPortRange()
	if !c.TURN.TURNEmbedded() || c.TURN.UserQuota != 3 || !ok || err != nil || lo != 50000 || hi != 50100 {
		t.Fatalf("turn section from env = %+v (ports %d-%d %v %v)", c.TURN, lo, hi, ok, err)
	}
}
