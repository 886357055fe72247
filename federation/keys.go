// Package federation serves the Server-Server API (/_matrix/federation/**)
// and the key API (/_matrix/key/**).
package federation

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// KeyValidity is how long other servers may cache our key response.
const KeyValidity = 7 * 24 * time.Hour

// OldKey is a retired verify key.
type OldKey struct {
	PublicKey []byte
	ExpiredTS int64
}

// serverKeys serves GET /_matrix/key/v2/server: our verify keys, signed
// with the current key.
func (a *API) serverKeys(w http.ResponseWriter, r *http.Request) {
	signed, err := a.ownKeys()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(signed)
}

// ownKeys renders our signed key response.
func (a *API) ownKeys() ([]byte, error) {
	now := a.now()
	var keys gomatrixserverlib.ServerKeyFields
	keys.ServerName = spec.ServerName(a.ServerName)
	keys.ValidUntilTS = spec.AsTimestamp(now.Add(KeyValidity))
	keys.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		gomatrixserverlib.KeyID(a.Key.KeyID): {Key: spec.Base64Bytes(a.Key.PublicKey())},
	}
	keys.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for id, k := range a.OldKeys {
		keys.OldVerifyKeys[gomatrixserverlib.KeyID(id)] = gomatrixserverlib.OldVerifyKey{
			VerifyKey: gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PublicKey)},
			ExpiredTS: spec.Timestamp(k.ExpiredTS),
		}
	}
	unsigned, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(a.ServerName, gomatrixserverlib.KeyID(a.Key.KeyID), a.Key.PrivateKey, unsigned)
}

type versionResponse struct {
	Server struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"server"`
}

// version serves GET /_matrix/federation/v1/version.
func (a *API) version(r *http.Request) (*versionResponse, error) {
	var v versionResponse
	v.Server.Name = "Praxis"
	v.Server.Version = Version
	return &v, nil
}

// Version is the software version reported to peers and admins.
var Version = "0.1.0"

type notaryRequest struct {
	ServerKeys map[string]map[string]struct {
		MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
	} `json:"server_keys"`
}

type notaryResponse struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// queryKeys serves POST /_matrix/key/v2/query: the notary, batch form.
func (a *API) queryKeys(r *http.Request) (*notaryResponse, error) {
	var req notaryRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.ServerKeys) > 100 {
		return nil, httputil.LimitExceeded(0)
	}
	resp := &notaryResponse{ServerKeys: []json.RawMessage{}}
	for server := range req.ServerKeys {
		if raw := a.notarise(r.Context(), server); raw != nil {
			resp.ServerKeys = append(resp.ServerKeys, raw)
		}
	}
	return resp, nil
}

// queryServerKeys serves GET /_matrix/key/v2/query/{serverName}: the
// notary for one server.
func (a *API) queryServerKeys(r *http.Request) (*notaryResponse, error) {
	resp := &notaryResponse{ServerKeys: []json.RawMessage{}}
	if raw := a.notarise(r.Context(), r.PathValue("serverName")); raw != nil {
		resp.ServerKeys = append(resp.ServerKeys, raw)
	}
	return resp, nil
}

// notarise returns server's key response countersigned by us, or nil. We
// vouch only for ourselves and for partners on the allowlist, and only
// for a response fetched now, directly, with a valid self-signature: a
// notary that relays stale or unverified keys is worse than none.
func (a *API) notarise(ctx context.Context, server string) json.RawMessage {
	if server == a.ServerName {
		raw, err := a.ownKeys()
		if err != nil {
			slog.ErrorContext(ctx, "render own keys", "err", err)
			return nil
		}
		return raw
	}
	if a.Client == nil || !a.Allow.Allowed(server) {
		return nil
	}
	keys, err := a.Client.GetServerKeys(ctx, spec.ServerName(server))
	if err != nil {
		slog.InfoContext(ctx, "notary: fetch keys failed", "server_name", server, "err", err)
		return nil
	}
	if checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(server), a.now(), keys); !checks.AllChecksOK {
		slog.WarnContext(ctx, "notary: key response failed checks", "server_name", server)
		return nil
	}
	signed, err := gomatrixserverlib.SignJSON(a.ServerName, gomatrixserverlib.KeyID(a.Key.KeyID), a.Key.PrivateKey, keys.Raw)
	if err != nil {
		slog.ErrorContext(ctx, "notary: countersign", "err", err)
		return nil
	}
	return signed
}

// send serves PUT /_matrix/federation/v1/send/{txnId}.
func (a *API) send(r *http.Request, origin spec.ServerName) (any, error) {
	if a.Txn == nil {
		return nil, httputil.Unrecognized("this server does not accept transactions")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, httputil.BadJSON("could not read request body")
	}
	return a.Txn.Process(r.Context(), origin, r.PathValue("txnId"), body)
}
