package federation

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
	}{
		{"93.184.216.34", true},
		{"2a00:1450:4001:80b::200e", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.178.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},
		{"fd00::1", false},
		{"fe80::1", false},
		{"0.0.0.0", false},
		{"::ffff:127.0.0.1", false},
		{"224.0.0.1", false},
	} {
		if got := publicAddr(netip.MustParseAddr(tc.addr)); got != tc.public {
			t.Errorf("publicAddr(%s) = %v, want %v", tc.addr, got, tc.public)
		}
	}
}

// A Location part pointing at our own loopback (or any internal address)
// is not fetched by the default client.
func TestLocationToInternalAddressRefused(t *testing.T) {
	internal := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the internal server was reached: %s", r.URL)
	}))
	defer internal.Close()
	m := &Media{API: &API{ServerName: "hs1.test"}}
	_, err := m.follow(context.Background(), internal.URL+"/secret")
	if err == nil || !strings.Contains(err.Error(), "not a public address") {
		t.Fatalf("follow(%s) = %v, want a refusal to dial", internal.URL, err)
	}
}
