package roomserver

// Read-only queries /sync needs, shaped for batches: one call answers for
// every room of a response, so a sync costs a handful of round trips
// however many rooms the user is in.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// SyncMembership is one room the user has a membership in.
type SyncMembership struct {
	RoomNID    int64
	RoomID     string
	Membership string // join, invite, leave, ban, knock
	EventNID   int64
	// StreamPos is the position of the membership event.
	StreamPos int64
	Forgotten bool
}

// SyncMemberships lists every room userID has a membership in.
func (s *Service) SyncMemberships(ctx context.Context, userID string) ([]SyncMembership, error) {
	rows, err := s.db.Query(ctx, `SELECT m.room_nid, r.room_id, m.membership, m.event_nid, m.stream_pos, m.forgotten
		FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("read memberships of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []SyncMembership
	for rows.Next() {
		var m SyncMembership
		if err := rows.Scan(&m.RoomNID, &m.RoomID, &m.Membership, &m.EventNID, &m.StreamPos, &m.Forgotten); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// SyncRange selects the events of one room with From < stream_pos <= To.
type SyncRange struct {
	RoomNID  int64
	From, To int64
}

// SyncTimeline is the newest events of one range, oldest first.
type SyncTimeline struct {
	Events []*StoredEvent
	// Limited is true when the range holds more events than were returned.
	Limited bool
	// Gap is true when the first event follows a gap in the room's
	// history that /state_ids bridged (input_gap.go): the state before it
	// is not what the events before it made.
	Gap bool
	// GroupBefore maps each event's NID to the state group before it (0
	// for the create event).
	GroupBefore map[int64]int64
}

const storedEventCols = `e.event_nid, e.event_id, r.room_id, e.type, e.state_key, e.sender, e.depth, e.origin_ts,
	e.stream_pos, e.json, e.txn_device, e.txn_id, e.redacted_by`

func scanStoredEvent(rows *sql.Rows, extra ...any) (*StoredEvent, error) {
	var e StoredEvent
	var sk, txnDev, txnID, redactedBy sql.NullString
	dest := append([]any{&e.NID, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginTS,
		&e.StreamPos, &e.JSON, &txnDev, &txnID, &redactedBy}, extra...)
	if err := rows.Scan(dest...); err != nil {
		return nil, fmt.Errorf("scan event: %w", err)
	}
	if sk.Valid {
		e.StateKey = &sk.String
	}
	e.TxnDevice, e.TxnID, e.RedactedBy = txnDev.String, txnID.String, redactedBy.String
	return &e, nil
}

// rangesCTE renders ranges as a CTE "b(room_nid, lo, hi)" whose
// parameters start after the first `after` ones. The casts tell Postgres
// the types of parameters that only appear inside VALUES.
func rangesCTE(ranges []SyncRange, after int) (string, []any) {
	var q strings.Builder
	args := make([]any, 0, 3*len(ranges))
	q.WriteString("b(room_nid, lo, hi) AS (VALUES ")
	for i, r := range ranges {
		if i > 0 {
			q.WriteString(", ")
		}
		n := after + len(args)
		fmt.Fprintf(&q, "(CAST($%d AS BIGINT), CAST($%d AS BIGINT), CAST($%d AS BIGINT))", n+1, n+2, n+3)
		args = append(args, r.RoomNID, r.From, r.To)
	}
	q.WriteString(")")
	return q.String(), args
}

// SyncTimelines returns, for every range, its newest `limit` events in one
// query: a correlated subquery finds each room's cut-off position through
// the (room_nid, stream_pos) index, so a room's long history is never
// scanned. Rooms without events in their range are absent from the map.
func (s *Service) SyncTimelines(ctx context.Context, ranges []SyncRange, limit int) (map[int64]*SyncTimeline, error) {
	out := map[int64]*SyncTimeline{}
	if len(ranges) == 0 {
		return out, nil
	}
	limit = max(limit, 0)
	cte, args := rangesCTE(ranges, 0)
	q := `WITH ` + cte + `,
		c AS MATERIALIZED (SELECT b.room_nid, b.lo, b.hi, (SELECT x.stream_pos FROM events x
				WHERE x.room_nid = b.room_nid AND x.stream_pos > b.lo AND x.stream_pos <= b.hi
				AND x.rejected = FALSE AND x.soft_failed = FALSE
				ORDER BY x.stream_pos DESC LIMIT 1 OFFSET ` + strconv.Itoa(limit) + `) AS cut FROM b)
		SELECT ` + storedEventCols + `, c.cut IS NOT NULL, COALESCE(e.state_group_before, 0), e.room_nid
		FROM c JOIN events e ON e.room_nid = c.room_nid AND e.stream_pos > COALESCE(c.cut, c.lo) AND e.stream_pos <= c.hi
		JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.rejected = FALSE AND e.soft_failed = FALSE
		ORDER BY e.room_nid, e.stream_pos`
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read timelines: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var limited bool
		var before, roomNID int64
		e, err := scanStoredEvent(rows, &limited, &before, &roomNID)
		if err != nil {
			return nil, err
		}
		t := out[roomNID]
		if t == nil {
			t = &SyncTimeline{Limited: limited, GroupBefore: map[int64]int64{}}
			out[roomNID] = t
		}
		t.GroupBefore[e.NID] = before
		t.Events = append(t.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read timelines: %w", err)
	}
	if err := s.markGaps(ctx, out); err != nil {
		return nil, err
	}
	// With limit 0 nothing is returned, but a range with events in it is
	// still limited: one more query answers that for every range.
	if limit == 0 {
		cte, args := rangesCTE(ranges, 0)
		rows, err := s.db.Query(ctx, `WITH `+cte+` SELECT b.room_nid FROM b WHERE EXISTS (SELECT 1 FROM events x
			WHERE x.room_nid = b.room_nid AND x.stream_pos > b.lo AND x.stream_pos <= b.hi
			AND x.rejected = FALSE AND x.soft_failed = FALSE)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read timelines: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var room int64
			if err := rows.Scan(&room); err != nil {
				return nil, err
			}
			out[room] = &SyncTimeline{Limited: true, GroupBefore: map[int64]int64{}}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read timelines: %w", err)
		}
	}
	return out, nil
}

// SyncStateKey names one piece of room state.
type SyncStateKey struct{ Type, StateKey string }

// SyncCurrentState returns the current state events of each room.
func (s *Service) SyncCurrentState(ctx context.Context, roomNIDs []int64) (map[int64][]*StoredEvent, error) {
	return s.syncCurrentState(ctx, roomNIDs, nil)
}

// syncCurrentState reads the current state events of each room, in
// stream order; with types, only the events of those types with an empty
// state key.
func (s *Service) syncCurrentState(ctx context.Context, roomNIDs []int64, types []string) (map[int64][]*StoredEvent, error) {
	out := map[int64][]*StoredEvent{}
	if len(roomNIDs) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT `+storedEventCols+`, cs.room_nid FROM current_state cs
		JOIN events e ON e.event_nid = cs.event_nid JOIN rooms r ON r.room_nid = cs.room_nid
		WHERE cs.room_nid IN ($IN)`, 0, roomNIDs)
	if len(types) > 0 {
		tq, targs := storage.In(` AND cs.state_key = '' AND cs.type IN ($IN)`, len(args), types)
		q, args = q+tq, append(args, targs...)
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY cs.room_nid, e.stream_pos`, args...)
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room int64
		e, err := scanStoredEvent(rows, &room)
		if err != nil {
			return nil, err
		}
		out[room] = append(out[room], e)
	}
	return out, rows.Err()
}

// SyncStateAt resolves state groups (delta chains: a group is its
// prev_group plus its own entries, event NID 0 removing a key) to the
// event NIDs of their state, in one recursive query for all groups.
func (s *Service) SyncStateAt(ctx context.Context, groups []int64) (map[int64]map[SyncStateKey]int64, error) {
	out := map[int64]map[SyncStateKey]int64{}
	if len(groups) == 0 {
		return out, nil
	}
	q, args := storage.In(`WITH RECURSIVE chain(start_group, state_group, prev_group, lvl) AS (
			SELECT state_group, state_group, prev_group, 0 FROM state_groups WHERE state_group IN ($IN)
			UNION ALL
			SELECT c.start_group, g.state_group, g.prev_group, c.lvl + 1
			FROM chain c JOIN state_groups g ON g.state_group = c.prev_group
		)
		SELECT c.start_group, c.lvl, se.type, se.state_key, se.event_nid
		FROM chain c JOIN state_group_entries se ON se.state_group = c.state_group
		ORDER BY c.start_group, c.lvl DESC`, 0, groups)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("resolve state groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var start, lvl, nid int64
		var k SyncStateKey
		if err := rows.Scan(&start, &lvl, &k.Type, &k.StateKey, &nid); err != nil {
			return nil, err
		}
		m := out[start]
		if m == nil {
			m = map[SyncStateKey]int64{}
			out[start] = m
		}
		// deepest link first, so nearer groups overwrite older entries
		if nid == 0 {
			delete(m, k)
		} else {
			m[k] = nid
		}
	}
	return out, rows.Err()
}

// SyncEventsByNID loads events by NID.
func (s *Service) SyncEventsByNID(ctx context.Context, nids []int64) (map[int64]*StoredEvent, error) {
	out := make(map[int64]*StoredEvent, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT `+storedEventCols+` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_nid IN ($IN)`, 0, nids)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanStoredEvent(rows)
		if err != nil {
			return nil, err
		}
		out[e.NID] = e
	}
	return out, rows.Err()
}

// SyncStateChanges returns the state keys written by events in each range
// (for the state section of an incremental sync with a limited timeline).
func (s *Service) SyncStateChanges(ctx context.Context, ranges []SyncRange) (map[int64][]SyncStateKey, error) {
	out := map[int64][]SyncStateKey{}
	if len(ranges) == 0 {
		return out, nil
	}
	cte, args := rangesCTE(ranges, 0)
	rows, err := s.db.Query(ctx, `WITH `+cte+` SELECT DISTINCT e.room_nid, e.type, e.state_key FROM b
		JOIN events e ON e.room_nid = b.room_nid AND e.stream_pos > b.lo AND e.stream_pos <= b.hi
		WHERE e.state_key IS NOT NULL AND e.rejected = FALSE AND e.soft_failed = FALSE`, args...)
	if err != nil {
		return nil, fmt.Errorf("read state changes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room int64
		var k SyncStateKey
		if err := rows.Scan(&room, &k.Type, &k.StateKey); err != nil {
			return nil, err
		}
		out[room] = append(out[room], k)
	}
	return out, rows.Err()
}

// SyncSummary is the m.heroes / member counts of a room summary.
type SyncSummary struct {
	Heroes  []string
	Joined  int
	Invited int
}

// SyncSummaries returns the room summary of each room as seen by userID:
// up to five other joined or invited members (in the order they arrived)
// and the joined and invited counts.
func (s *Service) SyncSummaries(ctx context.Context, userID string, roomNIDs []int64) (map[int64]*SyncSummary, error) {
	out := make(map[int64]*SyncSummary, len(roomNIDs))
	if len(roomNIDs) == 0 {
		return out, nil
	}
	for _, n := range roomNIDs {
		out[n] = &SyncSummary{}
	}
	q, args := storage.In(`SELECT room_nid, membership, COUNT(*) FROM room_members
		WHERE room_nid IN ($IN) AND membership IN ('join', 'invite') GROUP BY room_nid, membership`, 0, roomNIDs)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("count members: %w", err)
	}
	for rows.Next() {
		var room int64
		var membership string
		var n int
		if err := rows.Scan(&room, &membership, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if membership == "join" {
			out[room].Joined = n
		} else {
			out[room].Invited = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count members: %w", err)
	}
	q, args = storage.In(`SELECT room_nid, user_id FROM (
			SELECT room_nid, user_id, ROW_NUMBER() OVER (PARTITION BY room_nid ORDER BY stream_pos, user_id) AS rn
			FROM room_members WHERE room_nid IN ($IN) AND membership IN ('join', 'invite') AND user_id <> $1
		) t WHERE rn <= 5 ORDER BY room_nid, rn`, 1, roomNIDs)
	rows, err = s.db.Query(ctx, q, append([]any{userID}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("read heroes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room int64
		var user string
		if err := rows.Scan(&room, &user); err != nil {
			return nil, err
		}
		out[room].Heroes = append(out[room].Heroes, user)
	}
	return out, rows.Err()
}

// SyncUnreadBounds says from where to count one room's unread messages.
type SyncUnreadBounds struct {
	// Main is the position after which main-timeline messages (all
	// messages, unless ThreadsApart) count.
	Main int64
	// ThreadsApart counts messages in threads separately, each from
	// Threads[root] or, without a receipt in that thread, from Default.
	ThreadsApart bool
	Default      int64
	Threads      map[string]int64
}

// SyncUnread is one room's unread counts.
type SyncUnread struct {
	Notifications, Highlights int
	// Threads maps a thread root to its [notifications, highlights],
	// only with ThreadsApart and only for threads with unread messages.
	Threads map[string][2]int
}

// unreadWhere selects the messages that count as notifications for userID
// ($1): from others, visible messages, not edits and not notices (the
// default push rules suppress those; stored events are canonical JSON, so
// the notice test is a plain substring).
const unreadWhere = `e.sender <> $1 AND e.state_key IS NULL AND e.type IN ('m.room.message', 'm.room.encrypted', 'm.sticker')
	AND e.redacted_by IS NULL AND e.rejected = FALSE AND e.soft_failed = FALSE
	AND (e.rel_type IS NULL OR e.rel_type <> 'm.replace')
	AND e.json NOT LIKE '%"msgtype":"m.notice"%'`

// SyncUnreadCounts counts unread messages per room: notifications, and
// highlights (messages that name the user by ID, which covers m.mentions
// and the pill a client inserts).
func (s *Service) SyncUnreadCounts(ctx context.Context, userID string, bounds map[int64]SyncUnreadBounds) (map[int64]*SyncUnread, error) {
	out := map[int64]*SyncUnread{}
	if len(bounds) == 0 {
		return out, nil
	}
	like := "%" + likeEscaper.Replace(userID) + "%"
	highlight := `CASE WHEN e.type = 'm.room.message' AND e.json LIKE $2 ESCAPE '\' THEN 1 ELSE 0 END`
	ranges := make([]SyncRange, 0, len(bounds))
	var threadRanges []SyncRange
	for room, b := range bounds {
		out[room] = &SyncUnread{}
		ranges = append(ranges, SyncRange{RoomNID: room, From: b.Main, To: 1 << 62})
		if b.ThreadsApart {
			lo := b.Default
			for _, p := range b.Threads {
				lo = min(lo, p)
			}
			threadRanges = append(threadRanges, SyncRange{RoomNID: room, From: lo, To: 1 << 62})
			out[room].Threads = map[string][2]int{}
		}
	}
	cte, args := rangesCTE(ranges, 2)
	q := `WITH ` + cte + ` SELECT e.room_nid, COUNT(*), SUM(` + highlight + `)
		FROM b JOIN events e ON e.room_nid = b.room_nid AND e.stream_pos > b.lo
		WHERE ` + unreadWhere
	var apart []int64
	for _, r := range threadRanges {
		apart = append(apart, r.RoomNID)
	}
	if len(apart) > 0 {
		// thread messages of these rooms are counted by the second query
		inQ, inArgs := storage.In(` AND (e.rel_type IS NULL OR e.rel_type <> 'm.thread' OR e.room_nid NOT IN ($IN))`, 2+len(args), apart)
		q += inQ
		args = append(args, inArgs...)
	}
	rows, err := s.db.Query(ctx, q+` GROUP BY e.room_nid`, append([]any{userID, like}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("count unread: %w", err)
	}
	for rows.Next() {
		var room int64
		var n, h int
		if err := rows.Scan(&room, &n, &h); err != nil {
			rows.Close()
			return nil, err
		}
		out[room].Notifications, out[room].Highlights = n, h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count unread: %w", err)
	}
	if len(threadRanges) == 0 {
		return out, nil
	}
	// Thread messages one by one: each thread has its own bound, and
	// unread thread messages are few.
	cte, args = rangesCTE(threadRanges, 2)
	rows, err = s.db.Query(ctx, `WITH `+cte+` SELECT e.room_nid, e.relates_to, e.stream_pos, `+highlight+`
		FROM b JOIN events e ON e.room_nid = b.room_nid AND e.stream_pos > b.lo
		WHERE `+unreadWhere+` AND e.rel_type = 'm.thread'`, append([]any{userID, like}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("count unread in threads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, pos int64
		var root string
		var h int
		if err := rows.Scan(&room, &root, &pos, &h); err != nil {
			return nil, err
		}
		b := bounds[room]
		from, ok := b.Threads[root]
		if !ok {
			from = b.Default
		}
		if pos <= from {
			continue
		}
		c := out[room].Threads[root]
		out[room].Threads[root] = [2]int{c[0] + 1, c[1] + h}
	}
	return out, rows.Err()
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// SyncEventPosition returns the stream position of an event in roomID, for
// receipts: 404 M_NOT_FOUND if the room does not hold it.
func (s *Service) SyncEventPosition(ctx context.Context, roomID, eventID string) (int64, error) {
	var pos int64
	err := s.db.QueryRow(ctx, `SELECT e.stream_pos FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_id = $1 AND r.room_id = $2 AND e.rejected = FALSE`, eventID, roomID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, httputil.NotFound("event " + eventID + " not found in " + roomID)
	}
	if err != nil {
		return 0, fmt.Errorf("look up event %s: %w", eventID, err)
	}
	return pos, nil
}

// SyncMembershipOf returns userID's membership in roomID ("" if none).
func (s *Service) SyncMembershipOf(ctx context.Context, roomID, userID string) (string, error) {
	var m string
	err := s.db.QueryRow(ctx, `SELECT m.membership FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE r.room_id = $1 AND m.user_id = $2`, roomID, userID).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read membership of %s in %s: %w", userID, roomID, err)
	}
	return m, nil
}

// SyncChanged is the cheap test a waiting /sync makes when the stream
// moves: did any membership of userID, or any event in a room userID is
// joined to, take a position in (since, upto]? It also lists the joined
// rooms, for the checks of the other streams.
func (s *Service) SyncChanged(ctx context.Context, userID string, since, upto int64) (bool, []string, error) {
	rows, err := s.db.Query(ctx, `SELECT r.room_id, m.membership,
			CASE WHEN m.stream_pos > $2 AND m.stream_pos <= $3 THEN 1
				WHEN m.membership = 'join' AND EXISTS (SELECT 1 FROM events e
					WHERE e.room_nid = m.room_nid AND e.stream_pos > $2 AND e.stream_pos <= $3) THEN 1
				ELSE 0 END
		FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1`, userID, since, upto)
	if err != nil {
		return false, nil, fmt.Errorf("check changes for %s: %w", userID, err)
	}
	defer rows.Close()
	changed := false
	var joined []string
	for rows.Next() {
		var room, membership string
		var c int
		if err := rows.Scan(&room, &membership, &c); err != nil {
			return false, nil, err
		}
		changed = changed || c == 1
		if membership == "join" {
			joined = append(joined, room)
		}
	}
	return changed, joined, rows.Err()
}

// SharingARoom returns which of others share a joined room with userID
// (userID itself counts when it is in others): who may see userID's
// presence and whose presence userID may see.
func (s *Service) SharingARoom(ctx context.Context, userID string, others []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(others) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT DISTINCT m2.user_id FROM room_members m1
		JOIN room_members m2 ON m2.room_nid = m1.room_nid AND m2.membership = 'join'
		WHERE m1.user_id = $1 AND m1.membership = 'join' AND m2.user_id IN ($IN)`, 1, others)
	sharing, err := s.db.QueryStrings(ctx, q, append([]any{userID}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("users sharing a room with %s: %w", userID, err)
	}
	for _, u := range sharing {
		out[u] = true
	}
	return out, nil
}

// NewRoomMates returns the users who came to share a joined room with
// userID in (since, upto]: they joined one of userID's rooms, or userID
// joined theirs. Their presence is news to userID even when it is old.
// (A member's latest membership position may also be a profile change;
// naming such a member again costs one presence event.)
func (s *Service) NewRoomMates(ctx context.Context, userID string, since, upto int64) ([]string, error) {
	mates, err := s.db.QueryStrings(ctx, `SELECT DISTINCT m2.user_id FROM room_members m1
		JOIN room_members m2 ON m2.room_nid = m1.room_nid AND m2.membership = 'join'
		WHERE m1.user_id = $1 AND m1.membership = 'join' AND m2.user_id <> $1
			AND ((m2.stream_pos > $2 AND m2.stream_pos <= $3) OR (m1.stream_pos > $2 AND m1.stream_pos <= $3))`, userID, since, upto)
	if err != nil {
		return nil, fmt.Errorf("new room mates of %s: %w", userID, err)
	}
	return mates, nil
}

// SyncGroupsBefore returns the state group before each of the events (an
// event without one, an out-of-band membership, is left out).
func (s *Service) SyncGroupsBefore(ctx context.Context, nids []int64) (map[int64]int64, error) {
	out := make(map[int64]int64, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT event_nid, state_group_before FROM events
		WHERE event_nid IN ($IN) AND state_group_before IS NOT NULL`, 0, nids)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var nid, group int64
		if err := rows.Scan(&nid, &group); err != nil {
			return nil, err
		}
		out[nid] = group
	}
	return out, rows.Err()
}

// SyncInviteState returns, per room, the current state an invitee may see
// before joining (create, join rules, name, avatar, alias, encryption,
// topic): for invites that reached us as events of a room we are in, which
// carry no stripped state of their own.
func (s *Service) SyncInviteState(ctx context.Context, roomNIDs []int64) (map[int64][]*StoredEvent, error) {
	types := make([]string, len(strippedStateKeys))
	for i, k := range strippedStateKeys {
		types[i] = k.EventType
	}
	return s.syncCurrentState(ctx, roomNIDs, types)
}
