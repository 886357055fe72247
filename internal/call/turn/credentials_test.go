package turn

import (
	"net"
	"testing"
	"time"
)

func TestPasswordMatchesCoturnScheme(t *testing.T) {
	// The value coturn computes for static-auth-secret "north" and this
	// username: base64(HMAC-SHA1("north", "1600000000:@alice:hs1.test")),
	// from: printf %s '1600000000:@alice:hs1.test' | openssl dgst -sha1 -hmac north -binary | base64
	const want = "L0EqSHOd0GBBRY6DAtpvOvXYKRk="
	if got := Password("north", "1600000000:@alice:hs1.test"); got != want {
		t.Fatalf("Password = %q, want %q", got, want)
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in         string
		wantExpiry int64
		wantUser   string
		wantErr    bool
	}{
		{"1600000000:@alice:hs1.test", 1600000000, "@alice:hs1.test", false},
		{"1600000000:@alice:hs1.test:8448", 1600000000, "@alice:hs1.test:8448", false},
		{"1600000000", 0, "", true},
		{"1600000000:", 0, "", true},
		{"soon:@alice:hs1.test", 0, "", true},
		{"-5:@alice:hs1.test", 0, "", true},
		{"", 0, "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			exp, user, err := ParseUsername(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (exp.Unix() != tc.wantExpiry || user != tc.wantUser) {
				t.Fatalf("got (%d, %q), want (%d, %q)", exp.Unix(), user, tc.wantExpiry, tc.wantUser)
			}
		})
	}
}

func TestUsernameRoundTrips(t *testing.T) {
	exp := time.Unix(1700000000, 0)
	got, user, err := ParseUsername(Username("@bob:hs1.test", exp))
	if err != nil || !got.Equal(exp) || user != "@bob:hs1.test" {
		t.Fatalf("round trip = %v, %q, %v", got, user, err)
	}
}

func TestPeerAllowed(t *testing.T) {
	self := net.ParseIP("203.0.113.7")
	for _, tc := range []struct {
		peer         string
		allowPrivate bool
		want         bool
	}{
		{"198.51.100.20", false, true},
		{"2001:db8::1", false, true},
		{"203.0.113.7", false, true}, // our own relay address
		{"127.0.0.1", false, false},
		{"::1", false, false},
		{"10.1.2.3", false, false},
		{"172.16.0.1", false, false},
		{"192.168.1.10", false, false},
		{"169.254.169.254", false, false}, // cloud metadata
		{"100.64.0.1", false, false},
		{"0.1.2.3", false, false},
		{"fd00::1", false, false},
		{"fe80::1", false, false},
		{"::ffff:127.0.0.1", false, false},
		{"127.0.0.1", true, true},
		{"10.1.2.3", true, true},
		{"0.0.0.0", true, false},
		{"224.0.0.1", true, false},
		{"255.255.255.255", true, false},
	} {
		if got := peerAllowed(net.ParseIP(tc.peer), self, tc.allowPrivate); got != tc.want {
			t.Errorf("peerAllowed(%s, private=%v) = %v, want %v", tc.peer, tc.allowPrivate, got, tc.want)
		}
	}
}
