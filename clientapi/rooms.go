package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// This file holds the room write endpoints: create, membership, send,
// state, redact, aliases and directory visibility. Reads live elsewhere.

type createRoomRequest struct {
	Visibility                string                  `json:"visibility"`
	RoomAliasName             string                  `json:"room_alias_name"`
	Name                      *string                 `json:"name"`
	Topic                     *string                 `json:"topic"`
	Invite                    []string                `json:"invite"`
	RoomVersion               string                  `json:"room_version"`
	CreationContent           json.RawMessage         `json:"creation_content"`
	InitialState              []roomserver.StateEvent `json:"initial_state"`
	Preset                    string                  `json:"preset"`
	IsDirect                  bool                    `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage         `json:"power_level_content_override"`
}

type createRoomResponse struct {
	RoomID    string `json:"room_id"`
	RoomAlias string `json:"room_alias,omitempty"`
}

// createRoom serves POST /_matrix/client/v3/createRoom.
func (a *API) createRoom(r *http.Request, dev *users.Device) (*createRoomResponse, error) {
	var req createRoomRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	res, err := a.Rooms.CreateRoomAny(r.Context(), roomserver.CreateRoomRequest{
		Creator:                   dev.UserID,
		Visibility:                req.Visibility,
		RoomAliasName:             req.RoomAliasName,
		Name:                      req.Name,
		Topic:                     req.Topic,
		Invite:                    req.Invite,
		RoomVersion:               req.RoomVersion,
		CreationContent:           req.CreationContent,
		InitialState:              req.InitialState,
		Preset:                    req.Preset,
		IsDirect:                  req.IsDirect,
		PowerLevelContentOverride: req.PowerLevelContentOverride,
	})
	if err != nil {
		return nil, err
	}
	if gjson.GetBytes(req.CreationContent, "predecessor.room_id").Exists() {
		a.carryPushRule(r.Context(), dev.UserID, res.RoomID) // an upgrade by hand
	}
	return &createRoomResponse{RoomID: res.RoomID, RoomAlias: res.Alias}, nil
}

type reasonRequest struct {
	Reason string `json:"reason"`
}

type roomIDResponse struct {
	RoomID string `json:"room_id"`
}

// joinRoomByIDOrAlias serves POST /_matrix/client/v3/join/{roomIdOrAlias}.
func (a *API) joinRoomByIDOrAlias(r *http.Request, dev *users.Device) (*roomIDResponse, error) {
	return a.join(r, dev, r.PathValue("roomIdOrAlias"))
}

// joinRoom serves POST /_matrix/client/v3/rooms/{roomId}/join.
func (a *API) joinRoom(r *http.Request, dev *users.Device) (*roomIDResponse, error) {
	return a.join(r, dev, r.PathValue("roomId"))
}

func (a *API) join(r *http.Request, dev *users.Device, target string) (*roomIDResponse, error) {
	// The body is reason (and third_party_signed, not supported); other
	// keys a client adds go into its member event, as clients expect.
	var body map[string]any
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	reason, ok := body["reason"].(string)
	if _, given := body["reason"]; given && !ok {
		return nil, httputil.BadJSON("reason must be a string")
	}
	// via (and its older name server_name) lists servers to join a
	// remote room through.
	via := append(r.URL.Query()["via"], r.URL.Query()["server_name"]...)
	roomID, err := a.Rooms.JoinViaContent(r.Context(), dev.UserID, target, roomserver.JoinContent{Reason: reason, Extra: body}, via)
	if err != nil {
		return nil, err
	}
	a.carryPushRule(r.Context(), dev.UserID, roomID)
	return &roomIDResponse{RoomID: roomID}, nil
}

// carryPushRule copies the caller's room push rule of an upgraded room's
// predecessor to the room they have just joined (the upgrader, by
// creating it), so that muting survives an upgrade. Best effort: the join
// has happened either way.
func (a *API) carryPushRule(ctx context.Context, userID, roomID string) {
	create, err := a.Rooms.RoomStateEvent(ctx, userID, roomID, "m.room.create", "")
	if err != nil {
		return
	}
	old := gjson.GetBytes(create.JSON, "content.predecessor.room_id").String()
	if old == "" {
		return
	}
	if err := a.Users.CopyRoomPushRule(ctx, userID, old, roomID); err != nil {
		slog.WarnContext(ctx, "carry push rule to upgraded room", "room_id", roomID, "err", err)
	}
}

// knock serves POST /_matrix/client/v3/knock/{roomIdOrAlias}.
func (a *API) knock(r *http.Request, dev *users.Device) (*roomIDResponse, error) {
	var req reasonRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	via := append(r.URL.Query()["via"], r.URL.Query()["server_name"]...)
	roomID, err := a.Rooms.KnockVia(r.Context(), dev.UserID, r.PathValue("roomIdOrAlias"), req.Reason, via)
	if err != nil {
		return nil, err
	}
	return &roomIDResponse{RoomID: roomID}, nil
}

type targetRequest struct {
	UserID   string `json:"user_id"`
	Reason   string `json:"reason"`
	IsDirect bool   `json:"is_direct"`
}

// membershipTarget reads the {user_id, reason} body of invite, kick, ban
// and unban.
func membershipTarget(r *http.Request, dev *users.Device) (roomserver.MembershipRequest, error) {
	var req targetRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return roomserver.MembershipRequest{}, err
	}
	if req.UserID == "" {
		return roomserver.MembershipRequest{}, httputil.MissingParam("user_id is required")
	}
	return roomserver.MembershipRequest{RoomID: r.PathValue("roomId"), Sender: dev.UserID, Target: req.UserID, Reason: req.Reason, IsDirect: req.IsDirect}, nil
}

// invite serves POST /_matrix/client/v3/rooms/{roomId}/invite.
func (a *API) invite(r *http.Request, dev *users.Device) (*empty, error) {
	req, err := membershipTarget(r, dev)
	if err != nil {
		return nil, err
	}
	if _, err := a.Rooms.InviteAny(r.Context(), req); err != nil {
		return nil, err
	}
	return &empty{}, nil
}

// kick serves POST /_matrix/client/v3/rooms/{roomId}/kick.
func (a *API) kick(r *http.Request, dev *users.Device) (*empty, error) {
	req, err := membershipTarget(r, dev)
	if err != nil {
		return nil, err
	}
	return &empty{}, a.Rooms.Kick(r.Context(), req)
}

// ban serves POST /_matrix/client/v3/rooms/{roomId}/ban.
func (a *API) ban(r *http.Request, dev *users.Device) (*empty, error) {
	req, err := membershipTarget(r, dev)
	if err != nil {
		return nil, err
	}
	return &empty{}, a.Rooms.Ban(r.Context(), req)
}

// unban serves POST /_matrix/client/v3/rooms/{roomId}/unban.
func (a *API) unban(r *http.Request, dev *users.Device) (*empty, error) {
	req, err := membershipTarget(r, dev)
	if err != nil {
		return nil, err
	}
	return &empty{}, a.Rooms.Unban(r.Context(), req)
}

// leaveRoom serves POST /_matrix/client/v3/rooms/{roomId}/leave.
func (a *API) leaveRoom(r *http.Request, dev *users.Device) (*empty, error) {
	var req reasonRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return &empty{}, a.Rooms.LeaveAny(r.Context(), dev.UserID, r.PathValue("roomId"), req.Reason)
}

// forgetRoom serves POST /_matrix/client/v3/rooms/{roomId}/forget.
func (a *API) forgetRoom(r *http.Request, dev *users.Device) (*empty, error) {
	var req struct{}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return &empty{}, a.Rooms.Forget(r.Context(), dev.UserID, r.PathValue("roomId"))
}

type eventIDResponse struct {
	EventID string `json:"event_id"`
}

// eventContent reads a request body that is an event's content: a JSON
// object, kept byte for byte.
func eventContent(r *http.Request) (json.RawMessage, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if !json.Valid(body) {
		return nil, httputil.NotJSON("request body is not valid JSON")
	}
	if body[0] != '{' {
		return nil, httputil.BadJSON("event content must be a JSON object")
	}
	return body, nil
}

// sendMessage serves PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}.
// A repeated txnId from the same device returns the first event's ID.
func (a *API) sendMessage(r *http.Request, dev *users.Device) (*eventIDResponse, error) {
	content, err := eventContent(r)
	if err != nil {
		return nil, err
	}
	id, err := a.Rooms.Send(r.Context(), roomserver.SendRequest{
		RoomID:    r.PathValue("roomId"),
		Sender:    dev.UserID,
		Type:      r.PathValue("eventType"),
		Content:   content,
		TxnDevice: dev.DeviceID,
		TxnID:     r.PathValue("txnId"),
	})
	if err != nil {
		return nil, err
	}
	return &eventIDResponse{EventID: id}, nil
}

// sendState serves PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
// and, with an empty state key, PUT …/state/{eventType}.
func (a *API) sendState(r *http.Request, dev *users.Device) (*eventIDResponse, error) {
	content, err := eventContent(r)
	if err != nil {
		return nil, err
	}
	stateKey := r.PathValue("stateKey")
	if r.PathValue("eventType") == "m.room.canonical_alias" && stateKey == "" {
		if err := a.Rooms.CheckCanonicalAlias(r.Context(), r.PathValue("roomId"), content); err != nil {
			return nil, err
		}
	}
	id, err := a.Rooms.Send(r.Context(), roomserver.SendRequest{
		RoomID:   r.PathValue("roomId"),
		Sender:   dev.UserID,
		Type:     r.PathValue("eventType"),
		StateKey: &stateKey,
		Content:  content,
	})
	if err != nil {
		return nil, err
	}
	return &eventIDResponse{EventID: id}, nil
}

// redact serves PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}.
func (a *API) redact(r *http.Request, dev *users.Device) (*eventIDResponse, error) {
	var req reasonRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	id, err := a.Rooms.Redact(r.Context(), roomserver.RedactRequest{
		RoomID:    r.PathValue("roomId"),
		Sender:    dev.UserID,
		EventID:   r.PathValue("eventId"),
		Reason:    req.Reason,
		TxnDevice: dev.DeviceID,
		TxnID:     r.PathValue("txnId"),
	})
	if err != nil {
		return nil, err
	}
	return &eventIDResponse{EventID: id}, nil
}

// putRoomAlias serves PUT /_matrix/client/v3/directory/room/{roomAlias}.
func (a *API) putRoomAlias(r *http.Request, dev *users.Device) (*empty, error) {
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RoomID == "" {
		return nil, httputil.MissingParam("room_id is required")
	}
	return &empty{}, a.Rooms.CreateAlias(r.Context(), dev.UserID, r.PathValue("roomAlias"), req.RoomID)
}

// deleteRoomAlias serves DELETE /_matrix/client/v3/directory/room/{roomAlias}.
func (a *API) deleteRoomAlias(r *http.Request, dev *users.Device) (*empty, error) {
	return &empty{}, a.Rooms.DeleteAlias(r.Context(), dev.UserID, dev.IsAdmin, r.PathValue("roomAlias"))
}

// setRoomVisibility serves PUT /_matrix/client/v3/directory/list/room/{roomId}.
func (a *API) setRoomVisibility(r *http.Request, dev *users.Device) (*empty, error) {
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Visibility != "public" && req.Visibility != "private" {
		return nil, httputil.InvalidParam("visibility must be public or private")
	}
	return &empty{}, a.Rooms.SetPublished(r.Context(), dev.UserID, dev.IsAdmin, r.PathValue("roomId"), req.Visibility == "public")
}

// upgradeRoom serves POST /_matrix/client/v3/rooms/{roomId}/upgrade.
func (a *API) upgradeRoom(r *http.Request, dev *users.Device) (*upgradeRoomResponse, error) {
	var req struct {
		NewVersion string `json:"new_version"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewVersion == "" {
		return nil, httputil.MissingParam("new_version is required")
	}
	id, err := a.Rooms.UpgradeRoom(r.Context(), dev.UserID, r.PathValue("roomId"), req.NewVersion)
	if err != nil {
		return nil, err
	}
	a.carryPushRule(r.Context(), dev.UserID, id)
	return &upgradeRoomResponse{ReplacementRoom: id}, nil
}

type upgradeRoomResponse struct {
	ReplacementRoom string `json:"replacement_room"`
}
