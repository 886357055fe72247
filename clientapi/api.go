// Package clientapi serves the Matrix Client-Server API
// (/_matrix/client/**). Handlers are thin: parse, call a service, answer.
// routes.go is the whole route table.
package clientapi

import (
	"net/http"

	"praxis/clientapi/auth"
	syncapi "praxis/clientapi/sync"
	"praxis/crypto/backup"
	"praxis/crypto/keyserver"
	"praxis/crypto/todevice"
	"praxis/internal/call/turn"
	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/ephemeral"
	"praxis/internal/httputil"
	"praxis/internal/media"
	"praxis/internal/ratelimit"
	"praxis/internal/users"
	"praxis/roomserver"
)

// API holds the services the handlers call. internal/homeserver fills it.
type API struct {
	Config *config.Config
	Users  *users.Service

	// accounts and profile (account.go, profile.go); nil-safe until wired
	AuthLimiter *ratelimit.Limiter // login and registration; nil = unlimited
	RoomLeaver  roomLeaver         // deactivation leaves every room
	Profiles    profilePropagator  // profile changes reach member events
	TURN        *turn.Service
	// Rooms is the room authority: create, membership, send, redact (rooms.go).
	Rooms *roomserver.Service

	// end-to-end encryption (keys.go, keybackup.go)
	Keys     *keyserver.Service
	ToDevice *todevice.Service
	Backup   *backup.Service

	// media repository (media.go)
	Media *media.Service

	// sync, typing, receipts, read markers (sync.go, ephemeral.go)
	Sync      *syncapi.Service
	Ephemeral *ephemeral.Service

	// Care is the health domain: contact policy on lookups, request board
	// (care.go); nil = plain Matrix.
	Care *care.Service
	// RegistrationCodes lets coupling codes pass the registration token
	// stage and couples the new account (care.go); nil = tokens only.
	RegistrationCodes RegistrationCodes

	// OpenID issues identity tokens for third parties (openid.go); nil:
	// the endpoint is unrecognized.
	OpenID OpenIDIssuer
}

// authed adapts a handler that needs a logged-in caller.
func authed[T any](a *API, fn func(r *http.Request, dev *users.Device) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, a.Users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		r = r.WithContext(auth.WithDevice(r.Context(), dev))
		resp, err := fn(r, dev)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

// open adapts a handler that needs no login.
func open[T any](fn func(r *http.Request) (T, error)) http.Handler {
	return httputil.JSONHandler(fn)
}

// empty is the {} many endpoints answer with.
type empty struct{}
