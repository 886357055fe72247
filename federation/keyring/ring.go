package keyring

import (
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// NewRing returns the key ring that verifies other servers' signatures:
// keys come from store while valid, else directly from the server (then
// from it as a notary) through client, which refuses servers that are not
// allowlisted. Our own key is answered locally.
func NewRing(store *Store, client gomatrixserverlib.KeyClient, serverName string, key *SigningKey) *gomatrixserverlib.KeyRing {
	return &gomatrixserverlib.KeyRing{
		KeyDatabase: store,
		KeyFetchers: []gomatrixserverlib.KeyFetcher{&gomatrixserverlib.DirectKeyFetcher{
			Client:            client,
			IsLocalServerName: func(s spec.ServerName) bool { return string(s) == serverName },
			LocalPublicKey:    spec.Base64Bytes(key.PublicKey()),
		}},
	}
}
