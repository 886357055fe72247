package homeserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/clientapi/auth"
	"praxis/federation"
	"praxis/federation/keyring"
	"praxis/federation/sender"
	"praxis/federation/txn"
	"praxis/internal/admin"
	"praxis/internal/ephemeral"
	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// federationMaxBody bounds federation request bodies: 50 PDUs of 64 KiB
// and 100 EDUs fit.
const federationMaxBody = 8 << 20

// Federation is the federation side of a node.
type Federation struct {
	API    *federation.API
	Allow  *federation.Allowlist
	Client fclient.FederationClient
	Keys   *keyring.Store
	Ring   *gomatrixserverlib.KeyRing
	// Txn processes inbound transactions; other areas register their EDU
	// handlers on it (Txn.HandleEDU).
	Txn *txn.Processor
	// Sender delivers our events and queued EDUs (Sender.QueueEDU).
	Sender *sender.Sender
}

// setupFederation builds the allowlist, the signed outbound client, the
// key ring and the federation routes.
func (s *Server) setupFederation(ctx, bgCtx context.Context, opts Options, eph *ephemeral.Service) error {
	cfg := s.Config
	allow, err := federation.NewAllowlist(ctx, s.DB, cfg.ServerName, cfg.Federation.AllowedServers)
	if err != nil {
		return err
	}
	client, err := federation.NewClient(cfg.Federation, cfg.ServerName, s.SigningKey, allow, opts.FederationTransport)
	if err != nil {
		return fmt.Errorf("federation client: %w", err)
	}
	olds, err := keyring.LoadOldKeys(cfg.SigningKey)
	if err != nil {
		return err
	}
	oldKeys := map[string]federation.OldKey{}
	for _, k := range olds {
		oldKeys[k.KeyID] = federation.OldKey{PublicKey: k.PublicKey, ExpiredTS: k.ExpiredTS}
	}
	store := keyring.NewStore(s.DB)
	ring := keyring.NewRing(store, client, cfg.ServerName, s.SigningKey)
	f := &Federation{
		API: &federation.API{
			ServerName: cfg.ServerName, Key: s.SigningKey, OldKeys: oldKeys,
			Verifier: ring, Allow: allow, Client: client,
		},
		Allow: allow, Client: client, Keys: store, Ring: ring,
	}
	f.Txn = txn.New(s.DB, s.Rooms, ring, client, allow, cfg.ServerName)
	f.Txn.HandleEDU("m.typing", txn.TypingHandler(eph, s.Rooms))
	f.Txn.HandleEDU("m.receipt", txn.ReceiptHandler(eph, s.Rooms))
	if cfg.Presence.Enabled {
		// off by default: who is online when is health-adjacent data
		f.Txn.HandleEDU("m.presence", txn.PresenceHandler(s.DB, s.Users, s.Rooms, cfg.ServerName, time.Now))
	}
	f.API.Txn = f.Txn
	f.API.Routes(s.fedMux)
	// Federated media: ours served to partners, theirs fetched for our
	// users and cached by the media repository.
	fedMedia := &federation.Media{API: f.API, Repo: s.Media, Client: client}
	fedMedia.Routes(s.fedMux)
	s.Media.SetRemote(fedMedia)
	if cfg.Listen.Federation != "" {
		// delegation: peers resolving our name find the federation port
		s.clientMux.Handle("GET /.well-known/matrix/server", http.HandlerFunc(s.wellKnownServer))
		s.fedMux.Handle("GET /.well-known/matrix/server", http.HandlerFunc(s.wellKnownServer))
	}
	// praxisctl federation allow|deny|list: audited, no restart needed
	allow.AdminRoutes(s.adminMux, func(r *http.Request) (string, bool, error) {
		dev, err := auth.Device(r, s.Users)
		if err != nil {
			return "", false, err
		}
		return dev.UserID, dev.IsAdmin, nil
	}, func(ctx context.Context, tx *storage.DB, actor, action, target string, params map[string]any) error {
		_, err := s.Admin.Audit().Append(ctx, tx, admin.Record{Actor: actor, Action: action, Target: target, Params: params})
		return err
	})
	f.Sender = sender.New(s.DB, client, allow, s.Notifier, cfg.ServerName)
	f.Sender.SetACL(s.Rooms.ServerAllowedByACL)
	f.Sender.SetPresence(cfg.Presence.Enabled)
	f.API.PartnerUp = func(ctx context.Context, origin spec.ServerName) { f.Sender.PartnerUp(ctx, string(origin)) }
	s.Fed = f
	// Always running: the allowlist may open at runtime, and with no
	// remote members a round is two cheap queries.
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		f.Sender.Run(bgCtx)
	}()
	return nil
}

// wellKnownServer serves GET /.well-known/matrix/server: our server
// name's host with the federation listener's port.
func (s *Server) wellKnownServer(w http.ResponseWriter, r *http.Request) {
	host := s.Config.ServerName
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	_, port, _ := net.SplitHostPort(s.Config.Listen.Federation)
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"m.server": net.JoinHostPort(host, port)})
}

// federationListener puts TLS on the federation listener.
func (s *Server) federationListener(ln net.Listener) (net.Listener, error) {
	conf, err := federation.ServerTLS(s.Config.Federation, s.Config.DataDir, s.Config.ServerName)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return tls.NewListener(ln, conf), nil
}
