package homeserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"praxis/federation"
	"praxis/federation/keyring"
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
}

// setupFederation builds the allowlist, the signed outbound client, the
// key ring and the federation routes.
func (s *Server) setupFederation(ctx, bgCtx context.Context, opts Options) error {
	cfg := s.Config
	allow, err := federation.NewAllowlist(ctx, s.DB, cfg.ServerName, cfg.Federation.AllowedServers)
	if err != nil {
		return err
	}
	client, err := federation.NewClient(cfg.Federation, cfg.ServerName, s.SigningKey, allow, opts.FederationTransport)
	if err != nil {
		return fmt.Errorf("federation client: %w", err)
	}
	store := keyring.NewStore(s.DB)
	ring := keyring.NewRing(store, client, cfg.ServerName, s.SigningKey)
	f := &Federation{
		API: &federation.API{
			ServerName: cfg.ServerName, Key: s.SigningKey,
			Verifier: ring, Allow: allow, Client: client,
		},
		Allow: allow, Client: client, Keys: store, Ring: ring,
	}
	f.API.Routes(s.fedMux)
	s.Fed = f
	_ = bgCtx
	return nil
}
