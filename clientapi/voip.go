package clientapi

import (
	"net/http"

	"praxis/internal/call/turn"
	"praxis/internal/users"
)

// turnServer serves GET /_matrix/client/v3/voip/turnServer: time-limited
// TURN REST credentials for the caller. 404 M_NOT_FOUND when TURN is off
// (MSC4166); with turn.staff_only, 403 M_FORBIDDEN for a patient outside
// a call with staff.
func (a *API) turnServer(r *http.Request, dev *users.Device) (*turn.Credentials, error) {
	return a.TURN.Credentials(r.Context(), turn.Caller{
		UserID: dev.UserID,
		Staff:  dev.IsAdmin || dev.Kind == "staff",
	})
}
