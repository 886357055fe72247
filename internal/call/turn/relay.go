package turn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"golang.org/x/time/rate"
)

// RelayConfig configures the embedded TURN relay.
type RelayConfig struct {
	// Secret is the TURN REST shared secret, the same one that signs the
	// credentials of /voip/turnServer.
	Secret string
	Realm  string
	// ListenUDP, ListenTCP and ListenTLS are host:port; empty = off. A
	// client on TCP or TLS still gets a UDP relay (what WebRTC asks for).
	ListenUDP, ListenTCP, ListenTLS string
	TLS                             *tls.Config
	// PublicIP is announced as the relay address.
	PublicIP net.IP
	// RelayBind is the address relay sockets bind to ("0.0.0.0" when empty).
	RelayBind string
	// MinPort and MaxPort bound relay ports; 0 lets the OS choose.
	MinPort, MaxPort uint16
	// UserQuota and TotalQuota cap concurrent allocations (0 = unlimited).
	UserQuota, TotalQuota int
	// UserBandwidth caps one user's relayed bytes per second, both directions summed (0 = unlimited).
	UserBandwidth int
	// AllowPrivatePeers permits loopback, private and link-local peers.
	AllowPrivatePeers bool
	// Now is the clock for credential expiry (time.Now when nil).
	Now func() time.Time
}

// Stats are the relay's counters, for metrics and `praxisctl turn test`.
type Stats struct {
	ActiveAllocations int64
	RelayedBytes      uint64
	// DroppedPackets were over a user's bandwidth cap.
	DroppedPackets uint64
	AuthFailures   uint64
	// DeniedPeers counts permissions refused by the peer address policy.
	DeniedPeers uint64
}

// Relay is a running embedded TURN server.
type Relay struct {
	cfg    RelayConfig
	server *turn.Server

	udpAddr, tcpAddr, tlsAddr net.Addr

	mu       sync.Mutex
	perUser  map[string]int
	limiters map[string]*rate.Limiter
	total    int

	relayedBytes   atomic.Uint64
	droppedPackets atomic.Uint64
	authFailures   atomic.Uint64
	deniedPeers    atomic.Uint64
}

// StartRelay opens the listeners and starts relaying. Close stops it.
func StartRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if cfg.Secret == "" {
		return nil, errors.New("turn relay: no shared secret")
	}
	if cfg.PublicIP == nil {
		return nil, errors.New("turn relay: no public IP")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RelayBind == "" {
		cfg.RelayBind = "0.0.0.0"
	}
	r := &Relay{cfg: cfg, perUser: map[string]int{}, limiters: map[string]*rate.Limiter{}}

	var (
		pcs     []turn.PacketConnConfig
		lcs     []turn.ListenerConfig
		closers []func() error
	)
	fail := func(err error) (*Relay, error) {
		for _, c := range closers {
			_ = c()
		}
		return nil, err
	}
	gen := r.generator()
	if cfg.ListenUDP != "" {
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, "udp", cfg.ListenUDP)
		if err != nil {
			return fail(fmt.Errorf("turn relay: listen udp %s: %w", cfg.ListenUDP, err))
		}
		closers = append(closers, pc.Close)
		r.udpAddr = pc.LocalAddr()
		pcs = append(pcs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: gen, PermissionHandler: r.permitPeer})
	}
	if cfg.ListenTCP != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.ListenTCP)
		if err != nil {
			return fail(fmt.Errorf("turn relay: listen tcp %s: %w", cfg.ListenTCP, err))
		}
		closers = append(closers, ln.Close)
		r.tcpAddr = ln.Addr()
		lcs = append(lcs, turn.ListenerConfig{Listener: ln, RelayAddressGenerator: gen, PermissionHandler: r.permitPeer})
	}
	if cfg.ListenTLS != "" {
		if cfg.TLS == nil {
			return fail(errors.New("turn relay: listen_tls without a certificate"))
		}
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", cfg.ListenTLS)
		if err != nil {
			return fail(fmt.Errorf("turn relay: listen tls %s: %w", cfg.ListenTLS, err))
		}
		closers = append(closers, ln.Close)
		r.tlsAddr = ln.Addr()
		tlsCfg := cfg.TLS.Clone()
		if tlsCfg.MinVersion < tls.VersionTLS12 {
			tlsCfg.MinVersion = tls.VersionTLS12
		}
		lcs = append(lcs, turn.ListenerConfig{Listener: tls.NewListener(ln, tlsCfg), RelayAddressGenerator: gen, PermissionHandler: r.permitPeer})
	}
	if len(pcs) == 0 && len(lcs) == 0 {
		return nil, errors.New("turn relay: no listener configured")
	}
	srv, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     slogFactory{},
		Realm:             cfg.Realm,
		AuthHandler:       r.authenticate,
		QuotaHandler:      r.underQuota,
		EventHandler: turn.EventHandler{
			OnAuth: func(_, _ net.Addr, _, _, _ string, _ string, verdict bool) {
				if !verdict {
					r.authFailures.Add(1)
				}
			},
		},
	})
	if err != nil {
		return fail(fmt.Errorf("turn relay: %w", err))
	}
	r.server = srv
	slog.InfoContext(ctx, "turn relay listening", "udp", addrString(r.udpAddr), "tcp", addrString(r.tcpAddr), "tls", addrString(r.tlsAddr), "public_ip", cfg.PublicIP.String())
	return r, nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// UDPAddr, TCPAddr and TLSAddr are the bound listener addresses (nil = off).
func (r *Relay) UDPAddr() net.Addr { return r.udpAddr }
func (r *Relay) TCPAddr() net.Addr { return r.tcpAddr }
func (r *Relay) TLSAddr() net.Addr { return r.tlsAddr }

// Stats returns the current counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	active := r.total
	r.mu.Unlock()
	return Stats{
		ActiveAllocations: int64(active),
		RelayedBytes:      r.relayedBytes.Load(),
		DroppedPackets:    r.droppedPackets.Load(),
		AuthFailures:      r.authFailures.Load(),
		DeniedPeers:       r.deniedPeers.Load(),
	}
}

// Close stops the listeners and ends every allocation.
func (r *Relay) Close() error {
	if r == nil || r.server == nil {
		return nil
	}
	return r.server.Close()
}

// authenticate is pion's AuthHandler: it checks the expiry in the username
// and returns the long-term key derived from the REST password, so a wrong
// secret fails the message-integrity check. It runs on every authenticated
// request, so an allocation cannot be refreshed past its credentials.
func (r *Relay) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	expiry, userID, err := ParseUsername(ra.Username)
	if err != nil || !r.cfg.Now().Before(expiry) {
		r.authFailures.Add(1)
		return "", nil, false
	}
	return userID, turn.GenerateAuthKey(ra.Username, ra.Realm, Password(r.cfg.Secret, ra.Username)), true
}

// underQuota is pion's QuotaHandler: false answers 486 Allocation Quota Reached.
func (r *Relay) underQuota(userID, _ string, _ net.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.quotaLeftLocked(userID)
}

func (r *Relay) quotaLeftLocked(userID string) bool {
	if r.cfg.UserQuota > 0 && r.perUser[userID] >= r.cfg.UserQuota {
		return false
	}
	return r.cfg.TotalQuota <= 0 || r.total < r.cfg.TotalQuota
}

// permitPeer is pion's PermissionHandler for CreatePermission and
// ChannelBind: the relay must not become a way into the practice network.
func (r *Relay) permitPeer(_ net.Addr, peer net.IP) bool {
	if peerAllowed(peer, r.cfg.PublicIP, r.cfg.AllowPrivatePeers) {
		return true
	}
	r.deniedPeers.Add(1)
	return false
}

// selfPortAllowed narrows the always-allowed own IP to the relay port
// range: relay to relay is what calls need, while other UDP services on
// this host (DNS, our own TURN listener) must stay out of reach.
// Without a configured range any port is allowed (tests).
func (r *Relay) selfPortAllowed(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || r.cfg.MinPort == 0 || !ua.IP.Equal(r.cfg.PublicIP) {
		return true
	}
	return ua.Port >= int(r.cfg.MinPort) && ua.Port <= int(r.cfg.MaxPort)
}

// cgnat is the shared address space of RFC 6598, private in practice.
var cgnat = net.IPNet{IP: net.IPv4(100, 64, 0, 0).To4(), Mask: net.CIDRMask(10, 32)}

// peerAllowed says whether the relay may send to peer. Our own relay IP is
// always allowed: two relay-only peers on this server talk relay to relay.
func peerAllowed(peer, self net.IP, allowPrivate bool) bool {
	if peer == nil || peer.IsUnspecified() || peer.IsMulticast() || peer.Equal(net.IPv4bcast) {
		return false
	}
	if self != nil && peer.Equal(self) {
		return true
	}
	if allowPrivate {
		return true
	}
	if v4 := peer.To4(); v4 != nil && (v4[0] == 0 || cgnat.Contains(v4)) {
		return false
	}
	return !peer.IsLoopback() && !peer.IsPrivate() && !peer.IsLinkLocalUnicast()
}

// relayGenerator wraps pion's address generators with the quotas, the
// bandwidth cap and the byte counter. TCP relays (RFC 6062) are refused:
// WebRTC relays UDP, and outgoing TCP from the relay widens the attack surface.
type relayGenerator struct {
	r    *Relay
	base turn.RelayAddressGenerator
}

func (r *Relay) generator() *relayGenerator {
	ip := r.cfg.PublicIP
	if r.cfg.MinPort != 0 {
		return &relayGenerator{r: r, base: &turn.RelayAddressGeneratorPortRange{RelayAddress: ip, Address: r.cfg.RelayBind, MinPort: r.cfg.MinPort, MaxPort: r.cfg.MaxPort, MaxRetries: 64}}
	}
	return &relayGenerator{r: r, base: &turn.RelayAddressGeneratorStatic{RelayAddress: ip, Address: r.cfg.RelayBind}}
}

func (g *relayGenerator) Validate() error { return g.base.Validate() }

var errQuota = errors.New("turn relay: allocation quota reached")

func (g *relayGenerator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	r := g.r
	// The quota handler ran before, but concurrent allocations race past
	// it; counting here, under the lock, makes the cap exact.
	r.mu.Lock()
	if !r.quotaLeftLocked(conf.UserID) {
		r.mu.Unlock()
		return nil, nil, errQuota
	}
	r.perUser[conf.UserID]++
	r.total++
	lim := r.limiters[conf.UserID]
	if lim == nil && r.cfg.UserBandwidth > 0 {
		burst := max(r.cfg.UserBandwidth, 64<<10)
		lim = rate.NewLimiter(rate.Limit(r.cfg.UserBandwidth), burst)
		r.limiters[conf.UserID] = lim
	}
	r.mu.Unlock()

	pc, addr, err := g.base.AllocatePacketConn(conf)
	if err != nil {
		r.release(conf.UserID)
		return nil, nil, err
	}
	return &relayConn{PacketConn: pc, r: r, userID: conf.UserID, limiter: lim, start: time.Now()}, addr, nil
}

func (g *relayGenerator) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errors.New("turn relay: TCP relay allocations are disabled")
}

func (g *relayGenerator) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errors.New("turn relay: TCP relay allocations are disabled")
}

func (r *Relay) release(userID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total--
	if r.perUser[userID]--; r.perUser[userID] <= 0 {
		delete(r.perUser, userID)
		delete(r.limiters, userID)
	}
}

// relayConn is one allocation's relay socket: it counts relayed bytes and
// drops packets over the user's bandwidth cap (a relay drops rather than
// queues: late media is useless, and congestion control reacts to loss).
type relayConn struct {
	net.PacketConn
	r         *Relay
	userID    string
	limiter   *rate.Limiter
	start     time.Time
	bytes     atomic.Uint64
	closeOnce sync.Once
}

func (c *relayConn) allow(n int) bool {
	if c.limiter == nil || c.limiter.AllowN(time.Now(), n) {
		c.r.relayedBytes.Add(uint64(n))
		c.bytes.Add(uint64(n))
		return true
	}
	c.r.droppedPackets.Add(1)
	return false
}

// ReadFrom carries peer → client traffic.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || c.allow(n) {
			return n, addr, err
		}
	}
}

// WriteTo carries client → peer traffic.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.r.selfPortAllowed(addr) {
		c.r.deniedPeers.Add(1)
		return len(p), nil
	}
	if !c.allow(len(p)) {
		return len(p), nil
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *relayConn) Close() error {
	c.closeOnce.Do(func() {
		c.r.release(c.userID)
		// IDs and durations only: nothing about whom the user talked to.
		slog.Info("turn allocation ended", "user_id", c.userID,
			"duration", time.Since(c.start).Round(time.Second).String(), "relayed_bytes", c.bytes.Load())
	})
	return c.PacketConn.Close()
}

// slogFactory sends pion's warnings and errors to slog as warnings and
// drops the chatter below. None of pion's errors stops the node (most are
// failed handshakes from scanners and closed peers), so none is an error
// here. pion logs no credentials at these levels.
type slogFactory struct{}

func (slogFactory) NewLogger(scope string) logging.LeveledLogger { return slogLogger{scope: scope} }

type slogLogger struct{ scope string }

func (slogLogger) Trace(string)          {}
func (slogLogger) Tracef(string, ...any) {}
func (slogLogger) Debug(string)          {}
func (slogLogger) Debugf(string, ...any) {}
func (slogLogger) Info(string)           {}
func (slogLogger) Infof(string, ...any)  {}
func (l slogLogger) Warn(msg string)     { slog.Warn(msg, "component", "turn", "scope", l.scope) }
func (l slogLogger) Warnf(f string, args ...any) {
	slog.Warn(fmt.Sprintf(f, args...), "component", "turn", "scope", l.scope)
}
func (l slogLogger) Error(msg string)             { l.Warn(msg) }
func (l slogLogger) Errorf(f string, args ...any) { l.Warnf(f, args...) }

// WritePrometheus writes the relay's counters in the Prometheus text
// exposition format, for the node's /metrics endpoint.
func (r *Relay) WritePrometheus(w io.Writer) error {
	s := r.Stats()
	_, err := fmt.Fprintf(w, `# HELP praxis_turn_allocations Active TURN relay allocations.
# TYPE praxis_turn_allocations gauge
praxis_turn_allocations %d
# HELP praxis_turn_relayed_bytes_total Bytes relayed in both directions.
# TYPE praxis_turn_relayed_bytes_total counter
praxis_turn_relayed_bytes_total %d
# HELP praxis_turn_dropped_packets_total Packets dropped over a user's bandwidth cap.
# TYPE praxis_turn_dropped_packets_total counter
praxis_turn_dropped_packets_total %d
# HELP praxis_turn_auth_failures_total Requests refused for bad or expired credentials.
# TYPE praxis_turn_auth_failures_total counter
praxis_turn_auth_failures_total %d
# HELP praxis_turn_denied_peers_total Permissions refused by the peer address policy.
# TYPE praxis_turn_denied_peers_total counter
praxis_turn_denied_peers_total %d
`, s.ActiveAllocations, s.RelayedBytes, s.DroppedPackets, s.AuthFailures, s.DeniedPeers)
	return err
}
