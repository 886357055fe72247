package federation

import (
	"log/slog"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// aclChecked guards a room endpoint ({roomId} in its path) with the room's
// m.room.server_acl: a server the ACL denies is refused with 403
// M_FORBIDDEN before the handler runs. The spec lists which endpoints
// must be guarded (the membership handshakes, invite, and the room reads
// state, state_ids, event_auth, get_missing_events, backfill); /send is
// guarded per PDU and EDU in federation/txn.
func aclChecked[T any](f *Rooms, fn func(r *http.Request, origin spec.ServerName) (T, error)) func(r *http.Request, origin spec.ServerName) (T, error) {
	return func(r *http.Request, origin spec.ServerName) (T, error) {
		roomID := r.PathValue("roomId")
		ok, err := f.Rooms.ServerAllowedByACL(r.Context(), roomID, string(origin))
		if err != nil {
			var zero T
			return zero, err
		}
		if !ok {
			slog.InfoContext(r.Context(), "federation request refused by server ACL", "origin", origin, "room_id", roomID, "path", r.URL.Path)
			var zero T
			return zero, httputil.Forbidden("the server ACL of room " + roomID + " denies " + string(origin))
		}
		return fn(r, origin)
	}
}
