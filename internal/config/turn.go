package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// RelayPortRange parses relay_ports ("min-max"); ok is false when it is
// empty (the OS picks relay ports).
func (t TURN) RelayPortRange() (min, max uint16, ok bool, err error) {
	if t.RelayPorts == "" {
		return 0, 0, false, nil
	}
	lo, hi, found := strings.Cut(t.RelayPorts, "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !found || err1 != nil || err2 != nil || a < 1024 || a > b {
		return 0, 0, false, fmt.Errorf("%q: want min-max with 1024 ≤ min ≤ max ≤ 65535", t.RelayPorts)
	}
	return uint16(a), uint16(b), true, nil
}

// validate checks the turn section; bad records one problem per key.
func (t TURN) validate(bad func(key, format string, args ...any)) {
	if !t.Enabled {
		return
	}
	switch {
	case t.SharedSecret == "" && t.SharedSecretFile == "":
		bad("turn.shared_secret", "enabled needs shared_secret or shared_secret_file")
	case t.SharedSecret != "" && t.SharedSecretFile != "":
		bad("turn.shared_secret", "set shared_secret or shared_secret_file, not both")
	case t.SharedSecret != "" && len(t.SharedSecret) < 16:
		bad("turn.shared_secret", "too short: use at least 16 random characters")
	}
	if len(t.URIs) == 0 && !t.TURNEmbedded() {
		bad("turn.uris", "enabled needs uris (external TURN) or a listen_udp/listen_tcp/listen_tls address (embedded TURN)")
	}
	for _, u := range t.URIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			bad("turn.uris", "%q: want a turn:, turns: or stun: URI", u)
		}
	}
	if t.TTL < time.Minute || t.TTL > 7*24*time.Hour {
		bad("turn.ttl", "%s: want between 1m and 168h", t.TTL)
	}
	if t.UserQuota < 0 || t.TotalQuota < 0 || t.UserBandwidthKbps < 0 {
		bad("turn", "user_quota, total_quota and user_bandwidth_kbps must not be negative")
	}
	if !t.TURNEmbedded() {
		return
	}
	if t.ListenTLS != "" && (t.TLSCert == "" || t.TLSKey == "") {
		bad("turn.listen_tls", "needs tls_cert and tls_key")
	}
	if _, _, _, err := t.RelayPortRange(); err != nil {
		bad("turn.relay_ports", "%v", err)
	}
	if t.PublicIP != "" {
		if net.ParseIP(t.PublicIP) == nil {
			bad("turn.public_ip", "%q is not an IP address", t.PublicIP)
		}
		return
	}
	for _, addr := range []string{t.ListenUDP, t.ListenTCP, t.ListenTLS} {
		if addr == "" {
			continue
		}
		host, _, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			bad("turn.public_ip", "needed when a listener (%s) is not bound to one specific IP", addr)
			return
		}
	}
}
