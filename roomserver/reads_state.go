package roomserver

import (
	"context"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// RoomState returns the room state userID may read: the current state for a
// joined user (or anyone in a world-readable room), the state right after
// their departure for a user who left or was banned.
func (s *Service) RoomState(ctx context.Context, userID, roomID string) ([]*StoredEvent, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	rows, err := s.readableState(ctx, a, nil)
	if err != nil {
		return nil, err
	}
	return storedEvents(rows), nil
}

// RoomStateEvent returns one state event userID may read, or 404
// M_NOT_FOUND when the room has no state under that key.
func (s *Service) RoomStateEvent(ctx context.Context, userID, roomID, evType, stateKey string) (*StoredEvent, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	rows, err := s.readableState(ctx, a, &stateFilter{keys: [][2]string{{evType, stateKey}}})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, spec.NotFound("the room has no state event of type " + evType + " with that state key")
	}
	return rows[0].StoredEvent, nil
}

// readableState loads the state a's user may read, restricted by f.
func (s *Service) readableState(ctx context.Context, a *roomAccess, f *stateFilter) ([]*eventRow, error) {
	if a.departed == nil {
		rows, err := s.currentStateEvents(ctx, []int64{a.room.nid}, f)
		if err != nil {
			return nil, err
		}
		sortByStateKey(rows)
		return rows, nil
	}
	return s.stateEventsAt(ctx, a.stateGroup(), f)
}

// stateEventsAt loads the state events of a group, restricted by f.
func (s *Service) stateEventsAt(ctx context.Context, group int64, f *stateFilter) ([]*eventRow, error) {
	states, err := s.statesAt(ctx, []int64{group}, f)
	if err != nil {
		return nil, err
	}
	return s.stateEvents(ctx, states[group])
}

// MembersQuery narrows GET /members.
type MembersQuery struct {
	// At is a pagination or sync token: members as of that point.
	At string
	// Membership keeps only this membership; NotMembership drops one.
	Membership, NotMembership string
}

// Members returns the m.room.member events of the room that userID may
// read, as of q.At (never later than the user's departure).
func (s *Service) Members(ctx context.Context, userID, roomID string, q MembersQuery) ([]*StoredEvent, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	f := &stateFilter{types: []string{spec.MRoomMember}}
	var rows []*eventRow
	if q.At == "" {
		rows, err = s.readableState(ctx, a, f)
	} else {
		var tok Token
		tok, err = ParseToken(q.At)
		if err != nil {
			return nil, err
		}
		var at topoKey
		at, err = s.resolveToken(ctx, a.room.nid, tok)
		if err != nil {
			return nil, err
		}
		if u := a.until(); u.less(at) {
			at = u
		}
		var group int64
		group, err = s.stateGroupAt(ctx, a.room.nid, at)
		if err != nil {
			return nil, err
		}
		rows, err = s.stateEventsAt(ctx, group, f)
	}
	if err != nil {
		return nil, err
	}
	out := make([]*StoredEvent, 0, len(rows))
	for _, r := range rows {
		m := membershipOf(r.JSON)
		if (q.Membership != "" && m != q.Membership) || (q.NotMembership != "" && m == q.NotMembership) {
			continue
		}
		out = append(out, r.StoredEvent)
	}
	return out, nil
}

// stateGroupAt is the state group after the last timeline event at or
// before position at (0 when the room has no event there).
func (s *Service) stateGroupAt(ctx context.Context, roomNID int64, at topoKey) (int64, error) {
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.room_nid = $1
		AND e.depth <= $2 AND (e.depth < $2 OR e.stream_pos <= $3)`+inTimeline+`
		ORDER BY e.depth DESC, e.stream_pos DESC LIMIT 1`, roomNID, at.depth, at.stream)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	return rows[0].stateAfter(), nil
}

// MemberProfile is a joined member's display name and avatar, as their
// member event in the room says.
type MemberProfile struct {
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// JoinedMembers returns the joined members of the room with their profiles.
// The spec allows it to joined users only (and to anyone in a
// world-readable room); a departed user gets 403.
func (s *Service) JoinedMembers(ctx context.Context, userID, roomID string) (map[string]MemberProfile, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if a.departed != nil {
		return nil, errNotMember()
	}
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM room_members m JOIN events e ON e.event_nid = m.event_nid
		JOIN rooms r ON r.room_nid = e.room_nid WHERE m.room_nid = $1 AND m.membership = 'join'`, a.room.nid)
	if err != nil {
		return nil, err
	}
	out := make(map[string]MemberProfile, len(rows))
	for _, r := range rows {
		c := gjson.GetBytes(r.JSON, "content")
		out[strOrEmpty(r.StateKey)] = MemberProfile{
			DisplayName: c.Get("displayname").String(),
			AvatarURL:   c.Get("avatar_url").String(),
		}
	}
	return out, nil
}

// memberEventsFor returns, for each of userIDs, their member event in the
// state group (those without one are skipped), for lazy-loading members.
func (s *Service) memberEventsFor(ctx context.Context, group int64, userIDs []string) ([]*eventRow, error) {
	if group == 0 || len(userIDs) == 0 {
		return nil, nil
	}
	keys := make([][2]string, 0, len(userIDs))
	for _, u := range uniqueOf(userIDs) {
		keys = append(keys, [2]string{spec.MRoomMember, u})
	}
	rows, err := s.stateEventsAt(ctx, group, &stateFilter{keys: keys})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(rows, func(i, j int) bool { return strOrEmpty(rows[i].StateKey) < strOrEmpty(rows[j].StateKey) })
	return rows, nil
}
