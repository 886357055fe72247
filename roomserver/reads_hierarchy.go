package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Space hierarchy (spec: client-server API, "Spaces",
// GET /_matrix/client/v1/rooms/{roomId}/hierarchy, and its federation
// counterpart GET /_matrix/federation/v1/hierarchy/{roomId}).
//
// The client walk reads the rooms this server is in from its own state.
// A room (or child space) it is not in is asked of other servers over
// federation: the via servers of the m.space.child link that names it, or
// for the root the server in the room ID. Their answer describes the room
// and its direct children; children described there stay in the output as
// the remote server described them.

const (
	spaceChild = "m.space.child"
	// maxHierarchyRooms bounds one walk: a space graph is small in a
	// practice, and a cycle or a huge graph must not cost without bound.
	maxHierarchyRooms = 1000
	// maxHierarchyRequests bounds the federation requests of one client
	// walk, maxHierarchyVia the servers tried per room, and the timeouts
	// how long a client waits for partners that do not answer.
	maxHierarchyRequests   = 10
	maxHierarchyVia        = 3
	hierarchyRequestWait   = 5 * time.Second
	hierarchyRemoteTimeout = 15 * time.Second
)

// HierarchyQuery is one /hierarchy request.
type HierarchyQuery struct {
	SuggestedOnly bool
	// MaxDepth < 0 means no limit.
	MaxDepth int
	Limit    int
	From     string
}

// HierarchyRoom is one room of the walk (spec: SpaceHierarchyRoomsChunk).
type HierarchyRoom struct {
	PublicRoom
	ChildrenState []json.RawMessage `json:"children_state"`
}

// HierarchyPage is a page of the walk.
type HierarchyPage struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// HierarchyChild is a child room in the federation answer (spec:
// SpaceHierarchyChildRoomsChunk).
type HierarchyChild struct {
	PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// HierarchyParent is the requested room in the federation answer (spec:
// SpaceHierarchyParentRoom).
type HierarchyParent struct {
	HierarchyChild
	ChildrenState []json.RawMessage `json:"children_state"`
}

// ServerHierarchy answers GET /_matrix/federation/v1/hierarchy/{roomId}.
type ServerHierarchy struct {
	Room                 HierarchyParent  `json:"room"`
	Children             []HierarchyChild `json:"children"`
	InaccessibleChildren []string         `json:"inaccessible_children"`
}

type childLink struct {
	roomID    string
	order     string
	hasOrder  bool
	ts        int64
	suggested bool
	via       []string
	stripped  json.RawMessage
}

// parseChildLink reads one m.space.child event; ok is false for an empty
// link (content without a non-empty via), which is a removed one.
func parseChildLink(stateKey, sender string, ts int64, content gjson.Result) (childLink, bool) {
	if stateKey == "" || !content.IsObject() {
		return childLink{}, false
	}
	l := childLink{roomID: stateKey, ts: ts, suggested: content.Get("suggested").Bool()}
	for _, v := range content.Get("via").Array() {
		if v.Type == gjson.String && v.Str != "" {
			l.via = append(l.via, v.Str)
		}
	}
	if len(l.via) == 0 {
		return childLink{}, false
	}
	// order must be printable ASCII of at most 50 characters, else ignored
	if o := content.Get("order"); o.Type == gjson.String && len(o.Str) <= 50 && printableASCII(o.Str) {
		l.order, l.hasOrder = o.Str, true
	}
	l.stripped, _ = json.Marshal(map[string]any{
		"type": spaceChild, "state_key": stateKey, "sender": sender,
		"origin_server_ts": ts, "content": json.RawMessage(content.Raw),
	})
	return l, true
}

// sortChildren puts links in the spec's order: by order (those without
// one last), then by the link's timestamp, then by room ID.
func sortChildren(links []childLink) {
	sort.SliceStable(links, func(i, j int) bool {
		a, b := links[i], links[j]
		if a.hasOrder != b.hasOrder {
			return a.hasOrder
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.roomID < b.roomID
	})
}

// spaceChildren returns the valid m.space.child links of a room, in the
// spec's order, only the suggested ones if asked.
func (s *Service) spaceChildren(ctx context.Context, roomNID int64, suggestedOnly bool) ([]childLink, error) {
	rows, err := s.currentStateEvents(ctx, []int64{roomNID}, &stateFilter{types: []string{spaceChild}})
	if err != nil {
		return nil, err
	}
	var out []childLink
	for _, r := range rows {
		if r.StateKey == nil {
			continue
		}
		l, ok := parseChildLink(*r.StateKey, r.Sender, r.OriginTS, gjson.GetBytes(r.JSON, "content"))
		if ok && (!suggestedOnly || l.suggested) {
			out = append(out, l)
		}
	}
	sortChildren(out)
	return out, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func strippedOf(links []childLink) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(links))
	for _, l := range links {
		out = append(out, l.stripped)
	}
	return out
}

// inRoom reports whether one of our users is joined to the room and we
// hold its state: only then do we answer for it from our own state.
func (s *Service) inRoom(ctx context.Context, room *roomRow) (bool, error) {
	if room.currentGroup == 0 {
		return false, nil
	}
	return s.hasMember(ctx, []string{room.id}, "", s.serverName, false)
}

// hasMember reports whether userID (or, when it is "", any user of
// server) is joined to one of the rooms, or invited when invites count.
func (s *Service) hasMember(ctx context.Context, roomIDs []string, userID, server string, invites bool) (bool, error) {
	if len(roomIDs) == 0 {
		return false, nil
	}
	var q qargs
	var who string
	if userID != "" {
		who = `m.user_id = ` + q.add(userID)
	} else {
		// server names have no LIKE wildcards (% and _ are not host characters)
		who = `m.user_id LIKE ` + q.add("%:"+server)
	}
	memberships := `'join'`
	if invites {
		memberships = `'join', 'invite'`
	}
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE `+who+` AND m.membership IN (`+memberships+`) AND r.room_id IN (`+qlist(&q, roomIDs)+`) LIMIT 1`, q...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("members in %v: %w", roomIDs, err)
	}
	return true, nil
}

// openToAll reports whether anyone may see a room's summary whatever
// their membership: world-readable, public or knockable.
func openToAll(worldReadable bool, joinRule string) bool {
	switch joinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	return worldReadable
}

// serverMaySee is the federation rule for a room of ours: origin could
// peek or join it (spec: "Rooms which the requesting server cannot
// peek/join will be excluded"). That is a world-readable, public or
// knockable room, one where origin has a joined or invited user, or a
// restricted room with an allow room origin has a joined user in.
func (s *Service) serverMaySee(ctx context.Context, f *roomFact, origin string) (bool, error) {
	if openToAll(f.WorldReadable, f.JoinRule) {
		return true, nil
	}
	if ok, err := s.hasMember(ctx, []string{f.RoomID}, "", origin, true); ok || err != nil {
		return ok, err
	}
	if f.JoinRule == "restricted" {
		return s.hasMember(ctx, f.allowRooms, "", origin, false)
	}
	return false, nil
}

// ServerHierarchy answers origin's GET /_matrix/federation/v1/hierarchy:
// a room we are in, and its direct children we are in, split into those
// origin could peek or join and those it could not. Children we are not
// in are left out (we cannot describe them). A room that is unknown, not
// ours to describe or hidden from origin is 404 M_NOT_FOUND, as the spec
// says, so that private rooms do not leak.
func (s *Service) ServerHierarchy(ctx context.Context, origin, roomID string, suggestedOnly bool) (*ServerHierarchy, error) {
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	notFound := spec.NotFound("room not found or not visible to " + origin)
	room, err := s.readRoom(ctx, roomID)
	if err == errNoRoom {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if in, err := s.inRoom(ctx, room); err != nil || !in {
		if err != nil {
			return nil, err
		}
		return nil, notFound
	}
	facts, err := s.roomFacts(ctx, []int64{room.nid})
	if err != nil {
		return nil, err
	}
	f := facts[room.nid]
	if f == nil {
		return nil, notFound
	}
	if ok, err := s.serverMaySee(ctx, f, origin); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		return nil, notFound
	}
	res := &ServerHierarchy{
		Room:                 HierarchyParent{HierarchyChild: hierarchyChild(f), ChildrenState: []json.RawMessage{}},
		Children:             []HierarchyChild{},
		InaccessibleChildren: []string{},
	}
	if f.RoomType != "m.space" {
		return res, nil
	}
	links, err := s.spaceChildren(ctx, room.nid, suggestedOnly)
	if err != nil {
		return nil, err
	}
	res.Room.ChildrenState = strippedOf(links)
	var nids []int64
	for _, l := range links {
		child, err := s.readRoom(ctx, l.roomID)
		if err == errNoRoom {
			continue
		}
		if err != nil {
			return nil, err
		}
		if in, err := s.inRoom(ctx, child); err != nil {
			return nil, err
		} else if in {
			nids = append(nids, child.nid)
		}
	}
	childFacts, err := s.roomFacts(ctx, nids)
	if err != nil {
		return nil, err
	}
	for _, nid := range nids {
		cf := childFacts[nid]
		if cf == nil {
			continue
		}
		ok, err := s.serverMaySee(ctx, cf, origin)
		if err != nil {
			return nil, err
		}
		if ok {
			res.Children = append(res.Children, hierarchyChild(cf))
		} else {
			res.InaccessibleChildren = append(res.InaccessibleChildren, cf.RoomID)
		}
	}
	return res, nil
}

func hierarchyChild(f *roomFact) HierarchyChild {
	c := HierarchyChild{PublicRoom: f.PublicRoom}
	if f.JoinRule == "restricted" || f.JoinRule == "knock_restricted" {
		c.AllowedRoomIDs = f.allowRooms
	}
	return c
}

// Hierarchy walks the space tree under roomID depth-first for userID,
// listing the rooms they could see or join (the same rule as the room
// summary). The root itself must be such a room: 403 otherwise. Links of
// rooms that are not spaces are not followed.
func (s *Service) Hierarchy(ctx context.Context, userID, roomID string, q HierarchyQuery) (*HierarchyPage, error) {
	if err := validRoomID(roomID); err != nil {
		return nil, err
	}
	offset := 0
	if q.From != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.From, "h"))
		if err != nil || n < 0 || !strings.HasPrefix(q.From, "h") {
			return nil, spec.InvalidParam("invalid from token")
		}
		offset = n
	}
	// the walk stops once it knows whether another page follows
	want := maxHierarchyRooms
	if q.Limit > 0 {
		want = min(want, offset+q.Limit+1)
	}
	remoteCtx, cancel := context.WithTimeout(ctx, hierarchyRemoteTimeout)
	defer cancel()
	w := &hierarchyWalk{
		s: s, userID: userID, q: q, want: want, remoteCtx: remoteCtx,
		seen: map[string]bool{}, described: map[string]HierarchyChild{},
		inaccessible: map[string]bool{}, budget: maxHierarchyRequests,
	}
	var rootVia []string
	if srv := serverOfID(roomID); srv != "" {
		rootVia = []string{srv} // rooms before v12 name a server that knows them
	}
	if err := w.walk(ctx, roomID, rootVia, 0); err != nil {
		return nil, err
	}
	if len(w.out) == 0 {
		return nil, spec.Forbidden("you cannot see this space")
	}
	page := &HierarchyPage{Rooms: []HierarchyRoom{}}
	if offset < len(w.out) {
		page.Rooms = w.out[offset:]
	}
	if q.Limit > 0 && len(page.Rooms) > q.Limit {
		page.Rooms = page.Rooms[:q.Limit]
		page.NextBatch = "h" + strconv.Itoa(offset+q.Limit)
	}
	return page, nil
}

// hierarchyWalk is the state of one client walk.
type hierarchyWalk struct {
	s      *Service
	userID string
	q      HierarchyQuery
	want   int
	out    []HierarchyRoom
	seen   map[string]bool
	// described holds the children that remote answers described, and
	// inaccessible those they said our server may not see.
	described    map[string]HierarchyChild
	inaccessible map[string]bool
	// remoteCtx bounds all federation requests of the walk; budget counts
	// the requests left.
	remoteCtx context.Context
	budget    int
}

func (w *hierarchyWalk) walk(ctx context.Context, id string, via []string, depth int) error {
	if w.seen[id] || len(w.out) >= w.want {
		return nil
	}
	w.seen[id] = true
	room, children, ok, err := w.visit(ctx, id, via)
	if err != nil || !ok {
		return err
	}
	w.out = append(w.out, room)
	if w.q.MaxDepth >= 0 && depth >= w.q.MaxDepth {
		return nil
	}
	for _, c := range children {
		if err := w.walk(ctx, c.roomID, c.via, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// visit describes one room for the walk; ok is false when the caller may
// not see it or no server could describe it.
func (w *hierarchyWalk) visit(ctx context.Context, id string, via []string) (HierarchyRoom, []childLink, bool, error) {
	s := w.s
	room, err := s.readRoom(ctx, id)
	if err != nil && err != errNoRoom {
		return HierarchyRoom{}, nil, false, err
	}
	if room != nil {
		in, err := s.inRoom(ctx, room)
		if err != nil {
			return HierarchyRoom{}, nil, false, err
		}
		if in {
			return w.local(ctx, room)
		}
	}
	if res, ok := w.fetch(id, via); ok {
		return w.remote(ctx, res)
	}
	if c, ok := w.described[id]; ok {
		// a parent's answer described it; its own children are unknown
		may, err := w.userMaySee(ctx, c)
		return HierarchyRoom{PublicRoom: c.PublicRoom, ChildrenState: []json.RawMessage{}}, nil, may, err
	}
	if room != nil {
		// known only through an invite or knock: the local summary
		return w.local(ctx, room)
	}
	return HierarchyRoom{}, nil, false, nil
}

// local describes a room from our own state.
func (w *hierarchyWalk) local(ctx context.Context, room *roomRow) (HierarchyRoom, []childLink, bool, error) {
	p, err := w.s.RoomPreview(ctx, w.userID, room.id)
	if err != nil {
		var me spec.MatrixError
		if errors.As(err, &me) {
			return HierarchyRoom{}, nil, false, nil // not visible to the caller: left out
		}
		return HierarchyRoom{}, nil, false, err
	}
	hr := HierarchyRoom{PublicRoom: p.PublicRoom, ChildrenState: []json.RawMessage{}}
	if p.RoomType != "m.space" {
		return hr, nil, true, nil
	}
	children, err := w.s.spaceChildren(ctx, room.nid, w.q.SuggestedOnly)
	if err != nil {
		return HierarchyRoom{}, nil, false, err
	}
	hr.ChildrenState = strippedOf(children)
	return hr, children, true, nil
}

// remote describes a room from a partner's answer and remembers what it
// said about the children.
func (w *hierarchyWalk) remote(ctx context.Context, res *ServerHierarchy) (HierarchyRoom, []childLink, bool, error) {
	for i, c := range res.Children {
		if i >= maxHierarchyRooms {
			break
		}
		if _, ok := w.described[c.RoomID]; !ok && validRoomID(c.RoomID) == nil {
			w.described[c.RoomID] = c
		}
	}
	for _, id := range res.InaccessibleChildren {
		w.inaccessible[id] = true
	}
	may, err := w.userMaySee(ctx, res.Room.HierarchyChild)
	if err != nil || !may {
		return HierarchyRoom{}, nil, false, err
	}
	hr := HierarchyRoom{PublicRoom: res.Room.PublicRoom, ChildrenState: []json.RawMessage{}}
	if res.Room.RoomType != "m.space" {
		return hr, nil, true, nil
	}
	var children []childLink
	for _, ev := range res.Room.ChildrenState {
		e := gjson.ParseBytes(ev)
		if e.Get("type").String() != spaceChild || len(children) >= maxHierarchyRooms {
			continue
		}
		l, ok := parseChildLink(e.Get("state_key").String(), e.Get("sender").String(), e.Get("origin_server_ts").Int(), e.Get("content"))
		if ok && validRoomID(l.roomID) == nil && (!w.q.SuggestedOnly || l.suggested) {
			children = append(children, l)
		}
	}
	sortChildren(children)
	hr.ChildrenState = strippedOf(children)
	return hr, children, true, nil
}

// userMaySee applies the room summary rule to a room another server
// described: open to all, or the caller is a member, invitee or knocker
// (as far as we know), or joined to one of a restricted room's allow rooms.
func (w *hierarchyWalk) userMaySee(ctx context.Context, c HierarchyChild) (bool, error) {
	if openToAll(c.WorldReadable, c.JoinRule) {
		return true, nil
	}
	if w.userID == "" {
		return false, nil
	}
	m, err := w.s.memberOf(ctx, c.RoomID, w.userID)
	if err != nil {
		return false, err
	}
	switch m.membership {
	case spec.Join, spec.Invite, spec.Knock:
		return true, nil
	}
	if c.JoinRule == "restricted" {
		return w.s.hasMember(ctx, c.AllowedRoomIDs, w.userID, "", false)
	}
	return false, nil
}

// fetch asks the via servers (partners only, at most maxHierarchyVia of
// them) for a room's hierarchy, within the walk's budget. A child that an
// earlier answer called inaccessible to us, or a room we described from a
// parent's answer that is no space, needs no request.
func (w *hierarchyWalk) fetch(id string, via []string) (*ServerHierarchy, bool) {
	s := w.s
	if s.fed == nil || w.inaccessible[id] {
		return nil, false
	}
	if c, ok := w.described[id]; ok && c.RoomType != "m.space" {
		return nil, false
	}
	tried, asked := 0, map[string]bool{}
	for _, srv := range via {
		if w.budget <= 0 || tried >= maxHierarchyVia || w.remoteCtx.Err() != nil {
			break
		}
		if srv == s.serverName || asked[srv] || !s.fed.allowed(srv) {
			continue
		}
		asked[srv] = true
		tried++
		w.budget--
		res, err := s.fetchHierarchy(w.remoteCtx, srv, id, w.q.SuggestedOnly)
		if err != nil {
			slog.InfoContext(w.remoteCtx, "hierarchy: partner did not describe the room", "room_id", id, "server", srv, "err", err)
			continue
		}
		if res.Room.RoomID != id {
			slog.InfoContext(w.remoteCtx, "hierarchy: partner described another room", "room_id", id, "server", srv)
			continue
		}
		return res, true
	}
	return nil, false
}

// fetchHierarchy is one GET /_matrix/federation/v1/hierarchy/{roomId}.
// It is built here rather than with fclient.RoomHierarchy so that a 404
// costs one request (fclient retries an unstable path) and the children's
// events arrive as sent.
func (s *Service) fetchHierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (*ServerHierarchy, error) {
	ctx, cancel := context.WithTimeout(ctx, hierarchyRequestWait)
	defer cancel()
	us := spec.ServerName(s.serverName)
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggestedOnly {
		path += "?suggested_only=true"
	}
	req := fclient.NewFederationRequest("GET", us, spec.ServerName(server), path)
	if err := req.Sign(us, gomatrixserverlib.KeyID(s.key.KeyID), s.key.PrivateKey); err != nil {
		return nil, fmt.Errorf("sign hierarchy request: %w", err)
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		return nil, err
	}
	var res ServerHierarchy
	if err := s.fed.client.DoRequestAndParseResponse(ctx, hreq.WithContext(ctx), &res); err != nil {
		return nil, remoteError("hierarchy on "+server, err)
	}
	return &res, nil
}
