package roomserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/storage"
)

// Bridging a gap /get_missing_events could not close (the spec's advice
// for "missing prev events"): for each prev event of the new PDU we still
// lack, the origin is asked for the state before it (/state_ids), the
// state and auth events we do not hold are fetched (/event each, or one
// /state when many are missing), checked (signatures and hashes by the
// RemoteEvents implementation, the auth rules here) and stored as
// outliers; the state after each prev event is its state before plus
// itself, and the state before the new PDU is the resolution (v2) of
// those states and of the states after the prev events we do hold. The
// new PDU then enters the timeline with that state; the missing events
// stay missing (a gap the /sync timeline reports as limited).
// Everything is fetched before the room lock is taken.

// RemoteState is what a RemoteEvents offers when it can also answer
// /state_ids and /state; without it a gap that /get_missing_events does
// not close fails the PDU.
type RemoteState interface {
	// StateIDs is /state_ids: the IDs of the state before eventID and of
	// its auth chain.
	StateIDs(ctx context.Context, roomID, eventID string) (state, authChain []string, err error)
	// State is /state: the same as events, each checked like Event's.
	State(ctx context.Context, roomVersion gomatrixserverlib.RoomVersion, roomID, eventID string) (state, authChain []gomatrixserverlib.PDU, err error)
}

const (
	// maxGapPrevs bounds the missing prev events one PDU may make us
	// bridge (each costs a /state_ids).
	maxGapPrevs = 5
	// gapFetchOneByOne: up to this many missing events are fetched with
	// /event each, more with one /state.
	gapFetchOneByOne = 20
	// maxGapState bounds the state plus auth chain we accept for one prev
	// event, and so the events one bridge may store.
	maxGapState = 5000
	// gapTimeout bounds the whole bridge of one PDU.
	gapTimeout = time.Minute
)

// stateOnly is the RemoteEvents of an event pulled by /get_missing_events:
// it may fetch auth events and bridge its own gap with /state_ids, but
// not start another /get_missing_events round.
type stateOnly struct {
	RemoteEvents
	RemoteState
}

func (stateOnly) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

// withState returns remote as a gap filler that may use /state_ids but
// not /get_missing_events, or authOnly when it cannot answer /state_ids.
func withState(remote RemoteEvents) RemoteEvents {
	if rs, ok := remote.(RemoteState); ok {
		return stateOnly{RemoteEvents: remote, RemoteState: rs}
	}
	return authOnly{remote}
}

// errGap wraps why a gap could not be bridged; it is still a case of
// missing prev events for the sender.
func errGap(pdu gomatrixserverlib.PDU, err error) error {
	return fmt.Errorf("event %s: %w (state_ids fallback: %w)", pdu.EventID(), ErrMissingPrevEvents, err)
}

// bridgeGap computes the state before pdu when some of its prev events
// (missing) are not in our timeline. prevs are the prev events we hold
// (not rejected). Nothing is locked: it fetches and stores outliers only.
func (s *Service) bridgeGap(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, prevs []knownEvent, missing []string, remote RemoteEvents) (map[[2]string]int64, error) {
	rs, ok := remote.(RemoteState)
	if !ok || remote == nil {
		return nil, fmt.Errorf("event %s: %w", pdu.EventID(), ErrMissingPrevEvents)
	}
	if len(missing) > maxGapPrevs {
		return nil, errGap(pdu, fmt.Errorf("%d prev events missing, at most %d are bridged", len(missing), maxGapPrevs))
	}
	ctx, cancel := context.WithTimeout(ctx, gapTimeout)
	defer cancel()
	var states []map[[2]string]int64
	if len(prevs) > 0 {
		groups := make([]int64, 0, len(prevs))
		for _, p := range prevs {
			groups = append(groups, p.stateAfter())
		}
		held, err := s.statesAt(ctx, uniqueOf(groups), nil)
		if err != nil {
			return nil, err
		}
		for _, g := range uniqueOf(groups) {
			states = append(states, held[g])
		}
	}
	budget := maxAuthFetch
	for _, id := range missing {
		st, err := s.stateAfterRemote(ctx, room, id, remote, rs, &budget)
		if err != nil {
			return nil, errGap(pdu, err)
		}
		states = append(states, st)
	}
	before, err := s.resolveStates(ctx, room, states)
	if err != nil {
		return nil, errGap(pdu, err)
	}
	slog.InfoContext(ctx, "gap bridged with state_ids", "event_id", pdu.EventID(), "room_id", room.id, "missing_prev_events", len(missing))
	return before, nil
}

// stateAfterRemote is the state after prevID, an event we do not hold in
// the timeline, as the origin describes it: /state_ids at prevID plus
// prevID itself. Every event it names ends up stored (as an outlier).
func (s *Service) stateAfterRemote(ctx context.Context, room *roomInfo, prevID string, remote RemoteEvents, rs RemoteState, budget *int) (map[[2]string]int64, error) {
	ver := room.version.Version()
	stateIDs, authIDs, err := rs.StateIDs(ctx, room.id, prevID)
	if err != nil {
		return nil, err
	}
	if len(stateIDs)+len(authIDs) > maxGapState {
		return nil, fmt.Errorf("state at %s: %d events, at most %d are fetched", prevID, len(stateIDs)+len(authIDs), maxGapState)
	}
	wanted := uniqueOf(append(append([]string{prevID}, stateIDs...), authIDs...))
	known, err := s.knownEvents(ctx, s.db, wanted)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range wanted {
		if _, ok := known[id]; !ok {
			want[id] = true
		}
	}
	var fetched []gomatrixserverlib.PDU
	switch {
	case len(want) == 0:
	case len(want) > gapFetchOneByOne:
		st, chain, err := rs.State(ctx, ver, room.id, prevID)
		if err != nil {
			return nil, err
		}
		for _, p := range append(st, chain...) {
			if want[p.EventID()] {
				fetched = append(fetched, p)
				delete(want, p.EventID())
			}
		}
		// the prev event itself is not part of the state before it
		if want[prevID] {
			p, err := remote.Event(ctx, ver, prevID)
			if err != nil {
				return nil, err
			}
			fetched = append(fetched, p)
			delete(want, prevID)
		}
	default:
		for id := range want {
			p, err := remote.Event(ctx, ver, id)
			if err != nil {
				return nil, err
			}
			fetched = append(fetched, p)
			delete(want, id)
		}
	}
	for _, p := range fetched {
		if p.RoomID().String() != room.id {
			return nil, fmt.Errorf("fetched event %s is from another room", p.EventID())
		}
		if s.fed != nil && !s.partnerEvent(p) {
			return nil, fmt.Errorf("state event %s names a server that is not a partner", p.EventID())
		}
	}
	if err := s.storeFetched(ctx, room, authOrder(fetched), remote, budget); err != nil {
		return nil, err
	}

	known, err = s.knownEvents(ctx, s.db, append([]string{prevID}, stateIDs...))
	if err != nil {
		return nil, err
	}
	pdus, err := s.pdusOf(ctx, room, append([]string{prevID}, stateIDs...), known)
	if err != nil {
		return nil, err
	}
	state := make(map[[2]string]int64, len(stateIDs)+1)
	for _, id := range stateIDs {
		k, ok := known[id]
		p := pdus[id]
		if !ok || p == nil {
			return nil, fmt.Errorf("state event %s was not obtained", id)
		}
		if p.StateKey() == nil || p.RoomID().String() != room.id {
			return nil, fmt.Errorf("state_ids at %s names %s, not a state event of the room", prevID, id)
		}
		if k.rejected {
			continue // the origin's view; a rejected event is state nowhere
		}
		key := [2]string{p.Type(), *p.StateKey()}
		if _, dup := state[key]; dup {
			return nil, fmt.Errorf("state_ids at %s names two events for (%s, %s)", prevID, key[0], key[1])
		}
		state[key] = k.nid
	}
	if _, ok := state[[2]string{spec.MRoomCreate, ""}]; !ok && !room.version.DomainlessRoomIDs() {
		return nil, fmt.Errorf("state at %s has no create event", prevID)
	}
	prev, k := pdus[prevID], known[prevID]
	if prev == nil {
		return nil, fmt.Errorf("prev event %s was not obtained", prevID)
	}
	if sk := prev.StateKey(); sk != nil && !k.rejected {
		state[[2]string{prev.Type(), *sk}] = k.nid
	}
	return state, nil
}

// authOrder sorts events so that each comes after those of its auth
// events that are among them (depth breaks ties; a cycle, which only a
// forged set can hold, keeps its input order).
func authOrder(pdus []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	sortByDepth(pdus)
	byID := make(map[string]gomatrixserverlib.PDU, len(pdus))
	for _, p := range pdus {
		byID[p.EventID()] = p
	}
	done := make(map[string]bool, len(pdus))
	out := make([]gomatrixserverlib.PDU, 0, len(pdus))
	var visit func(p gomatrixserverlib.PDU)
	visit = func(p gomatrixserverlib.PDU) {
		if done[p.EventID()] {
			return
		}
		done[p.EventID()] = true
		for _, id := range p.AuthEventIDs() {
			if a, ok := byID[id]; ok {
				visit(a)
			}
		}
		out = append(out, p)
	}
	for _, p := range pdus {
		visit(p)
	}
	return out
}

// storeFetched checks each event against its auth events (fetching those
// still missing, within budget) and stores it as an outlier, rejected if
// they do not allow it.
func (s *Service) storeFetched(ctx context.Context, room *roomInfo, pdus []gomatrixserverlib.PDU, remote RemoteEvents, budget *int) error {
	for _, p := range pdus {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.ensureAuthEvents(ctx, room, p, remote, budget, 0); err != nil {
			return err
		}
		auth, _, err := s.pdusByID(ctx, s.db, room, p.AuthEventIDs())
		if err != nil {
			return err
		}
		reason := s.checkAuthEvents(ctx, room, p, auth)
		if reason != "" {
			slog.InfoContext(ctx, "fetched state event rejected", "event_id", p.EventID(), "type", p.Type(), "room_id", room.id, "reason", reason)
		}
		if err := s.storeOutlier(ctx, room, p, reason != ""); err != nil {
			return err
		}
	}
	return nil
}

// resolveStates is the state before an event whose prev events have the
// given states after them: the one state, or their resolution.
func (s *Service) resolveStates(ctx context.Context, room *roomInfo, states []map[[2]string]int64) (map[[2]string]int64, error) {
	if len(states) == 0 {
		return nil, errors.New("no state to resolve")
	}
	same := true
	for _, st := range states[1:] {
		if !equalState(st, states[0]) {
			same = false
			break
		}
	}
	if same {
		return copyState(states[0]), nil
	}
	sets := make([][]gomatrixserverlib.PDU, 0, len(states))
	for _, st := range states {
		nids := make([]int64, 0, len(st))
		for _, nid := range st {
			nids = append(nids, nid)
		}
		pdus, err := s.loadPDUs(ctx, s.db, room, nids)
		if err != nil {
			return nil, err
		}
		set := make([]gomatrixserverlib.PDU, 0, len(pdus))
		for _, p := range pdus {
			set = append(set, p)
		}
		sets = append(sets, set)
	}
	return s.resolve(ctx, room, sets)
}

func equalState(a, b map[[2]string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// adoptGapState makes the resolution of the current state and the state
// before a gap-bridging event the room's current state (a message does
// not do it through persistFork, which only resolves for state events),
// so that what changed inside the gap — a new name, a membership — is
// known from now on.
func (s *Service) adoptGapState(ctx context.Context, w *writer, before map[[2]string]int64) error {
	tx, room := w.tx, w.room
	current, err := s.currentStateMap(ctx, tx, room)
	if err != nil {
		return err
	}
	merged, err := s.resolveMaps(ctx, tx, room, current, before)
	if err != nil {
		return err
	}
	if equalState(merged, current) {
		return nil
	}
	g, err := s.replaceCurrentState(ctx, tx, room, merged)
	if err != nil {
		return err
	}
	w.group, w.chainLen = g, 0
	w.state = map[gomatrixserverlib.StateKeyTuple]stateEntry{}
	return nil
}

// memberChanges lists the member state keys whose event differs between
// two states.
func memberChanges(old, cur map[[2]string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, nid := range cur {
		if k[0] == spec.MRoomMember && old[k] != nid {
			out[k[1]] = nid
		}
	}
	return out
}

// recordGapMembers updates room_members for memberships the bridged state
// changed (besides the event's own, which finish records), as known from
// pos, the bridging event's position.
func (s *Service) recordGapMembers(ctx context.Context, tx *storage.DB, room *roomInfo, changed map[string]int64, skip string, pos int64) error {
	var nids []int64
	for user, nid := range changed {
		if user != skip {
			nids = append(nids, nid)
		}
	}
	if len(nids) == 0 {
		return nil
	}
	pdus, err := s.loadPDUs(ctx, tx, room, nids)
	if err != nil {
		return err
	}
	for nid, p := range pdus {
		m, err := p.Membership()
		if err != nil || p.StateKey() == nil {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO room_members (room_nid, user_id, membership, event_nid, stream_pos, forgotten)
			VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid,
				stream_pos = excluded.stream_pos, forgotten = FALSE`,
			room.nid, *p.StateKey(), m, nid, pos); err != nil {
			return fmt.Errorf("update membership: %w", err)
		}
	}
	if len(pdus) > 0 {
		// memberships beyond the event's own changed: wake every waiter
		tx.AfterCommit(func() { s.notifier.Publish(pos) })
	}
	return nil
}

// markGaps cuts each timeline at its newest event that follows a gap — a
// prev event we do not hold in the timeline, so a bridged gap — and marks
// it limited: what /sync returns must be a gapless run whose state
// section is the state before its first event, and the state changes
// inside the gap are in no event a client can see.
func (s *Service) markGaps(ctx context.Context, timelines map[int64]*SyncTimeline) error {
	// Only other servers' events can follow a gap: ours cite our forward
	// extremities, which we hold. A room without them costs no query.
	var nids []int64
	for _, t := range timelines {
		for _, e := range t.Events {
			if serverOfID(e.Sender) != s.serverName {
				nids = append(nids, e.NID)
			}
		}
	}
	if len(nids) == 0 {
		return nil
	}
	gap := map[int64]bool{}
	// batches keep the parameter count far below SQLite's limit on an
	// initial sync of many rooms
	for len(nids) > 0 {
		batch := nids[:min(len(nids), 500)]
		nids = nids[len(batch):]
		if err := s.findGaps(ctx, batch, gap); err != nil {
			return err
		}
	}
	for _, t := range timelines {
		for i := len(t.Events) - 1; i >= 0; i-- {
			if gap[t.Events[i].NID] {
				t.Events = t.Events[i:]
				t.Limited, t.Gap = true, true
				break
			}
		}
	}
	return nil
}

// gapCurrent serves the auth rules the current state as a gap-bridging
// event sees it: our current state resolved with the state before it.
func (s *Service) gapCurrent(ctx context.Context, tx *storage.DB, room *roomInfo, before map[[2]string]int64, pdu gomatrixserverlib.PDU) (gomatrixserverlib.AuthEventProvider, error) {
	current, err := s.currentStateMap(ctx, tx, room)
	if err != nil {
		return nil, err
	}
	merged, err := s.resolveMaps(ctx, tx, room, current, before)
	if err != nil {
		return nil, err
	}
	return s.authProvider(ctx, tx, room, merged, pdu)
}

// findGaps adds to gap the events among nids that follow a gap.
func (s *Service) findGaps(ctx context.Context, nids []int64, gap map[int64]bool) error {
	// an event without a state before it (an out-of-band membership) is
	// outside the room's history: no gap to report
	q, args := storage.In(`SELECT DISTINCT ed.event_nid FROM event_edges ed
		JOIN events e ON e.event_nid = ed.event_nid AND e.state_group_before IS NOT NULL
		LEFT JOIN events p ON p.event_id = ed.prev_event_id
		WHERE ed.event_nid IN ($IN) AND (p.event_nid IS NULL OR (p.outlier AND NOT p.rejected))`, 0, nids)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("find gaps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var nid int64
		if err := rows.Scan(&nid); err != nil {
			return err
		}
		gap[nid] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find gaps: %w", err)
	}
	return nil
}
