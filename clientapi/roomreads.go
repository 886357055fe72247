package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/sjson"

	"praxis/internal/httputil"
	"praxis/internal/users"
	"praxis/roomserver"
)

// This file holds the room read endpoints: state, members, timeline
// (messages, context, event, timestamp_to_event), relations and threads.
// Access and history visibility are decided by roomserver.

// renderEvents renders events for the caller in the client format.
func renderEvents(dev *users.Device, events []*roomserver.StoredEvent) []json.RawMessage {
	now := time.Now().UnixMilli()
	out := make([]json.RawMessage, len(events))
	for i, e := range events {
		out[i] = roomserver.ClientEvent(e, dev.UserID, dev.DeviceID, now)
	}
	return out
}

func renderEvent(dev *users.Device, e *roomserver.StoredEvent) json.RawMessage {
	return roomserver.ClientEvent(e, dev.UserID, dev.DeviceID, time.Now().UnixMilli())
}

// bundler renders timeline events with their bundled aggregations
// (threads, edits, references) and the caller's membership at each event
// (unsigned.membership, spec v1.11), computed once for a whole response.
type bundler struct {
	dev         *users.Device
	now         int64
	aggs        map[string]*roomserver.Aggregations
	memberships map[int64]string
}

func (a *API) bundler(r *http.Request, dev *users.Device, batches ...[]*roomserver.StoredEvent) (*bundler, error) {
	var all []*roomserver.StoredEvent
	for _, b := range batches {
		all = append(all, b...)
	}
	aggs, err := a.Rooms.BundledAggregations(r.Context(), dev.UserID, all)
	if err != nil {
		return nil, err
	}
	ms, err := a.Rooms.MembershipsAt(r.Context(), dev.UserID, all)
	if err != nil {
		return nil, err
	}
	return &bundler{dev: dev, now: time.Now().UnixMilli(), aggs: aggs, memberships: ms}, nil
}

func (b *bundler) event(e *roomserver.StoredEvent) json.RawMessage {
	ev := roomserver.ClientEvent(e, b.dev.UserID, b.dev.DeviceID, b.now)
	ev = roomserver.WithAggregations(ev, b.aggs[e.EventID], b.dev.UserID, b.dev.DeviceID, b.now)
	if m, ok := b.memberships[e.NID]; ok {
		if out, err := sjson.SetBytes(ev, "unsigned.membership", m); err == nil {
			ev = out
		}
	}
	return ev
}

func (b *bundler) events(events []*roomserver.StoredEvent) []json.RawMessage {
	out := make([]json.RawMessage, len(events))
	for i, e := range events {
		out[i] = b.event(e)
	}
	return out
}

// roomState serves GET /_matrix/client/v3/rooms/{roomId}/state. A user who
// left gets the state as it was when they left.
func (a *API) roomState(r *http.Request, dev *users.Device) ([]json.RawMessage, error) {
	events, err := a.Rooms.RoomState(r.Context(), dev.UserID, r.PathValue("roomId"))
	if err != nil {
		return nil, err
	}
	return renderEvents(dev, events), nil
}

// roomStateEvent serves GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}[/{stateKey}]:
// the content, or with ?format=event the whole event.
func (a *API) roomStateEvent(r *http.Request, dev *users.Device) (json.RawMessage, error) {
	e, err := a.Rooms.RoomStateEvent(r.Context(), dev.UserID, r.PathValue("roomId"), r.PathValue("eventType"), r.PathValue("stateKey"))
	if err != nil {
		return nil, err
	}
	ev := renderEvent(dev, e)
	if r.URL.Query().Get("format") == "event" {
		return ev, nil
	}
	var content struct {
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(ev, &content); err != nil || len(content.Content) == 0 {
		return json.RawMessage(`{}`), nil
	}
	return content.Content, nil
}

var memberships = map[string]bool{"join": true, "invite": true, "knock": true, "leave": true, "ban": true}

// roomMembers serves GET /_matrix/client/v3/rooms/{roomId}/members.
func (a *API) roomMembers(r *http.Request, dev *users.Device) (*chunkResponse, error) {
	q := r.URL.Query()
	mq := roomserver.MembersQuery{At: q.Get("at"), Membership: q.Get("membership"), NotMembership: q.Get("not_membership")}
	for _, m := range []string{mq.Membership, mq.NotMembership} {
		if m != "" && !memberships[m] {
			return nil, httputil.InvalidParam("unknown membership " + strconv.Quote(m))
		}
	}
	events, err := a.Rooms.Members(r.Context(), dev.UserID, r.PathValue("roomId"), mq)
	if err != nil {
		return nil, err
	}
	return &chunkResponse{Chunk: renderEvents(dev, events)}, nil
}

type chunkResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
}

// joinedMember always carries both keys, null when the member event sets
// none: clients (and Complement) read them without checking for presence,
// as every other homeserver sends them.
type joinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// joinedMembers serves GET /_matrix/client/v3/rooms/{roomId}/joined_members.
func (a *API) joinedMembers(r *http.Request, dev *users.Device) (map[string]map[string]joinedMember, error) {
	m, err := a.Rooms.JoinedMembers(r.Context(), dev.UserID, r.PathValue("roomId"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]joinedMember, len(m))
	for u, p := range m {
		out[u] = joinedMember{DisplayName: nonEmpty(p.DisplayName), AvatarURL: nonEmpty(p.AvatarURL)}
	}
	return map[string]map[string]joinedMember{"joined": out}, nil
}

// joinedRooms serves GET /_matrix/client/v3/joined_rooms.
func (a *API) joinedRooms(r *http.Request, dev *users.Device) (map[string][]string, error) {
	ids, err := a.Rooms.JoinedRooms(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"joined_rooms": ids}, nil
}

// maxPageLimit caps limit on paginated endpoints.
const maxPageLimit = 1000

// queryLimit parses ?limit: def when absent, 400 M_INVALID_PARAM when not a
// non-negative integer, capped at maxPageLimit.
func queryLimit(q url.Values, def int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, maxPageLimit), nil
}

// queryDir parses ?dir (b or f), def when absent.
func queryDir(q url.Values, def string) (backward bool, err error) {
	d := q.Get("dir")
	if d == "" {
		d = def
	}
	switch d {
	case "b":
		return true, nil
	case "f":
		return false, nil
	}
	return false, httputil.InvalidParam("dir must be b or f")
}

// queryFilter parses ?filter, a JSON RoomEventFilter.
func queryFilter(q url.Values) (*roomserver.EventFilter, error) {
	s := strings.TrimSpace(q.Get("filter"))
	if s == "" {
		return nil, nil
	}
	if !strings.HasPrefix(s, "{") {
		return nil, httputil.InvalidParam("filter must be a JSON RoomEventFilter")
	}
	var f roomserver.EventFilter
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		return nil, httputil.InvalidParam("filter is not a valid RoomEventFilter")
	}
	return &f, nil
}

// withIgnored adds the caller's ignored users (m.ignored_user_list) to the
// filter's not_senders: the spec forbids serving their events in /messages
// and /context.
func (a *API) withIgnored(ctx context.Context, userID string, f *roomserver.EventFilter) (*roomserver.EventFilter, error) {
	ignored, err := a.Users.IgnoredUsers(ctx, userID)
	if err != nil || len(ignored) == 0 {
		return f, err
	}
	out := roomserver.EventFilter{}
	if f != nil {
		out = *f
	}
	out.NotSenders = slices.Clone(out.NotSenders)
	for u := range ignored {
		out.NotSenders = append(out.NotSenders, u)
	}
	slices.Sort(out.NotSenders)
	return &out, nil
}

type messagesResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	Chunk []json.RawMessage `json:"chunk"`
	State []json.RawMessage `json:"state,omitempty"`
}

// roomMessages serves GET /_matrix/client/v3/rooms/{roomId}/messages.
// Tokens are topological (t<depth>_<stream>); a sync token (s<pos>) is
// accepted as from, and no from means the end (dir=b) or start (dir=f).
func (a *API) roomMessages(r *http.Request, dev *users.Device) (*messagesResponse, error) {
	q := r.URL.Query()
	backward, err := queryDir(q, "b")
	if err != nil {
		return nil, err
	}
	limit, err := queryLimit(q, 10)
	if err != nil {
		return nil, err
	}
	f, err := queryFilter(q)
	if err != nil {
		return nil, err
	}
	if f, err = a.withIgnored(r.Context(), dev.UserID, f); err != nil {
		return nil, err
	}
	pg, err := a.Rooms.Messages(r.Context(), dev.UserID, r.PathValue("roomId"), roomserver.MessagesQuery{
		From: q.Get("from"), To: q.Get("to"), Backward: backward, Limit: limit, Filter: f,
	})
	if err != nil {
		return nil, err
	}
	b, err := a.bundler(r, dev, pg.Chunk)
	if err != nil {
		return nil, err
	}
	resp := &messagesResponse{Start: pg.Start, End: pg.End, Chunk: b.events(pg.Chunk)}
	if len(pg.State) > 0 {
		resp.State = renderEvents(dev, pg.State)
	}
	return resp, nil
}

type contextResponse struct {
	Event        json.RawMessage   `json:"event"`
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	Start        string            `json:"start"`
	End          string            `json:"end"`
	State        []json.RawMessage `json:"state"`
}

// eventContext serves GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}.
func (a *API) eventContext(r *http.Request, dev *users.Device) (*contextResponse, error) {
	q := r.URL.Query()
	limit, err := queryLimit(q, 10)
	if err != nil {
		return nil, err
	}
	f, err := queryFilter(q)
	if err != nil {
		return nil, err
	}
	if f, err = a.withIgnored(r.Context(), dev.UserID, f); err != nil {
		return nil, err
	}
	res, err := a.Rooms.EventContext(r.Context(), dev.UserID, r.PathValue("roomId"), r.PathValue("eventId"), limit, f)
	if err != nil {
		return nil, err
	}
	b, err := a.bundler(r, dev, []*roomserver.StoredEvent{res.Event}, res.Before, res.After)
	if err != nil {
		return nil, err
	}
	return &contextResponse{
		Event:        b.event(res.Event),
		EventsBefore: b.events(res.Before),
		EventsAfter:  b.events(res.After),
		Start:        res.Start,
		End:          res.End,
		State:        renderEvents(dev, res.State),
	}, nil
}

// roomEvent serves GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}.
func (a *API) roomEvent(r *http.Request, dev *users.Device) (json.RawMessage, error) {
	e, err := a.Rooms.Event(r.Context(), dev.UserID, r.PathValue("roomId"), r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	b, err := a.bundler(r, dev, []*roomserver.StoredEvent{e})
	if err != nil {
		return nil, err
	}
	return b.event(e), nil
}

type timestampToEventResponse struct {
	EventID        string `json:"event_id"`
	OriginServerTS int64  `json:"origin_server_ts"`
}

// timestampToEvent serves GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event.
func (a *API) timestampToEvent(r *http.Request, dev *users.Device) (*timestampToEventResponse, error) {
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return nil, httputil.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, httputil.InvalidParam("ts must be a timestamp in milliseconds")
	}
	if q.Get("dir") == "" {
		return nil, httputil.MissingParam("dir is required")
	}
	backward, err := queryDir(q, "")
	if err != nil {
		return nil, err
	}
	e, err := a.Rooms.TimestampToEvent(r.Context(), dev.UserID, r.PathValue("roomId"), ts, backward)
	if err != nil {
		return nil, err
	}
	return &timestampToEventResponse{EventID: e.EventID, OriginServerTS: e.OriginTS}, nil
}

type relationsResponse struct {
	Chunk          []json.RawMessage `json:"chunk"`
	NextBatch      string            `json:"next_batch,omitempty"`
	PrevBatch      string            `json:"prev_batch,omitempty"`
	RecursionDepth *int              `json:"recursion_depth,omitempty"`
}

// relations serves GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]].
func (a *API) relations(r *http.Request, dev *users.Device) (*relationsResponse, error) {
	q := r.URL.Query()
	backward, err := queryDir(q, "b")
	if err != nil {
		return nil, err
	}
	limit, err := queryLimit(q, 50)
	if err != nil {
		return nil, err
	}
	var recurse bool
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		recurse = true
	default:
		return nil, httputil.InvalidParam("recurse must be true or false")
	}
	pg, err := a.Rooms.Relations(r.Context(), dev.UserID, r.PathValue("roomId"), r.PathValue("eventId"), roomserver.RelationsQuery{
		RelType: r.PathValue("relType"), EventType: r.PathValue("eventType"),
		From: q.Get("from"), To: q.Get("to"), Backward: backward, Limit: limit, Recurse: recurse,
	})
	if err != nil {
		return nil, err
	}
	resp := &relationsResponse{Chunk: renderEvents(dev, pg.Chunk), NextBatch: pg.NextBatch, PrevBatch: pg.PrevBatch}
	if recurse {
		resp.RecursionDepth = &pg.RecursionDepth
	}
	return resp, nil
}

type threadsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// threads serves GET /_matrix/client/v1/rooms/{roomId}/threads: thread
// roots, most recently active first, each with its bundled m.thread summary.
func (a *API) threads(r *http.Request, dev *users.Device) (*threadsResponse, error) {
	q := r.URL.Query()
	limit, err := queryLimit(q, 50)
	if err != nil {
		return nil, err
	}
	pg, err := a.Rooms.Threads(r.Context(), dev.UserID, r.PathValue("roomId"), roomserver.ThreadsQuery{
		Include: q.Get("include"), From: q.Get("from"), Limit: limit,
	})
	if err != nil {
		return nil, err
	}
	roots := make([]*roomserver.StoredEvent, len(pg.Chunk))
	for i, t := range pg.Chunk {
		roots[i] = t.Root
	}
	b, err := a.bundler(r, dev, roots)
	if err != nil {
		return nil, err
	}
	resp := &threadsResponse{Chunk: b.events(roots), NextBatch: pg.NextBatch}
	return resp, nil
}
