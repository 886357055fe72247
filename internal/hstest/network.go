package hstest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"praxis/internal/config"
	"praxis/internal/homeserver"
	"praxis/internal/storage/storagetest"
)

// Network is a set of full in-process homeservers that federate with each
// other: each has its own database, client and federation listener, and
// their federation clients reach each other through an in-memory
// RoundTripper keyed by server name. Keys, X-Matrix signatures, joins and
// transactions all run for real.
type Network struct {
	mu      sync.Mutex
	servers map[string]*Server
	fedURL  map[string]*url.URL
	down    map[string]bool
	order   []string
}

// NewNetwork starts one server per name (e.g. "hs1.test", "hs2.test"), on
// SQLite, each allowing all the others.
func NewNetwork(t testing.TB, names ...string) *Network {
	t.Helper()
	return NewNetworkWith(t, names)
}

// NewNetworkWith is NewNetwork with options applied to every server (the
// allowlist is set before the options run, so an option may narrow it).
func NewNetworkWith(t testing.TB, names []string, opts ...Option) *Network {
	t.Helper()
	n := &Network{servers: map[string]*Server{}, fedURL: map[string]*url.URL{}, down: map[string]bool{}}
	for _, name := range names {
		n.Add(t, name, names, opts...)
	}
	return n
}

// Add starts another server named name that allows the given partners.
func (n *Network) Add(t testing.TB, name string, partners []string, opts ...Option) *Server {
	t.Helper()
	cfg := config.Defaults()
	cfg.ServerName = name
	cfg.DataDir = t.TempDir()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Registration.Open = true
	cfg.RateLimit.Enabled = false
	cfg.Log.Level = "warn"
	cfg.Care.Policy = "off"
	cfg.Federation.AllowedServers = nil
	for _, p := range partners {
		if p != name {
			cfg.Federation.AllowedServers = append(cfg.Federation.AllowedServers, p)
		}
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Database == "" {
		cfg.Database = "sqlite:" + cfg.DataDir + "/praxis.db"
	}
	if cfg.SigningKey == "" {
		cfg.SigningKey = cfg.DataDir + "/signing.key"
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("hstest config for %s: %v", name, err)
	}
	srv, err := homeserver.New(context.Background(), &cfg, homeserver.Options{BcryptCost: bcrypt.MinCost, FederationTransport: n})
	if err != nil {
		t.Fatalf("start homeserver %s: %v", name, err)
	}
	cs := httptest.NewServer(srv.ClientHandler())
	fs := httptest.NewServer(srv.FederationHandler())
	srv.Config.PublicBaseURL = cs.URL
	u, _ := url.Parse(fs.URL)
	n.mu.Lock()
	s := &Server{Server: srv, URL: cs.URL, HTTP: cs}
	n.servers[name] = s
	n.fedURL[name] = u
	n.order = append(n.order, name)
	n.mu.Unlock()
	t.Cleanup(func() {
		n.mu.Lock()
		n.down[name] = true
		n.mu.Unlock()
		cs.Close()
		fs.Close()
		srv.Close()
	})
	return s
}

// Server returns the server named name.
func (n *Network) Server(name string) *Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.servers[name]
	if !ok {
		panic("hstest: no server " + name + " in the network")
	}
	return s
}

// SetDown makes name unreachable (true) or reachable again (false) for
// the other servers' federation clients: the partner-goes-offline case.
func (n *Network) SetDown(name string, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[name] = down
}

// RoundTrip implements http.RoundTripper for matrix://<server name>/…
// URLs: the request goes to that server's federation listener.
func (n *Network) RoundTrip(r *http.Request) (*http.Response, error) {
	n.mu.Lock()
	target, ok := n.fedURL[r.URL.Host]
	down := n.down[r.URL.Host]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("hstest network: no server named %q", r.URL.Host)
	}
	if down {
		return nil, fmt.Errorf("hstest network: %s is down", r.URL.Host)
	}
	req := r.Clone(r.Context())
	req.URL.Scheme = target.Scheme
	req.URL.Host = target.Host
	req.Host = r.URL.Host
	return http.DefaultTransport.RoundTrip(req)
}

// EachNetwork runs fn against a fresh network on every engine (each
// server with its own database: SQLite, and PostgreSQL when
// PRAXIS_TEST_POSTGRES is set).
func EachNetwork(t *testing.T, names []string, fn func(t *testing.T, n *Network)) {
	t.Helper()
	for engine, dsn := range storagetest.Engines(t) {
		t.Run(engine, func(t *testing.T) {
			n := &Network{servers: map[string]*Server{}, fedURL: map[string]*url.URL{}, down: map[string]bool{}}
			for _, name := range names {
				n.Add(t, name, names, WithDatabase(dsn(t)))
			}
			fn(t, n)
		})
	}
}
