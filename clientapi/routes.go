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
	mux.Handle(r0+"/", legacyR0(mux)) // r0.6.1 is advertised: r0 paths are their v3 twins

	// accounts: register, login, logout, whoami, password, deactivate, devices (account.go)
	mux.Handle("POST "+v3+"/register", openUIA(a.careRegister))
	mux.Handle("GET "+v3+"/register/available", open(a.registerAvailable))
	mux.Handle("GET "+v1+"/register/m.login.registration_token/validity", open(a.registrationTokenValidity))
	mux.Handle("GET "+v3+"/login", open(a.loginFlows))
	mux.Handle("POST "+v3+"/login", open(a.login))
	mux.Handle("POST "+v3+"/refresh", open(a.refresh))
	mux.Handle("POST "+v3+"/logout", authed(a, a.logout))
	mux.Handle("POST "+v3+"/logout/all", authed(a, a.logoutAll))
	mux.Handle("GET "+v3+"/account/whoami", authed(a, a.whoami))
	mux.Handle("POST "+v3+"/account/password", authedUIA(a, a.changePassword))
	mux.Handle("POST "+v3+"/account/deactivate", authedUIA(a, a.deactivate))
	mux.Handle("GET "+v3+"/account/3pid", authed(a, a.threePIDs))
	mux.Handle("GET "+v3+"/devices", authed(a, a.devices))
	mux.Handle("GET "+v3+"/devices/{deviceId}", authed(a, a.device))
	mux.Handle("PUT "+v3+"/devices/{deviceId}", authed(a, a.updateDevice))
	mux.Handle("DELETE "+v3+"/devices/{deviceId}", authedUIA(a, a.deleteDevice))
	mux.Handle("POST "+v3+"/delete_devices", authedUIA(a, a.deleteDevices))
	mux.Handle("GET "+v3+"/capabilities", authed(a, a.capabilities))

	// profile, account data, filters, push rules, presence (profile.go, accountdata.go, pushrules.go)
	mux.Handle("GET "+v3+"/profile/{userId}", a.careProfile(open(a.profile)))
	mux.Handle("GET "+v3+"/profile/{userId}/displayname", a.careProfile(open(a.displayName)))
	mux.Handle("PUT "+v3+"/profile/{userId}/displayname", authed(a, a.setDisplayName))
	mux.Handle("GET "+v3+"/profile/{userId}/avatar_url", a.careProfile(open(a.avatarURL)))
	mux.Handle("PUT "+v3+"/profile/{userId}/avatar_url", authed(a, a.setAvatarURL))
	mux.Handle("GET "+v3+"/presence/{userId}/status", authed(a, a.presence))
	mux.Handle("PUT "+v3+"/presence/{userId}/status", authed(a, a.setPresence))
	mux.Handle("POST "+v3+"/user/{userId}/openid/request_token", authed(a, a.requestOpenIDToken)) // openid.go
	mux.Handle("GET "+v3+"/user/{userId}/account_data/{type}", authed(a, a.getAccountData))
	mux.Handle("PUT "+v3+"/user/{userId}/account_data/{type}", authed(a, a.putAccountData))
	mux.Handle("GET "+v3+"/user/{userId}/rooms/{roomId}/account_data/{type}", authed(a, a.getAccountData))
	mux.Handle("PUT "+v3+"/user/{userId}/rooms/{roomId}/account_data/{type}", authed(a, a.putAccountData))
	mux.Handle("GET "+v3+"/user/{userId}/rooms/{roomId}/tags", authed(a, a.roomTags))
	mux.Handle("PUT "+v3+"/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a, a.putRoomTag))
	mux.Handle("DELETE "+v3+"/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a, a.deleteRoomTag))
	mux.Handle("POST "+v3+"/user/{userId}/filter", authed(a, a.createFilter))
	mux.Handle("GET "+v3+"/user/{userId}/filter/{filterId}", authed(a, a.getFilter))
	mux.Handle("GET "+v3+"/pushrules/{$}", authed(a, a.pushRules))
	mux.Handle("GET "+v3+"/pushrules/{scope}/{$}", authed(a, a.pushRulesScope))
	mux.Handle("GET "+v3+"/pushrules/{scope}/{kind}/{ruleId}", authed(a, a.pushRule))
	mux.Handle("PUT "+v3+"/pushrules/{scope}/{kind}/{ruleId}", authed(a, a.putPushRule))
	mux.Handle("DELETE "+v3+"/pushrules/{scope}/{kind}/{ruleId}", authed(a, a.deletePushRule))
	mux.Handle("GET "+v3+"/pushrules/{scope}/{kind}/{ruleId}/enabled", authed(a, a.pushRuleEnabled))
	mux.Handle("PUT "+v3+"/pushrules/{scope}/{kind}/{ruleId}/enabled", authed(a, a.setPushRuleEnabled))
	mux.Handle("GET "+v3+"/pushrules/{scope}/{kind}/{ruleId}/actions", authed(a, a.pushRuleActions))
	mux.Handle("PUT "+v3+"/pushrules/{scope}/{kind}/{ruleId}/actions", authed(a, a.setPushRuleActions))
	mux.Handle("GET "+v3+"/pushers", authed(a, a.pushers))
	mux.Handle("POST "+v3+"/pushers/set", authed(a, a.setPusher))

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
	mux.Handle("PUT "+v3+"/directory/list/room/{roomId}", a.careNoPatients(authed(a, a.setRoomVisibility)))
	mux.Handle("POST "+v3+"/rooms/{roomId}/upgrade", authed(a, a.upgradeRoom))
	// room reads: state, members, timeline, relations (roomreads.go)
	mux.Handle("GET "+v3+"/rooms/{roomId}/state", authed(a, a.roomState))
	mux.Handle("GET "+v3+"/rooms/{roomId}/state/{eventType}", authed(a, a.roomStateEvent))
	mux.Handle("GET "+v3+"/rooms/{roomId}/state/{eventType}/{stateKey...}", authed(a, a.roomStateEvent))
	mux.Handle("GET "+v3+"/rooms/{roomId}/members", authed(a, a.roomMembers))
	mux.Handle("GET "+v3+"/rooms/{roomId}/joined_members", authed(a, a.joinedMembers))
	mux.Handle("GET "+v3+"/joined_rooms", authed(a, a.joinedRooms))
	mux.Handle("GET "+v3+"/rooms/{roomId}/messages", authed(a, a.roomMessages))
	mux.Handle("GET "+v3+"/rooms/{roomId}/context/{eventId}", authed(a, a.eventContext))
	mux.Handle("GET "+v3+"/rooms/{roomId}/event/{eventId}", authed(a, a.roomEvent))
	mux.Handle("GET "+v1+"/rooms/{roomId}/timestamp_to_event", authed(a, a.timestampToEvent))
	mux.Handle("GET "+v1+"/rooms/{roomId}/relations/{eventId}", authed(a, a.relations))
	mux.Handle("GET "+v1+"/rooms/{roomId}/relations/{eventId}/{relType}", authed(a, a.relations))
	mux.Handle("GET "+v1+"/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", authed(a, a.relations))
	mux.Handle("GET "+v1+"/rooms/{roomId}/threads", authed(a, a.threads))
	mux.Handle("POST "+v3+"/search", authed(a, a.search)) // server-side search (search.go)
	// directory reads: aliases, public rooms, user directory (directory.go)
	mux.Handle("GET "+v3+"/directory/room/{roomAlias}", open(a.resolveAlias))
	mux.Handle("GET "+v3+"/rooms/{roomId}/aliases", authed(a, a.roomAliases))
	mux.Handle("GET "+v3+"/directory/list/room/{roomId}", open(a.roomDirectoryVisibility))
	mux.Handle("GET "+v3+"/publicRooms", a.careNoPatients(authed(a, a.publicRoomsGet)))
	mux.Handle("POST "+v3+"/publicRooms", a.careNoPatients(authed(a, a.publicRoomsPost)))
	mux.Handle("POST "+v3+"/user_directory/search", authed(a, a.careSearchUsers))
	mux.Handle("GET "+v1+"/room_summary/{roomIdOrAlias}", open(a.roomSummary))
	mux.Handle("GET "+v1+"/rooms/{roomId}/hierarchy", authed(a, a.hierarchy))
	mux.Handle("GET /_matrix/client/unstable/im.nheko.summary/summary/{roomIdOrAlias}", open(a.roomSummary))

	// sync, typing, receipts, read markers (sync.go, ephemeral.go)
	mux.Handle("GET "+v3+"/sync", authed(a, a.sync))
	mux.Handle("PUT "+v3+"/rooms/{roomId}/typing/{userId}", authed(a, a.setTyping))
	mux.Handle("POST "+v3+"/rooms/{roomId}/receipt/{receiptType}/{eventId}", authed(a, a.postReceipt))
	mux.Handle("POST "+v3+"/rooms/{roomId}/read_markers", authed(a, a.setReadMarkers))

	// end-to-end encryption: keys, to-device, key backup (keys.go)
	mux.Handle("POST "+v3+"/keys/upload", authed(a, a.uploadKeys))
	mux.Handle("POST "+v3+"/keys/query", authed(a, a.careQueryKeys))
	mux.Handle("POST "+v3+"/keys/claim", authed(a, a.careClaimKeys))
	mux.Handle("GET "+v3+"/keys/changes", authed(a, a.keyChanges))
	mux.Handle("POST "+v3+"/keys/changes", authed(a, a.keyChanges)) // mautrix-go sends POST
	mux.Handle("POST "+v3+"/keys/device_signing/upload", authedUIA(a, a.uploadCrossSigningKeys))
	mux.Handle("POST "+v3+"/keys/signatures/upload", authed(a, a.uploadSignatures))
	mux.Handle("PUT "+v3+"/sendToDevice/{eventType}/{txnId}", authed(a, a.careSendToDevice))
	// dehydrated devices, MSC3814 (keys.go)
	mux.Handle("PUT "+msc3814+"/dehydrated_device", authed(a, a.putDehydratedDevice))
	mux.Handle("GET "+msc3814+"/dehydrated_device", authed(a, a.getDehydratedDevice))
	mux.Handle("DELETE "+msc3814+"/dehydrated_device", authed(a, a.deleteDehydratedDevice))
	mux.Handle("POST "+msc3814+"/dehydrated_device/{deviceId}/events", authed(a, a.dehydratedDeviceEvents))
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
	mux.Handle("POST "+mediaV3+"/upload", authed(a, a.uploadMedia))
	mux.Handle("PUT "+mediaV3+"/upload/{serverName}/{mediaId}", authed(a, a.uploadMediaTo))
	mux.Handle("POST "+mediaV1+"/create", authed(a, a.createMedia))
	mux.Handle("GET "+v1+"/media/config", authed(a, a.mediaConfig))
	mux.Handle("GET "+mediaV3+"/config", authed(a, a.mediaConfig))
	mux.Handle("GET "+v1+"/media/download/{serverName}/{mediaId}", a.downloadMedia(true))
	mux.Handle("GET "+v1+"/media/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(true))
	mux.Handle("GET "+v1+"/media/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(true))
	// legacy unauthenticated media: 404 unless media.legacy_unauthenticated
	mux.Handle("GET "+mediaV3+"/download/{serverName}/{mediaId}", a.downloadMedia(false))
	mux.Handle("GET "+mediaV3+"/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(false))
	mux.Handle("GET "+mediaV3+"/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(false))
	// URL previews are deliberately not offered: preview_url stays M_UNRECOGNIZED.

	// video consultations: TURN credentials (voip.go)
	mux.Handle("GET "+v3+"/voip/turnServer", authed(a, a.turnServer))

	// care domain: request board and coupling verification for staff (care.go);
	// register, profile, publicRooms, room visibility, user_directory,
	// keys/query, keys/claim and sendToDevice above pass the contact policy there too
	mux.Handle("GET "+praxisV1+"/board", authed(a, a.board))
	mux.Handle("POST "+praxisV1+"/board/{roomId}/claim", authed(a, a.claimRequest))
	mux.Handle("POST "+praxisV1+"/board/{roomId}/close", authed(a, a.closeRequest))
	mux.Handle("POST "+praxisV1+"/couplings/{roomId}/verify", authed(a, a.verifyCoupling))

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
