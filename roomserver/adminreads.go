package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"

	"praxis/internal/storage"
)

// This file answers the admin API's questions about rooms (internal/admin):
// read-only queries over rooms, current_state and room_members.

// ErrRoomNotFound is returned for a room this server does not know.
var ErrRoomNotFound = errors.New("room not found")

// RoomSummary describes a room the way the Synapse admin room list does.
type RoomSummary struct {
	RoomID             string
	Name               string
	Topic              string
	Avatar             string
	CanonicalAlias     string
	JoinedMembers      int
	JoinedLocalMembers int
	InvitedMembers     int
	Version            string
	Creator            string
	// Encryption is the m.room.encryption algorithm, "" for none.
	Encryption        string
	Federatable       bool
	Public            bool
	JoinRules         string
	GuestAccess       string
	HistoryVisibility string
	StateEvents       int
	RoomType          string
	CreatedTS         int64
}

// summaryTypes are the state events (state key "") a summary reads.
var summaryTypes = []string{
	"m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias",
	"m.room.join_rules", "m.room.guest_access", "m.room.history_visibility", "m.room.encryption",
}

// AdminRooms summarises every room the server knows, in no particular
// order. It costs four queries however many rooms there are.
func (s *Service) AdminRooms(ctx context.Context) ([]RoomSummary, error) {
	return s.roomSummaries(ctx, "")
}

// AdminRoom summarises one room; ErrRoomNotFound if it is unknown.
func (s *Service) AdminRoom(ctx context.Context, roomID string) (*RoomSummary, error) {
	rs, err := s.roomSummaries(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, ErrRoomNotFound
	}
	return &rs[0], nil
}

// roomSummaries reads all rooms, or only roomID when it is not "".
func (s *Service) roomSummaries(ctx context.Context, roomID string) ([]RoomSummary, error) {
	filter, args := "", []any{}
	if roomID != "" {
		filter, args = " WHERE r.room_id = $1", []any{roomID}
	}
	rows, err := s.db.Query(ctx, `SELECT r.room_nid, r.room_id, r.room_version, r.creator, r.published, r.created_ts FROM rooms r`+filter, args...)
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	byNID := map[int64]*RoomSummary{}
	var nids []int64
	for rows.Next() {
		var nid int64
		r := RoomSummary{Federatable: true}
		if err := rows.Scan(&nid, &r.RoomID, &r.Version, &r.Creator, &r.Public, &r.CreatedTS); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list rooms: %w", err)
		}
		byNID[nid] = &r
		nids = append(nids, nid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	if len(nids) == 0 {
		return nil, nil
	}
	roomCond, roomArgs := "", []any{}
	if roomID != "" {
		roomCond, roomArgs = " AND room_nid = $2", []any{nids[0]}
	}

	// Member counts. The local-member test is a suffix match on the user
	// ID; LIKE wildcards in the server name are escaped.
	local := "%:" + strings.NewReplacer("!", "!!", "%", "!%", "_", "!_").Replace(s.serverName)
	rows, err = s.db.Query(ctx, `SELECT room_nid, membership, COUNT(*),
		SUM(CASE WHEN user_id LIKE $1 ESCAPE '!' THEN 1 ELSE 0 END)
		FROM room_members WHERE membership IN ('join', 'invite')`+roomCond+` GROUP BY room_nid, membership`, append([]any{local}, roomArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("count room members: %w", err)
	}
	for rows.Next() {
		var nid int64
		var membership string
		var n, localN int
		if err := rows.Scan(&nid, &membership, &n, &localN); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count room members: %w", err)
		}
		if r := byNID[nid]; r != nil {
			if membership == "join" {
				r.JoinedMembers, r.JoinedLocalMembers = n, localN
			} else {
				r.InvitedMembers = n
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count room members: %w", err)
	}

	// Size of the current state.
	scond := ""
	if roomID != "" {
		scond = " WHERE room_nid = $1"
	}
	rows, err = s.db.Query(ctx, `SELECT room_nid, COUNT(*) FROM current_state`+scond+` GROUP BY room_nid`, roomArgs...)
	if err != nil {
		return nil, fmt.Errorf("count room state: %w", err)
	}
	for rows.Next() {
		var nid int64
		var n int
		if err := rows.Scan(&nid, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count room state: %w", err)
		}
		if r := byNID[nid]; r != nil {
			r.StateEvents = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count room state: %w", err)
	}

	// The state events a summary shows.
	q, typeArgs := storage.In(`SELECT cs.room_nid, cs.type, e.json FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
		WHERE cs.state_key = '' AND cs.type IN ($IN)`, 0, summaryTypes)
	if roomID != "" {
		q += fmt.Sprintf(" AND cs.room_nid = $%d", len(typeArgs)+1)
		typeArgs = append(typeArgs, nids[0])
	}
	rows, err = s.db.Query(ctx, q, typeArgs...)
	if err != nil {
		return nil, fmt.Errorf("read room state: %w", err)
	}
	for rows.Next() {
		var nid int64
		var typ string
		var js []byte
		if err := rows.Scan(&nid, &typ, &js); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read room state: %w", err)
		}
		if r := byNID[nid]; r != nil {
			r.apply(typ, gjson.GetBytes(js, "content"))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read room state: %w", err)
	}

	out := make([]RoomSummary, 0, len(nids))
	for _, nid := range nids {
		out = append(out, *byNID[nid])
	}
	return out, nil
}

// apply fills the fields one state event's content determines.
func (r *RoomSummary) apply(typ string, c gjson.Result) {
	switch typ {
	case "m.room.create":
		if f := c.Get("m\\.federate"); f.Exists() {
			r.Federatable = f.Bool()
		}
		r.RoomType = c.Get("type").String()
	case "m.room.name":
		r.Name = c.Get("name").String()
	case "m.room.topic":
		r.Topic = c.Get("topic").String()
	case "m.room.avatar":
		r.Avatar = c.Get("url").String()
	case "m.room.canonical_alias":
		r.CanonicalAlias = c.Get("alias").String()
	case "m.room.join_rules":
		r.JoinRules = c.Get("join_rule").String()
	case "m.room.guest_access":
		r.GuestAccess = c.Get("guest_access").String()
	case "m.room.history_visibility":
		r.HistoryVisibility = c.Get("history_visibility").String()
	case "m.room.encryption":
		r.Encryption = c.Get("algorithm").String()
	}
}

// AdminRoomMembers lists the user IDs currently joined to roomID, sorted;
// ErrRoomNotFound if the room is unknown.
func (s *Service) AdminRoomMembers(ctx context.Context, roomID string) ([]string, error) {
	var nid int64
	err := s.db.QueryRow(ctx, `SELECT room_nid FROM rooms WHERE room_id = $1`, roomID).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrRoomNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("look up room %s: %w", roomID, err)
	}
	rows, err := s.db.Query(ctx, `SELECT user_id FROM room_members WHERE room_nid = $1 AND membership = 'join' ORDER BY user_id`, nid)
	if err != nil {
		return nil, fmt.Errorf("list members of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("list members of %s: %w", roomID, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// AdminJoinedRooms lists the rooms userID is joined to, sorted.
func (s *Service) AdminJoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT r.room_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = $1 AND m.membership = 'join' ORDER BY r.room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list joined rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list joined rooms of %s: %w", userID, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
