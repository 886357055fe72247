package federation

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/federation/keyring"
	"praxis/internal/config"
)

// ErrNotAllowed is returned for an outbound request to a server that is
// not on the partner allowlist. Nothing is sent.
var ErrNotAllowed = errors.New("destination is not on the federation allowlist")

// NewClient returns the outbound federation client: requests are signed
// with key (X-Matrix), go only to allowlisted servers, and travel over
// transport — nil means the real network (server discovery, TLS with the
// system roots plus federation.trusted_ca_file).
func NewClient(cfg config.Federation, serverName string, key *keyring.SigningKey, allow *Allowlist, transport http.RoundTripper) (fclient.FederationClient, error) {
	if transport == nil {
		t, err := newNetworkTransport(cfg)
		if err != nil {
			return nil, err
		}
		transport = t
	}
	id := &fclient.SigningIdentity{
		ServerName: spec.ServerName(serverName),
		KeyID:      gomatrixserverlib.KeyID(key.KeyID),
		PrivateKey: key.PrivateKey,
	}
	return fclient.NewFederationClient([]*fclient.SigningIdentity{id},
		fclient.WithTransport(&allowTransport{next: transport, allow: allow}),
		fclient.WithTimeout(30*time.Second),
		fclient.WithUserAgent("Praxis/"+Version),
	), nil
}

// allowTransport refuses every request to a server that is not allowed:
// the one choke point all outbound federation traffic passes.
type allowTransport struct {
	next  http.RoundTripper
	allow *Allowlist
}

func (t *allowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.allow.Allowed(r.URL.Host) {
		if r.Body != nil {
			r.Body.Close()
		}
		slog.WarnContext(r.Context(), "outbound federation request refused: destination not allowed", "destination", r.URL.Host)
		return nil, fmt.Errorf("%s: %w", r.URL.Host, ErrNotAllowed)
	}
	return t.next.RoundTrip(r)
}

// networkTransport resolves matrix:// URLs (well-known, SRV, port 8448)
// and speaks HTTPS with our trust settings.
type networkTransport struct {
	tlsConf *tls.Config
	mu      sync.Mutex
	byName  map[string]*http.Transport // TLS server name → transport
}

func newNetworkTransport(cfg config.Federation) (*networkTransport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if cfg.TrustedCAFile != "" {
		pem, err := os.ReadFile(cfg.TrustedCAFile)
		if err != nil {
			return nil, fmt.Errorf("federation.trusted_ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation.trusted_ca_file %s: no PEM certificates found", cfg.TrustedCAFile)
		}
	}
	if cfg.InsecureSkipVerify {
		slog.Warn("federation.insecure_skip_verify is on: partner TLS certificates are NOT checked — test networks only")
	}
	return &networkTransport{
		tlsConf: &tls.Config{RootCAs: roots, InsecureSkipVerify: cfg.InsecureSkipVerify, MinVersion: tls.VersionTLS12},
		byName:  map[string]*http.Transport{},
	}, nil
}

func (t *networkTransport) transport(tlsName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.byName[tlsName]; ok {
		return tr
	}
	conf := t.tlsConf.Clone()
	conf.ServerName = tlsName
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     conf,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	t.byName[tlsName] = tr
	return tr
}

func (t *networkTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "matrix" {
		return t.transport(r.URL.Hostname()).RoundTrip(r)
	}
	results, err := fclient.ResolveServer(r.Context(), spec.ServerName(r.URL.Host))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", r.URL.Host, err)
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", r.URL.Host)
	}
	var lastErr error
	for _, res := range results {
		req := r.Clone(r.Context())
		req.URL.Scheme = "https"
		req.URL.Host = res.Destination
		req.Host = string(res.Host)
		if r.GetBody != nil {
			if req.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		resp, err := t.transport(res.TLSServerName).RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	return nil, lastErr
}
