package turn

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/pion/turn/v5"
)

// ProbeResult is the verdict for one TURN URI.
type ProbeResult struct {
	URI string
	// RelayAddr is the relay address the server allocated.
	RelayAddr string
	// RTT is the time from sending a packet through one relay to its
	// arrival through the other.
	RTT time.Duration
	Err error
}

// Endpoint is a parsed TURN URI (RFC 7065).
type Endpoint struct {
	Secure    bool
	Host      string
	Port      string
	Transport string // "udp" or "tcp"
}

// Addr is host:port.
func (e Endpoint) Addr() string { return net.JoinHostPort(e.Host, e.Port) }

// ParseURI parses "turn:host[:port][?transport=udp|tcp]" and its turns: form.
func ParseURI(uri string) (Endpoint, error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || (scheme != "turn" && scheme != "turns") {
		return Endpoint{}, fmt.Errorf("%q: not a turn: or turns: URI", uri)
	}
	e := Endpoint{Secure: scheme == "turns", Port: "3478", Transport: "udp"}
	if e.Secure {
		e.Port, e.Transport = "5349", "tcp"
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return Endpoint{}, fmt.Errorf("%q: %w", uri, err)
		}
		if tr := q.Get("transport"); tr != "" {
			e.Transport = tr
		}
	}
	if e.Transport != "udp" && e.Transport != "tcp" || e.Secure && e.Transport != "tcp" {
		return Endpoint{}, fmt.Errorf("%q: unsupported transport %q", uri, e.Transport)
	}
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		e.Host, e.Port = h, p
	} else {
		e.Host = strings.Trim(hostport, "[]")
	}
	if e.Host == "" {
		return Endpoint{}, fmt.Errorf("%q: no host", uri)
	}
	return e, nil
}

// Dial opens a TURN client for endpoint e with the given credentials; the
// caller closes it. tlsCfg is used for turns: (nil = system roots).
func Dial(ctx context.Context, e Endpoint, username, password string, tlsCfg *tls.Config) (*turn.Client, error) {
	var conn net.PacketConn
	switch {
	case e.Transport == "udp":
		// The socket's family decides the relay's family (RFC 6156): a
		// dual-stack socket would ask an IPv4 relay for an IPv6 address.
		network := "udp4"
		if ip := net.ParseIP(e.Host); ip != nil && ip.To4() == nil {
			network = "udp6"
		}
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, network, ":0")
		if err != nil {
			return nil, err
		}
		conn = pc
	case e.Secure:
		cfg := &tls.Config{ServerName: e.Host, MinVersion: tls.VersionTLS12}
		if tlsCfg != nil {
			cfg = tlsCfg.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName = e.Host
			}
		}
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", e.Addr())
		if err != nil {
			return nil, err
		}
		conn = turn.NewSTUNConn(c)
	default:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", e.Addr())
		if err != nil {
			return nil, err
		}
		conn = turn.NewSTUNConn(c)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: e.Addr(),
		TURNServerAddr: e.Addr(),
		Conn:           conn,
		Username:       username,
		Password:       password,
		LoggerFactory:  slogFactory{},
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := client.Listen(); err != nil {
		client.Close()
		conn.Close()
		return nil, err
	}
	return client, nil
}

// Probe checks one TURN URI end to end, the way `praxisctl turn test`
// does: two clients allocate relays with the credentials, permit each
// other, and a random packet must arrive relay to relay. That covers
// authentication, allocation, permissions and the relay data path.
func Probe(ctx context.Context, uri, username, password string, tlsCfg *tls.Config) ProbeResult {
	res := ProbeResult{URI: uri}
	e, err := ParseURI(uri)
	if err != nil {
		res.Err = err
		return res
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	var (
		clients []*turn.Client
		relays  []net.PacketConn
	)
	defer func() {
		for _, r := range relays {
			r.Close()
		}
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := range 2 {
		c, err := Dial(ctx, e, username, password, tlsCfg)
		if err != nil {
			res.Err = fmt.Errorf("connect to %s: %w", e.Addr(), err)
			return res
		}
		clients = append(clients, c)
		relay, err := c.AllocateWithContext(ctx)
		if err != nil {
			res.Err = fmt.Errorf("allocate (client %d): %w", i+1, err)
			return res
		}
		relays = append(relays, relay)
	}
	res.RelayAddr = relays[0].LocalAddr().String()
	// The receiver must permit the sender's relay address first, or the
	// server drops the packet.
	if err := clients[1].CreatePermission(relays[0].LocalAddr()); err != nil {
		res.Err = fmt.Errorf("create permission: %w", err)
		return res
	}
	payload := make([]byte, 32)
	rand.Read(payload)
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := relays[1].ReadFrom(buf)
			if err != nil {
				got <- err
				return
			}
			if bytes.Equal(buf[:n], payload) {
				got <- nil
				return
			}
		}
	}()
	start := time.Now()
	// UDP may lose the first packet while the permission settles; resend.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := relays[0].WriteTo(payload, relays[1].LocalAddr()); err != nil {
			res.Err = fmt.Errorf("send through relay: %w", err)
			return res
		}
		select {
		case err := <-got:
			if err != nil {
				res.Err = fmt.Errorf("receive through relay: %w", err)
			} else {
				res.RTT = time.Since(start)
			}
			return res
		case <-ctx.Done():
			res.Err = errors.New("no packet arrived through the relay (firewall on the relay port range, or a wrong public_ip?)")
			return res
		case <-tick.C:
		}
	}
}
