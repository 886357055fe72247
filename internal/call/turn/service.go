package turn

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"praxis/internal/config"
	"praxis/internal/httputil"
)

// Caller is who asks for credentials.
type Caller struct {
	UserID string
	// Staff is true for practice staff and server admins.
	Staff bool
}

// CallChecker tells whether a user is in an active call with staff; the
// staff_only policy asks it before handing credentials to a patient.
type CallChecker interface {
	InCallWithStaff(ctx context.Context, userID string) (bool, error)
}

// Service hands out credentials and owns the embedded relay, if any.
type Service struct {
	cfg    config.TURN
	secret string
	uris   []string
	relay  *Relay
	now    func() time.Time
	calls  CallChecker
}

// New builds the service from the turn config section and, when listeners
// are configured, starts the embedded relay. serverName supplies the
// default realm and the host of derived turns: URIs.
func New(ctx context.Context, cfg config.TURN, serverName string) (*Service, error) {
	s := &Service{cfg: cfg, now: time.Now}
	if !cfg.Enabled {
		return s, nil
	}
	s.secret = cfg.SharedSecret
	if cfg.SharedSecretFile != "" {
		b, err := os.ReadFile(cfg.SharedSecretFile)
		if err != nil {
			return nil, fmt.Errorf("turn.shared_secret_file: %w", err)
		}
		s.secret = strings.TrimSpace(string(b))
		if len(s.secret) < 16 {
			return nil, fmt.Errorf("turn.shared_secret_file %s: secret too short (at least 16 characters)", cfg.SharedSecretFile)
		}
	}
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	realm := cfg.Realm
	if realm == "" {
		realm = host
	}
	s.uris = cfg.URIs
	if !cfg.TURNEmbedded() {
		return s, nil
	}
	rc, err := relayConfig(cfg, s.secret, realm)
	if err != nil {
		return nil, err
	}
	relay, err := StartRelay(ctx, rc)
	if err != nil {
		return nil, err
	}
	s.relay = relay
	if len(s.uris) == 0 {
		s.uris = derivedURIs(relay, rc.PublicIP, realm)
	}
	return s, nil
}

func relayConfig(cfg config.TURN, secret, realm string) (RelayConfig, error) {
	rc := RelayConfig{
		Secret:            secret,
		Realm:             realm,
		ListenUDP:         cfg.ListenUDP,
		ListenTCP:         cfg.ListenTCP,
		ListenTLS:         cfg.ListenTLS,
		UserQuota:         cfg.UserQuota,
		TotalQuota:        cfg.TotalQuota,
		UserBandwidth:     cfg.UserBandwidthKbps * 1000 / 8,
		AllowPrivatePeers: cfg.AllowPrivatePeers,
	}
	lo, hi, ok, err := cfg.RelayPortRange()
	if err != nil {
		return rc, fmt.Errorf("turn.relay_ports: %w", err)
	}
	if ok {
		rc.MinPort, rc.MaxPort = lo, hi
	}
	// Relay sockets bind where the listeners bind: a relay on loopback in
	// tests, on all interfaces in production.
	rc.RelayBind = "0.0.0.0"
	for _, addr := range []string{cfg.ListenUDP, cfg.ListenTCP, cfg.ListenTLS} {
		if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
			if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
				rc.RelayBind = h
			}
			if rc.PublicIP == nil {
				rc.PublicIP = net.ParseIP(h)
			}
			break
		}
	}
	if cfg.PublicIP != "" {
		rc.PublicIP = net.ParseIP(cfg.PublicIP)
	}
	if rc.PublicIP == nil || rc.PublicIP.IsUnspecified() {
		return rc, fmt.Errorf("turn.public_ip: needed when the listeners bind all interfaces")
	}
	if cfg.ListenTLS != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return rc, fmt.Errorf("turn.tls_cert/tls_key: %w", err)
		}
		rc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return rc, nil
}

// derivedURIs name the embedded relay's listeners: turn: by IP for UDP and
// TCP, turns: by host name because TLS verifies a name, not an address.
func derivedURIs(r *Relay, publicIP net.IP, tlsHost string) []string {
	var uris []string
	port := func(a net.Addr) string {
		_, p, _ := net.SplitHostPort(a.String())
		return p
	}
	ip := publicIP.String()
	if r.UDPAddr() != nil {
		uris = append(uris, "turn:"+net.JoinHostPort(ip, port(r.UDPAddr()))+"?transport=udp")
	}
	if r.TCPAddr() != nil {
		uris = append(uris, "turn:"+net.JoinHostPort(ip, port(r.TCPAddr()))+"?transport=tcp")
	}
	if r.TLSAddr() != nil {
		uris = append(uris, "turns:"+net.JoinHostPort(tlsHost, port(r.TLSAddr()))+"?transport=tcp")
	}
	return uris
}

// SetCallChecker wires the staff_only exception for patients in a call.
func (s *Service) SetCallChecker(c CallChecker) { s.calls = c }

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Relay is the embedded relay, nil when TURN is external or off.
func (s *Service) Relay() *Relay { return s.relay }

// URIs are the TURN URIs handed to clients.
func (s *Service) URIs() []string { return s.uris }

// Credentials issues time-limited TURN credentials for the caller.
// Without TURN the answer is 404 M_NOT_FOUND, as MSC4166 specifies, so a
// client falls back to direct ICE instead of retrying.
func (s *Service) Credentials(ctx context.Context, c Caller) (*Credentials, error) {
	if !s.cfg.Enabled {
		return nil, httputil.NotFound("TURN is not configured on this server")
	}
	if s.cfg.StaffOnly && !c.Staff {
		ok := false
		if s.calls != nil {
			var err error
			if ok, err = s.calls.InCallWithStaff(ctx, c.UserID); err != nil {
				return nil, fmt.Errorf("check active call of %s: %w", c.UserID, err)
			}
		}
		if !ok {
			return nil, httputil.Forbidden("TURN credentials are for staff; patients receive them during a call with staff")
		}
	}
	ttl := s.cfg.TTL
	user := Username(c.UserID, s.now().Add(ttl))
	return &Credentials{
		Username: user,
		Password: Password(s.secret, user),
		URIs:     s.uris,
		TTL:      int64(ttl / time.Second),
	}, nil
}

// WritePrometheus writes the embedded relay's metrics; nothing when TURN
// is external or off.
func (s *Service) WritePrometheus(w io.Writer) error {
	if s.relay == nil {
		return nil
	}
	return s.relay.WritePrometheus(w)
}

// Close stops the embedded relay.
func (s *Service) Close() error {
	if s == nil {
		return nil
	}
	return s.relay.Close()
}
