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

// The read side of the room authority: state at a state group, current
// state, events by NID or ID, memberships. Every batch read is one round
// trip; nothing here queries once per event.

// eventColumns and eventFrom select what scanEvent reads. Every read of
// events goes through them so StoredEvent is filled the same way everywhere.
const (
	eventColumns = `e.event_nid, e.event_id, r.room_id, e.type, e.state_key, e.sender, e.depth, e.origin_ts,
		e.stream_pos, e.json, e.txn_device, e.txn_id, e.redacted_by, e.state_group_before, e.state_group_after, e.room_nid`
	eventFrom = ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid`
	// inTimeline excludes events a client must never see in a timeline:
	// outliers, rejected and soft-failed events.
	// stream_pos < 0: history backfilled over federation (remote_backfill.go)
	inTimeline = ` AND e.stream_pos <> 0 AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed`
)

// eventRow is a StoredEvent with the columns only the read path needs.
type eventRow struct {
	*StoredEvent
	roomNID int64
	// state groups before and after the event; 0 when absent
	before, after int64
}

// stateAfter is the group holding the room state right after the event.
func (e *eventRow) stateAfter() int64 {
	if e.after != 0 {
		return e.after
	}
	return e.before
}

type rowScanner interface{ Scan(dest ...any) error }

func scanEvent(sc rowScanner) (*eventRow, error) {
	var (
		e                       StoredEvent
		stateKey, txnDev, txnID sql.NullString
		redactedBy              sql.NullString
		before, after           sql.NullInt64
		roomNID                 int64
		js                      string
	)
	if err := sc.Scan(&e.NID, &e.EventID, &e.RoomID, &e.Type, &stateKey, &e.Sender, &e.Depth, &e.OriginTS,
		&e.StreamPos, &js, &txnDev, &txnID, &redactedBy, &before, &after, &roomNID); err != nil {
		return nil, err
	}
	if stateKey.Valid {
		sk := stateKey.String
		e.StateKey = &sk
	}
	e.JSON = []byte(js)
	e.TxnDevice, e.TxnID, e.RedactedBy = txnDev.String, txnID.String, redactedBy.String
	return &eventRow{StoredEvent: &e, roomNID: roomNID, before: before.Int64, after: after.Int64}, nil
}

// queryEvents runs a query selecting eventColumns and scans every row.
func (s *Service) queryEvents(ctx context.Context, query string, args ...any) ([]*eventRow, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*eventRow
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// qargs numbers query parameters as they are added, so that queries built
// from optional parts keep $1…$n consistent.
type qargs []any

func (p *qargs) add(v any) string {
	*p = append(*p, v)
	return "$" + strconv.Itoa(len(*p))
}

// list adds every value and returns "$i,$j,…" for an IN clause ("NULL" for
// none, which matches nothing).
func qlist[T any](p *qargs, values []T) string {
	if len(values) == 0 {
		return "NULL"
	}
	var b strings.Builder
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.add(v))
	}
	return b.String()
}

// EventsByNID returns the events with the given NIDs, in the order asked,
// skipping unknown ones.
func (s *Service) EventsByNID(ctx context.Context, nids []int64) ([]*StoredEvent, error) {
	rows, err := s.eventRowsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	return storedEvents(rows), nil
}

func (s *Service) eventRowsByNID(ctx context.Context, nids []int64) ([]*eventRow, error) {
	nids = uniqueOf(nids)
	if len(nids) == 0 {
		return nil, nil
	}
	var p qargs
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.event_nid IN (`+qlist(&p, nids)+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("events by nid: %w", err)
	}
	byNID := make(map[int64]*eventRow, len(rows))
	for _, r := range rows {
		byNID[r.NID] = r
	}
	out := make([]*eventRow, 0, len(rows))
	for _, n := range nids {
		if r, ok := byNID[n]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// EventsByID returns the events with the given IDs, in the order asked,
// skipping unknown ones.
func (s *Service) EventsByID(ctx context.Context, ids []string) ([]*StoredEvent, error) {
	rows, err := s.eventRowsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	return storedEvents(rows), nil
}

func (s *Service) eventRowsByID(ctx context.Context, ids []string) ([]*eventRow, error) {
	ids = uniqueOf(ids)
	if len(ids) == 0 {
		return nil, nil
	}
	var p qargs
	rows, err := s.queryEvents(ctx, `SELECT `+eventColumns+eventFrom+` WHERE e.event_id IN (`+qlist(&p, ids)+`)`, p...)
	if err != nil {
		return nil, fmt.Errorf("events by id: %w", err)
	}
	byID := make(map[string]*eventRow, len(rows))
	for _, r := range rows {
		byID[r.EventID] = r
	}
	out := make([]*eventRow, 0, len(rows))
	for _, id := range ids {
		if r, ok := byID[id]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

func storedEvents(rows []*eventRow) []*StoredEvent {
	out := make([]*StoredEvent, len(rows))
	for i, r := range rows {
		out[i] = r.StoredEvent
	}
	return out
}

func uniqueOf[T comparable](vs []T) []T {
	seen := make(map[T]bool, len(vs))
	out := vs[:0:0]
	for _, v := range vs {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// StateAt returns the full room state of a state group, (type, state_key)
// → event NID, resolving its delta chain. Group 0 is the empty state.
func (s *Service) StateAt(ctx context.Context, stateGroup int64) (map[[2]string]int64, error) {
	states, err := s.statesAt(ctx, []int64{stateGroup}, nil)
	if err != nil {
		return nil, err
	}
	if st := states[stateGroup]; st != nil {
		return st, nil
	}
	return map[[2]string]int64{}, nil
}

// stateFilter narrows a state read to some keys: every state key of types,
// plus the exact keys. A nil filter reads everything.
type stateFilter struct {
	types []string
	keys  [][2]string
}

// statesAt resolves several state groups in one round trip: one recursive
// query walks every delta chain and returns the entries of every group on
// them (restricted to f), then each group is folded from its snapshot up.
// Groups that do not exist resolve to the empty state.
func (s *Service) statesAt(ctx context.Context, groups []int64, f *stateFilter) (map[int64]map[[2]string]int64, error) {
	want := make([]int64, 0, len(groups))
	for _, g := range uniqueOf(groups) {
		if g != 0 {
			want = append(want, g)
		}
	}
	out := make(map[int64]map[[2]string]int64, len(want))
	if len(want) == 0 {
		return out, nil
	}
	var p qargs
	in := qlist(&p, want)
	cond := ""
	if f != nil {
		var ors []string
		if len(f.types) > 0 {
			ors = append(ors, `e.type IN (`+qlist(&p, f.types)+`)`)
		}
		for _, k := range f.keys {
			ors = append(ors, `(e.type = `+p.add(k[0])+` AND e.state_key = `+p.add(k[1])+`)`)
		}
		if len(ors) == 0 {
			ors = append(ors, `FALSE`)
		}
		cond = ` AND (` + strings.Join(ors, ` OR `) + `)`
	}
	rows, err := s.db.Query(ctx, `WITH RECURSIVE chain(g) AS (
			SELECT state_group FROM state_groups WHERE state_group IN (`+in+`)
			UNION
			SELECT sg.prev_group FROM state_groups sg JOIN chain c ON sg.state_group = c.g
			WHERE sg.prev_group IS NOT NULL
		)
		SELECT sg.state_group, sg.prev_group, e.type, e.state_key, e.event_nid
		FROM chain c JOIN state_groups sg ON sg.state_group = c.g
		LEFT JOIN state_group_entries e ON e.state_group = sg.state_group`+cond, p...)
	if err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	defer rows.Close()
	prev := map[int64]int64{}
	own := map[int64]map[[2]string]int64{}
	for rows.Next() {
		var (
			g       int64
			pg, nid sql.NullInt64
			typ, sk sql.NullString
		)
		if err := rows.Scan(&g, &pg, &typ, &sk, &nid); err != nil {
			return nil, fmt.Errorf("read state groups: %w", err)
		}
		prev[g] = pg.Int64
		if own[g] == nil {
			own[g] = map[[2]string]int64{}
		}
		if typ.Valid {
			own[g][[2]string{typ.String, sk.String}] = nid.Int64
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	resolved := map[int64]map[[2]string]int64{}
	var resolve func(g int64, depth int) map[[2]string]int64
	resolve = func(g int64, depth int) map[[2]string]int64 {
		if r, ok := resolved[g]; ok {
			return r
		}
		st := map[[2]string]int64{}
		// depth guards against a corrupt chain that loops
		if pg := prev[g]; pg != 0 && depth < 10000 {
			for k, v := range resolve(pg, depth+1) {
				st[k] = v
			}
		}
		for k, v := range own[g] {
			if v == 0 {
				delete(st, k) // a zero NID removes the key
			} else {
				st[k] = v
			}
		}
		resolved[g] = st
		return st
	}
	for _, g := range want {
		if _, ok := prev[g]; !ok {
			out[g] = map[[2]string]int64{}
			continue
		}
		// each caller gets its own copy: resolved maps are shared along chains
		r := resolve(g, 0)
		cp := make(map[[2]string]int64, len(r))
		for k, v := range r {
			cp[k] = v
		}
		out[g] = cp
	}
	return out, nil
}

// CurrentState returns the room's current state, (type, state_key) → event
// NID. An unknown room has an empty state.
func (s *Service) CurrentState(ctx context.Context, roomID string) (map[[2]string]int64, error) {
	rows, err := s.db.Query(ctx, `SELECT cs.type, cs.state_key, cs.event_nid FROM current_state cs
		JOIN rooms r ON r.room_nid = cs.room_nid WHERE r.room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("current state of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := map[[2]string]int64{}
	for rows.Next() {
		var typ, sk string
		var nid int64
		if err := rows.Scan(&typ, &sk, &nid); err != nil {
			return nil, fmt.Errorf("current state of %s: %w", roomID, err)
		}
		out[[2]string{typ, sk}] = nid
	}
	return out, rows.Err()
}

// currentStateEvents returns the current state events of rooms, restricted
// by f (nil = all), in one query.
func (s *Service) currentStateEvents(ctx context.Context, roomNIDs []int64, f *stateFilter) ([]*eventRow, error) {
	if len(roomNIDs) == 0 {
		return nil, nil
	}
	var p qargs
	q := `SELECT ` + eventColumns + ` FROM current_state cs JOIN events e ON e.event_nid = cs.event_nid
		JOIN rooms r ON r.room_nid = e.room_nid WHERE cs.room_nid IN (` + qlist(&p, uniqueOf(roomNIDs)) + `)`
	if f != nil {
		var ors []string
		if len(f.types) > 0 {
			ors = append(ors, `cs.type IN (`+qlist(&p, f.types)+`)`)
		}
		for _, k := range f.keys {
			ors = append(ors, `(cs.type = `+p.add(k[0])+` AND cs.state_key = `+p.add(k[1])+`)`)
		}
		if len(ors) == 0 {
			return nil, nil
		}
		q += ` AND (` + strings.Join(ors, ` OR `) + `)`
	}
	rows, err := s.queryEvents(ctx, q, p...)
	if err != nil {
		return nil, fmt.Errorf("current state events: %w", err)
	}
	return rows, nil
}

// stateEvents loads the events of a resolved state map, ordered by type and
// state key so responses are stable.
func (s *Service) stateEvents(ctx context.Context, st map[[2]string]int64) ([]*eventRow, error) {
	nids := make([]int64, 0, len(st))
	for _, nid := range st {
		nids = append(nids, nid)
	}
	rows, err := s.eventRowsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	sortByStateKey(rows)
	return rows, nil
}

// Membership returns userID's current membership in roomID ("join",
// "invite", "leave", "ban", "knock"), or "" if the user has none.
func (s *Service) Membership(ctx context.Context, roomID, userID string) (string, error) {
	m, err := s.memberOf(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	return m.membership, nil
}

type memberRow struct {
	roomNID    int64
	membership string
	eventNID   int64
	forgotten  bool
}

func (s *Service) memberOf(ctx context.Context, roomID, userID string) (memberRow, error) {
	var m memberRow
	err := s.db.QueryRow(ctx, `SELECT m.room_nid, m.membership, m.event_nid, m.forgotten FROM room_members m
		JOIN rooms r ON r.room_nid = m.room_nid WHERE r.room_id = $1 AND m.user_id = $2`, roomID, userID).
		Scan(&m.roomNID, &m.membership, &m.eventNID, &m.forgotten)
	if errors.Is(err, sql.ErrNoRows) {
		return memberRow{}, nil
	}
	if err != nil {
		return memberRow{}, fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	return m, nil
}

// JoinedRooms lists the rooms userID is joined to.
func (s *Service) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT r.room_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = $1 AND m.membership = 'join' ORDER BY r.room_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("joined rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("joined rooms of %s: %w", userID, err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// roomRow is a rooms row.
type roomRow struct {
	nid          int64
	id           string
	version      string
	published    bool
	currentGroup int64
}

// errNoRoom marks a room this server does not know.
var errNoRoom = errors.New("unknown room")

func (s *Service) readRoom(ctx context.Context, roomID string) (*roomRow, error) {
	var r roomRow
	var g sql.NullInt64
	err := s.db.QueryRow(ctx, `SELECT room_nid, room_id, room_version, published, current_state_group
		FROM rooms WHERE room_id = $1`, roomID).Scan(&r.nid, &r.id, &r.version, &r.published, &g)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoRoom
	}
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
	}
	r.currentGroup = g.Int64
	return &r, nil
}

// validRoomID checks a room ID's form: bad IDs are a 400, not a lookup
// that fails.
func validRoomID(roomID string) error {
	// spec.NewRoomID accepts both forms: "!opaque:server" and the
	// domainless IDs of room version 12.
	if _, err := spec.NewRoomID(roomID); err != nil || len(roomID) > 255 {
		return spec.InvalidParam("invalid room ID " + strconv.Quote(roomID))
	}
	return nil
}

// membershipOf reads content.membership of a member event.
func membershipOf(js []byte) string {
	return gjson.GetBytes(js, "content.membership").String()
}
