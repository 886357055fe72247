// Package hstest starts real Praxis homeservers in-process for tests: the
// full server behind httptest, on SQLite (or PostgreSQL), with helpers that
// register users and hand back mautrix clients.
package hstest

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/homeserver"
	"praxis/internal/storage/storagetest"
)

// Server is a running test homeserver.
type Server struct {
	*homeserver.Server
	URL  string
	HTTP *httptest.Server
}

// Option adjusts the configuration before the server starts.
type Option func(*config.Config)

// WithDatabase runs the server on dsn instead of a fresh SQLite file.
func WithDatabase(dsn string) Option { return func(c *config.Config) { c.Database = dsn } }

// WithConfig applies fn to the config.
func WithConfig(fn func(*config.Config)) Option { return Option(fn) }

// New starts a homeserver named "hs1.test" on a fresh SQLite database.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := config.Defaults()
	cfg.ServerName = "hs1.test"
	cfg.DataDir = t.TempDir()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Registration.Open = true
	cfg.RateLimit.Enabled = false
	cfg.Log.Level = "warn"
	// Plain Matrix unless a test opts into the health rules
	// (WithConfig(func(c) { c.Care.Policy = "enforce" })).
	cfg.Care.Policy = "off"
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
		t.Fatalf("hstest config: %v", err)
	}
	srv, err := homeserver.New(context.Background(), &cfg, homeserver.Options{BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatalf("start homeserver: %v", err)
	}
	ts := httptest.NewServer(srv.ClientHandler())
	srv.Config.PublicBaseURL = ts.URL
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return &Server{Server: srv, URL: ts.URL, HTTP: ts}
}

// Each runs fn against a fresh server on every engine (SQLite, and
// PostgreSQL when PRAXIS_TEST_POSTGRES is set).
func Each(t *testing.T, fn func(t *testing.T, srv *Server), opts ...Option) {
	t.Helper()
	for name, dsn := range storagetest.Engines(t) {
		t.Run(name, func(t *testing.T) {
			o := append([]Option{WithDatabase(dsn(t))}, opts...)
			fn(t, New(t, o...))
		})
	}
	if os.Getenv(storagetest.EnvPostgres) == "" {
		t.Logf("postgres variant skipped: %s not set", storagetest.EnvPostgres)
	}
}

// Register creates an account directly through the users service and
// returns a client logged in as it with a fresh device.
func (s *Server) Register(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Users.CreateAccount(ctx, localpart, "password-"+localpart, false, "user"); err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	return s.Login(t, localpart)
}

// Login opens a new session (device) for an existing local user.
func (s *Server) Login(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	sess, err := s.Users.CreateSession(context.Background(), s.Users.UserID(localpart), "", "hstest", "127.0.0.1", false)
	if err != nil {
		t.Fatalf("login %s: %v", localpart, err)
	}
	return s.Client(t, sess.UserID, sess.DeviceID, sess.AccessToken)
}

// Client returns a mautrix client for an existing session.
func (s *Server) Client(t testing.TB, userID, deviceID, token string) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, id.UserID(userID), token)
	if err != nil {
		t.Fatalf("mautrix client: %v", err)
	}
	c.DeviceID = id.DeviceID(deviceID)
	return c
}

// ErrCode extracts the Matrix errcode from a mautrix error ("" if none).
func ErrCode(err error) string {
	if err == nil {
		return ""
	}
	var httpErr mautrix.HTTPError
	if ok := asHTTPError(err, &httpErr); ok && httpErr.RespError != nil {
		return httpErr.RespError.ErrCode
	}
	s := err.Error()
	if i := strings.Index(s, "M_"); i >= 0 {
		end := i
		for end < len(s) && (s[end] == '_' || (s[end] >= 'A' && s[end] <= 'Z')) {
			end++
		}
		return s[i:end]
	}
	return ""
}
