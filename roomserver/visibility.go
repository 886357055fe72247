package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// History visibility (spec: client-server API, "Room history visibility").
// An event is visible to a user when, evaluated with the room state at that
// event (its state_group_before) and the user's membership at that point:
//
//  1. the history visibility was world_readable, or
//  2. the user was joined, or
//  3. it was shared and the user joined the room at any point after the event, or
//  4. it was invited and the user was invited.
//
// For an m.room.history_visibility event the value before or after it may
// allow it; for the user's own membership events, the membership before or
// after it may.
const (
	hvWorldReadable = "world_readable"
	hvShared        = "shared"
	hvInvited       = "invited"
	hvJoined        = "joined"
)

// topoKey orders events topologically: depth, then stream position.
type topoKey struct{ depth, stream int64 }

func (a topoKey) less(b topoKey) bool {
	return a.depth < b.depth || (a.depth == b.depth && a.stream < b.stream)
}

var topoInfinity = topoKey{math.MaxInt64, math.MaxInt64}

func keyOf(e *StoredEvent) topoKey { return topoKey{e.Depth, e.StreamPos} }

// FilterVisible returns the events userID may see, in their order. It reads
// the state groups of all events at once, so a batch of any size costs a
// handful of queries, not one per event.
func (s *Service) FilterVisible(ctx context.Context, userID string, events []*StoredEvent) ([]*StoredEvent, error) {
	if len(events) == 0 {
		return events, nil
	}
	rows, err := s.withStateGroups(ctx, events)
	if err != nil {
		return nil, err
	}
	visible, err := s.visibleSet(ctx, userID, rows)
	if err != nil {
		return nil, err
	}
	out := make([]*StoredEvent, 0, len(events))
	for _, e := range events {
		if visible[e.NID] {
			out = append(out, e)
		}
	}
	return out, nil
}

// withStateGroups pairs events with what visibility needs from their rows
// (room, position, type, state groups), reading only those columns: the sync
// path calls FilterVisible on every wake-up and already holds the JSON. The
// database, not the caller's copy, is trusted for the position.
func (s *Service) withStateGroups(ctx context.Context, events []*StoredEvent) ([]*eventRow, error) {
	nids := make([]int64, len(events))
	for i, e := range events {
		nids[i] = e.NID
	}
	var p qargs
	rows, err := s.db.Query(ctx, `SELECT event_nid, room_nid, type, state_key, depth, stream_pos, state_group_before, state_group_after
		FROM events WHERE event_nid IN (`+qlist(&p, uniqueOf(nids))+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("visibility: %w", err)
	}
	defer rows.Close()
	byNID := make(map[int64]*eventRow, len(events))
	for rows.Next() {
		e := &eventRow{StoredEvent: &StoredEvent{}}
		var sk sql.NullString
		var before, after sql.NullInt64
		if err := rows.Scan(&e.NID, &e.roomNID, &e.Type, &sk, &e.Depth, &e.StreamPos, &before, &after); err != nil {
			return nil, fmt.Errorf("visibility: %w", err)
		}
		if sk.Valid {
			e.StateKey = &sk.String
		}
		e.before, e.after = before.Int64, after.Int64
		byNID[e.NID] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("visibility: %w", err)
	}
	out := make([]*eventRow, 0, len(events))
	for _, e := range events {
		// an event not in the table is not shown rather than guessed about
		if r, ok := byNID[e.NID]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// filterVisibleRows is FilterVisible for rows already loaded.
func (s *Service) filterVisibleRows(ctx context.Context, userID string, rows []*eventRow) ([]*eventRow, error) {
	if len(rows) == 0 {
		return rows, nil
	}
	visible, err := s.visibleSet(ctx, userID, rows)
	if err != nil {
		return nil, err
	}
	out := rows[:0:0]
	for _, r := range rows {
		if visible[r.NID] {
			out = append(out, r)
		}
	}
	return out, nil
}

// visibleSet returns the NIDs of rows userID may see.
func (s *Service) visibleSet(ctx context.Context, userID string, rows []*eventRow) (map[int64]bool, error) {
	memberKey := [2]string{spec.MRoomMember, userID}
	hvKey := [2]string{spec.MRoomHistoryVisibility, ""}
	var groups []int64
	for _, r := range rows {
		groups = append(groups, r.before)
		if r.Type == spec.MRoomHistoryVisibility || r.isMemberEventOf(userID) {
			groups = append(groups, r.after)
		}
	}
	states, err := s.statesAt(ctx, groups, &stateFilter{keys: [][2]string{memberKey, hvKey}})
	if err != nil {
		return nil, fmt.Errorf("visibility: %w", err)
	}
	var refs []int64
	for _, st := range states {
		if n := st[memberKey]; n != 0 {
			refs = append(refs, n)
		}
		if n := st[hvKey]; n != 0 {
			refs = append(refs, n)
		}
	}
	contents, err := s.eventContents(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("visibility: %w", err)
	}
	hvAt := func(g int64) string {
		js, ok := contents[states[g][hvKey]]
		if !ok {
			return hvShared // the spec's default when no event sets it
		}
		switch v := gjson.GetBytes(js, "content.history_visibility").String(); v {
		case hvWorldReadable, hvShared, hvInvited, hvJoined:
			return v
		default:
			// an unknown value must not open history up
			return hvJoined
		}
	}
	memberAt := func(g int64) string {
		if js, ok := contents[states[g][memberKey]]; ok {
			return membershipOf(js)
		}
		return ""
	}
	lastJoins := map[int64]topoKey{}
	lastJoin := func(r *eventRow) (topoKey, error) {
		if k, ok := lastJoins[r.roomNID]; ok {
			return k, nil
		}
		k, err := s.lastJoin(ctx, r.roomNID, userID)
		if err != nil {
			return topoKey{}, err
		}
		lastJoins[r.roomNID] = k
		return k, nil
	}
	out := make(map[int64]bool, len(rows))
	for _, r := range rows {
		hvs := []string{hvAt(r.before)}
		if r.Type == spec.MRoomHistoryVisibility && r.after != 0 {
			hvs = append(hvs, hvAt(r.after))
		}
		mems := []string{memberAt(r.before)}
		if r.isMemberEventOf(userID) && r.after != 0 {
			mems = append(mems, memberAt(r.after))
		}
		allowed := false
		for _, hv := range hvs {
			for _, m := range mems {
				switch {
				case hv == hvWorldReadable, m == spec.Join, hv == hvInvited && m == spec.Invite:
					allowed = true
				case hv == hvShared:
					k, err := lastJoin(r)
					if err != nil {
						return nil, err
					}
					allowed = allowed || keyOf(r.StoredEvent).less(k)
				}
			}
		}
		out[r.NID] = allowed
	}
	return out, nil
}

func (r *eventRow) isMemberEventOf(userID string) bool {
	return r.Type == spec.MRoomMember && r.StateKey != nil && *r.StateKey == userID
}

// lastJoin returns the position of userID's latest join to the room:
// infinity while they are joined, the zero key if they never joined. For a
// departed user it walks their membership events backwards through the
// state before each one, which is a few primary-key reads per room, not a
// scan of the room's events.
func (s *Service) lastJoin(ctx context.Context, roomNID int64, userID string) (topoKey, error) {
	var membership string
	var nid int64
	err := s.db.QueryRow(ctx, `SELECT membership, event_nid FROM room_members WHERE room_nid = $1 AND user_id = $2`,
		roomNID, userID).Scan(&membership, &nid)
	if errors.Is(err, sql.ErrNoRows) {
		return topoKey{}, nil // never a member
	}
	if err != nil {
		return topoKey{}, fmt.Errorf("last join: %w", err)
	}
	if membership == spec.Join {
		return topoInfinity, nil
	}
	memberKey := [2]string{spec.MRoomMember, userID}
	for i := 0; i < 32 && nid != 0; i++ {
		rows, err := s.eventRowsByNID(ctx, []int64{nid})
		if err != nil {
			return topoKey{}, fmt.Errorf("last join: %w", err)
		}
		if len(rows) == 0 {
			break
		}
		r := rows[0]
		if membershipOf(r.JSON) == spec.Join {
			return keyOf(r.StoredEvent), nil
		}
		if r.before == 0 {
			break
		}
		st, err := s.statesAt(ctx, []int64{r.before}, &stateFilter{keys: [][2]string{memberKey}})
		if err != nil {
			return topoKey{}, fmt.Errorf("last join: %w", err)
		}
		nid = st[r.before][memberKey]
	}
	return topoKey{}, nil
}

// eventContents returns the JSON of events by NID, in one query.
func (s *Service) eventContents(ctx context.Context, nids []int64) (map[int64][]byte, error) {
	out := map[int64][]byte{}
	nids = uniqueOf(nids)
	if len(nids) == 0 {
		return out, nil
	}
	var p qargs
	rows, err := s.db.Query(ctx, `SELECT event_nid, json FROM events WHERE event_nid IN (`+qlist(&p, nids)+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("event contents: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var nid int64
		var js string
		if err := rows.Scan(&nid, &js); err != nil {
			return nil, fmt.Errorf("event contents: %w", err)
		}
		out[nid] = []byte(js)
	}
	return out, rows.Err()
}

// roomAccess is what a user may read of a room: everything up to now, or,
// after they left or were banned, everything up to that membership event.
type roomAccess struct {
	room       *roomRow
	membership string
	// departed is the user's leave/ban event; nil while reads are current
	departed *eventRow
}

// until is the last topological position the user may read.
func (a *roomAccess) until() topoKey {
	if a.departed != nil {
		return keyOf(a.departed.StoredEvent)
	}
	return topoInfinity
}

// stateGroup is the state the user may read: current state, or the state
// right after they departed.
func (a *roomAccess) stateGroup() int64 {
	if a.departed != nil {
		return a.departed.stateAfter()
	}
	return a.room.currentGroup
}

// errNotMember is the spec's answer for a room the user may not read, and
// for a room this server does not know: telling the two apart would leak
// which rooms exist.
func errNotMember() error {
	return spec.Forbidden("you are not a member of this room and may not read it")
}

// access decides whether userID may read roomID. Joined users read the
// present; users who left or were banned read up to their departure unless
// they forgot the room (the spec: forgetting gives up access to its
// history); anyone reads a room whose current history visibility is
// world_readable.
func (s *Service) access(ctx context.Context, roomID, userID string) (*roomAccess, error) {
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	room, err := s.readRoom(ctx, roomID)
	if err == errNoRoom {
		return nil, errNotMember()
	}
	if err != nil {
		return nil, err
	}
	m, err := s.memberOf(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	a := &roomAccess{room: room, membership: m.membership}
	switch m.membership {
	case spec.Join:
		return a, nil
	case spec.Leave, spec.Ban:
		if m.forgotten {
			break
		}
		rows, err := s.eventRowsByNID(ctx, []int64{m.eventNID})
		if err != nil {
			return nil, err
		}
		if len(rows) == 1 {
			a.departed = rows[0]
			return a, nil
		}
	}
	wr, err := s.worldReadable(ctx, room.nid)
	if err != nil {
		return nil, err
	}
	if wr {
		a.departed = nil
		return a, nil
	}
	return nil, errNotMember()
}

// worldReadable reports whether the room's current history visibility is
// world_readable.
func (s *Service) worldReadable(ctx context.Context, roomNID int64) (bool, error) {
	rows, err := s.currentStateEvents(ctx, []int64{roomNID}, &stateFilter{keys: [][2]string{{spec.MRoomHistoryVisibility, ""}}})
	if err != nil {
		return false, err
	}
	return len(rows) == 1 && gjson.GetBytes(rows[0].JSON, "content.history_visibility").String() == hvWorldReadable, nil
}

func sortByStateKey(rows []*eventRow) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return strOrEmpty(a.StateKey) < strOrEmpty(b.StateKey)
	})
}

func strOrEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// MembershipsAt returns, for each event (by NID), userID's membership in the
// room's state right after it: the spec's unsigned.membership ("leave" when
// they had none yet). One state read for the whole batch.
func (s *Service) MembershipsAt(ctx context.Context, userID string, events []*StoredEvent) (map[int64]string, error) {
	out := make(map[int64]string, len(events))
	if len(events) == 0 {
		return out, nil
	}
	rows, err := s.withStateGroups(ctx, events)
	if err != nil {
		return nil, err
	}
	memberKey := [2]string{spec.MRoomMember, userID}
	groups := make([]int64, 0, len(rows))
	for _, r := range rows {
		groups = append(groups, r.stateAfter())
	}
	states, err := s.statesAt(ctx, groups, &stateFilter{keys: [][2]string{memberKey}})
	if err != nil {
		return nil, fmt.Errorf("memberships at events: %w", err)
	}
	var refs []int64
	for _, st := range states {
		if n := st[memberKey]; n != 0 {
			refs = append(refs, n)
		}
	}
	contents, err := s.eventContents(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("memberships at events: %w", err)
	}
	for _, r := range rows {
		m := spec.Leave
		if js, ok := contents[states[r.stateAfter()][memberKey]]; ok {
			if v := membershipOf(js); v != "" {
				m = v
			}
		}
		out[r.NID] = m
	}
	return out, nil
}
