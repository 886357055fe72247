package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/streams"
)

// snapshotEvery bounds state-group delta chains: every this many deltas a
// group is written as a full snapshot so reading a group's state never
// walks more than this many links.
const snapshotEvery = 50

// maxPrevEvents caps prev_events: a room with many forward extremities
// (after federation forks) is merged a few at a time.
const maxPrevEvents = 10

// maxEventBytes is the spec's limit on a whole PDU.
const maxEventBytes = 65536

// stateEntry is one (type, state_key) of the room's current state as the
// writer knows it; pdu is nil for a key known to be absent.
type stateEntry struct {
	nid int64
	pdu gomatrixserverlib.PDU
}

// writtenEvent is an event persisted by the writer, waiting for its stream
// position.
type writtenEvent struct {
	nid        int64
	pdu        gomatrixserverlib.PDU
	membership string // for m.room.member events
	pos        int64  // stream position, when taken at insert (SQLite)
}

// writer appends events to one room inside one transaction. It keeps the
// part of the room's current state it has read or written, so a batch of
// events (createRoom) sees its own earlier events.
type writer struct {
	s    *Service
	tx   *storage.DB
	room *roomInfo

	extremities []string // forward extremities before the batch
	prev        []string // prev_events for the next event
	depth       int64
	group       int64 // current state group, 0 before the create event
	chainLen    int64
	// fresh: the room is being created in this transaction, so the state
	// map is complete and nothing needs reading.
	fresh bool
	state map[gomatrixserverlib.StateKeyTuple]stateEntry

	written []writtenEvent
}

// openWriter locks the room and reads its extremities, depth and state
// group. Call it inside a transaction.
func (s *Service) openWriter(ctx context.Context, tx *storage.DB, room *roomInfo) (*writer, error) {
	if err := tx.LockRoom(ctx, room.id); err != nil {
		return nil, err
	}
	return s.readHead(ctx, tx, room)
}

// readHead reads the room's head (depth, state group, extremities) into a
// new writer: one query. Outside a transaction it serves optimistic
// building, which finish must not be called on.
func (s *Service) readHead(ctx context.Context, db *storage.DB, room *roomInfo) (*writer, error) {
	w := &writer{s: s, tx: db, room: room, state: map[gomatrixserverlib.StateKeyTuple]stateEntry{}}
	rows, err := db.Query(ctx, `SELECT r.max_depth, r.current_state_group, COALESCE(g.chain_len, 0), f.event_id
		FROM rooms r LEFT JOIN state_groups g ON g.state_group = r.current_state_group
		LEFT JOIN forward_extremities f ON f.room_nid = r.room_nid
		WHERE r.room_nid = $1`, room.nid)
	if err != nil {
		return nil, fmt.Errorf("read head of %s: %w", room.id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var group sql.NullInt64
		var ext sql.NullString
		if err := rows.Scan(&w.depth, &group, &w.chainLen, &ext); err != nil {
			return nil, err
		}
		w.group = group.Int64
		if ext.Valid {
			w.extremities = append(w.extremities, ext.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read head of %s: %w", room.id, err)
	}
	if len(w.extremities) > maxPrevEvents {
		w.extremities = w.extremities[:maxPrevEvents]
	}
	w.prev = append([]string(nil), w.extremities...)
	return w, nil
}

// sameHead reports whether two reads of a room's head agree, so that an
// event built against one is still valid against the other.
func (w *writer) sameHead(o *writer) bool {
	if w.depth != o.depth || w.group != o.group || len(w.extremities) != len(o.extremities) {
		return false
	}
	for _, id := range w.extremities {
		if !slices.Contains(o.extremities, id) {
			return false
		}
	}
	return true
}

// newRoomWriter starts a writer for a room created in this transaction.
func (s *Service) newRoomWriter(tx *storage.DB, room *roomInfo) *writer {
	return &writer{s: s, tx: tx, room: room, fresh: true, state: map[gomatrixserverlib.StateKeyTuple]stateEntry{}}
}

// load makes sure the writer knows the given keys of the current state:
// one query for the missing ones, and parsed events from the cache.
func (w *writer) load(ctx context.Context, keys []gomatrixserverlib.StateKeyTuple) error {
	var missing []gomatrixserverlib.StateKeyTuple
	for _, k := range keys {
		if _, ok := w.state[k]; !ok {
			missing = append(missing, k)
			w.state[k] = stateEntry{} // absent unless found below
		}
	}
	if len(missing) == 0 || w.fresh {
		return nil
	}
	var q strings.Builder
	args := []any{w.room.nid}
	q.WriteString(`SELECT cs.type, cs.state_key, cs.event_nid FROM current_state cs WHERE cs.room_nid = $1 AND (`)
	for i, k := range missing {
		if i > 0 {
			q.WriteString(" OR ")
		}
		fmt.Fprintf(&q, "(cs.type = $%d AND cs.state_key = $%d)", len(args)+1, len(args)+2)
		args = append(args, k.EventType, k.StateKey)
	}
	q.WriteString(")")
	rows, err := w.tx.Query(ctx, q.String(), args...)
	if err != nil {
		return fmt.Errorf("read current state of %s: %w", w.room.id, err)
	}
	found := map[int64]gomatrixserverlib.StateKeyTuple{}
	for rows.Next() {
		var k gomatrixserverlib.StateKeyTuple
		var nid int64
		if err := rows.Scan(&k.EventType, &k.StateKey, &nid); err != nil {
			rows.Close()
			return err
		}
		found[nid] = k
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var uncached []int64
	for nid, k := range found {
		if p, ok := w.s.events.get(nid); ok {
			w.state[k] = stateEntry{nid: nid, pdu: p}
		} else {
			uncached = append(uncached, nid)
		}
	}
	if len(uncached) == 0 {
		return nil
	}
	pdus, err := w.s.loadPDUs(ctx, w.tx, w.room, uncached)
	if err != nil {
		return err
	}
	for nid, p := range pdus {
		w.state[found[nid]] = stateEntry{nid: nid, pdu: p}
	}
	return nil
}

// loadPDUs reads and parses events by NID, caching them.
func (s *Service) loadPDUs(ctx context.Context, db *storage.DB, room *roomInfo, nids []int64) (map[int64]gomatrixserverlib.PDU, error) {
	q, args := storage.In(`SELECT event_nid, event_id, json, redacted_by FROM events WHERE event_nid IN ($IN)`, 0, nids)
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]gomatrixserverlib.PDU, len(nids))
	for rows.Next() {
		var nid int64
		var id, js string
		var redactedBy sql.NullString
		if err := rows.Scan(&nid, &id, &js, &redactedBy); err != nil {
			return nil, err
		}
		p, err := room.version.NewEventFromTrustedJSONWithEventID(id, []byte(js), redactedBy.Valid)
		if err != nil {
			return nil, fmt.Errorf("parse stored event %s: %w", id, err)
		}
		out[nid] = p
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Inside a transaction the rows may be its own (or, in a group commit,
	// a batch-mate's) uncommitted writes; a rolled-back NID can be reused
	// by SQLite, so cache only what is known committed.
	db.AfterCommit(func() {
		for nid, p := range out {
			s.events.put(nid, p)
		}
	})
	return out, nil
}

// current returns the current state event for a key (nil if none).
func (w *writer) current(ctx context.Context, evType, stateKey string) (gomatrixserverlib.PDU, error) {
	k := gomatrixserverlib.StateKeyTuple{EventType: evType, StateKey: stateKey}
	if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{k}); err != nil {
		return nil, err
	}
	return w.state[k].pdu, nil
}

// membership returns userID's current membership ("" if none).
func (w *writer) membership(ctx context.Context, userID string) (string, error) {
	ev, err := w.current(ctx, spec.MRoomMember, userID)
	if err != nil || ev == nil {
		return "", err
	}
	return ev.Membership()
}

// The writer is the auth-event provider for the events it builds: the
// room's current state as loaded.

func (w *writer) get(t, sk string) (gomatrixserverlib.PDU, error) {
	return w.state[gomatrixserverlib.StateKeyTuple{EventType: t, StateKey: sk}].pdu, nil
}
func (w *writer) Create() (gomatrixserverlib.PDU, error)    { return w.get(spec.MRoomCreate, "") }
func (w *writer) JoinRules() (gomatrixserverlib.PDU, error) { return w.get(spec.MRoomJoinRules, "") }
func (w *writer) PowerLevels() (gomatrixserverlib.PDU, error) {
	return w.get(spec.MRoomPowerLevels, "")
}
func (w *writer) Member(k spec.SenderID) (gomatrixserverlib.PDU, error) {
	return w.get(spec.MRoomMember, string(k))
}
func (w *writer) ThirdPartyInvite(k string) (gomatrixserverlib.PDU, error) {
	return w.get(spec.MRoomThirdPartyInvite, k)
}
func (w *writer) Valid() bool { return true }

// userIDForSender maps sender IDs to user IDs; without pseudo-IDs (which
// we do not support) they are the same.
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// proto is an event to build: what the caller decides.
type proto struct {
	sender   string
	evType   string
	stateKey *string
	content  json.RawMessage
	redacts  string
	unsigned json.RawMessage
}

// build builds, signs and auth-checks the next event of the room against
// the current state. Nothing is written.
func (w *writer) build(ctx context.Context, p proto) (gomatrixserverlib.PDU, error) {
	pe := &gomatrixserverlib.ProtoEvent{
		SenderID:   p.sender,
		Type:       p.evType,
		StateKey:   p.stateKey,
		Content:    spec.RawJSON(p.content),
		Redacts:    p.redacts,
		Depth:      w.depth + 1,
		PrevEvents: append([]string{}, w.prev...), // never nil: it must encode as []
		Version:    w.room.version,
	}
	if !(w.room.version.DomainlessRoomIDs() && p.evType == spec.MRoomCreate) {
		pe.RoomID = w.room.id
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(pe)
	if err != nil {
		return nil, httputil.BadJSON(err.Error())
	}
	keys := needed.Tuples()
	keys = append(keys, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCreate})
	if p.stateKey != nil {
		keys = append(keys, gomatrixserverlib.StateKeyTuple{EventType: p.evType, StateKey: *p.stateKey})
	}
	if err := w.load(ctx, keys); err != nil {
		return nil, err
	}
	unsigned := p.unsigned
	if p.stateKey != nil {
		// Clients render state changes from prev_content (a name change,
		// a display name change): keep it with the event.
		if old := w.state[gomatrixserverlib.StateKeyTuple{EventType: p.evType, StateKey: *p.stateKey}].pdu; old != nil {
			unsigned = setRaw(unsigned, "prev_content", old.Content())
			unsigned = setRaw(unsigned, "replaces_state", mustJSON(old.EventID()))
			unsigned = setRaw(unsigned, "prev_sender", mustJSON(string(old.SenderID())))
		}
	}
	eb := w.room.version.NewEventBuilderFromProtoEvent(pe)
	if len(unsigned) > 0 {
		eb.Unsigned = spec.RawJSON(unsigned)
	}
	if err := eb.AddAuthEvents(w); err != nil {
		return nil, fmt.Errorf("select auth events: %w", err)
	}
	pdu, err := eb.Build(w.s.now(), spec.ServerName(w.s.serverName), gomatrixserverlib.KeyID(w.s.key.KeyID), w.s.key.PrivateKey)
	if err != nil {
		var ve gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) {
			if ve.Code == gomatrixserverlib.EventValidationTooLarge {
				return nil, httputil.TooLarge(ve.Message)
			}
			return nil, httputil.BadJSON(ve.Message)
		}
		var bj gomatrixserverlib.BadJSONError
		if errors.As(err, &bj) {
			// e.g. a float or an integer beyond ±(2^53-1), which canonical
			// JSON (room v6+) does not allow
			return nil, httputil.BadJSON("event content is not valid canonical JSON: " + bj.Error())
		}
		return nil, fmt.Errorf("build %s event: %w", p.evType, err)
	}
	if len(pdu.JSON()) > maxEventBytes {
		return nil, httputil.TooLarge(fmt.Sprintf("event is %d bytes, the limit is %d", len(pdu.JSON()), maxEventBytes))
	}
	if err := gomatrixserverlib.Allowed(pdu, w, userIDForSender); err != nil {
		var na *gomatrixserverlib.NotAllowed
		if errors.As(err, &na) {
			return nil, httputil.Forbidden(strings.TrimPrefix(na.Message, "eventauth: "))
		}
		var ve *gomatrixserverlib.EventValidationError
		if errors.As(err, &ve) {
			return nil, httputil.Errorf(http.StatusBadRequest, "M_BAD_JSON", "%s", ve.Message)
		}
		return nil, httputil.Forbidden(err.Error())
	}
	if err := w.checkPolicy(ctx, pdu); err != nil {
		return nil, err
	}
	return pdu, nil
}

// persist writes a built event: the event row, its edges, and for a state
// event a new state group and the current state. The stream position is
// assigned by finish.
func (w *writer) persist(ctx context.Context, pdu gomatrixserverlib.PDU, txnDevice, txnID string) (int64, error) {
	tx := w.tx
	var before, after any
	if w.group != 0 {
		before = w.group
	}
	sk := pdu.StateKey()
	var newGroup int64
	snapshot := false
	if sk != nil {
		snapshot = w.group == 0 || w.chainLen+1 >= snapshotEvery
		var prevGroup any
		chain := int64(0)
		if !snapshot {
			prevGroup, chain = w.group, w.chainLen+1
		}
		if err := tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING state_group`,
			w.room.nid, prevGroup, chain).Scan(&newGroup); err != nil {
			return 0, fmt.Errorf("create state group: %w", err)
		}
		after = newGroup
		w.chainLen = chain
	}
	if sk != nil && !gjson.GetBytes(pdu.Unsigned(), "replaces_state").Exists() {
		// Events we did not build here (received over federation, our
		// join through send_join) carry no unsigned part; clients still
		// want the state they replace, e.g. a join's invite (is_direct).
		key := gomatrixserverlib.StateKeyTuple{EventType: pdu.Type(), StateKey: *sk}
		if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{key}); err != nil {
			return 0, err
		}
		if err := setReplacedState(pdu, w.state[key].pdu); err != nil {
			return 0, err
		}
	}
	var relatesTo, relType, txnDev, txnIDv any
	if rel := gjson.GetBytes(pdu.Content(), `m\.relates_to`); rel.IsObject() {
		if id := rel.Get("event_id"); id.Type == gjson.String {
			relatesTo = id.String()
			if t := rel.Get("rel_type"); t.Type == gjson.String {
				relType = t.String()
			}
		}
	}
	if txnID != "" {
		txnDev, txnIDv = txnDevice, txnID
	}
	var stateKey any
	if sk != nil {
		stateKey = *sk
	}
	// On SQLite the transaction holds the only write lock from its first
	// statement, so positions commit in order wherever they are taken, and
	// taking one here saves rewriting the event's index entries later. On
	// Postgres, finish takes them last, after the room's other writes.
	var pos int64
	if tx.Engine() == storage.SQLite {
		var err error
		if pos, err = tx.NextStreamPos(ctx, 1); err != nil {
			return 0, err
		}
	}
	var nid int64
	err := tx.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, type, state_key, sender, depth, origin_ts, stream_pos,
			state_group_before, state_group_after, json, txn_device, txn_id, relates_to, rel_type)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING event_nid`,
		pdu.EventID(), w.room.nid, pdu.Type(), stateKey, string(pdu.SenderID()), pdu.Depth(), int64(pdu.OriginServerTS()),
		pos, before, after, string(pdu.JSON()), txnDev, txnIDv, relatesTo, relType).Scan(&nid)
	if err != nil {
		return 0, fmt.Errorf("insert event %s: %w", pdu.EventID(), err)
	}
	if prev := pdu.PrevEventIDs(); len(prev) > 0 {
		var q strings.Builder
		args := []any{nid}
		q.WriteString(`INSERT INTO event_edges (event_nid, prev_event_id) VALUES `)
		for i, id := range prev {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "($1, $%d)", len(args)+1)
			args = append(args, id)
		}
		q.WriteString(` ON CONFLICT DO NOTHING`)
		if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
			return 0, fmt.Errorf("insert edges of %s: %w", pdu.EventID(), err)
		}
	}
	we := writtenEvent{nid: nid, pdu: pdu, pos: pos}
	if sk != nil {
		if _, err := tx.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = excluded.event_nid`,
			w.room.nid, pdu.Type(), *sk, nid); err != nil {
			return 0, fmt.Errorf("update current state: %w", err)
		}
		if snapshot {
			_, err = tx.Exec(ctx, `INSERT INTO state_group_entries (state_group, type, state_key, event_nid)
				SELECT $1, type, state_key, event_nid FROM current_state WHERE room_nid = $2`, newGroup, w.room.nid)
		} else {
			_, err = tx.Exec(ctx, `INSERT INTO state_group_entries (state_group, type, state_key, event_nid) VALUES ($1, $2, $3, $4)`,
				newGroup, pdu.Type(), *sk, nid)
		}
		if err != nil {
			return 0, fmt.Errorf("write state group %d: %w", newGroup, err)
		}
		w.group = newGroup
		w.state[gomatrixserverlib.StateKeyTuple{EventType: pdu.Type(), StateKey: *sk}] = stateEntry{nid: nid, pdu: pdu}
		if pdu.Type() == spec.MRoomMember {
			we.membership, _ = pdu.Membership()
		}
	}
	w.written = append(w.written, we)
	w.prev = []string{pdu.EventID()}
	w.depth = max(w.depth, pdu.Depth())
	return nid, nil
}

// add builds and persists one event.
func (w *writer) add(ctx context.Context, p proto, txnDevice, txnID string) (gomatrixserverlib.PDU, error) {
	pdu, err := w.build(ctx, p)
	if err != nil {
		return nil, err
	}
	if _, err := w.persist(ctx, pdu, txnDevice, txnID); err != nil {
		return nil, err
	}
	return pdu, nil
}

// finish moves the room's head past the written events and takes their
// stream positions, last, so that positions commit in order. It returns
// the highest position (0 if nothing was written).
func (w *writer) finish(ctx context.Context) (int64, error) {
	if len(w.written) == 0 {
		return 0, nil
	}
	tx := w.tx
	last := w.written[len(w.written)-1].pdu.EventID()
	var err error
	if len(w.extremities) == 1 {
		// the common case: a linear room moves its one extremity
		_, err = tx.Exec(ctx, `UPDATE forward_extremities SET event_id = $1 WHERE room_nid = $2 AND event_id = $3`, last, w.room.nid, w.extremities[0])
	} else {
		if len(w.extremities) > 0 {
			q, args := storage.In(`DELETE FROM forward_extremities WHERE room_nid = $1 AND event_id IN ($IN)`, 1, w.extremities)
			if _, err := tx.Exec(ctx, q, append([]any{w.room.nid}, args...)...); err != nil {
				return 0, fmt.Errorf("update extremities: %w", err)
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO forward_extremities (room_nid, event_id) VALUES ($1, $2)`, w.room.nid, last)
	}
	if err != nil {
		return 0, fmt.Errorf("update extremities: %w", err)
	}
	var group any
	if w.group != 0 {
		group = w.group
	}
	if _, err := tx.Exec(ctx, `UPDATE rooms SET max_depth = $1, current_state_group = $2 WHERE room_nid = $3`,
		w.depth, group, w.room.nid); err != nil {
		return 0, fmt.Errorf("update room head: %w", err)
	}

	if w.written[0].pos == 0 {
		if err := w.assignPositions(ctx); err != nil {
			return 0, err
		}
	}
	pos := w.written[len(w.written)-1].pos
	for _, e := range w.written {
		if e.membership == "" {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos, forgotten)
			VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
				stream_pos = excluded.stream_pos, forgotten = FALSE`,
			w.room.nid, *e.pdu.StateKey(), e.membership, e.nid, e.pos); err != nil {
			return 0, fmt.Errorf("update membership: %w", err)
		}
	}
	written := w.written
	// Appends to a room's known head are described to the notifier, so
	// that long-polls of users outside the room stay asleep. A writer that
	// starts a room's history (creation, a join over federation that
	// adopts the room's state) may change memberships beyond its own
	// events: everyone looks.
	described := len(w.extremities) > 0
	tx.AfterCommit(func() {
		for _, e := range written {
			if e.pdu.StateKey() != nil {
				w.s.events.put(e.nid, e.pdu)
			}
		}
		if described {
			w.s.notifier.PublishChanges(roomChanges(w.room.id, written))
		} else {
			w.s.notifier.Publish(pos)
		}
		w.s.policyWritten(ctx, w.room.id, written)
	})
	return pos, nil
}

// roomChanges describes written events for the notifier.
func roomChanges(roomID string, written []writtenEvent) []streams.Change {
	out := make([]streams.Change, len(written))
	for i, e := range written {
		out[i] = streams.Change{Pos: e.pos, RoomID: roomID}
		if sk := e.pdu.StateKey(); sk != nil && e.pdu.Type() == spec.MRoomMember {
			out[i].Member = *sk
		}
	}
	return out
}

// assignPositions takes the written events' stream positions, as the last
// statement of the room's writes (Postgres): the stream_head row lock it
// takes serialises committers from here on, so positions become visible
// in order.
func (w *writer) assignPositions(ctx context.Context) error {
	tx := w.tx
	k := int64(len(w.written))
	pos, err := tx.NextStreamPos(ctx, k)
	if err != nil {
		return err
	}
	first := pos - k + 1
	for i := range w.written {
		w.written[i].pos = first + int64(i)
	}
	if k == 1 {
		_, err = tx.Exec(ctx, `UPDATE events SET stream_pos = $1 WHERE event_nid = $2`, pos, w.written[0].nid)
	} else {
		// Positions follow the order of writing; event NIDs need not be
		// contiguous (Postgres sequences are not), so map them explicitly.
		var q strings.Builder
		args := []any{}
		q.WriteString(`UPDATE events SET stream_pos = CASE event_nid`)
		for i, e := range w.written {
			fmt.Fprintf(&q, " WHEN $%d THEN CAST($%d AS BIGINT)", len(args)+1, len(args)+2)
			args = append(args, e.nid, first+int64(i))
		}
		q.WriteString(" END WHERE event_nid IN (")
		for i, e := range w.written {
			if i > 0 {
				q.WriteString(",")
			}
			fmt.Fprintf(&q, "$%d", len(args)+1)
			args = append(args, e.nid)
		}
		q.WriteString(")")
		_, err = tx.Exec(ctx, q.String(), args...)
	}
	if err != nil {
		return fmt.Errorf("assign stream positions: %w", err)
	}
	return nil
}

// setReplacedState records in pdu's unsigned part the state event old it
// replaces (nil: none), as build does for our own events.
func setReplacedState(pdu, old gomatrixserverlib.PDU) error {
	if old == nil || old.EventID() == pdu.EventID() {
		return nil
	}
	for k, v := range map[string]any{
		"prev_content": json.RawMessage(old.Content()), "replaces_state": old.EventID(), "prev_sender": string(old.SenderID()),
	} {
		if err := pdu.SetUnsignedField(k, v); err != nil {
			return fmt.Errorf("unsigned %s of %s: %w", k, pdu.EventID(), err)
		}
	}
	return nil
}

// setRaw sets key in a JSON object (nil means {}).
func setRaw(obj json.RawMessage, key string, raw []byte) json.RawMessage {
	m := map[string]json.RawMessage{}
	if len(obj) > 0 {
		_ = json.Unmarshal(obj, &m)
	}
	m[key] = raw
	b, _ := json.Marshal(m)
	return b
}
