// Package federation serves the Server-Server API (/_matrix/federation/**)
// and the key API (/_matrix/key/**).
package federation

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/federation/keyring"
	"praxis/internal/httputil"
)

// KeyValidity is how long other servers may cache our key response.
const KeyValidity = 7 * 24 * time.Hour

// API is the federation HTTP surface.
type API struct {
	ServerName string
	Key        *keyring.SigningKey
	// OldKeys are retired keys still published as old_verify_keys so that
	// events signed with them stay verifiable.
	OldKeys map[string]OldKey
	Now     func() time.Time
}

// OldKey is a retired verify key.
type OldKey struct {
	PublicKey []byte
	ExpiredTS int64
}

// Routes mounts the federation and key endpoints.
func (a *API) Routes(mux *http.ServeMux) {
	mux.Handle("GET /_matrix/key/v2/server", http.HandlerFunc(a.serverKeys))
	mux.Handle("GET /_matrix/key/v2/server/{keyId}", http.HandlerFunc(a.serverKeys))
	mux.Handle("GET /_matrix/federation/v1/version", httputil.JSONHandler(a.version))
}

// serverKeys serves GET /_matrix/key/v2/server: our verify keys, signed
// with the current key.
func (a *API) serverKeys(w http.ResponseWriter, r *http.Request) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	var keys gomatrixserverlib.ServerKeyFields
	keys.ServerName = spec.ServerName(a.ServerName)
	keys.ValidUntilTS = spec.AsTimestamp(now().Add(KeyValidity))
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
		httputil.WriteError(w, r, err)
		return
	}
	signed, err := gomatrixserverlib.SignJSON(a.ServerName, gomatrixserverlib.KeyID(a.Key.KeyID), a.Key.PrivateKey, unsigned)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(signed)
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
