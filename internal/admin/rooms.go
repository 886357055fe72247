package admin

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// roomDetails is a room as the Synapse admin API shows it.
type roomDetails struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int     `json:"joined_members"`
	JoinedLocalMembers int     `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	GuestAccess        *string `json:"guest_access"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int     `json:"state_events"`
	RoomType           *string `json:"room_type"`
	// Only in the single-room answer.
	Topic     *string `json:"topic,omitempty"`
	Avatar    *string `json:"avatar,omitempty"`
	Forgotten *bool   `json:"forgotten,omitempty"`
}

func roomDetailsOf(r *roomserver.RoomSummary) *roomDetails {
	return &roomDetails{
		RoomID: r.RoomID, Name: nullable(r.Name), CanonicalAlias: nullable(r.CanonicalAlias),
		JoinedMembers: r.JoinedMembers, JoinedLocalMembers: r.JoinedLocalMembers,
		Version: r.Version, Creator: r.Creator, Encryption: nullable(r.Encryption),
		Federatable: r.Federatable, Public: r.Public, JoinRules: nullable(r.JoinRules),
		GuestAccess: nullable(r.GuestAccess), HistoryVisibility: nullable(r.HistoryVisibility),
		StateEvents: r.StateEvents, RoomType: nullable(r.RoomType),
	}
}

type roomList struct {
	Rooms      []*roomDetails `json:"rooms"`
	Offset     int            `json:"offset"`
	TotalRooms int            `json:"total_rooms"`
	NextBatch  *int           `json:"next_batch,omitempty"`
	PrevBatch  *int           `json:"prev_batch,omitempty"`
}

// roomOrders are the order_by keys Synapse accepts, each with its
// comparison. Ties are broken by room ID so that pages are stable.
var roomOrders = map[string]func(a, b *roomserver.RoomSummary) int{
	"name": func(a, b *roomserver.RoomSummary) int {
		return cmp.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
	},
	"canonical_alias":      func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.CanonicalAlias, b.CanonicalAlias) },
	"joined_members":       func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.JoinedMembers, b.JoinedMembers) },
	"joined_local_members": func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.JoinedLocalMembers, b.JoinedLocalMembers) },
	"version": func(a, b *roomserver.RoomSummary) int {
		return cmp.Compare(versionNum(a.Version), versionNum(b.Version))
	},
	"creator":            func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.Creator, b.Creator) },
	"encryption":         func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.Encryption, b.Encryption) },
	"federatable":        func(a, b *roomserver.RoomSummary) int { return cmpBool(a.Federatable, b.Federatable) },
	"public":             func(a, b *roomserver.RoomSummary) int { return cmpBool(a.Public, b.Public) },
	"join_rules":         func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.JoinRules, b.JoinRules) },
	"guest_access":       func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.GuestAccess, b.GuestAccess) },
	"history_visibility": func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.HistoryVisibility, b.HistoryVisibility) },
	"state_events":       func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.StateEvents, b.StateEvents) },
	"size":               func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.StateEvents, b.StateEvents) },
	"created_ts":         func(a, b *roomserver.RoomSummary) int { return cmp.Compare(a.CreatedTS, b.CreatedTS) },
}

func versionNum(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 1 << 30 // unknown versions sort last
	}
	return n
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// matchRoom reports whether a room matches a search term: a substring of
// its name or canonical alias (case-insensitive), or its exact room ID.
func matchRoom(r *roomserver.RoomSummary, term string) bool {
	if term == "" || r.RoomID == term {
		return true
	}
	t := strings.ToLower(term)
	return strings.Contains(strings.ToLower(r.Name), t) || strings.Contains(strings.ToLower(r.CanonicalAlias), t)
}

// pageRooms filters, sorts and pages rooms; it is the whole list logic
// apart from reading, so that it can be tested without a database.
func pageRooms(all []roomserver.RoomSummary, term, orderBy string, backwards bool, from, limit int) *roomList {
	order := roomOrders[orderBy]
	var hits []*roomserver.RoomSummary
	for i := range all {
		if matchRoom(&all[i], term) {
			hits = append(hits, &all[i])
		}
	}
	slices.SortStableFunc(hits, func(a, b *roomserver.RoomSummary) int {
		c := order(a, b)
		if c == 0 {
			c = cmp.Compare(a.RoomID, b.RoomID)
		}
		if backwards {
			c = -c
		}
		return c
	})
	out := &roomList{Rooms: []*roomDetails{}, Offset: from, TotalRooms: len(hits)}
	end := min(from+limit, len(hits))
	for i := from; i < end; i++ {
		out.Rooms = append(out.Rooms, roomDetailsOf(hits[i]))
	}
	if end < len(hits) {
		out.NextBatch = &end
	}
	if from > 0 {
		prev := max(0, from-limit)
		out.PrevBatch = &prev
	}
	return out
}

// listRooms serves GET /_synapse/admin/v1/rooms: from, limit, order_by,
// dir, search_term.
func (s *Service) listRooms(r *http.Request, caller *users.Device) (any, error) {
	if s.rooms == nil {
		return nil, httputil.Unrecognized("this node has no room service")
	}
	from, err := queryInt(r, "from", 0)
	if err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		return nil, err
	}
	if limit == 0 || limit > 1000 {
		return nil, httputil.InvalidParam("limit must be between 1 and 1000")
	}
	orderBy := r.URL.Query().Get("order_by")
	if orderBy == "" {
		orderBy = "name"
	}
	if _, ok := roomOrders[orderBy]; !ok {
		return nil, httputil.InvalidParam("unknown order_by " + quote(orderBy))
	}
	backwards, err := queryDir(r)
	if err != nil {
		return nil, err
	}
	all, err := s.rooms.AdminRooms(r.Context())
	if err != nil {
		return nil, err
	}
	return pageRooms(all, r.URL.Query().Get("search_term"), orderBy, backwards, from, limit), nil
}

func validRoomID(id string) error {
	// Room version 12 dropped the server part, so ":" is not required.
	if !strings.HasPrefix(id, "!") || len(id) < 2 {
		return httputil.InvalidParam("invalid room ID " + quote(id))
	}
	return nil
}

func roomError(err error) error {
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return httputil.NotFound("Room not found")
	}
	return err
}

// getRoom serves GET /_synapse/admin/v1/rooms/{roomId}.
func (s *Service) getRoom(r *http.Request, caller *users.Device) (any, error) {
	if s.rooms == nil {
		return nil, httputil.Unrecognized("this node has no room service")
	}
	roomID := r.PathValue("roomId")
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	room, err := s.rooms.AdminRoom(r.Context(), roomID)
	if err != nil {
		return nil, roomError(err)
	}
	d := roomDetailsOf(room)
	d.Topic, d.Avatar = nullable(room.Topic), nullable(room.Avatar)
	forgotten := false
	d.Forgotten = &forgotten
	return d, nil
}

// roomMembers serves GET /_synapse/admin/v1/rooms/{roomId}/members.
func (s *Service) roomMembers(r *http.Request, caller *users.Device) (any, error) {
	if s.rooms == nil {
		return nil, httputil.Unrecognized("this node has no room service")
	}
	roomID := r.PathValue("roomId")
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	members, err := s.rooms.AdminRoomMembers(r.Context(), roomID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"members": members, "total": len(members)}, nil
}

// joinedRooms serves GET /_synapse/admin/v1/users/{userId}/joined_rooms.
func (s *Service) joinedRooms(r *http.Request, caller *users.Device) (any, error) {
	if s.rooms == nil {
		return nil, httputil.Unrecognized("this node has no room service")
	}
	userID, err := s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	if _, err := s.users.Account(r.Context(), userID); err != nil {
		return nil, userError(err)
	}
	rooms, err := s.rooms.AdminJoinedRooms(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined_rooms": rooms, "total": len(rooms)}, nil
}
