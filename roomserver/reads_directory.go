package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Directory reads: aliases, the public room list, the user directory.

// validAlias checks "#localpart:server".
func validAlias(alias string) error {
	if !strings.HasPrefix(alias, "#") || !strings.Contains(alias, ":") || len(alias) > 255 {
		return spec.InvalidParam("invalid room alias " + strconv.Quote(alias))
	}
	return nil
}

// ResolveAlias returns the room an alias points to and servers that can
// help join it (ours first, then those of the room's joined members). An
// unknown alias is 404 M_NOT_FOUND. Aliases of other servers are not looked
// up over federation (yet) and are unknown too.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	if err := validAlias(alias); err != nil {
		return "", nil, err
	}
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, spec.NotFound("room alias " + alias + " not found")
	}
	if err != nil {
		return "", nil, fmt.Errorf("resolve alias: %w", err)
	}
	servers := []string{s.serverName}
	rows, err := s.db.Query(ctx, `SELECT m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE r.room_id = $1 AND m.membership = 'join'`, roomID)
	if err != nil {
		return "", nil, fmt.Errorf("resolve alias: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{s.serverName: true}
	var others []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return "", nil, fmt.Errorf("resolve alias: %w", err)
		}
		if _, server, ok := strings.Cut(u, ":"); ok && !seen[server] {
			seen[server] = true
			others = append(others, server)
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, fmt.Errorf("resolve alias: %w", err)
	}
	sort.Strings(others)
	return roomID, append(servers, others...), nil
}

// RoomAliases lists the local aliases of a room userID may read.
func (s *Service) RoomAliases(ctx context.Context, userID, roomID string) ([]string, error) {
	if _, err := s.access(ctx, roomID, userID); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room aliases: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, fmt.Errorf("room aliases: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// DirectoryVisibility returns "public" if the room is published in the
// room directory, "private" if not; 404 M_NOT_FOUND for an unknown room.
func (s *Service) DirectoryVisibility(ctx context.Context, roomID string) (string, error) {
	if err := validRoomID(roomID); err != nil {
		return "", err
	}
	r, err := s.readRoom(ctx, roomID)
	if err == errNoRoom {
		return "", spec.NotFound("unknown room " + roomID)
	}
	if err != nil {
		return "", err
	}
	if r.published {
		return "public", nil
	}
	return "private", nil
}

// PublicRoom is one entry of the public room list (spec: PublishedRoomsChunk).
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRoomsQuery is a publicRooms request: Since is a previous answer's
// next_batch or prev_batch; Search filters on name, topic and alias.
type PublicRoomsQuery struct {
	Limit  int
	Since  string
	Search string
}

// PublicRoomsPage is a publicRooms answer.
type PublicRoomsPage struct {
	Chunk     []PublicRoom
	NextBatch string
	PrevBatch string
	Total     int
}

// PublicRooms lists the rooms published in the local directory, largest
// first. Tokens are offsets ("o<n>") into that order.
func (s *Service) PublicRooms(ctx context.Context, q PublicRoomsQuery) (*PublicRoomsPage, error) {
	offset := 0
	if q.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(q.Since, "o") {
			return nil, spec.InvalidParam("invalid since token")
		}
		offset = n
	}
	rooms, err := s.publicRooms(ctx)
	if err != nil {
		return nil, err
	}
	if term := strings.ToLower(strings.TrimSpace(q.Search)); term != "" {
		kept := rooms[:0]
		for _, r := range rooms {
			if strings.Contains(strings.ToLower(r.Name), term) || strings.Contains(strings.ToLower(r.Topic), term) ||
				strings.Contains(strings.ToLower(r.CanonicalAlias), term) || strings.ToLower(r.RoomID) == term {
				kept = append(kept, r)
			}
		}
		rooms = kept
	}
	page := &PublicRoomsPage{Total: len(rooms), Chunk: []PublicRoom{}}
	end := len(rooms)
	if q.Limit > 0 {
		end = min(offset+q.Limit, len(rooms))
	}
	if offset < len(rooms) {
		page.Chunk = rooms[offset:end]
	}
	if end < len(rooms) {
		page.NextBatch = "o" + strconv.Itoa(end)
	}
	if offset > 0 {
		prev := 0
		if q.Limit > 0 {
			prev = max(offset-q.Limit, 0)
		}
		page.PrevBatch = "o" + strconv.Itoa(prev)
	}
	return page, nil
}

func (s *Service) publicRooms(ctx context.Context) ([]PublicRoom, error) {
	rows, err := s.db.Query(ctx, `SELECT room_nid FROM rooms WHERE published = TRUE`)
	if err != nil {
		return nil, fmt.Errorf("public rooms: %w", err)
	}
	var nids []int64
	for rows.Next() {
		var nid int64
		if err := rows.Scan(&nid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("public rooms: %w", err)
		}
		nids = append(nids, nid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("public rooms: %w", err)
	}
	facts, err := s.roomFacts(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]PublicRoom, 0, len(facts))
	for _, f := range facts {
		out = append(out, f.PublicRoom)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NumJoinedMembers != out[j].NumJoinedMembers {
			return out[i].NumJoinedMembers > out[j].NumJoinedMembers
		}
		return out[i].RoomID < out[j].RoomID
	})
	return out, nil
}

// roomFact is what the directory and room previews show of a room.
type roomFact struct {
	PublicRoom
	version    string
	encryption string
	// allowRooms are the rooms whose members may join a restricted room
	allowRooms []string
}

// roomFacts reads the directory view of rooms from their current state:
// two queries for any number of rooms.
func (s *Service) roomFacts(ctx context.Context, nids []int64) (map[int64]*roomFact, error) {
	out := map[int64]*roomFact{}
	if len(nids) == 0 {
		return out, nil
	}
	var p qargs
	rows, err := s.db.Query(ctx, `SELECT r.room_nid, r.room_id, r.room_version,
			(SELECT COUNT(*) FROM room_members m WHERE m.room_nid = r.room_nid AND m.membership = 'join')
		FROM rooms r WHERE r.room_nid IN (`+qlist(&p, uniqueOf(nids))+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("room facts: %w", err)
	}
	for rows.Next() {
		var nid int64
		f := &roomFact{}
		if err := rows.Scan(&nid, &f.RoomID, &f.version, &f.NumJoinedMembers); err != nil {
			rows.Close()
			return nil, fmt.Errorf("room facts: %w", err)
		}
		out[nid] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("room facts: %w", err)
	}
	state, err := s.currentStateEvents(ctx, nids, &stateFilter{keys: [][2]string{
		{spec.MRoomName, ""}, {spec.MRoomTopic, ""}, {spec.MRoomAvatar, ""}, {spec.MRoomCanonicalAlias, ""},
		{spec.MRoomJoinRules, ""}, {spec.MRoomHistoryVisibility, ""}, {spec.MRoomGuestAccess, ""}, {spec.MRoomCreate, ""},
		{spec.MRoomEncryption, ""},
	}})
	if err != nil {
		return nil, err
	}
	for _, e := range state {
		f := out[e.roomNID]
		if f == nil {
			continue
		}
		c := gjson.GetBytes(e.JSON, "content")
		switch e.Type {
		case spec.MRoomName:
			f.Name = c.Get("name").String()
		case spec.MRoomTopic:
			f.Topic = c.Get("topic").String()
		case spec.MRoomAvatar:
			f.AvatarURL = c.Get("url").String()
		case spec.MRoomCanonicalAlias:
			f.CanonicalAlias = c.Get("alias").String()
		case spec.MRoomJoinRules:
			f.JoinRule = c.Get("join_rule").String()
			for _, a := range c.Get("allow").Array() {
				if a.Get("type").String() == spec.MRoomMembership && a.Get("room_id").Type == gjson.String {
					f.allowRooms = append(f.allowRooms, a.Get("room_id").String())
				}
			}
		case spec.MRoomHistoryVisibility:
			f.WorldReadable = c.Get("history_visibility").String() == hvWorldReadable
		case spec.MRoomGuestAccess:
			f.GuestCanJoin = c.Get("guest_access").String() == "can_join"
		case spec.MRoomCreate:
			f.RoomType = c.Get("type").String()
		case spec.MRoomEncryption:
			f.encryption = c.Get("algorithm").String()
		}
	}
	return out, nil
}

// RoomPreview is the spec's room summary (GET /room_summary).
type RoomPreview struct {
	PublicRoom
	Membership     string   `json:"membership,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// RoomPreview summarises a room for userID ("" for an anonymous caller)
// before joining. It is shown only when the caller could see or join the
// room: a member or invitee, a public or knockable room, a world-readable
// one, or a restricted room the caller may join through another room.
// Anything else is 404 M_NOT_FOUND, so that private rooms do not leak.
func (s *Service) RoomPreview(ctx context.Context, userID, roomIDOrAlias string) (*RoomPreview, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		id, _, err := s.ResolveAlias(ctx, roomIDOrAlias)
		if err != nil {
			return nil, err
		}
		roomID = id
	} else if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	notFound := spec.NotFound("room not found or not visible to you")
	room, err := s.readRoom(ctx, roomID)
	if err == errNoRoom {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	facts, err := s.roomFacts(ctx, []int64{room.nid})
	if err != nil {
		return nil, err
	}
	f := facts[room.nid]
	if f == nil {
		return nil, notFound
	}
	p := &RoomPreview{PublicRoom: f.PublicRoom, RoomVersion: f.version, Encryption: f.encryption}
	if f.JoinRule == "restricted" || f.JoinRule == "knock_restricted" {
		p.AllowedRoomIDs = f.allowRooms
	}
	if userID != "" {
		m, err := s.memberOf(ctx, roomID, userID)
		if err != nil {
			return nil, err
		}
		p.Membership = m.membership
	}
	switch {
	case p.Membership == spec.Join, p.Membership == spec.Invite, p.Membership == spec.Knock:
	case f.WorldReadable, f.JoinRule == "public", f.JoinRule == "knock", f.JoinRule == "knock_restricted":
	case userID != "" && f.JoinRule == "restricted" && len(f.allowRooms) > 0:
		var q qargs
		var one int
		err := s.db.QueryRow(ctx, `SELECT 1 FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
			WHERE m.user_id = `+q.add(userID)+` AND m.membership = 'join' AND r.room_id IN (`+qlist(&q, f.allowRooms)+`) LIMIT 1`, q...).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, notFound
		}
		if err != nil {
			return nil, fmt.Errorf("room preview: %w", err)
		}
	default:
		return nil, notFound
	}
	return p, nil
}

// UserResult is one user directory hit.
type UserResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// SearchUsers finds users whose ID or display name contains term (case
// insensitively) among the users searcherID may discover: those joined to a
// room the searcher is joined to, and those joined to a room published in
// the directory. A medical server must not let anyone enumerate every
// account, so other users stay unfindable. limited reports that more than
// limit users matched.
func (s *Service) SearchUsers(ctx context.Context, searcherID, term string, limit int) (results []UserResult, limited bool, err error) {
	rows, err := s.db.Query(ctx, `SELECT m.user_id, e.json FROM room_members m JOIN events e ON e.event_nid = m.event_nid
		WHERE m.membership = 'join' AND m.room_nid IN (
			SELECT room_nid FROM room_members WHERE user_id = $1 AND membership = 'join'
			UNION
			SELECT room_nid FROM rooms WHERE published = TRUE)`, searcherID)
	if err != nil {
		return nil, false, fmt.Errorf("search users: %w", err)
	}
	defer rows.Close()
	term = strings.ToLower(term)
	found := map[string]*UserResult{}
	for rows.Next() {
		var userID, js string
		if err := rows.Scan(&userID, &js); err != nil {
			return nil, false, fmt.Errorf("search users: %w", err)
		}
		name := gjson.Get(js, "content.displayname").String()
		if !strings.Contains(strings.ToLower(userID), term) && !strings.Contains(strings.ToLower(name), term) {
			continue
		}
		if r, ok := found[userID]; ok {
			if r.DisplayName == "" {
				r.DisplayName = name
			}
			continue
		}
		found[userID] = &UserResult{UserID: userID, DisplayName: name, AvatarURL: gjson.Get(js, "content.avatar_url").String()}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("search users: %w", err)
	}
	results = make([]UserResult, 0, len(found))
	for _, r := range found {
		results = append(results, *r)
	}
	// names and localparts that start with the term first: typing "an"
	// should offer Anna before Johann
	prefix := func(r UserResult) bool {
		return strings.HasPrefix(strings.ToLower(r.DisplayName), term) || strings.HasPrefix(strings.ToLower(r.UserID), "@"+term)
	}
	sort.Slice(results, func(i, j int) bool {
		if pi, pj := prefix(results[i]), prefix(results[j]); pi != pj {
			return pi
		}
		return results[i].UserID < results[j].UserID
	})
	if limit >= 0 && len(results) > limit {
		return results[:limit], true, nil
	}
	return results, false, nil
}
