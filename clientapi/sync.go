package clientapi

import (
	"net/http"

	syncapi "praxis/clientapi/sync"
	"praxis/internal/users"
)

// sync serves GET /_matrix/client/v3/sync. The work (filters, streams,
// long-poll) lives in clientapi/sync.
func (a *API) sync(r *http.Request, dev *users.Device) (*syncapi.Response, error) {
	req, err := a.Sync.ParseRequest(r, dev)
	if err != nil {
		return nil, err
	}
	return a.Sync.Sync(r.Context(), req)
}
