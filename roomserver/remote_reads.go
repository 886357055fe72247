package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"praxis/internal/httputil"
)

// Reads other servers make of rooms we hold (/event, /state, /state_ids,
// /event_auth, /get_missing_events, /backfill).

// maxFederationEvents caps what one backfill or get_missing_events
// answer carries.
const maxFederationEvents = 100

// ServerInRoom reports whether server may read the room over federation:
// one of its users is joined, or the room is world-readable. A server
// known only through an invite or a past membership reads nothing.
func (s *Service) ServerInRoom(ctx context.Context, roomID, server string) (bool, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return false, err
	}
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM room_members WHERE room_nid = $1 AND membership = 'join' AND user_id LIKE $2`,
		room.nid, "%:"+server).Scan(&n); err != nil {
		return false, fmt.Errorf("members of %s in %s: %w", server, roomID, err)
	}
	if n > 0 {
		return true, nil
	}
	return s.worldReadable(ctx, room.nid)
}

// EventRoom returns the room of an event we hold, for the access check of
// /event; rejected events are unknown.
func (s *Service) EventRoom(ctx context.Context, eventID string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT r.room_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_id = $1 AND NOT e.rejected`, eventID).Scan(&roomID)
	if err != nil {
		return "", httputil.NotFound("event " + eventID + " is not known here")
	}
	return roomID, nil
}

// EventJSON returns the stored JSON of one event of the room (outliers
// included: auth events are fetched this way).
func (s *Service) EventJSON(ctx context.Context, roomID, eventID string) (json.RawMessage, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	known, err := s.knownEvents(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, err
	}
	if k, ok := known[eventID]; !ok || k.rejected {
		return nil, httputil.NotFound("event " + eventID + " is not known here")
	}
	pdus, _, err := s.pdusByID(ctx, s.db, room, []string{eventID})
	if err != nil {
		return nil, err
	}
	p, ok := pdus[eventID]
	if !ok || p.RoomID().String() != roomID {
		return nil, httputil.NotFound("event " + eventID + " is not known here")
	}
	return p.JSON(), nil
}

// StateIDsBefore is /state_ids: the IDs of the state before an event and
// of its auth chain.
func (s *Service) StateIDsBefore(ctx context.Context, roomID, eventID string) (state, authChain []string, err error) {
	st, chain, err := s.stateBefore(ctx, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	state, authChain = []string{}, []string{}
	for _, p := range st {
		state = append(state, p.EventID())
	}
	for _, p := range chain {
		authChain = append(authChain, p.EventID())
	}
	return state, authChain, nil
}

// walkBack collects events reachable backwards (through prev_events)
// from the start events, breadth first, skipping stop events and those
// below minDepth, up to limit. Rejected and soft-failed events are
// neither returned nor walked through.
func (s *Service) walkBack(ctx context.Context, roomID string, start, stop []string, includeStart bool, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	limit = min(max(limit, 1), maxFederationEvents)
	seen := map[string]bool{}
	for _, id := range stop {
		seen[id] = true
	}
	var out []gomatrixserverlib.PDU
	frontier := uniqueOf(start)
	first := true
	for len(frontier) > 0 && len(out) < limit {
		var want []string
		for _, id := range frontier {
			if !seen[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			break
		}
		known, err := s.knownEvents(ctx, s.db, want)
		if err != nil {
			return nil, err
		}
		pdus, _, err := s.pdusByID(ctx, s.db, room, want)
		if err != nil {
			return nil, err
		}
		level := make([]gomatrixserverlib.PDU, 0, len(pdus))
		for _, id := range want {
			p, ok := pdus[id]
			k := known[id]
			if !ok || k.rejected || k.softFailed || k.outlier || p.RoomID().String() != roomID || p.Depth() < minDepth {
				continue
			}
			level = append(level, p)
		}
		// newest first within a level, so a capped answer keeps the
		// events closest to the start
		slices.SortFunc(level, func(a, b gomatrixserverlib.PDU) int { return int(b.Depth() - a.Depth()) })
		frontier = frontier[:0]
		for _, p := range level {
			if (!first || includeStart) && len(out) < limit {
				out = append(out, p)
			}
			frontier = append(frontier, p.PrevEventIDs()...)
		}
		first = false
	}
	return out, nil
}

// MissingEvents is /get_missing_events: events before latest and after
// earliest, oldest first.
func (s *Service) MissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	if limit <= 0 {
		limit = 10
	}
	pdus, err := s.walkBack(ctx, roomID, latest, earliest, false, limit, minDepth)
	if err != nil {
		return nil, err
	}
	sortByDepth(pdus)
	out := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		out = append(out, p.JSON())
	}
	return out, nil
}

// BackfillEvents is /backfill: up to limit events from the given ones
// backwards (the given ones included), newest first.
func (s *Service) BackfillEvents(ctx context.Context, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	pdus, err := s.walkBack(ctx, roomID, from, nil, true, limit, 0)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(pdus, func(a, b gomatrixserverlib.PDU) int { return int(b.Depth() - a.Depth()) })
	out := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		out = append(out, p.JSON())
	}
	return out, nil
}

// StrippedState is the room summary an invitee or knocker sees, as JSON
// stripped state events.
func (s *Service) StrippedState(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	w, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return nil, err
	}
	if err := w.load(ctx, strippedStateKeys); err != nil {
		return nil, err
	}
	out := []json.RawMessage{}
	for _, k := range strippedStateKeys {
		if e := w.state[k].pdu; e != nil {
			out = append(out, mustJSON(map[string]any{
				"type": e.Type(), "state_key": *e.StateKey(), "content": json.RawMessage(e.Content()), "sender": string(e.SenderID()),
			}))
		}
	}
	return out, nil
}

// TimestampToEventForServer is /timestamp_to_event for another server:
// the event of the room closest to ts in the given direction, by origin
// timestamp. The caller checks the server may read the room.
func (s *Service) TimestampToEventForServer(ctx context.Context, roomID string, ts int64, backward bool) (string, int64, error) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return "", 0, err
	}
	q := ` AND e.origin_ts <= $2 ORDER BY e.origin_ts DESC, e.stream_pos DESC LIMIT 1`
	if !backward {
		q = ` AND e.origin_ts >= $2 ORDER BY e.origin_ts ASC, e.stream_pos ASC LIMIT 1`
	}
	var id string
	var originTS int64
	err = s.db.QueryRow(ctx, `SELECT e.event_id, e.origin_ts FROM events e WHERE e.room_nid = $1`+inTimeline+q, room.nid, ts).Scan(&id, &originTS)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, httputil.NotFound("no event found in that direction")
	}
	if err != nil {
		return "", 0, fmt.Errorf("timestamp to event in %s: %w", roomID, err)
	}
	return id, originTS, nil
}
