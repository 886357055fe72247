package clientapi

import (
	"net/http"
	"strconv"

	"praxis/clientapi/auth"
	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// This file holds the directory reads: room aliases, the public room list
// and the user directory. Alias and visibility writes live in rooms.go.

type aliasResponse struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// resolveAlias serves GET /_matrix/client/v3/directory/room/{roomAlias}.
// A coupling code's alias resolves to the code's lobby (internal/care).
func (a *API) resolveAlias(r *http.Request) (*aliasResponse, error) {
	if a.Care != nil {
		// the lookup needs no token; a patient's leads to their own room
		userID := ""
		if auth.Token(r) != "" {
			if dev, err := auth.Device(r, a.Users); err == nil {
				userID = dev.UserID
			}
		}
		lobby, ok, err := a.Care.ResolveAlias(r.Context(), userID, r.PathValue("roomAlias"))
		if err != nil {
			return nil, err
		}
		if ok {
			return &aliasResponse{RoomID: lobby, Servers: []string{a.Users.ServerName()}}, nil
		}
	}
	roomID, servers, err := a.Rooms.ResolveAliasAny(r.Context(), r.PathValue("roomAlias"))
	if err != nil {
		return nil, err
	}
	return &aliasResponse{RoomID: roomID, Servers: servers}, nil
}

// roomAliases serves GET /_matrix/client/v3/rooms/{roomId}/aliases.
func (a *API) roomAliases(r *http.Request, dev *users.Device) (map[string][]string, error) {
	aliases, err := a.Rooms.RoomAliases(r.Context(), dev.UserID, r.PathValue("roomId"))
	if err != nil {
		return nil, err
	}
	return map[string][]string{"aliases": aliases}, nil
}

// roomDirectoryVisibility serves GET /_matrix/client/v3/directory/list/room/{roomId}.
func (a *API) roomDirectoryVisibility(r *http.Request) (map[string]string, error) {
	v, err := a.Rooms.DirectoryVisibility(r.Context(), r.PathValue("roomId"))
	if err != nil {
		return nil, err
	}
	return map[string]string{"visibility": v}, nil
}

type publicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Server string `json:"server"`
	Filter struct {
		GenericSearchTerm string `json:"generic_search_term"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

type publicRoomsResponse struct {
	Chunk     []roomserver.PublicRoom `json:"chunk"`
	NextBatch string                  `json:"next_batch,omitempty"`
	PrevBatch string                  `json:"prev_batch,omitempty"`
	Total     int                     `json:"total_room_count_estimate"`
}

// publicRoomsGet serves GET /_matrix/client/v3/publicRooms. The spec lets
// it go unauthenticated; like Synapse's default we require a login, so the
// list of a practice's rooms is not public on the internet.
func (a *API) publicRoomsGet(r *http.Request, dev *users.Device) (*publicRoomsResponse, error) {
	q := r.URL.Query()
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("limit must be a non-negative integer")
		}
		limit = n
	}
	return a.publicRooms(r, publicRoomsRequest{Limit: limit, Since: q.Get("since"), Server: q.Get("server")})
}

// publicRoomsPost serves POST /_matrix/client/v3/publicRooms.
func (a *API) publicRoomsPost(r *http.Request, dev *users.Device) (*publicRoomsResponse, error) {
	var req publicRoomsRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Limit < 0 {
		return nil, httputil.InvalidParam("limit must be a non-negative integer")
	}
	if s := r.URL.Query().Get("server"); s != "" {
		req.Server = s
	}
	return a.publicRooms(r, req)
}

func (a *API) publicRooms(r *http.Request, req publicRoomsRequest) (*publicRoomsResponse, error) {
	if req.Server != "" && req.Server != a.Config.ServerName {
		return nil, httputil.InvalidParam("only this server's room directory can be listed")
	}
	if req.ThirdPartyInstanceID != "" {
		// no bridges here: a third-party network's list is empty
		return &publicRoomsResponse{Chunk: []roomserver.PublicRoom{}}, nil
	}
	pg, err := a.Rooms.PublicRooms(r.Context(), roomserver.PublicRoomsQuery{
		Limit: req.Limit, Since: req.Since, Search: req.Filter.GenericSearchTerm,
	})
	if err != nil {
		return nil, err
	}
	return &publicRoomsResponse{Chunk: pg.Chunk, NextBatch: pg.NextBatch, PrevBatch: pg.PrevBatch, Total: pg.Total}, nil
}

type userSearchResponse struct {
	Results []roomserver.UserResult `json:"results"`
	Limited bool                    `json:"limited"`
}

// searchUsers serves POST /_matrix/client/v3/user_directory/search.
func (a *API) searchUsers(r *http.Request, dev *users.Device) (*userSearchResponse, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, httputil.MissingParam("search_term is required")
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httputil.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(*req.Limit, maxPageLimit)
	}
	res, limited, err := a.Rooms.SearchUsers(r.Context(), dev.UserID, *req.SearchTerm, limit)
	if err != nil {
		return nil, err
	}
	return &userSearchResponse{Results: res, Limited: limited}, nil
}

// roomSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// (and MSC3266's unstable path): a preview of a room before joining.
// Authentication is optional; an anonymous caller sees only rooms anyone
// could see or join.
func (a *API) roomSummary(r *http.Request) (*roomserver.RoomPreview, error) {
	userID := ""
	if auth.Token(r) != "" {
		dev, err := auth.Device(r, a.Users)
		if err != nil {
			return nil, err
		}
		userID = dev.UserID
	}
	if a.Care != nil {
		// a coupling code's alias or lobby: what the join will lead to
		if p, ok, err := a.Care.LobbySummary(r.Context(), r.PathValue("roomIdOrAlias")); ok || err != nil {
			return p, err
		}
	}
	return a.Rooms.RoomPreview(r.Context(), userID, r.PathValue("roomIdOrAlias"))
}

// hierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy: the
// space tree under a room, depth-first, as far as the caller may see it.
func (a *API) hierarchy(r *http.Request, dev *users.Device) (*roomserver.HierarchyPage, error) {
	qs := r.URL.Query()
	q := roomserver.HierarchyQuery{MaxDepth: -1, From: qs.Get("from")}
	switch qs.Get("suggested_only") {
	case "", "false":
	case "true":
		q.SuggestedOnly = true
	default:
		return nil, httputil.InvalidParam("suggested_only must be true or false")
	}
	limit, err := queryLimit(qs, 50)
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		return nil, httputil.InvalidParam("limit must be positive")
	}
	q.Limit = min(limit, 100)
	if s := qs.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("max_depth must be a non-negative integer")
		}
		q.MaxDepth = n
	}
	return a.Rooms.Hierarchy(r.Context(), dev.UserID, r.PathValue("roomId"), q)
}
