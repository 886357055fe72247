package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/roomserver"
)

// RoomAuthority is what the room endpoints need of the roomserver.
type RoomAuthority interface {
	MakeMembership(ctx context.Context, origin, roomID, userID, membership string, versions []string) (string, json.RawMessage, error)
	SendMembership(ctx context.Context, origin, roomID, eventID, membership string, raw []byte) (*roomserver.SendMembershipResult, error)
	ReceiveInvite(ctx context.Context, origin, roomID, eventID, roomVersion string, raw []byte, strippedState []json.RawMessage) (json.RawMessage, error)
	StrippedState(ctx context.Context, roomID string) ([]json.RawMessage, error)

	ServerInRoom(ctx context.Context, roomID, server string) (bool, error)
	EventRoom(ctx context.Context, eventID string) (string, error)
	EventJSON(ctx context.Context, roomID, eventID string) (json.RawMessage, error)
	StateBeforeEvent(ctx context.Context, roomID, eventID string) (state, authChain []json.RawMessage, err error)
	StateIDsBefore(ctx context.Context, roomID, eventID string) (state, authChain []string, err error)
	EventAuthChain(ctx context.Context, roomID, eventID string) ([]json.RawMessage, error)
	MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error)
	BackfillEvents(ctx context.Context, roomID string, from []string, limit int) ([]json.RawMessage, error)
	TimestampToEventForServer(ctx context.Context, roomID string, ts int64, backward bool) (string, int64, error)
	// ServerAllowedByACL applies the room's m.room.server_acl (acl.go).
	ServerAllowedByACL(ctx context.Context, roomID, server string) (bool, error)
}

// Rooms serves the membership handshakes and room reads of the
// federation API on top of the authenticated API.
type Rooms struct {
	API   *API
	Rooms RoomAuthority
	// Profiles and Aliases answer /query/profile and /query/directory.
	Profiles ProfileSource
	Aliases  AliasSource
	// Directory answers /publicRooms.
	Directory PublicRoomsSource
}

// Routes mounts the endpoints.
func (f *Rooms) Routes(mux *http.ServeMux) {
	const v1, v2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
	mux.Handle("GET "+v1+"/make_join/{roomId}/{userId}", Authed(f.API, aclChecked(f, f.makeJoin)))
	mux.Handle("PUT "+v2+"/send_join/{roomId}/{eventId}", Authed(f.API, aclChecked(f, f.sendJoin)))
	mux.Handle("PUT "+v1+"/send_join/{roomId}/{eventId}", Authed(f.API, aclChecked(f, v1Pair(f.sendJoin))))
	mux.Handle("GET "+v1+"/make_leave/{roomId}/{userId}", Authed(f.API, aclChecked(f, f.makeLeave)))
	mux.Handle("PUT "+v2+"/send_leave/{roomId}/{eventId}", Authed(f.API, aclChecked(f, f.sendLeave)))
	mux.Handle("PUT "+v1+"/send_leave/{roomId}/{eventId}", Authed(f.API, aclChecked(f, v1Pair(f.sendLeave))))
	mux.Handle("GET "+v1+"/make_knock/{roomId}/{userId}", Authed(f.API, aclChecked(f, f.makeKnock)))
	mux.Handle("PUT "+v1+"/send_knock/{roomId}/{eventId}", Authed(f.API, aclChecked(f, f.sendKnock)))
	mux.Handle("PUT "+v2+"/invite/{roomId}/{eventId}", Authed(f.API, aclChecked(f, f.invite)))

	mux.Handle("GET "+v1+"/event/{eventId}", Authed(f.API, f.event))
	mux.Handle("GET "+v1+"/state/{roomId}", Authed(f.API, aclChecked(f, f.state)))
	mux.Handle("GET "+v1+"/state_ids/{roomId}", Authed(f.API, aclChecked(f, f.stateIDs)))
	mux.Handle("GET "+v1+"/event_auth/{roomId}/{eventId}", Authed(f.API, aclChecked(f, f.eventAuth)))
	mux.Handle("POST "+v1+"/get_missing_events/{roomId}", Authed(f.API, aclChecked(f, f.getMissingEvents)))
	mux.Handle("GET "+v1+"/backfill/{roomId}", Authed(f.API, aclChecked(f, f.backfill)))
	mux.Handle("GET "+v1+"/timestamp_to_event/{roomId}", Authed(f.API, f.timestampToEvent))

	mux.Handle("GET "+v1+"/query/profile", Authed(f.API, f.queryProfile))
	mux.Handle("GET "+v1+"/query/directory", Authed(f.API, f.queryDirectory))
	mux.Handle("GET "+v1+"/publicRooms", Authed(f.API, f.publicRooms))
	mux.Handle("POST "+v1+"/publicRooms", Authed(f.API, f.publicRooms))
}

// v1Pair wraps a v2 handler for the v1 endpoints, which answer
// [200, body].
func v1Pair[T any](fn func(r *http.Request, origin spec.ServerName) (T, error)) func(r *http.Request, origin spec.ServerName) ([]any, error) {
	return func(r *http.Request, origin spec.ServerName) ([]any, error) {
		res, err := fn(r, origin)
		if err != nil {
			return nil, err
		}
		return []any{200, res}, nil
	}
}

type makeResponse struct {
	Event       json.RawMessage `json:"event"`
	RoomVersion string          `json:"room_version"`
}

// makeJoin serves GET /_matrix/federation/v1/make_join/{roomId}/{userId}.
func (f *Rooms) makeJoin(r *http.Request, origin spec.ServerName) (*makeResponse, error) {
	return f.make(r, origin, spec.Join)
}

// makeLeave serves GET /_matrix/federation/v1/make_leave/{roomId}/{userId}.
func (f *Rooms) makeLeave(r *http.Request, origin spec.ServerName) (*makeResponse, error) {
	return f.make(r, origin, spec.Leave)
}

// makeKnock serves GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (f *Rooms) makeKnock(r *http.Request, origin spec.ServerName) (*makeResponse, error) {
	return f.make(r, origin, spec.Knock)
}

func (f *Rooms) make(r *http.Request, origin spec.ServerName, membership string) (*makeResponse, error) {
	v, ev, err := f.Rooms.MakeMembership(r.Context(), string(origin), r.PathValue("roomId"), r.PathValue("userId"), membership, r.URL.Query()["ver"])
	if err != nil {
		return nil, err
	}
	return &makeResponse{Event: ev, RoomVersion: v}, nil
}

type sendJoinResponse struct {
	Origin         string            `json:"origin"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// sendJoin serves PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}:
// the full state before the join (we never omit members).
func (f *Rooms) sendJoin(r *http.Request, origin spec.ServerName) (*sendJoinResponse, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	res, err := f.Rooms.SendMembership(r.Context(), string(origin), r.PathValue("roomId"), r.PathValue("eventId"), spec.Join, body)
	if err != nil {
		return nil, err
	}
	return &sendJoinResponse{Origin: f.API.ServerName, State: res.State, AuthChain: res.AuthChain, Event: res.Event, ServersInRoom: res.Servers}, nil
}

// sendLeave serves PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}.
func (f *Rooms) sendLeave(r *http.Request, origin spec.ServerName) (*struct{}, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if _, err := f.Rooms.SendMembership(r.Context(), string(origin), r.PathValue("roomId"), r.PathValue("eventId"), spec.Leave, body); err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

// sendKnock serves PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}.
func (f *Rooms) sendKnock(r *http.Request, origin spec.ServerName) (map[string]any, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	roomID := r.PathValue("roomId")
	if _, err := f.Rooms.SendMembership(r.Context(), string(origin), roomID, r.PathValue("eventId"), spec.Knock, body); err != nil {
		return nil, err
	}
	st, err := f.Rooms.StrippedState(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"knock_room_state": st}, nil
}

// invite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: an
// invite for one of our users, which we sign and keep.
func (f *Rooms) invite(r *http.Request, origin spec.ServerName) (map[string]json.RawMessage, error) {
	var req struct {
		RoomVersion     string            `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RoomVersion == "" || len(req.Event) == 0 {
		return nil, httputil.BadJSON("room_version and event are required")
	}
	ev, err := f.Rooms.ReceiveInvite(r.Context(), string(origin), r.PathValue("roomId"), r.PathValue("eventId"), req.RoomVersion, req.Event, req.InviteRoomState)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"event": ev}, nil
}
