package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// Room reads other servers make: /event, /state, /state_ids, /event_auth,
// /get_missing_events and /backfill. Only a server with a joined user in
// the room (or any server, for a world-readable room) may read it.

// canRead refuses a server that has no joined user in the room.
func (f *Rooms) canRead(ctx context.Context, roomID string, origin spec.ServerName) error {
	ok, err := f.Rooms.ServerInRoom(ctx, roomID, string(origin))
	if err != nil {
		return err
	}
	if !ok {
		return httputil.Forbidden(string(origin) + " is not in room " + roomID)
	}
	return nil
}

type pdusResponse struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
}

func (f *Rooms) now() int64 { return f.API.now().UnixMilli() }

// event serves GET /_matrix/federation/v1/event/{eventId}.
func (f *Rooms) event(r *http.Request, origin spec.ServerName) (*pdusResponse, error) {
	eventID := r.PathValue("eventId")
	roomID, err := f.Rooms.EventRoom(r.Context(), eventID)
	if err != nil {
		return nil, err
	}
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	ev, err := f.Rooms.EventJSON(r.Context(), roomID, eventID)
	if err != nil {
		return nil, err
	}
	return &pdusResponse{Origin: f.API.ServerName, OriginServerTS: f.now(), PDUs: []json.RawMessage{ev}}, nil
}

// state serves GET /_matrix/federation/v1/state/{roomId}?event_id=.
func (f *Rooms) state(r *http.Request, origin spec.ServerName) (map[string][]json.RawMessage, error) {
	roomID, eventID := r.PathValue("roomId"), r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "event_id is required")
	}
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	st, chain, err := f.Rooms.StateBeforeEvent(r.Context(), roomID, eventID)
	if err != nil {
		return nil, err
	}
	return map[string][]json.RawMessage{"pdus": st, "auth_chain": chain}, nil
}

// stateIDs serves GET /_matrix/federation/v1/state_ids/{roomId}?event_id=.
func (f *Rooms) stateIDs(r *http.Request, origin spec.ServerName) (map[string][]string, error) {
	roomID, eventID := r.PathValue("roomId"), r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "event_id is required")
	}
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	st, chain, err := f.Rooms.StateIDsBefore(r.Context(), roomID, eventID)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"pdu_ids": st, "auth_chain_ids": chain}, nil
}

// eventAuth serves GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}.
func (f *Rooms) eventAuth(r *http.Request, origin spec.ServerName) (map[string][]json.RawMessage, error) {
	roomID := r.PathValue("roomId")
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	chain, err := f.Rooms.EventAuthChain(r.Context(), roomID, r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	return map[string][]json.RawMessage{"auth_chain": chain}, nil
}

// getMissingEvents serves POST /_matrix/federation/v1/get_missing_events/{roomId}.
func (f *Rooms) getMissingEvents(r *http.Request, origin spec.ServerName) (map[string][]json.RawMessage, error) {
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	roomID := r.PathValue("roomId")
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	evs, err := f.Rooms.MissingEvents(r.Context(), roomID, req.Earliest, req.Latest, req.Limit, req.MinDepth)
	if err != nil {
		return nil, err
	}
	return map[string][]json.RawMessage{"events": evs}, nil
}

// backfill serves GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=….
func (f *Rooms) backfill(r *http.Request, origin spec.ServerName) (*pdusResponse, error) {
	roomID := r.PathValue("roomId")
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "v is required")
	}
	limit, err := intParam(q.Get("limit"), 10)
	if err != nil {
		return nil, err
	}
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	evs, err := f.Rooms.BackfillEvents(r.Context(), roomID, from, limit)
	if err != nil {
		return nil, err
	}
	return &pdusResponse{Origin: f.API.ServerName, OriginServerTS: f.now(), PDUs: evs}, nil
}

// timestampToEvent serves GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=…&dir=f|b.
func (f *Rooms) timestampToEvent(r *http.Request, origin spec.ServerName) (map[string]any, error) {
	roomID, q := r.PathValue("roomId"), r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, httputil.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, httputil.InvalidParam("dir must be f or b")
	}
	if err := f.canRead(r.Context(), roomID, origin); err != nil {
		return nil, err
	}
	id, originTS, err := f.Rooms.TimestampToEventForServer(r.Context(), roomID, ts, dir == "b")
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id, "origin_server_ts": originTS}, nil
}
