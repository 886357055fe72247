// Package homeserver is the composition root: it builds every service from
// the configuration, mounts the HTTP routes and runs the listeners.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"praxis/clientapi"
	"praxis/clientapi/auth"
	syncapi "praxis/clientapi/sync"
	"praxis/crypto/backup"
	"praxis/crypto/keyserver"
	"praxis/crypto/todevice"
	"praxis/federation/keyring"
	"praxis/internal/admin"
	"praxis/internal/call/turn"
	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/ephemeral"
	"praxis/internal/httputil"
	"praxis/internal/media"
	"praxis/internal/metrics"
	"praxis/internal/ratelimit"
	"praxis/internal/storage"
	"praxis/internal/streams"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Server is one running Praxis node.
type Server struct {
	Config     *config.Config
	DB         *storage.DB
	SigningKey *keyring.SigningKey
	Notifier   *streams.Notifier
	Users      *users.Service
	Rooms      *roomserver.Service
	TURN       *turn.Service
	Media      *media.Service
	// Admin serves the admin API and keeps the audit log.
	Admin   *admin.Service
	Metrics *metrics.Registry
	// E2EE is the encryption state /sync reads (to-device, device lists, key counts).
	E2EE *keyserver.E2EE
	// Care is the health domain: practices, staff, coupling, contact policy.
	Care *care.Service
	// Fed is the federation side: allowlist, key ring, client, inbound
	// transactions and the outbound sender (federation.go).
	Fed *Federation

	clientMux *http.ServeMux
	fedMux    *http.ServeMux
	// adminMux is clientMux unless admin.listen gives the admin API its own listener.
	adminMux *http.ServeMux

	// background work (sender, retention, …) stops when ctx is cancelled
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	servers []*http.Server
	// drain is closed when Run begins to shut down: waiting /sync
	// long-polls answer at once instead of holding the shutdown up.
	drain chan struct{}
}

// Options tune a server for tests and benchmarks.
type Options struct {
	// BcryptCost overrides the password hashing cost (0 = default).
	BcryptCost int
	// FederationTransport replaces the network for outbound federation
	// (hstest.NewNetwork routes requests between in-process servers).
	FederationTransport http.RoundTripper
}

// New builds a server: opens and migrates the database, loads or creates
// the signing key and wires every service. It does not listen yet.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Server, error) {
	db, err := storage.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	key, created, err := keyring.LoadOrGenerate(cfg.SigningKey)
	if err != nil {
		db.Close()
		return nil, err
	}
	if created {
		slog.InfoContext(ctx, "generated signing key", "path", cfg.SigningKey, "key_id", key.KeyID)
	}
	head, err := db.StreamHead(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Server{
		Config:     cfg,
		DB:         db,
		SigningKey: key,
		Notifier:   streams.NewNotifier(head),
		Users:      users.New(db, cfg.ServerName),
		clientMux:  http.NewServeMux(),
		fedMux:     http.NewServeMux(),
	}
	if opts.BcryptCost > 0 {
		s.Users.SetBcryptCost(opts.BcryptCost)
	}
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.bgCancel = cancel
	if db.Engine() == storage.Postgres {
		// Other praxis processes on this database commit stream positions
		// too; their NOTIFYs wake our long-polls. The slow poll covers a
		// notification lost while the listener reconnects.
		db.FollowStream(bgCtx, time.Second, s.Notifier.Publish)
	}

	// Media repository: files under <data_dir>/media, retention in the
	// background until shutdown; its admin endpoints are mounted with the
	// admin API below.
	if s.Media, err = media.New(db, media.DefaultRoot(cfg.DataDir), cfg.ServerName, cfg.Media); err != nil {
		cancel()
		db.Close()
		return nil, err
	}

	// The embedded TURN relay starts here, not in Run, so that in-process
	// test servers (which never call Run) relay calls too.
	if s.TURN, err = turn.New(ctx, cfg.TURN, cfg.ServerName); err != nil {
		cancel()
		db.Close()
		return nil, err
	}

	// End-to-end encryption: deleting a device drops its keys and inbox
	// and shows up in device lists. s.E2EE is what /sync reads.
	keys := keyserver.New(db, s.Notifier, cfg.ServerName)
	inbox := todevice.New(db, s.Notifier, cfg.ServerName)
	s.Users.OnDeleteDevices(keys.DeleteDevices)
	s.Users.OnDeleteDevices(inbox.DeleteDevices)
	keys.OnDropDehydrated(inbox.DeleteDevices)
	backups := backup.New(db)
	s.Users.OnDeleteDevices(backups.DeleteDevices) // deactivation deletes backups
	s.E2EE = &keyserver.E2EE{Keys: keys, Inbox: inbox}

	api := &clientapi.API{
		Config: cfg,
		Users:  s.Users,
		TURN:   s.TURN,
	}
	// The room authority reads profiles for member events from accounts.
	s.Rooms = roomserver.New(db, s.Notifier, key, cfg)
	s.Rooms.SetProfileLookup(func(ctx context.Context, userID string) (string, string, error) {
		acc, err := s.Users.Account(ctx, userID)
		if errors.Is(err, users.ErrNotFound) {
			return "", "", roomserver.ErrUnknownUser
		}
		if err != nil {
			return "", "", err
		}
		return acc.DisplayName, acc.AvatarURL, nil
	})
	api.Rooms = s.Rooms
	// turn.staff_only: a patient gets TURN credentials while staff call them.
	s.TURN.SetCallChecker(&turn.CallPolicy{
		JoinedRooms: s.Rooms.JoinedRooms,
		Recent: func(ctx context.Context, userID, roomID string, limit int) ([][]byte, error) {
			page, err := s.Rooms.Messages(ctx, userID, roomID, roomserver.MessagesQuery{Backward: true, Limit: limit})
			if err != nil {
				return nil, err
			}
			evs := make([][]byte, len(page.Chunk))
			for i, e := range page.Chunk {
				evs[i] = e.JSON
			}
			return evs, nil
		},
		IsStaff: func(ctx context.Context, userID string) (bool, error) {
			acc, err := s.Users.Account(ctx, userID)
			if errors.Is(err, users.ErrNotFound) {
				return false, nil // remote users: only local staff are known here
			}
			if err != nil {
				return false, err
			}
			return acc.IsAdmin || acc.Kind == "staff", nil
		},
	})
	api.RoomLeaver, api.Profiles = s.Rooms, s.Rooms
	api.Keys, api.ToDevice, api.Backup = keys, inbox, backups
	api.Media = s.Media
	// sync, typing and receipts: typing notifications that lapsed while no
	// process watched them expire now; the expiry timer stops at shutdown
	eph := ephemeral.New(db, s.Notifier)
	if err := eph.Start(ctx); err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		<-bgCtx.Done()
		eph.Close()
	}()
	api.Ephemeral = eph
	api.Sync = syncapi.New(s.Rooms, eph, s.Users, s.Notifier, db.StreamHead)
	api.Sync.SetE2EE(s.E2EE)
	if cfg.Presence.Enabled {
		api.Sync.SetPresence(s.Users)
	}
	s.drain = make(chan struct{})
	api.Sync.SetDrain(s.drain)
	// accounts: account data wakes /sync; login and registration are throttled per address
	s.Users.SetNotifier(s.Notifier)
	if cfg.RateLimit.Enabled {
		api.AuthLimiter = ratelimit.New(cfg.RateLimit.PerSecond, cfg.RateLimit.Burst)
	}
	// The care domain: its contact policy sits on the room authority's
	// write path, its coupling aliases on joins (care.policy off keeps
	// coupling but drops the policy).
	s.Care = care.New(db, s.Users, s.Rooms, cfg.Care.Policy == "enforce")
	s.Rooms.SetPolicy(s.Care)
	api.Care = s.Care
	api.RegistrationCodes = s.Care
	api.Routes(s.clientMux)

	// Admin API: on the client listener, or on its own when admin.listen
	// is set (e.g. bound to loopback only). Deactivation leaves rooms.
	s.Admin = admin.New(cfg, db, s.Users, s.Rooms)
	s.Admin.SetRoomLeaver(s.Rooms)
	s.Admin.SetLimiter(api.AuthLimiter)
	s.adminMux = s.clientMux
	if cfg.Admin.Listen != "" {
		s.adminMux = http.NewServeMux()
	}
	s.Admin.Routes(s.adminMux)
	// Practices, staff and coupling codes, audited; practice admins see
	// their practice's audit entries.
	s.Admin.CareRoutes(s.adminMux, s.Care)
	s.Admin.SetPracticeScope(admin.PracticeScopeOf(s.Care))
	s.Care.SetAudit(func(ctx context.Context, tx *storage.DB, r care.AuditRecord) error {
		_, err := s.Admin.Audit().Append(ctx, tx, admin.Record{Actor: r.Actor, Action: r.Action, Target: r.Target, Params: r.Params, Practice: r.Practice})
		return err
	})
	// Media quarantine, deletion and listing: Synapse's paths, audited in
	// the same transaction as the action.
	s.Media.SetAudit(func(ctx context.Context, tx *storage.DB, actor, action, target string, params map[string]any) error {
		_, err := s.Admin.Audit().Append(ctx, tx, admin.Record{Actor: actor, Action: action, Target: target, Params: params})
		return err
	})
	s.Media.AdminRoutes(s.adminMux, func(r *http.Request) (string, bool, error) {
		dev, err := auth.Device(r, s.Users)
		if err != nil {
			return "", false, err
		}
		return dev.UserID, dev.IsAdmin, nil
	})

	// Retention deletes medical files, never the pictures that identify
	// people and rooms.
	s.Media.SetRetentionKeep(func(ctx context.Context, mxcs []string) (map[string]bool, error) {
		keep, err := s.Users.AvatarsInUse(ctx, mxcs)
		if err != nil {
			return nil, err
		}
		rooms, err := s.Rooms.RoomAvatarsInUse(ctx, mxcs)
		if err != nil {
			return nil, err
		}
		for u := range rooms {
			keep[u] = true
		}
		return keep, nil
	})
	// Retention starts only now that its keep hook is in place.
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		s.Media.RunRetention(bgCtx, time.Hour)
	}()

	// /metrics sits with the admin API and needs an admin token: counts
	// of requests and relayed bytes are operational data, not public.
	s.Metrics = metrics.New()
	s.Metrics.AddText(s.Media.WritePrometheus)
	s.Metrics.AddText(s.TURN.WritePrometheus)
	if cfg.Metrics.Enabled {
		s.adminMux.Handle("GET /metrics", s.requireAdmin(s.Metrics.Handler()))
	}

	if err := s.setupFederation(ctx, bgCtx, opts, eph); err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	s.setupFederationRooms(bgCtx, api)
	// The key endpoint is also reachable on the client listener so that a
	// node without a federation listener still publishes its key.
	s.clientMux.Handle("GET /_matrix/key/v2/server", s.fedMux)
	return s, nil
}

// ClientHandler serves the Client-Server and admin APIs.
func (s *Server) ClientHandler() http.Handler {
	return httputil.Middleware(s.Metrics.Instrument(s.clientMux), s.Config.Limits.MaxBodyBytes)
}

// AdminHandler serves the admin API when admin.listen is set; otherwise
// the admin API is part of ClientHandler.
func (s *Server) AdminHandler() http.Handler {
	return httputil.Middleware(s.Metrics.Instrument(s.adminMux), s.Config.Limits.MaxBodyBytes)
}

// FederationHandler serves the Server-Server API.
func (s *Server) FederationHandler() http.Handler {
	// a transaction may carry 50 PDUs of up to 64 KiB each plus EDUs
	return httputil.Middleware(s.Metrics.Instrument(s.fedMux), max(s.Config.Limits.MaxBodyBytes, federationMaxBody))
}

// requireAdmin lets only holders of an admin access token through.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, s.Users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if !dev.IsAdmin {
			httputil.WriteError(w, r, httputil.Forbidden("this endpoint needs an admin access token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Run listens on the configured addresses until ctx is cancelled, then
// shuts down gracefully: in-flight requests finish, the database closes.
func (s *Server) Run(ctx context.Context) error {
	type listener struct {
		name, addr string
		h          http.Handler
	}
	ls := []listener{{"client", s.Config.Listen.Client, s.ClientHandler()}}
	if s.Config.Listen.Federation != "" {
		ls = append(ls, listener{"federation", s.Config.Listen.Federation, s.FederationHandler()})
	}
	if s.Config.Admin.Listen != "" {
		ls = append(ls, listener{"admin", s.Config.Admin.Listen, s.AdminHandler()})
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			s.Close()
			return fmt.Errorf("listen %s on %s: %w", l.name, l.addr, err)
		}
		if l.name == "federation" {
			// federation is always TLS (federation.tls_cert/tls_key, or a
			// generated self-signed certificate for test set-ups)
			if ln, err = s.federationListener(ln); err != nil {
				s.Close()
				return err
			}
		}
		srv := &http.Server{Handler: l.h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		s.servers = append(s.servers, srv)
		slog.InfoContext(ctx, "listening", "api", l.name, "addr", ln.Addr().String(), "server_name", s.Config.ServerName)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", l.name, err)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	slog.Info("shutting down")
	close(s.drain)
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.Shutdown(shutCtx); err != nil {
			slog.Warn("shutdown", "err", err)
		}
	}
	return errors.Join(runErr, s.Close())
}

// Close stops background work and closes the database.
func (s *Server) Close() error {
	s.bgCancel()
	s.bgWG.Wait()
	if err := s.TURN.Close(); err != nil {
		slog.Warn("stop turn relay", "err", err)
	}
	return s.DB.Close()
}
