package federation

import (
	"context"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/roomserver"
)

// HierarchySource describes our rooms to other servers.
type HierarchySource interface {
	ServerHierarchy(ctx context.Context, origin, roomID string, suggestedOnly bool) (*roomserver.ServerHierarchy, error)
}

// Hierarchy serves the federation side of spaces.
type Hierarchy struct {
	API   *API
	Rooms HierarchySource
}

// Routes mounts the endpoint.
func (h *Hierarchy) Routes(mux *http.ServeMux) {
	mux.Handle("GET /_matrix/federation/v1/hierarchy/{roomId}", Authed(h.API, h.hierarchy))
}

// hierarchy serves GET /_matrix/federation/v1/hierarchy/{roomId}: the
// room and its direct children as far as origin may peek or join them,
// without pagination (the requesting server walks further itself).
func (h *Hierarchy) hierarchy(r *http.Request, origin spec.ServerName) (*roomserver.ServerHierarchy, error) {
	suggested := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return nil, httputil.InvalidParam("suggested_only must be true or false")
	}
	return h.Rooms.ServerHierarchy(r.Context(), string(origin), r.PathValue("roomId"), suggested)
}
