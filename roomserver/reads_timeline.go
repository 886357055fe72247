package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Timeline reads: /messages, /context, /event, /timestamp_to_event.
//
// Events are ordered topologically by (depth, stream_pos). A pagination
// token t<depth>_<stream_pos> names the point just after every event whose
// key is at most (depth, stream_pos): paginating backwards from it returns
// those events, forwards returns the ones after it. The point just before an
// event (d, s) is therefore t<d>_<s-1>, stream positions being integers.
// A sync token s<pos> is accepted wherever a pagination token is: it names
// the point after the room's last event on the stream at or before pos.

// Token is a parsed pagination or sync token.
type Token struct {
	// Topological: Depth and Stream are a topological key. Otherwise this
	// is a sync token and Stream is the stream position.
	Topological   bool
	Depth, Stream int64
}

// TopoToken renders the pagination token for the point just after (depth,
// streamPos). The sync engine's prev_batch for a timeline starting at event
// e is TopoToken(e.Depth, e.StreamPos-1).
func TopoToken(depth, streamPos int64) string {
	return "t" + strconv.FormatInt(depth, 10) + "_" + strconv.FormatInt(streamPos, 10)
}

func (k topoKey) token() string { return TopoToken(k.depth, k.stream) }

// before is the point just before the event at k.
func (k topoKey) before() topoKey { return topoKey{k.depth, k.stream - 1} }

// ParseToken parses "t<depth>_<stream>" or "s<pos>" (anything after the
// position in a sync token, such as other streams' positions after "_", is
// ignored: the room timeline only needs the event stream position).
func ParseToken(tok string) (Token, error) {
	bad := spec.InvalidParam("invalid pagination token " + strconv.Quote(tok))
	if len(tok) < 2 {
		return Token{}, bad
	}
	switch tok[0] {
	case 't':
		d, s, ok := strings.Cut(tok[1:], "_")
		if !ok {
			return Token{}, bad
		}
		depth, err1 := strconv.ParseInt(d, 10, 64)
		stream, err2 := strconv.ParseInt(s, 10, 64)
		// stream may be negative: backfilled history (remote_backfill.go)
		if err1 != nil || err2 != nil || depth < 0 {
			return Token{}, bad
		}
		return Token{Topological: true, Depth: depth, Stream: stream}, nil
	case 's':
		p := tok[1:]
		if i := strings.IndexFunc(p, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
			p = p[:i]
		}
		pos, err := strconv.ParseInt(p, 10, 64)
		if err != nil || pos < 0 {
			return Token{}, bad
		}
		return Token{Stream: pos}, nil
	}
	return Token{}, bad
}

// resolveToken turns a token into a topological key in the room.
func (s *Service) resolveToken(ctx context.Context, roomNID int64, tok Token) (topoKey, error) {
	if tok.Topological {
		return topoKey{tok.Depth, tok.Stream}, nil
	}
	var k topoKey
	err := s.db.QueryRow(ctx, `SELECT e.depth, e.stream_pos FROM events e WHERE e.room_nid = $1 AND e.stream_pos <= $2`+
		inTimeline+` ORDER BY e.stream_pos DESC LIMIT 1`, roomNID, tok.Stream).Scan(&k.depth, &k.stream)
	if errors.Is(err, sql.ErrNoRows) {
		return topoKey{}, nil
	}
	if err != nil {
		return topoKey{}, fmt.Errorf("resolve sync token: %w", err)
	}
	return k, nil
}

// roomEnd is the point after the room's topologically last event.
func (s *Service) roomEnd(ctx context.Context, roomNID int64) (topoKey, error) {
	var k topoKey
	err := s.db.QueryRow(ctx, `SELECT e.depth, e.stream_pos FROM events e WHERE e.room_nid = $1`+inTimeline+`
		ORDER BY e.depth DESC, e.stream_pos DESC LIMIT 1`, roomNID).Scan(&k.depth, &k.stream)
	if errors.Is(err, sql.ErrNoRows) {
		return topoKey{}, nil
	}
	if err != nil {
		return topoKey{}, fmt.Errorf("room end: %w", err)
	}
	return k, nil
}

// EventFilter is the spec's RoomEventFilter as the read path applies it.
// A nil list means "no restriction"; an empty list matches nothing.
type EventFilter struct {
	Limit                   *int     `json:"limit,omitempty"`
	Types                   []string `json:"types,omitempty"`
	NotTypes                []string `json:"not_types,omitempty"`
	Senders                 []string `json:"senders,omitempty"`
	NotSenders              []string `json:"not_senders,omitempty"`
	ContainsURL             *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers         bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool     `json:"include_redundant_members,omitempty"`
}

// Matches reports whether e passes the filter.
func (f *EventFilter) Matches(e *StoredEvent) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !anyTypeMatch(f.Types, e.Type) {
		return false
	}
	if anyTypeMatch(f.NotTypes, e.Type) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, e.Sender) {
		return false
	}
	if contains(f.NotSenders, e.Sender) {
		return false
	}
	if f.ContainsURL != nil {
		u := gjson.GetBytes(e.JSON, "content.url")
		if (u.Type == gjson.String) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// sql adds the parts of f that SQL can evaluate exactly to a WHERE clause;
// Matches still runs on every row. Patterns with '*' stay in Go: LIKE is
// case-insensitive on SQLite and event types are not.
func (f *EventFilter) sql(p *qargs) string {
	if f == nil {
		return ""
	}
	var b strings.Builder
	if f.Types != nil && !hasWildcard(f.Types) {
		b.WriteString(` AND e.type IN (` + qlist(p, f.Types) + `)`)
	}
	if exact := withoutWildcards(f.NotTypes); len(exact) > 0 {
		b.WriteString(` AND e.type NOT IN (` + qlist(p, exact) + `)`)
	}
	if f.Senders != nil {
		b.WriteString(` AND e.sender IN (` + qlist(p, f.Senders) + `)`)
	}
	if len(f.NotSenders) > 0 {
		b.WriteString(` AND e.sender NOT IN (` + qlist(p, f.NotSenders) + `)`)
	}
	return b.String()
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func hasWildcard(patterns []string) bool {
	for _, p := range patterns {
		if strings.Contains(p, "*") {
			return true
		}
	}
	return false
}

func withoutWildcards(patterns []string) []string {
	var out []string
	for _, p := range patterns {
		if !strings.Contains(p, "*") {
			out = append(out, p)
		}
	}
	return out
}

func anyTypeMatch(patterns []string, typ string) bool {
	for _, p := range patterns {
		if globMatch(p, typ) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where '*' is any run of characters.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// maxPaginationRounds bounds how many batches one /messages request reads
// when history visibility or a filter hides most of them; the client then
// continues from the returned end token.
const maxPaginationRounds = 5

// page is one pagination result.
type page struct {
	events []*eventRow
	// next is where to continue; more is false when the range is exhausted.
	next topoKey
	more bool
}

// paginate reads up to limit visible events matching f from position from,
// backwards (newest first) or forwards, never past bound: backwards only
// events after bound, forwards only events up to bound. where, if set, adds
// conditions on e to the query.
func (s *Service) paginate(ctx context.Context, userID string, roomNID int64, from topoKey, backward bool, bound topoKey, limit int, f *EventFilter, where ...func(p *qargs) string) (*page, error) {
	pg := &page{next: from, more: true}
	if limit <= 0 {
		return pg, nil
	}
	if f != nil && ((f.Types != nil && len(f.Types) == 0) || (f.Senders != nil && len(f.Senders) == 0)) {
		pg.more = false
		return pg, nil
	}
	pos := from
	for round := 0; round < maxPaginationRounds; round++ {
		want := limit - len(pg.events)
		n := min(max(2*want, 20), 500)
		var p qargs
		q := `SELECT ` + eventColumns + eventFrom + ` WHERE e.room_nid = ` + p.add(roomNID) + inTimeline
		d, st := p.add(pos.depth), p.add(pos.stream)
		bd, bs := p.add(bound.depth), p.add(bound.stream)
		// the plain range on depth lets both engines scan the
		// (room_nid, depth, stream_pos) index from the token instead of
		// from the end of the room
		if backward {
			q += ` AND e.depth <= ` + d + ` AND e.depth >= ` + bd +
				` AND (e.depth < ` + d + ` OR e.stream_pos <= ` + st + `)` +
				` AND (e.depth > ` + bd + ` OR e.stream_pos > ` + bs + `)`
		} else {
			q += ` AND e.depth >= ` + d + ` AND e.depth <= ` + bd +
				` AND (e.depth > ` + d + ` OR e.stream_pos > ` + st + `)` +
				` AND (e.depth < ` + bd + ` OR e.stream_pos <= ` + bs + `)`
		}
		q += f.sql(&p)
		for _, w := range where {
			q += w(&p)
		}
		if backward {
			q += ` ORDER BY e.depth DESC, e.stream_pos DESC`
		} else {
			q += ` ORDER BY e.depth ASC, e.stream_pos ASC`
		}
		q += ` LIMIT ` + p.add(n)
		rows, err := s.queryEvents(ctx, q, p...)
		if err != nil {
			return nil, fmt.Errorf("paginate: %w", err)
		}
		matching := make([]*eventRow, 0, len(rows))
		for _, r := range rows {
			if f.Matches(r.StoredEvent) {
				matching = append(matching, r)
			}
		}
		visible, err := s.visibleSet(ctx, userID, matching)
		if err != nil {
			return nil, err
		}
		for i, r := range rows {
			if backward {
				pos = keyOf(r.StoredEvent).before()
			} else {
				pos = keyOf(r.StoredEvent)
			}
			if visible[r.NID] {
				pg.events = append(pg.events, r)
			}
			if len(pg.events) == limit {
				pg.next = pos
				// the range is exhausted only if this was the last row there is
				pg.more = i < len(rows)-1 || len(rows) == n
				return pg, nil
			}
		}
		pg.next = pos
		if len(rows) < n {
			pg.more = false
			return pg, nil
		}
	}
	return pg, nil
}

// MessagesQuery is a GET /messages request.
type MessagesQuery struct {
	From, To string
	Backward bool
	Limit    int
	Filter   *EventFilter
}

// MessagesPage is a GET /messages answer. End is "" when there is nothing
// more to read in that direction.
type MessagesPage struct {
	Start, End string
	Chunk      []*StoredEvent
	State      []*StoredEvent
}

// Messages pages through the room's timeline as userID may see it.
func (s *Service) Messages(ctx context.Context, userID, roomID string, q MessagesQuery) (*MessagesPage, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	var from topoKey
	start := q.From
	switch {
	case q.From != "":
		tok, err := ParseToken(q.From)
		if err != nil {
			return nil, err
		}
		if from, err = s.resolveToken(ctx, a.room.nid, tok); err != nil {
			return nil, err
		}
	case q.Backward:
		if from, err = s.roomEnd(ctx, a.room.nid); err != nil {
			return nil, err
		}
		start = from.token()
	default:
		start = topoKey{}.token()
	}
	var bound topoKey
	if q.Backward {
		bound = topoKey{0, -1}
	} else {
		bound = topoInfinity
	}
	if q.To != "" {
		tok, err := ParseToken(q.To)
		if err != nil {
			return nil, err
		}
		if bound, err = s.resolveToken(ctx, a.room.nid, tok); err != nil {
			return nil, err
		}
	}
	// a departed user reads nothing after their departure
	if u := a.until(); q.Backward && u.less(from) {
		from = u
	} else if !q.Backward && u.less(bound) {
		bound = u
	}
	pg, err := s.paginate(ctx, userID, a.room.nid, from, q.Backward, bound, q.Limit, q.Filter)
	if err != nil {
		return nil, err
	}
	// The start of what we hold: other servers of the room may have more.
	// One backfill brings at most a batch, fewer than a page may ask for,
	// so backfill until the page is full or the room's start is reached;
	// a page cut short by the round limit still gets an end token, else
	// the client would take it for the room's first page.
	backfilled := false
	for round := 0; q.Backward && !pg.more && q.To == "" && round < maxBackfillRounds; round++ {
		if backfilled = s.backfillOlder(ctx, a.room.nid); !backfilled {
			break
		}
		if pg, err = s.paginate(ctx, userID, a.room.nid, from, q.Backward, bound, q.Limit, q.Filter); err != nil {
			return nil, err
		}
	}
	out := &MessagesPage{Start: start, Chunk: storedEvents(pg.events)}
	if pg.more || (backfilled && len(pg.events) > 0) {
		out.End = pg.next.token()
	}
	if q.Filter != nil && q.Filter.LazyLoadMembers {
		members, err := s.lazyMembers(ctx, pg.events)
		if err != nil {
			return nil, err
		}
		out.State = storedEvents(members)
	}
	return out, nil
}

// lazyMembers returns, for each sender of events, their member event as of
// their latest event among them: what a client needs to render the senders
// when members are lazy-loaded. One state read for the whole batch.
func (s *Service) lazyMembers(ctx context.Context, events []*eventRow) ([]*eventRow, error) {
	if len(events) == 0 {
		return nil, nil
	}
	latest := map[string]*eventRow{}
	var groups []int64
	var keys [][2]string
	for _, e := range events {
		if l, ok := latest[e.Sender]; !ok || keyOf(l.StoredEvent).less(keyOf(e.StoredEvent)) {
			if !ok {
				keys = append(keys, [2]string{spec.MRoomMember, e.Sender})
			}
			latest[e.Sender] = e
		}
	}
	for _, e := range latest {
		groups = append(groups, e.stateAfter())
	}
	states, err := s.statesAt(ctx, groups, &stateFilter{keys: keys})
	if err != nil {
		return nil, err
	}
	var nids []int64
	for sender, e := range latest {
		if n := states[e.stateAfter()][[2]string{spec.MRoomMember, sender}]; n != 0 {
			nids = append(nids, n)
		}
	}
	rows, err := s.eventRowsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	sortByStateKey(rows)
	return rows, nil
}

// Event returns one event userID may see. Unknown, in another room, or not
// visible are all 404 M_NOT_FOUND, as the spec asks.
func (s *Service) Event(ctx context.Context, userID, roomID, eventID string) (*StoredEvent, error) {
	_, ev, err := s.visibleEvent(ctx, userID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return ev.StoredEvent, nil
}

// visibleEvent loads an event of the room that userID may see.
func (s *Service) visibleEvent(ctx context.Context, userID, roomID, eventID string) (*roomAccess, *eventRow, error) {
	notFound := spec.NotFound("event not found or not visible to you")
	if err := validRoomID(roomID); err != nil {
		return nil, nil, err
	}
	a, err := s.access(ctx, roomID, userID)
	var me spec.MatrixError
	if errors.As(err, &me) && me.ErrCode == spec.ErrorForbidden {
		return nil, nil, notFound
	}
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.eventRowsByID(ctx, []string{eventID})
	if err != nil {
		return nil, nil, err
	}
	if len(rows) == 0 || rows[0].roomNID != a.room.nid || rows[0].StreamPos <= 0 {
		return nil, nil, notFound
	}
	ev := rows[0]
	if a.until().less(keyOf(ev.StoredEvent)) {
		return nil, nil, notFound
	}
	visible, err := s.visibleSet(ctx, userID, rows)
	if err != nil {
		return nil, nil, err
	}
	if !visible[ev.NID] {
		return nil, nil, notFound
	}
	return a, ev, nil
}

// ContextResult is a GET /context answer.
type ContextResult struct {
	Event         *StoredEvent
	Before, After []*StoredEvent
	Start, End    string
	State         []*StoredEvent
}

// EventContext returns an event with up to limit events around it (half
// before, half after) and the room state at the last event returned.
func (s *Service) EventContext(ctx context.Context, userID, roomID, eventID string, limit int, f *EventFilter) (*ContextResult, error) {
	a, ev, err := s.visibleEvent(ctx, userID, roomID, eventID)
	if err != nil {
		return nil, err
	}
	k := keyOf(ev.StoredEvent)
	nBefore := limit / 2
	before, err := s.paginate(ctx, userID, a.room.nid, k.before(), true, topoKey{0, -1}, nBefore, f)
	if err != nil {
		return nil, err
	}
	after, err := s.paginate(ctx, userID, a.room.nid, k, false, a.until(), limit-nBefore, f)
	if err != nil {
		return nil, err
	}
	res := &ContextResult{
		Event:  ev.StoredEvent,
		Before: storedEvents(before.events),
		After:  storedEvents(after.events),
		Start:  before.next.token(),
		End:    after.next.token(),
	}
	last := ev
	if n := len(after.events); n > 0 {
		last = after.events[n-1]
	}
	var state []*eventRow
	if f != nil && f.LazyLoadMembers {
		all := append(append([]*eventRow{ev}, before.events...), after.events...)
		senders := make([]string, 0, len(all))
		for _, e := range all {
			senders = append(senders, e.Sender)
		}
		state, err = s.memberEventsFor(ctx, last.stateAfter(), senders)
	} else {
		state, err = s.stateEventsAt(ctx, last.stateAfter(), nil)
	}
	if err != nil {
		return nil, err
	}
	res.State = storedEvents(state)
	return res, nil
}

// TimestampToEvent finds the event closest to ts in the given direction:
// forwards the first event at or after ts, backwards the last at or before.
// Only events userID may see count.
func (s *Service) TimestampToEvent(ctx context.Context, userID, roomID string, ts int64, backward bool) (*StoredEvent, error) {
	a, err := s.access(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	u := a.until()
	const batch = 50
	cursor := ts
	for round := 0; round < maxPaginationRounds; round++ {
		var q string
		if backward {
			q = ` AND e.origin_ts <= $2 ORDER BY e.origin_ts DESC, e.stream_pos DESC`
		} else {
			q = ` AND e.origin_ts >= $2 ORDER BY e.origin_ts ASC, e.stream_pos ASC`
		}
		rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.room_nid = $1`+inTimeline+q+` LIMIT $3`,
			a.room.nid, cursor, batch)
		if err != nil {
			return nil, fmt.Errorf("timestamp to event: %w", err)
		}
		var inRange []*eventRow
		for _, r := range rows {
			if !u.less(keyOf(r.StoredEvent)) {
				inRange = append(inRange, r)
			}
		}
		visible, err := s.filterVisibleRows(ctx, userID, inRange)
		if err != nil {
			return nil, err
		}
		if len(visible) > 0 {
			return visible[0].StoredEvent, nil
		}
		if len(rows) < batch {
			break
		}
		// continue past the timestamp of the last row; rows sharing it were
		// all in this batch unless more than a batch share one millisecond
		last := rows[len(rows)-1].OriginTS
		if backward {
			cursor = last - 1
		} else {
			cursor = last + 1
		}
	}
	return nil, spec.NotFound("no event found in that direction from the timestamp")
}
