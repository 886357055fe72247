package roomserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/storage"
)

// History of a room joined over federation. send_join brings the state,
// not the timeline: right after the join, up to joinBackfill events
// before it are fetched with /backfill from the server we joined through
// and stored as history. Backfilled events take negative stream
// positions (each below every other): they sort before the join in the
// topological order /messages pages through, and /sync and the
// federation sender, which only read positive positions, never see them.
// Their state before is taken to be the state at the join — exact for
// the history-visibility check in the common case where it did not
// change, and never wider than what a joined member may read.

// joinBackfill bounds the history fetched at join time.
const joinBackfill = 100

// remoteEventFetcher fetches single events from one server for the auth
// checks of backfilled events, verifying each.
type remoteEventFetcher struct {
	s      *Service
	server string
}

func (r remoteEventFetcher) Event(ctx context.Context, ver gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error) {
	txn, err := r.s.fed.client.GetEvent(ctx, spec.ServerName(r.s.serverName), spec.ServerName(r.server), eventID)
	if err != nil {
		return nil, fmt.Errorf("fetch %s from %s: %w", eventID, r.server, err)
	}
	impl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	for _, raw := range txn.PDUs {
		p, err := impl.NewEventFromUntrustedJSON(raw)
		if err != nil || p.EventID() != eventID {
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, p, r.s.fed.verifier, userIDForSender); err != nil {
			return nil, fmt.Errorf("event %s: bad signature: %w", eventID, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%s did not return %s", r.server, eventID)
}

func (r remoteEventFetcher) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

// backfillJoined fetches and stores the history before our join. A
// failure only costs history: the join stands.
func (s *Service) backfillJoined(ctx context.Context, server, roomID string, join gomatrixserverlib.PDU) {
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return
	}
	n, err := s.Backfill(ctx, server, room, join.PrevEventIDs(), joinBackfill)
	if err != nil {
		slog.WarnContext(ctx, "backfill after join failed", "room_id", roomID, "server", server, "err", err)
		return
	}
	slog.InfoContext(ctx, "history backfilled after join", "room_id", roomID, "server", server, "events", n)
}

// Backfill fetches up to limit events from server backwards from the
// given events and stores those it did not have as history. It returns
// how many were stored.
func (s *Service) Backfill(ctx context.Context, server string, room *roomInfo, from []string, limit int) (int, error) {
	if s.fed == nil || len(from) == 0 {
		return 0, nil
	}
	txn, err := s.fed.client.Backfill(ctx, spec.ServerName(s.serverName), spec.ServerName(server), room.id, limit, from)
	if err != nil {
		return 0, fmt.Errorf("backfill from %s: %w", server, err)
	}
	var pdus []gomatrixserverlib.PDU
	for _, raw := range txn.PDUs {
		p, err := room.version.NewEventFromUntrustedJSON(raw)
		if err != nil || p.RoomID().String() != room.id {
			continue
		}
		if !s.partnerEvent(p) {
			slog.InfoContext(ctx, "backfilled event naming a non-partner server dropped", "event_id", p.EventID())
			continue
		}
		pdus = append(pdus, p)
	}
	errs := gomatrixserverlib.VerifyAllEventSignatures(ctx, pdus, s.fed.verifier, userIDForSender)
	var ok []gomatrixserverlib.PDU
	for i, p := range pdus {
		if errs[i] != nil {
			slog.InfoContext(ctx, "backfilled event with a bad signature dropped", "event_id", p.EventID())
			continue
		}
		ok = append(ok, p)
	}
	sortByDepth(ok)
	remote := remoteEventFetcher{s: s, server: server}
	budget := maxAuthFetch
	var history []gomatrixserverlib.PDU
	for _, p := range ok {
		known, err := s.knownEvents(ctx, s.db, []string{p.EventID()})
		if err != nil {
			return 0, err
		}
		if k, have := known[p.EventID()]; have && (!k.outlier || k.rejected) {
			continue
		}
		if err := s.ensureAuthEvents(ctx, room, p, remote, &budget, 0); err != nil {
			slog.InfoContext(ctx, "backfilled event without auth events dropped", "event_id", p.EventID(), "err", err)
			continue
		}
		auth, _, err := s.pdusByID(ctx, s.db, room, p.AuthEventIDs())
		if err != nil {
			return 0, err
		}
		if reason := s.checkAuthEvents(ctx, room, p, auth); reason != "" {
			slog.InfoContext(ctx, "backfilled event rejected", "event_id", p.EventID(), "reason", reason)
			if err := s.storeOutlier(ctx, room, p, true); err != nil {
				return 0, err
			}
			continue
		}
		history = append(history, p)
	}
	if len(history) == 0 {
		return 0, nil
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.LockRoom(ctx, room.id); err != nil {
			return err
		}
		var group, lowest int64
		// the state at our first join here stands in for the state before
		// each backfilled event
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MIN(state_group_before), 0) FROM events
			WHERE room_nid = $1 AND stream_pos > 0 AND NOT outlier`, room.nid).Scan(&group); err != nil {
			return fmt.Errorf("state for backfill: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events`).Scan(&lowest); err != nil {
			return fmt.Errorf("lowest stream position: %w", err)
		}
		// newest first, so that positions fall as depth falls
		for i := len(history) - 1; i >= 0; i-- {
			p := history[i]
			lowest--
			if err := s.insertHistory(ctx, tx, room, p, lowest, group); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(history), nil
}

// insertHistory stores one backfilled event at a negative position.
func (s *Service) insertHistory(ctx context.Context, tx *storage.DB, room *roomInfo, pdu gomatrixserverlib.PDU, pos, groupBefore int64) error {
	var stateKey, relatesTo, relType, before any
	if sk := pdu.StateKey(); sk != nil {
		stateKey = *sk
	}
	if groupBefore != 0 {
		before = groupBefore
	}
	if rel := gjson.GetBytes(pdu.Content(), `m\.relates_to`); rel.IsObject() {
		if id := rel.Get("event_id"); id.Type == gjson.String {
			relatesTo = id.String()
			if t := rel.Get("rel_type"); t.Type == gjson.String {
				relType = t.String()
			}
		}
	}
	var nid int64
	err := tx.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, type, state_key, sender, depth, origin_ts, stream_pos,
			state_group_before, json, relates_to, rel_type)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (event_id) DO UPDATE SET outlier = FALSE, stream_pos = excluded.stream_pos,
			state_group_before = excluded.state_group_before, relates_to = excluded.relates_to, rel_type = excluded.rel_type
		RETURNING event_nid`,
		pdu.EventID(), room.nid, pdu.Type(), stateKey, string(pdu.SenderID()), pdu.Depth(), int64(pdu.OriginServerTS()),
		pos, before, string(pdu.JSON()), relatesTo, relType).Scan(&nid)
	if err != nil {
		return fmt.Errorf("store backfilled %s: %w", pdu.EventID(), err)
	}
	for _, prev := range pdu.PrevEventIDs() {
		if _, err := tx.Exec(ctx, `INSERT INTO event_edges (event_nid, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, nid, prev); err != nil {
			return fmt.Errorf("store edges of %s: %w", pdu.EventID(), err)
		}
	}
	return nil
}

// olderBatch is how many events one /messages-triggered backfill asks for.
const olderBatch = 50

// maxBackfillRounds bounds the backfills one /messages page triggers.
const maxBackfillRounds = 4

// backfillOlder runs when a backward /messages page ran out of events in
// a room shared with other servers: it asks them for the history before
// the earliest event we hold. It reports whether anything was stored. A
// room whose earliest event is its create event is complete; an earliest
// event already asked about is not asked again (in this process), so a
// server with nothing more to give costs one request, not one per page.
// A round where no server answered (all unreachable) is forgotten: the
// next page asks again, else history would end for good at a partner's
// outage.
func (s *Service) backfillOlder(ctx context.Context, roomNID int64) bool {
	if s.fed == nil {
		return false
	}
	var roomID, earliestID string
	err := s.db.QueryRow(ctx, `SELECT r.room_id, e.event_id FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.room_nid = $1`+inTimeline+` ORDER BY e.depth ASC, e.stream_pos ASC LIMIT 1`, roomNID).Scan(&roomID, &earliestID)
	if err != nil {
		return false
	}
	if _, asked := s.fed.backfilled.LoadOrStore(earliestID, true); asked {
		return false
	}
	answered := false
	defer func() {
		if !answered {
			s.fed.backfilled.Delete(earliestID)
		}
	}()
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return false
	}
	pdus, _, err := s.pdusByID(ctx, s.db, room, []string{earliestID})
	if err != nil || pdus[earliestID] == nil {
		return false
	}
	if pdus[earliestID].Type() == spec.MRoomCreate || len(pdus[earliestID].PrevEventIDs()) == 0 {
		answered = true // the room's start: nothing to ask for
		return false
	}
	servers, err := s.serversInRoom(ctx, room)
	if err != nil {
		return false
	}
	for _, srv := range servers {
		if srv == s.serverName || !s.fed.allowed(srv) {
			continue
		}
		n, err := s.Backfill(ctx, srv, room, pdus[earliestID].PrevEventIDs(), olderBatch)
		if err != nil {
			slog.InfoContext(ctx, "backfill for /messages failed", "room_id", roomID, "server", srv, "err", err)
			continue
		}
		answered = true
		if n > 0 {
			return true
		}
	}
	return false
}

// partnerEvent reports whether every server an event names (its sender,
// the user a membership is about) is us or a partner.
func (s *Service) partnerEvent(p gomatrixserverlib.PDU) bool {
	ok := func(id string) bool {
		srv := serverOfID(id)
		return srv == s.serverName || s.fed.allowed(srv)
	}
	if !ok(string(p.SenderID())) {
		return false
	}
	if p.Type() == spec.MRoomMember && p.StateKey() != nil && !ok(*p.StateKey()) {
		return false
	}
	return true
}
