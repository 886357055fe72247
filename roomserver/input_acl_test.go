package roomserver_test

import (
	"testing"

	"praxis/roomserver"
)

func TestACLAllows(t *testing.T) {
	for _, tc := range []struct {
		name, content, server string
		want                  bool
	}{
		{"allow all", `{"allow":["*"]}`, "hs2.example", true},
		{"no allow list denies", `{"deny":[]}`, "hs2.example", false},
		{"deny wins", `{"allow":["*"],"deny":["evil.example"]}`, "evil.example", false},
		{"deny glob", `{"allow":["*"],"deny":["*.evil.example"]}`, "a.evil.example", false},
		{"port ignored", `{"allow":["*"],"deny":["evil.example"]}`, "evil.example:8448", false},
		{"allow glob", `{"allow":["*.health.example"]}`, "praxis.health.example", true},
		{"allow glob misses", `{"allow":["*.health.example"]}`, "health.example", false},
		{"question mark", `{"allow":["hs?.example"]}`, "hs2.example", true},
		{"ip literal allowed by default", `{"allow":["*"]}`, "10.0.0.1:8448", true},
		{"ip literal denied", `{"allow":["*"],"allow_ip_literals":false}`, "10.0.0.1:8448", false},
		{"ipv6 literal denied", `{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{"case insensitive", `{"allow":["HS2.example"]}`, "hs2.EXAMPLE", true},
		{"non-string globs ignored", `{"allow":[1, "hs2.example"]}`, "hs2.example", true},
	} {
		if got := roomserver.ACLAllows(tc.content, tc.server); got != tc.want {
			t.Errorf("%s: ACLAllows(%s, %q) = %v, want %v", tc.name, tc.content, tc.server, got, tc.want)
		}
	}
}
