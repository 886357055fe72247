package turn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef-test-secret"

// startRelay runs a relay on loopback with every listener; the announced
// public IP is 127.0.0.1, so relay-to-relay traffic stays allowed while
// other loopback peers (127.0.0.2) count as private.
func startRelay(t testing.TB, edit func(*RelayConfig)) (*Relay, *tls.Config) {
	t.Helper()
	serverTLS, clientTLS := selfSigned(t, "turn.hs1.test")
	cfg := RelayConfig{
		Secret:    testSecret,
		Realm:     "hs1.test",
		ListenUDP: "127.0.0.1:0",
		ListenTCP: "127.0.0.1:0",
		ListenTLS: "127.0.0.1:0",
		TLS:       serverTLS,
		PublicIP:  net.ParseIP("127.0.0.1"),
		RelayBind: "127.0.0.1",
		UserQuota: 10,
	}
	if edit != nil {
		edit(&cfg)
	}
	r, err := StartRelay(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartRelay: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, clientTLS
}

func udpURI(r *Relay) string { return "turn:" + r.UDPAddr().String() + "?transport=udp" }

func creds(userID string, expiry time.Time) (string, string) {
	u := Username(userID, expiry)
	return u, Password(testSecret, u)
}

// allocate dials and allocates once; the returned error is the allocation's.
func allocate(t *testing.T, uri, user, pass string, tlsCfg *tls.Config) (net.PacketConn, error) {
	t.Helper()
	e, err := ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, e, user, pass, tlsCfg)
	if err != nil {
		t.Fatalf("dial %s: %v", uri, err)
	}
	t.Cleanup(c.Close)
	relay, err := c.AllocateWithContext(ctx)
	if err == nil {
		t.Cleanup(func() { relay.Close() })
	}
	return relay, err
}

func TestRelayAuthentication(t *testing.T) {
	r, _ := startRelay(t, nil)
	future := time.Now().Add(time.Hour)
	user, pass := creds("@alice:hs1.test", future)
	for _, tc := range []struct {
		name       string
		user, pass string
		wantOK     bool
	}{
		{"valid credentials", user, pass, true},
		{"wrong password", user, Password("another-secret-of-16+", user), false},
		{"expired username", Username("@alice:hs1.test", time.Now().Add(-time.Minute)), Password(testSecret, Username("@alice:hs1.test", time.Now().Add(-time.Minute))), false},
		{"username without expiry", "@alice:hs1.test", Password(testSecret, "@alice:hs1.test"), false},
		{"expiry tampered after signing", Username("@alice:hs1.test", future.Add(24*time.Hour)), pass, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := allocate(t, udpURI(r), tc.user, tc.pass, nil)
			if (err == nil) != tc.wantOK {
				t.Fatalf("allocate error = %v, want success %v", err, tc.wantOK)
			}
		})
	}
	if got := r.Stats().AuthFailures; got == 0 {
		t.Errorf("AuthFailures = 0 after refused requests")
	}
}

func TestRelayEveryTransportRelays(t *testing.T) {
	r, clientTLS := startRelay(t, nil)
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	for _, uri := range []string{
		udpURI(r),
		"turn:" + r.TCPAddr().String() + "?transport=tcp",
		"turns:" + r.TLSAddr().String() + "?transport=tcp",
	} {
		t.Run(strings.SplitN(uri, ":", 2)[0]+"/"+uri[strings.LastIndex(uri, "=")+1:], func(t *testing.T) {
			res := Probe(t.Context(), uri, user, pass, clientTLS)
			if res.Err != nil {
				t.Fatalf("Probe(%s): %v", uri, res.Err)
			}
			if !strings.HasPrefix(res.RelayAddr, "127.0.0.1:") {
				t.Errorf("relay address %s, want the public IP 127.0.0.1", res.RelayAddr)
			}
		})
	}
	if s := r.Stats(); s.RelayedBytes == 0 {
		t.Errorf("RelayedBytes = 0 after three probes")
	}
}

func TestRelayTLSRefusesUntrustedCertificate(t *testing.T) {
	r, _ := startRelay(t, nil)
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	e, _ := ParseURI("turns:" + r.TLSAddr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if c, err := Dial(ctx, e, user, pass, &tls.Config{ServerName: "turn.hs1.test"}); err == nil {
		c.Close()
		t.Fatal("TLS dial with system roots succeeded against a self-signed certificate")
	}
}

func TestRelayUserQuota(t *testing.T) {
	r, _ := startRelay(t, func(c *RelayConfig) { c.UserQuota = 2 })
	alice, alicePass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	for i := range 2 {
		if _, err := allocate(t, udpURI(r), alice, alicePass, nil); err != nil {
			t.Fatalf("allocation %d within quota: %v", i+1, err)
		}
	}
	_, err := allocate(t, udpURI(r), alice, alicePass, nil)
	if err == nil || !strings.Contains(err.Error(), "486") {
		t.Fatalf("third allocation: err = %v, want 486 Allocation Quota Reached", err)
	}
	// Fresh credentials for the same user share the quota.
	again, againPass := creds("@alice:hs1.test", time.Now().Add(2*time.Hour))
	if _, err := allocate(t, udpURI(r), again, againPass, nil); err == nil {
		t.Fatal("new credentials bypassed the per-user quota")
	}
	bob, bobPass := creds("@bob:hs1.test", time.Now().Add(time.Hour))
	if _, err := allocate(t, udpURI(r), bob, bobPass, nil); err != nil {
		t.Fatalf("another user is not limited by alice's quota: %v", err)
	}
	if got := r.Stats().ActiveAllocations; got != 3 {
		t.Errorf("ActiveAllocations = %d, want 3", got)
	}
}

func TestRelayTotalQuota(t *testing.T) {
	r, _ := startRelay(t, func(c *RelayConfig) { c.TotalQuota = 1 })
	a, ap := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	b, bp := creds("@bob:hs1.test", time.Now().Add(time.Hour))
	if _, err := allocate(t, udpURI(r), a, ap, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := allocate(t, udpURI(r), b, bp, nil); err == nil {
		t.Fatal("allocation beyond total_quota succeeded")
	}
}

func TestRelayQuotaFreedOnClose(t *testing.T) {
	r, _ := startRelay(t, func(c *RelayConfig) { c.UserQuota = 1 })
	a, ap := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	relay, err := allocate(t, udpURI(r), a, ap, nil)
	if err != nil {
		t.Fatal(err)
	}
	relay.Close() // sends a Refresh with lifetime 0: the server deletes the allocation
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().ActiveAllocations != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("ActiveAllocations = %d after close, want 0", r.Stats().ActiveAllocations)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := allocate(t, udpURI(r), a, ap, nil); err != nil {
		t.Fatalf("allocation after the previous one closed: %v", err)
	}
}

func TestRelayRefusesPrivatePeers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		allowPrivate bool
		wantErr      bool
	}{
		{"private peer refused by default", false, true},
		{"private peer allowed when configured", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := startRelay(t, func(c *RelayConfig) { c.AllowPrivatePeers = tc.allowPrivate })
			e, _ := ParseURI(udpURI(r))
			user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
			c, err := Dial(t.Context(), e, user, pass, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			relay, err := c.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			// 127.0.0.2 is loopback but not the relay's own address.
			err = c.CreatePermission(&net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: 9})
			if (err != nil) != tc.wantErr {
				t.Fatalf("CreatePermission(127.0.0.2) error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && r.Stats().DeniedPeers == 0 {
				t.Error("DeniedPeers not counted")
			}
		})
	}
}

func TestRelayBandwidthCap(t *testing.T) {
	// 64 KiB/s with the minimum burst of 64 KiB: 1000 packets of 1000
	// bytes sent as fast as possible must lose most of them.
	r, _ := startRelay(t, func(c *RelayConfig) { c.UserBandwidth = 64 << 10 })
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	sender, err := allocate(t, udpURI(r), user, pass, nil)
	if err != nil {
		t.Fatal(err)
	}
	var lc net.ListenConfig
	peer, err := lc.ListenPacket(t.Context(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	payload := make([]byte, 1000)
	start := time.Now()
	for range 1000 {
		if _, err := sender.WriteTo(payload, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	received := 0
	buf := make([]byte, 1500)
	for {
		peer.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if _, _, err := peer.ReadFrom(buf); err != nil {
			break
		}
		received++
	}
	// The cap lets through the burst plus the rate over the elapsed time
	// (which a slow, race-instrumented machine stretches).
	limit := int((64<<10)*(1+time.Since(start).Seconds())/1000) + 5
	if received == 0 || received > limit {
		t.Fatalf("peer received %d of 1000 packets, want some but at most %d", received, limit)
	}
	if r.Stats().DroppedPackets == 0 {
		t.Error("DroppedPackets = 0")
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Endpoint
		wantErr bool
	}{
		{"turn:turn.example.org", Endpoint{Host: "turn.example.org", Port: "3478", Transport: "udp"}, false},
		{"turn:203.0.113.7:3478?transport=tcp", Endpoint{Host: "203.0.113.7", Port: "3478", Transport: "tcp"}, false},
		{"turns:turn.example.org:443?transport=tcp", Endpoint{Secure: true, Host: "turn.example.org", Port: "443", Transport: "tcp"}, false},
		{"turns:turn.example.org", Endpoint{Secure: true, Host: "turn.example.org", Port: "5349", Transport: "tcp"}, false},
		{"turn:[2001:db8::1]:3478", Endpoint{Host: "2001:db8::1", Port: "3478", Transport: "udp"}, false},
		{"turns:turn.example.org?transport=udp", Endpoint{}, true},
		{"stun:stun.example.org", Endpoint{}, true},
		{"turn:", Endpoint{}, true},
	} {
		got, err := ParseURI(tc.in)
		if (err != nil) != tc.wantErr || err == nil && got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// selfSigned returns a server TLS config for host and a client config that
// trusts exactly that certificate.
func selfSigned(t testing.TB, host string) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	return server, client
}

func TestRelayPrometheusText(t *testing.T) {
	r, _ := startRelay(t, nil)
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	if _, err := allocate(t, udpURI(r), user, pass, nil); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\npraxis_turn_allocations 1\n", "\npraxis_turn_relayed_bytes_total 0\n", "# TYPE praxis_turn_denied_peers_total counter\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRelayPortRange(t *testing.T) {
	r, _ := startRelay(t, func(c *RelayConfig) { c.MinPort, c.MaxPort = 47000, 47999 })
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	for range 3 {
		relay, err := allocate(t, udpURI(r), user, pass, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := relay.LocalAddr().(*net.UDPAddr).Port; p < 47000 || p > 47999 {
			t.Fatalf("relay port %d outside relay_ports 47000-47999", p)
		}
	}
}

func TestRelayOwnIPOnlyInRelayPortRange(t *testing.T) {
	r, _ := startRelay(t, func(c *RelayConfig) { c.MinPort, c.MaxPort = 47000, 47999 })
	user, pass := creds("@alice:hs1.test", time.Now().Add(time.Hour))
	sender, err := allocate(t, udpURI(r), user, pass, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A UDP service on the relay's own IP outside the relay port range:
	// the TURN listener itself stands in for DNS or anything else.
	var lc net.ListenConfig
	svc, err := lc.ListenPacket(t.Context(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for range 5 {
		if _, err := sender.WriteTo([]byte("probe"), svc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	svc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := svc.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatal("the relay delivered to a port of its own IP outside relay_ports")
	}
	if r.Stats().DeniedPeers == 0 {
		t.Error("DeniedPeers not counted")
	}
}
