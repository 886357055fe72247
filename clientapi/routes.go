package clientapi

import (
	"net/http"
	"strings"

	"praxis/internal/httputil"
)

const (
	v3 = "/_matrix/client/v3"
	v1 = "/_matrix/client/v1"
)

// Routes mounts the Client-Server API on mux. One line per endpoint, grouped
// by area; each area's handlers live in the file named after it.
func (a *API) Routes(mux *http.ServeMux) {
	// server discovery and capabilities (misc.go)
	mux.Handle("GET /_matrix/client/versions", open(a.versions))
	mux.Handle("GET /.well-known/matrix/client", open(a.wellKnownClient))

	// accounts: register, login, logout, whoami, password, deactivate, devices (account.go)

	// profile, account data, filters, push rules, presence (profile.go, accountdata.go, pushrules.go)

	// rooms: create, join, invite, leave, send, state, members, messages (rooms.go)
	mux.Handle("POST "+v3+"/createRoom", authed(a, a.createRoom))
	mux.Handle("POST "+v3+"/join/{roomIdOrAlias}", authed(a, a.joinRoomByIDOrAlias))
	mux.Handle("POST "+v3+"/knock/{roomIdOrAlias}", authed(a, a.knock))
	mux.Handle("POST "+v3+"/rooms/{roomId}/join", authed(a, a.joinRoom))
	mux.Handle("POST "+v3+"/rooms/{roomId}/invite", authed(a, a.invite))
	mux.Handle("POST "+v3+"/rooms/{roomId}/leave", authed(a, a.leaveRoom))
	mux.Handle("POST "+v3+"/rooms/{roomId}/forget", authed(a, a.forgetRoom))
	mux.Handle("POST "+v3+"/rooms/{roomId}/kick", authed(a, a.kick))
	mux.Handle("POST "+v3+"/rooms/{roomId}/ban", authed(a, a.ban))
	mux.Handle("POST "+v3+"/rooms/{roomId}/unban", authed(a, a.unban))
	mux.Handle("PUT "+v3+"/rooms/{roomId}/send/{eventType}/{txnId}", authed(a, a.sendMessage))
	mux.Handle("PUT "+v3+"/rooms/{roomId}/state/{eventType}", authed(a, a.sendState))
	mux.Handle("PUT "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", authed(a, a.sendState))
	mux.Handle("PUT "+v3+"/rooms/{roomId}/redact/{eventId}/{txnId}", authed(a, a.redact))
	mux.Handle("PUT "+v3+"/directory/room/{roomAlias}", authed(a, a.putRoomAlias))
	mux.Handle("DELETE "+v3+"/directory/room/{roomAlias}", authed(a, a.deleteRoomAlias))
	mux.Handle("PUT "+v3+"/directory/list/room/{roomId}", authed(a, a.setRoomVisibility))

	// sync (sync.go)

	// end-to-end encryption: keys, to-device, key backup (keys.go)
	mux.Handle("POST "+v3+"/keys/upload", authed(a, a.uploadKeys))
	mux.Handle("POST "+v3+"/keys/query", authed(a, a.queryKeys))
	mux.Handle("POST "+v3+"/keys/claim", authed(a, a.claimKeys))
	mux.Handle("GET "+v3+"/keys/changes", authed(a, a.keyChanges))
	mux.Handle("POST "+v3+"/keys/device_signing/upload", authed(a, a.uploadCrossSigningKeys))
	mux.Handle("POST "+v3+"/keys/signatures/upload", authed(a, a.uploadSignatures))
	mux.Handle("PUT "+v3+"/sendToDevice/{eventType}/{txnId}", authed(a, a.sendToDevice))
	// key backup (keybackup.go)
	mux.Handle("POST "+v3+"/room_keys/version", authed(a, a.createBackupVersion))
	mux.Handle("GET "+v3+"/room_keys/version", authed(a, a.backupVersion))
	mux.Handle("GET "+v3+"/room_keys/version/{version}", authed(a, a.backupVersion))
	mux.Handle("PUT "+v3+"/room_keys/version/{version}", authed(a, a.updateBackupVersion))
	mux.Handle("DELETE "+v3+"/room_keys/version/{version}", authed(a, a.deleteBackupVersion))
	mux.Handle("GET "+v3+"/room_keys/keys", authed(a, a.backupKeys))
	mux.Handle("PUT "+v3+"/room_keys/keys", authed(a, a.putBackupKeys))
	mux.Handle("DELETE "+v3+"/room_keys/keys", authed(a, a.deleteBackupKeys))
	mux.Handle("GET "+v3+"/room_keys/keys/{roomId}", authed(a, a.backupKeys))
	mux.Handle("PUT "+v3+"/room_keys/keys/{roomId}", authed(a, a.putBackupKeys))
	mux.Handle("DELETE "+v3+"/room_keys/keys/{roomId}", authed(a, a.deleteBackupKeys))
	mux.Handle("GET "+v3+"/room_keys/keys/{roomId}/{sessionId}", authed(a, a.backupKeys))
	mux.Handle("PUT "+v3+"/room_keys/keys/{roomId}/{sessionId}", authed(a, a.putBackupKeys))
	mux.Handle("DELETE "+v3+"/room_keys/keys/{roomId}/{sessionId}", authed(a, a.deleteBackupKeys))

	// media (media.go)

	// video consultations: TURN credentials (voip.go)
	mux.Handle("GET "+v3+"/voip/turnServer", authed(a, a.turnServer))

	// Everything else under the client prefix is unknown: JSON 404, or 405
	// when the path exists with another method.
	mux.Handle("/_matrix/", unrecognized(mux))
}

var allMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch}

// unrecognized answers the spec's M_UNRECOGNIZED for unknown endpoints:
// 405 if another method would have matched, 404 otherwise.
func unrecognized(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allMethods {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && !strings.HasSuffix(pattern, "/_matrix/") {
				httputil.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "method not allowed"})
				return
			}
		}
		httputil.WriteJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "unrecognized request"})
	})
}
