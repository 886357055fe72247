package turn

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"praxis/internal/config"
	"praxis/internal/httputil"
)

func TestServiceOffAnswersNotFound(t *testing.T) {
	s, err := New(t.Context(), config.Defaults().TURN, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Credentials(t.Context(), Caller{UserID: "@alice:hs1.test", Staff: true})
	var herr *httputil.Error
	if !errors.As(err, &herr) || herr.ErrCode != "M_NOT_FOUND" || herr.Status != 404 {
		t.Fatalf("Credentials with TURN off = %v, want 404 M_NOT_FOUND", err)
	}
	if s.Relay() != nil || s.Close() != nil {
		t.Fatal("no relay should run when TURN is off")
	}
}

func TestServiceSecretFileAndClock(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(file, []byte("from-a-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults().TURN
	cfg.Enabled, cfg.SharedSecretFile, cfg.URIs, cfg.TTL = true, file, []string{"turn:turn.example.org"}, 10*time.Minute
	s, err := New(t.Context(), cfg, "hs1.test:8448")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	s.SetClock(func() time.Time { return now })
	c, err := s.Credentials(t.Context(), Caller{UserID: "@alice:hs1.test:8448"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1800000600:@alice:hs1.test:8448"; c.Username != want {
		t.Errorf("username %q, want %q", c.Username, want)
	}
	if c.Password != Password("from-a-file-0123456789", c.Username) {
		t.Error("password is not signed with the trimmed secret from the file")
	}
	if c.TTL != 600 {
		t.Errorf("ttl %d, want 600", c.TTL)
	}

	if err := os.WriteFile(file, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(t.Context(), cfg, "hs1.test"); err == nil {
		t.Error("a too short secret file was accepted")
	}
	cfg.SharedSecretFile = filepath.Join(dir, "missing")
	if _, err := New(t.Context(), cfg, "hs1.test"); err == nil {
		t.Error("a missing secret file was accepted")
	}
}

func TestDerivedURIs(t *testing.T) {
	r := &Relay{
		udpAddr: &net.UDPAddr{IP: net.IPv6zero, Port: 3478},
		tcpAddr: &net.TCPAddr{IP: net.IPv6zero, Port: 3478},
		tlsAddr: &net.TCPAddr{IP: net.IPv6zero, Port: 443},
	}
	got := derivedURIs(r, net.ParseIP("2001:db8::7"), "turn.praxis.example")
	want := []string{
		"turn:[2001:db8::7]:3478?transport=udp",
		"turn:[2001:db8::7]:3478?transport=tcp",
		"turns:turn.praxis.example:443?transport=tcp",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("derivedURIs = %q, want %q", got, want)
	}
	for _, u := range got {
		if _, err := ParseURI(u); err != nil {
			t.Errorf("derived URI does not parse: %v", err)
		}
	}
}

func TestServiceMetricsWithoutRelay(t *testing.T) {
	s, err := New(t.Context(), config.Defaults().TURN, "hs1.test")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := s.WritePrometheus(&b); err != nil || b.Len() != 0 {
		t.Fatalf("WritePrometheus without relay = %q, %v; want nothing", b.String(), err)
	}
}
