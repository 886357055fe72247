package roomserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// The federated-event input pipeline: an event that arrived over
// federation is checked against its auth events, the state before it and
// the current state (in that order, per the spec's "checks performed on
// receipt of a PDU") and persisted with the same writer as a local event.
// Hashes and signatures are checked by the caller (federation/txn), which
// also fetches through RemoteEvents whatever the event refers to; fetching
// happens before the room lock is taken.

// RemoteEvents fetches events from the server that sent a PDU. Every
// event it returns has been checked (hashes, signatures, room version)
// by the implementation.
type RemoteEvents interface {
	// Event fetches one event by ID (/event).
	Event(ctx context.Context, roomVersion gomatrixserverlib.RoomVersion, eventID string) (gomatrixserverlib.PDU, error)
	// MissingEvents fills the gap between earliest and latest
	// (/get_missing_events), oldest first.
	MissingEvents(ctx context.Context, roomVersion gomatrixserverlib.RoomVersion, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error)
}

// InputOutcome is what became of a federated event.
type InputOutcome string

const (
	// InputAccepted: the event is in the room's timeline and state.
	InputAccepted InputOutcome = "accepted"
	// InputSoftFailed: allowed by its own history but not by the current
	// state (e.g. a message from a user banned meanwhile): stored, not
	// served to clients, not an extremity.
	InputSoftFailed InputOutcome = "soft_failed"
	// InputRejected: fails the auth rules; stored so that it is never
	// fetched again, never served, never used as auth or prev event.
	InputRejected InputOutcome = "rejected"
	// InputDuplicate: we already had it.
	InputDuplicate InputOutcome = "duplicate"
)

// ErrMissingPrevEvents is returned when the prev events of an event
// could not be obtained; nothing is stored and the sender retries.
var ErrMissingPrevEvents = errors.New("missing prev events")

// maxAuthFetch bounds how many auth events one PDU may make us fetch.
const maxAuthFetch = 100

// maxMissingEvents bounds /get_missing_events.
const maxMissingEvents = 20

// knownEvent is what the pipeline needs to know about a stored event.
type knownEvent struct {
	nid                   int64
	outlier, rejected     bool
	softFailed            bool
	isState               bool
	groupBefore, groupAft int64
}

// group is the state group after the event.
func (k knownEvent) stateAfter() int64 {
	if k.isState && k.groupAft != 0 {
		return k.groupAft
	}
	return k.groupBefore
}

func (s *Service) knownEvents(ctx context.Context, db *storage.DB, ids []string) (map[string]knownEvent, error) {
	out := map[string]knownEvent{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT event_id, event_nid, outlier, rejected, soft_failed, state_key IS NOT NULL,
		COALESCE(state_group_before, 0), COALESCE(state_group_after, 0) FROM events WHERE event_id IN ($IN)`, 0, uniqueOf(ids))
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("look up events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var k knownEvent
		if err := rows.Scan(&id, &k.nid, &k.outlier, &k.rejected, &k.softFailed, &k.isState, &k.groupBefore, &k.groupAft); err != nil {
			return nil, err
		}
		out[id] = k
	}
	return out, rows.Err()
}

// pdusByID loads stored events (any kind) by ID, with their NIDs.
func (s *Service) pdusByID(ctx context.Context, db *storage.DB, room *roomInfo, ids []string) (map[string]gomatrixserverlib.PDU, map[string]int64, error) {
	known, err := s.knownEvents(ctx, db, ids)
	if err != nil {
		return nil, nil, err
	}
	nids := make([]int64, 0, len(known))
	nidOf := map[string]int64{}
	for id, k := range known {
		nids = append(nids, k.nid)
		nidOf[id] = k.nid
	}
	byNID, err := s.loadPDUs(ctx, db, room, nids)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]gomatrixserverlib.PDU{}
	for _, p := range byNID {
		out[p.EventID()] = p
	}
	return out, nidOf, nil
}

// InputPDU runs the receipt checks on a federated event and stores it.
// remote may be nil: then nothing missing is fetched.
func (s *Service) InputPDU(ctx context.Context, pdu gomatrixserverlib.PDU, remote RemoteEvents) (InputOutcome, error) {
	room, err := s.roomInfo(ctx, s.db, pdu.RoomID().String())
	if err != nil {
		return "", err
	}
	if room.version.Version() != pdu.Version() {
		return "", fmt.Errorf("event %s: room version %s, room is %s", pdu.EventID(), pdu.Version(), room.version.Version())
	}
	known, err := s.knownEvents(ctx, s.db, append(append([]string{pdu.EventID()}, pdu.PrevEventIDs()...), pdu.AuthEventIDs()...))
	if err != nil {
		return "", err
	}
	if k, ok := known[pdu.EventID()]; ok && (!k.outlier || k.rejected) {
		if k.rejected {
			return InputRejected, nil
		}
		return InputDuplicate, nil
	}
	// stored as an outlier already (an invite, state from a join): its
	// row is completed by the fork path, which upserts
	_, wasOutlier := known[pdu.EventID()]
	if len(pdu.PrevEventIDs()) == 0 {
		// only a create event has none, and this room has one already
		if _, ok := known[pdu.EventID()]; ok {
			return InputDuplicate, nil
		}
		return "", httputil.Forbidden("a second create event for " + room.id)
	}

	// 1. Auth events, fetched if missing (as outliers).
	if !allStored(pdu.AuthEventIDs(), known) {
		budget := maxAuthFetch
		if err := s.ensureAuthEvents(ctx, room, pdu, remote, &budget, 0); err != nil {
			return "", err
		}
		if known, err = s.knownEvents(ctx, s.db, append(append([]string{}, pdu.PrevEventIDs()...), pdu.AuthEventIDs()...)); err != nil {
			return "", err
		}
	}
	authPDUs, err := s.pdusOf(ctx, room, pdu.AuthEventIDs(), known)
	if err != nil {
		return "", err
	}
	if reason := s.checkAuthEventsKnown(ctx, room, pdu, authPDUs, known); reason != "" {
		slog.InfoContext(ctx, "federated event rejected by its auth events", "event_id", pdu.EventID(), "type", pdu.Type(), "room_id", room.id, "reason", reason)
		return InputRejected, s.storeOutlier(ctx, room, pdu, true)
	}

	// 2. Prev events: fill a gap from the origin.
	if !allStored(pdu.PrevEventIDs(), known) {
		if err := s.ensurePrevEvents(ctx, room, pdu, remote); err != nil {
			return "", err
		}
		if known, err = s.knownEvents(ctx, s.db, pdu.PrevEventIDs()); err != nil {
			return "", err
		}
	}
	var prevList []knownEvent
	var missingPrevs []string
	for _, id := range pdu.PrevEventIDs() {
		k, ok := known[id]
		switch {
		case ok && k.rejected:
		case !ok || k.outlier:
			missingPrevs = append(missingPrevs, id)
		default:
			prevList = append(prevList, k)
		}
	}
	// 3. A gap /get_missing_events did not close: the state before the
	// event from /state_ids at the missing prev events (input_gap.go).
	var gapBefore map[[2]string]int64
	if len(missingPrevs) > 0 {
		if gapBefore, err = s.bridgeGap(ctx, room, pdu, prevList, missingPrevs, remote); err != nil {
			return "", err
		}
	}

	var outcome InputOutcome
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		w, err := s.openWriter(ctx, tx, room)
		if err != nil {
			return err
		}
		// The same event may have been stored while we fetched what it
		// needs (it came from two servers at once, or a join we made
		// through another server raced that server's transaction): under
		// the room lock, look again.
		again, err := s.knownEvents(ctx, tx, []string{pdu.EventID()})
		if err != nil {
			return err
		}
		if k, ok := again[pdu.EventID()]; ok && (!k.outlier || k.rejected) {
			outcome = InputDuplicate
			if k.rejected {
				outcome = InputRejected
			}
			return nil
		}
		needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu}).Tuples()
		needed = append(needed, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCreate})
		if err := w.load(ctx, needed); err != nil {
			return err
		}
		if gapBefore == nil && !wasOutlier && w.group != 0 && sameSet(pdu.PrevEventIDs(), w.extremities) && statesAre(prevList, w.group) {
			// The common case: the event extends the room's head, so the
			// state before it is the current state (one check serves as
			// both), and it is persisted exactly like a local event.
			if err := gomatrixserverlib.Allowed(pdu, w, userIDForSender); err != nil {
				slog.InfoContext(ctx, "federated event rejected by the state before it", "event_id", pdu.EventID(), "type", pdu.Type(), "room_id", room.id, "reason", err.Error())
				outcome = InputRejected
				return s.insertOutlier(ctx, tx, room, pdu, true)
			}
			outcome = InputAccepted
			if _, err := w.persist(ctx, pdu, "", ""); err != nil {
				return err
			}
			_, err = w.finish(ctx)
			return err
		}

		// A fork: the state before the event is that after its prev
		// events, resolved if they differ.
		before, beforeGroup := gapBefore, int64(0)
		if gapBefore == nil {
			if before, beforeGroup, err = s.stateAfterAll(ctx, room, prevList); err != nil {
				return err
			}
		}
		provider, err := s.authProvider(ctx, tx, room, before, pdu)
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.Allowed(pdu, provider, userIDForSender); err != nil {
			slog.InfoContext(ctx, "federated event rejected by the state before it", "event_id", pdu.EventID(), "type", pdu.Type(), "room_id", room.id, "reason", err.Error())
			outcome = InputRejected
			return s.insertOutlier(ctx, tx, room, pdu, true)
		}
		// Soft-fail against the current state. After a gap our current
		// state is behind: it counts only as resolved with the state the
		// origin described (a member who joined inside the gap may speak).
		var current gomatrixserverlib.AuthEventProvider = w
		if gapBefore != nil {
			if current, err = s.gapCurrent(ctx, tx, room, before, pdu); err != nil {
				return err
			}
		}
		if err := gomatrixserverlib.Allowed(pdu, current, userIDForSender); err != nil {
			slog.InfoContext(ctx, "federated event soft-failed against current state", "event_id", pdu.EventID(), "type", pdu.Type(), "room_id", room.id, "reason", err.Error())
			outcome = InputSoftFailed
			return s.insertSoftFailed(ctx, tx, room, pdu, beforeGroup, before)
		}
		outcome = InputAccepted
		var oldCurrent map[[2]string]int64
		if gapBefore != nil {
			if oldCurrent, err = s.currentStateMap(ctx, tx, room); err != nil {
				return err
			}
		}
		if err := s.persistFork(ctx, w, pdu, before, beforeGroup); err != nil {
			return err
		}
		if gapBefore != nil && pdu.StateKey() == nil {
			if err := s.adoptGapState(ctx, w, before); err != nil {
				return err
			}
		}
		pos, err := w.finish(ctx)
		if err != nil || gapBefore == nil {
			return err
		}
		newCurrent, err := s.currentStateMap(ctx, tx, room)
		if err != nil {
			return err
		}
		own := ""
		if pdu.Type() == spec.MRoomMember && pdu.StateKey() != nil {
			own = *pdu.StateKey()
		}
		return s.recordGapMembers(ctx, tx, room, memberChanges(oldCurrent, newCurrent), own, pos)
	})
	if err != nil {
		return "", fmt.Errorf("input event %s: %w", pdu.EventID(), err)
	}
	return outcome, nil
}

// allStored reports whether every ID is stored and not an outlier-only
// placeholder we still need (auth events may be outliers).
func allStored(ids []string, known map[string]knownEvent) bool {
	for _, id := range ids {
		if _, ok := known[id]; !ok {
			return false
		}
	}
	return true
}

// statesAre reports whether the state after every prev event is group.
func statesAre(prevs []knownEvent, group int64) bool {
	if len(prevs) == 0 {
		return false
	}
	for _, p := range prevs {
		if p.stateAfter() != group {
			return false
		}
	}
	return true
}

// pdusOf returns the stored events with the given IDs, from the cache
// where it has them.
func (s *Service) pdusOf(ctx context.Context, room *roomInfo, ids []string, known map[string]knownEvent) (map[string]gomatrixserverlib.PDU, error) {
	out := make(map[string]gomatrixserverlib.PDU, len(ids))
	var missing []int64
	for _, id := range ids {
		k, ok := known[id]
		if !ok {
			continue
		}
		if p, ok := s.events.get(k.nid); ok {
			out[id] = p
		} else {
			missing = append(missing, k.nid)
		}
	}
	if len(missing) > 0 {
		got, err := s.loadPDUs(ctx, s.db, room, missing)
		if err != nil {
			return nil, err
		}
		for _, p := range got {
			out[p.EventID()] = p
		}
	}
	return out, nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// checkAuthEvents checks the event against the auth events it names:
// they must be stored, not rejected, of this room, and allow the event.
// It returns the reason for rejection, "" if none.
func (s *Service) checkAuthEvents(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, auth map[string]gomatrixserverlib.PDU) string {
	return s.checkAuthEventsKnown(ctx, room, pdu, auth, nil)
}

// checkAuthEventsKnown is checkAuthEvents with what the caller already
// knows about the auth events (nil: look them up).
func (s *Service) checkAuthEventsKnown(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, auth map[string]gomatrixserverlib.PDU, known map[string]knownEvent) string {
	if known == nil {
		var err error
		if known, err = s.knownEvents(ctx, s.db, pdu.AuthEventIDs()); err != nil {
			return "cannot read auth events"
		}
	}
	list := make([]gomatrixserverlib.PDU, 0, len(auth))
	for _, id := range pdu.AuthEventIDs() {
		p, ok := auth[id]
		if !ok {
			return "auth event " + id + " is unknown"
		}
		if known[id].rejected {
			return "auth event " + id + " was rejected"
		}
		if p.RoomID().String() != room.id {
			return "auth event " + id + " is from another room"
		}
		list = append(list, p)
	}
	if room.version.DomainlessRoomIDs() && pdu.Type() != spec.MRoomCreate {
		// v12: the create event is implied by the room ID, not listed
		if create, err := s.createEvent(ctx, room); err == nil && create != nil {
			list = append(list, create)
		}
	}
	provider, err := gomatrixserverlib.NewAuthEvents(list)
	if err != nil {
		return err.Error()
	}
	if err := gomatrixserverlib.Allowed(pdu, provider, userIDForSender); err != nil {
		return err.Error()
	}
	return ""
}

// createEvent returns the room's create event.
func (s *Service) createEvent(ctx context.Context, room *roomInfo) (gomatrixserverlib.PDU, error) {
	var nid int64
	err := s.db.QueryRow(ctx, `SELECT event_nid FROM events WHERE room_nid = $1 AND type = 'm.room.create' AND state_key = '' AND NOT rejected`, room.nid).Scan(&nid)
	if err != nil {
		return nil, err
	}
	pdus, err := s.loadPDUs(ctx, s.db, room, []int64{nid})
	if err != nil {
		return nil, err
	}
	return pdus[nid], nil
}

// ensureAuthEvents fetches the auth events of pdu we do not hold (and
// theirs, depth first) and stores each as an outlier, rejected if its own
// auth events do not allow it.
func (s *Service) ensureAuthEvents(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, remote RemoteEvents, budget *int, depth int) error {
	known, err := s.knownEvents(ctx, s.db, pdu.AuthEventIDs())
	if err != nil {
		return err
	}
	for _, id := range pdu.AuthEventIDs() {
		if _, ok := known[id]; ok {
			continue
		}
		if remote == nil {
			return fmt.Errorf("event %s: auth event %s is unknown", pdu.EventID(), id)
		}
		if *budget <= 0 || depth > 50 {
			return fmt.Errorf("event %s: too many missing auth events", pdu.EventID())
		}
		*budget--
		ev, err := remote.Event(ctx, room.version.Version(), id)
		if err != nil {
			return fmt.Errorf("fetch auth event %s: %w", id, err)
		}
		if ev.EventID() != id || ev.RoomID().String() != room.id {
			return fmt.Errorf("fetched auth event %s does not match", id)
		}
		if err := s.ensureAuthEvents(ctx, room, ev, remote, budget, depth+1); err != nil {
			return err
		}
		auth, _, err := s.pdusByID(ctx, s.db, room, ev.AuthEventIDs())
		if err != nil {
			return err
		}
		reason := s.checkAuthEvents(ctx, room, ev, auth)
		rejected := reason != ""
		if rejected {
			slog.InfoContext(ctx, "fetched auth event rejected", "event_id", ev.EventID(), "type", ev.Type(), "room_id", room.id, "reason", reason)
		}
		if err := s.storeOutlier(ctx, room, ev, rejected); err != nil {
			return err
		}
	}
	return nil
}

// ensurePrevEvents asks the origin for the events between our forward
// extremities and pdu when we lack some of its prev events, and inputs
// them oldest first.
func (s *Service) ensurePrevEvents(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, remote RemoteEvents) error {
	known, err := s.knownEvents(ctx, s.db, pdu.PrevEventIDs())
	if err != nil {
		return err
	}
	missing := false
	for _, id := range pdu.PrevEventIDs() {
		if k, ok := known[id]; !ok || k.outlier {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	if remote == nil {
		return fmt.Errorf("event %s: %w", pdu.EventID(), ErrMissingPrevEvents)
	}
	head, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return err
	}
	evs, err := remote.MissingEvents(ctx, room.version.Version(), room.id, head.extremities, []string{pdu.EventID()}, maxMissingEvents, max(0, head.depth-maxMissingEvents))
	if err != nil {
		// not fatal: the /state_ids fallback may still bridge the gap
		slog.InfoContext(ctx, "get_missing_events failed", "event_id", pdu.EventID(), "room_id", room.id, "err", err)
		return nil
	}
	slices.SortStableFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	for _, ev := range evs {
		if ev.RoomID().String() != room.id || ev.EventID() == pdu.EventID() {
			continue
		}
		// One round of gap filling, no recursion into another server's
		// history; the oldest pulled event may bridge its own gap with
		// /state_ids. If one fails, the rest would too: the event that
		// asked bridges the gap itself.
		if _, err := s.InputPDU(ctx, ev, withState(remote)); err != nil {
			slog.InfoContext(ctx, "pulled missing event not input", "event_id", ev.EventID(), "room_id", room.id, "err", err)
			break
		}
	}
	return nil
}

// authOnly lets a gap-filling event fetch its auth events but not start
// another gap fill.
type authOnly struct{ r RemoteEvents }

func (a authOnly) Event(ctx context.Context, v gomatrixserverlib.RoomVersion, id string) (gomatrixserverlib.PDU, error) {
	return a.r.Event(ctx, v, id)
}

func (a authOnly) MissingEvents(context.Context, gomatrixserverlib.RoomVersion, string, []string, []string, int, int64) ([]gomatrixserverlib.PDU, error) {
	return nil, nil
}

// stateAfterAll is the state before an event with the given prev events:
// the state after the one prev event, or the resolution (v2/v2.1 per room
// version) of the states after each. group is the existing state group
// holding exactly that state, 0 if it has none yet.
func (s *Service) stateAfterAll(ctx context.Context, room *roomInfo, prevs []knownEvent) (map[[2]string]int64, int64, error) {
	if len(prevs) == 0 {
		// every prev event was rejected: there is no history to check the
		// event against, so it cannot be accepted
		return nil, 0, fmt.Errorf("all prev events are rejected: %w", ErrMissingPrevEvents)
	}
	groups := make([]int64, 0, len(prevs))
	for _, p := range prevs {
		groups = append(groups, p.stateAfter())
	}
	groups = uniqueOf(groups)
	states, err := s.statesAt(ctx, groups, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(groups) == 1 {
		st := states[groups[0]]
		if st == nil {
			st = map[[2]string]int64{}
		}
		return st, groups[0], nil
	}
	// Several different states: resolve.
	var sets [][]gomatrixserverlib.PDU
	for _, g := range groups {
		nids := make([]int64, 0, len(states[g]))
		for _, nid := range states[g] {
			nids = append(nids, nid)
		}
		pdus, err := s.loadPDUs(ctx, s.db, room, nids)
		if err != nil {
			return nil, 0, err
		}
		set := make([]gomatrixserverlib.PDU, 0, len(pdus))
		for _, p := range pdus {
			set = append(set, p)
		}
		sets = append(sets, set)
	}
	resolved, err := s.resolve(ctx, room, sets)
	if err != nil {
		return nil, 0, err
	}
	return resolved, 0, nil
}

// resolve runs state resolution over state sets and returns the result
// as (type, state_key) → event NID.
func (s *Service) resolve(ctx context.Context, room *roomInfo, sets [][]gomatrixserverlib.PDU) (map[[2]string]int64, error) {
	var all []gomatrixserverlib.PDU
	for _, set := range sets {
		all = append(all, set...)
	}
	authChain, err := s.authChain(ctx, room, all)
	if err != nil {
		return nil, err
	}
	resolved, err := gomatrixserverlib.ResolveConflictsNew(room.version.Version(), sets, authChain, userIDForSender, func(string) bool { return false })
	if err != nil {
		return nil, fmt.Errorf("resolve state of %s: %w", room.id, err)
	}
	ids := make([]string, 0, len(resolved))
	for _, p := range resolved {
		ids = append(ids, p.EventID())
	}
	known, err := s.knownEvents(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[[2]string]int64, len(resolved))
	for _, p := range resolved {
		if p.StateKey() == nil {
			continue
		}
		k, ok := known[p.EventID()]
		if !ok {
			return nil, fmt.Errorf("resolved state event %s is not stored", p.EventID())
		}
		out[[2]string{p.Type(), *p.StateKey()}] = k.nid
	}
	return out, nil
}

// authChain loads the auth chains of events from the database.
func (s *Service) authChain(ctx context.Context, room *roomInfo, events []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]gomatrixserverlib.PDU{}
	var frontier []string
	for _, e := range events {
		frontier = append(frontier, e.AuthEventIDs()...)
	}
	for len(frontier) > 0 && len(seen) < 10000 {
		var want []string
		for _, id := range uniqueOf(frontier) {
			if _, ok := seen[id]; !ok {
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			break
		}
		got, _, err := s.pdusByID(ctx, s.db, room, want)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for id, p := range got {
			seen[id] = p
			frontier = append(frontier, p.AuthEventIDs()...)
		}
		if len(got) == 0 {
			break
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(seen))
	for _, p := range seen {
		out = append(out, p)
	}
	return out, nil
}

// authProvider serves the auth-relevant part of a state map to the auth
// rules.
func (s *Service) authProvider(ctx context.Context, db *storage.DB, room *roomInfo, state map[[2]string]int64, pdu gomatrixserverlib.PDU) (gomatrixserverlib.AuthEventProvider, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu}).Tuples()
	needed = append(needed, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCreate})
	var nids []int64
	for _, k := range needed {
		if nid, ok := state[[2]string{k.EventType, k.StateKey}]; ok {
			nids = append(nids, nid)
		}
	}
	pdus, err := s.loadPDUs(ctx, db, room, nids)
	if err != nil {
		return nil, err
	}
	list := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for _, p := range pdus {
		list = append(list, p)
	}
	return gomatrixserverlib.NewAuthEvents(list)
}

// storeOutlier stores an event outside the timeline and state: an auth
// event fetched for another, or a rejected event.
func (s *Service) storeOutlier(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, rejected bool) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		return s.insertOutlier(ctx, tx, room, pdu, rejected)
	})
}

func (s *Service) insertOutlier(ctx context.Context, tx *storage.DB, room *roomInfo, pdu gomatrixserverlib.PDU, rejected bool) error {
	var stateKey any
	if sk := pdu.StateKey(); sk != nil {
		stateKey = *sk
	}
	_, err := tx.Exec(ctx, `INSERT INTO events (event_id, room_nid, type, state_key, sender, depth, origin_ts, stream_pos, json, outlier, rejected)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, TRUE, $9)
		ON CONFLICT (event_id) DO UPDATE SET rejected = excluded.rejected`,
		pdu.EventID(), room.nid, pdu.Type(), stateKey, string(pdu.SenderID()), pdu.Depth(), int64(pdu.OriginServerTS()),
		string(pdu.JSON()), rejected)
	if err != nil {
		return fmt.Errorf("store outlier %s: %w", pdu.EventID(), err)
	}
	return nil
}

// insertSoftFailed stores a soft-failed event with the state before it
// (so that later events building on it can be checked) but outside the
// timeline, the current state and the extremities.
func (s *Service) insertSoftFailed(ctx context.Context, tx *storage.DB, room *roomInfo, pdu gomatrixserverlib.PDU, beforeGroup int64, before map[[2]string]int64) error {
	if beforeGroup == 0 {
		g, err := s.writeSnapshot(ctx, tx, room, before)
		if err != nil {
			return err
		}
		beforeGroup = g
	}
	var stateKey any
	if sk := pdu.StateKey(); sk != nil {
		stateKey = *sk
	}
	var nid int64
	err := tx.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, type, state_key, sender, depth, origin_ts, stream_pos,
			state_group_before, json, soft_failed)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, TRUE)
		ON CONFLICT (event_id) DO UPDATE SET soft_failed = TRUE, outlier = FALSE, state_group_before = excluded.state_group_before
		RETURNING event_nid`,
		pdu.EventID(), room.nid, pdu.Type(), stateKey, string(pdu.SenderID()), pdu.Depth(), int64(pdu.OriginServerTS()),
		beforeGroup, string(pdu.JSON())).Scan(&nid)
	if err != nil {
		return fmt.Errorf("store soft-failed %s: %w", pdu.EventID(), err)
	}
	if sk := pdu.StateKey(); sk != nil {
		after := copyState(before)
		after[[2]string{pdu.Type(), *sk}] = nid
		g, err := s.writeSnapshot(ctx, tx, room, after)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE events SET state_group_after = $1 WHERE event_nid = $2`, g, nid); err != nil {
			return fmt.Errorf("store soft-failed %s: %w", pdu.EventID(), err)
		}
	}
	return nil
}

func copyState(m map[[2]string]int64) map[[2]string]int64 {
	out := make(map[[2]string]int64, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// replaceCurrentState makes state the room's current state: a new full
// state group, which current_state then mirrors. It returns the group.
func (s *Service) replaceCurrentState(ctx context.Context, tx *storage.DB, room *roomInfo, state map[[2]string]int64) (int64, error) {
	g, err := s.writeSnapshot(ctx, tx, room, state)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM current_state WHERE room_nid = $1`, room.nid); err != nil {
		return 0, fmt.Errorf("replace current state: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid)
		SELECT $1, type, state_key, event_nid FROM state_group_entries WHERE state_group = $2`, room.nid, g); err != nil {
		return 0, fmt.Errorf("replace current state: %w", err)
	}
	return g, nil
}

// writeSnapshot writes a full state group.
func (s *Service) writeSnapshot(ctx context.Context, tx *storage.DB, room *roomInfo, state map[[2]string]int64) (int64, error) {
	var g int64
	if err := tx.QueryRow(ctx, `INSERT INTO state_groups (room_nid, prev_group, chain_len) VALUES ($1, NULL, 0) RETURNING state_group`,
		room.nid).Scan(&g); err != nil {
		return 0, fmt.Errorf("create state group: %w", err)
	}
	keys := make([][2]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	for len(keys) > 0 {
		n := min(len(keys), 100)
		var q strings.Builder
		args := []any{g}
		q.WriteString(`INSERT INTO state_group_entries (state_group, type, state_key, event_nid) VALUES `)
		for i, k := range keys[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "($1, $%d, $%d, $%d)", len(args)+1, len(args)+2, len(args)+3)
			args = append(args, k[0], k[1], state[k])
		}
		if _, err := tx.Exec(ctx, q.String(), args...); err != nil {
			return 0, fmt.Errorf("write state group %d: %w", g, err)
		}
		keys = keys[n:]
	}
	return g, nil
}

// persistFork stores an accepted event whose prev events are not the
// room's head: its state before is a resolved (or older) state, and the
// room's new current state is the resolution of the current state and
// the state after the event.
func (s *Service) persistFork(ctx context.Context, w *writer, pdu gomatrixserverlib.PDU, before map[[2]string]int64, beforeGroup int64) error {
	tx, room := w.tx, w.room
	if beforeGroup == 0 {
		g, err := s.writeSnapshot(ctx, tx, room, before)
		if err != nil {
			return err
		}
		beforeGroup = g
	}
	var pos int64
	if tx.Engine() == storage.SQLite {
		var err error
		if pos, err = tx.NextStreamPos(ctx, 1); err != nil {
			return err
		}
	}
	var stateKey, relatesTo, relType any
	if sk := pdu.StateKey(); sk != nil {
		stateKey = *sk
		// what it replaces on its own branch, as persist does on the head
		if old, ok := before[[2]string{pdu.Type(), *sk}]; ok && !gjson.GetBytes(pdu.Unsigned(), "replaces_state").Exists() {
			olds, err := s.loadPDUs(ctx, tx, room, []int64{old})
			if err != nil {
				return err
			}
			if err := setReplacedState(pdu, olds[old]); err != nil {
				return err
			}
		}
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
		ON CONFLICT (event_id) DO UPDATE SET outlier = FALSE, stream_pos = excluded.stream_pos, state_group_before = excluded.state_group_before
		RETURNING event_nid`,
		pdu.EventID(), room.nid, pdu.Type(), stateKey, string(pdu.SenderID()), pdu.Depth(), int64(pdu.OriginServerTS()),
		pos, beforeGroup, string(pdu.JSON()), relatesTo, relType).Scan(&nid)
	if err != nil {
		return fmt.Errorf("insert event %s: %w", pdu.EventID(), err)
	}
	for _, prev := range pdu.PrevEventIDs() {
		if _, err := tx.Exec(ctx, `INSERT INTO event_edges (event_nid, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, nid, prev); err != nil {
			return fmt.Errorf("insert edges of %s: %w", pdu.EventID(), err)
		}
	}
	we := writtenEvent{nid: nid, pdu: pdu, pos: pos}
	if sk := pdu.StateKey(); sk != nil {
		after := copyState(before)
		key := [2]string{pdu.Type(), *sk}
		after[key] = nid
		afterGroup, err := s.writeSnapshot(ctx, tx, room, after)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE events SET state_group_after = $1 WHERE event_nid = $2`, afterGroup, nid); err != nil {
			return fmt.Errorf("store state after %s: %w", pdu.EventID(), err)
		}
		// The new current state: resolve the current state against the
		// state after this event.
		current, err := s.currentStateMap(ctx, tx, room)
		if err != nil {
			return err
		}
		s.events.put(nid, pdu)
		newCurrent, err := s.resolveMaps(ctx, tx, room, current, after)
		if err != nil {
			return err
		}
		g, err := s.replaceCurrentState(ctx, tx, room, newCurrent)
		if err != nil {
			return err
		}
		w.group, w.chainLen = g, 0
		w.state = map[gomatrixserverlib.StateKeyTuple]stateEntry{}
		if pdu.Type() == spec.MRoomMember && newCurrent[key] == nid {
			we.membership, _ = pdu.Membership()
		}
	}
	// Only the prev events that were extremities stop being ones; the
	// other extremities stay (finish replaces w.extremities by this event).
	var ext []string
	for _, id := range w.extremities {
		if slices.Contains(pdu.PrevEventIDs(), id) {
			ext = append(ext, id)
		}
	}
	w.extremities = ext
	w.written = append(w.written, we)
	w.depth = max(w.depth, pdu.Depth())
	return nil
}

// currentStateMap reads the room's whole current state.
func (s *Service) currentStateMap(ctx context.Context, db *storage.DB, room *roomInfo) (map[[2]string]int64, error) {
	rows, err := db.Query(ctx, `SELECT type, state_key, event_nid FROM current_state WHERE room_nid = $1`, room.nid)
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	defer rows.Close()
	out := map[[2]string]int64{}
	for rows.Next() {
		var k [2]string
		var nid int64
		if err := rows.Scan(&k[0], &k[1], &nid); err != nil {
			return nil, err
		}
		out[k] = nid
	}
	return out, rows.Err()
}

// resolveMaps resolves two state maps; when they agree it does no work.
func (s *Service) resolveMaps(ctx context.Context, db *storage.DB, room *roomInfo, a, b map[[2]string]int64) (map[[2]string]int64, error) {
	conflict := false
	for k, v := range b {
		if a[k] != v {
			conflict = true
			break
		}
	}
	if !conflict && len(a) <= len(b) {
		return b, nil
	}
	var sets [][]gomatrixserverlib.PDU
	nidOf := map[string]int64{}
	for _, m := range []map[[2]string]int64{a, b} {
		nids := make([]int64, 0, len(m))
		for _, nid := range m {
			nids = append(nids, nid)
		}
		pdus, err := s.loadPDUs(ctx, db, room, nids)
		if err != nil {
			return nil, err
		}
		set := make([]gomatrixserverlib.PDU, 0, len(pdus))
		for nid, p := range pdus {
			set = append(set, p)
			nidOf[p.EventID()] = nid
		}
		sets = append(sets, set)
	}
	var all []gomatrixserverlib.PDU
	for _, set := range sets {
		all = append(all, set...)
	}
	authChain, err := s.authChain(ctx, room, all)
	if err != nil {
		return nil, err
	}
	resolved, err := gomatrixserverlib.ResolveConflictsNew(room.version.Version(), sets, authChain, userIDForSender, func(string) bool { return false })
	if err != nil {
		return nil, fmt.Errorf("resolve state of %s: %w", room.id, err)
	}
	out := make(map[[2]string]int64, len(resolved))
	for _, p := range resolved {
		if sk := p.StateKey(); sk != nil {
			out[[2]string{p.Type(), *sk}] = nidOf[p.EventID()]
		}
	}
	return out, nil
}
