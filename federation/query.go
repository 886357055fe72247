package federation

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// ProfileSource returns a local user's profile (users.ErrNotFound for
// an unknown user).
type ProfileSource interface {
	Profile(ctx context.Context, userID string) (*users.Profile, error)
}

// AliasSource resolves a local alias to its room and servers to join
// through.
type AliasSource interface {
	ResolveAlias(ctx context.Context, alias string) (string, []string, error)
}

// PublicRoomsSource lists the rooms published in our directory.
type PublicRoomsSource interface {
	PublicRooms(ctx context.Context, q roomserver.PublicRoomsQuery) (*roomserver.PublicRoomsPage, error)
}

// queryProfile serves GET /_matrix/federation/v1/query/profile?user_id=…&field=….
func (f *Rooms) queryProfile(r *http.Request, _ spec.ServerName) (map[string]string, error) {
	q := r.URL.Query()
	userID, field := q.Get("user_id"), q.Get("field")
	if userID == "" {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "user_id is required")
	}
	if _, err := spec.NewUserID(userID, true); err != nil {
		return nil, httputil.InvalidParam("invalid user ID " + userID)
	}
	if !strings.HasSuffix(userID, ":"+f.API.ServerName) {
		return nil, httputil.InvalidParam(userID + " is not a user of this server")
	}
	switch field {
	case "", "displayname", "avatar_url":
	default:
		return nil, httputil.InvalidParam("unknown profile field " + field)
	}
	p, err := f.Profiles.Profile(r.Context(), userID)
	if err == users.ErrNotFound {
		return nil, httputil.NotFound("unknown user " + userID)
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if p.DisplayName != "" && field != "avatar_url" {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" && field != "displayname" {
		out["avatar_url"] = p.AvatarURL
	}
	return out, nil
}

// queryDirectory serves GET /_matrix/federation/v1/query/directory?room_alias=….
func (f *Rooms) queryDirectory(r *http.Request, _ spec.ServerName) (map[string]any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "room_alias is required")
	}
	if !strings.HasSuffix(alias, ":"+f.API.ServerName) {
		return nil, httputil.NotFound("room alias " + alias + " is not on this server")
	}
	roomID, servers, err := f.Aliases.ResolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		servers = []string{f.API.ServerName}
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

type publicRoomsResponse struct {
	Chunk     []roomserver.PublicRoom `json:"chunk"`
	NextBatch string                  `json:"next_batch,omitempty"`
	PrevBatch string                  `json:"prev_batch,omitempty"`
	Total     int                     `json:"total_room_count_estimate"`
}

// publicRooms serves GET and POST /_matrix/federation/v1/publicRooms.
func (f *Rooms) publicRooms(r *http.Request, _ spec.ServerName) (*publicRoomsResponse, error) {
	var q roomserver.PublicRoomsQuery
	if r.Method == http.MethodPost {
		var body struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter struct {
				Term string `json:"generic_search_term"`
			} `json:"filter"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		q = roomserver.PublicRoomsQuery{Limit: body.Limit, Since: body.Since, Search: body.Filter.Term}
	} else {
		limit, err := intParam(r.URL.Query().Get("limit"), 0)
		if err != nil {
			return nil, err
		}
		q = roomserver.PublicRoomsQuery{Limit: limit, Since: r.URL.Query().Get("since")}
	}
	page, err := f.Directory.PublicRooms(r.Context(), q)
	if err != nil {
		return nil, err
	}
	chunk := page.Chunk
	if chunk == nil {
		chunk = []roomserver.PublicRoom{}
	}
	return &publicRoomsResponse{Chunk: chunk, NextBatch: page.NextBatch, PrevBatch: page.PrevBatch, Total: page.Total}, nil
}

// intParam parses an optional non-negative integer query parameter.
func intParam(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("expected a non-negative integer, got " + v)
	}
	return n, nil
}
