package roomserver

import (
	"context"
	"log/slog"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/storage"
)

// InputPDUs inputs events of one room in order. The leading run of events
// that extend the room's head one after another — a partner's chain of
// messages, the common case — is checked and persisted in a single
// transaction (one commit, one fsync, instead of one per event); every
// other event goes through InputPDU on its own. The results are in the
// order of pdus. A room this server is not in takes events one by one,
// and without its state only an inviter's withdrawal of an invite
// (input_outofband.go).
func (s *Service) InputPDUs(ctx context.Context, pdus []gomatrixserverlib.PDU, remote RemoteEvents) ([]InputOutcome, []error) {
	if len(pdus) > 0 {
		if room, err := s.roomInfo(ctx, s.db, pdus[0].RoomID().String()); err == nil {
			if outcomes, errs, ok := s.inputNotResident(ctx, room, pdus, remote); ok {
				return outcomes, errs
			}
		}
	}
	outcomes := make([]InputOutcome, len(pdus))
	errs := make([]error, len(pdus))
	done := 0
	if len(pdus) > 1 {
		done = s.inputChain(ctx, pdus, outcomes)
	}
	for i := done; i < len(pdus); i++ {
		outcomes[i], errs[i] = s.InputPDU(ctx, pdus[i], remote)
	}
	return outcomes, errs
}

// inputChain persists the leading chain of pdus that needs nothing
// fetched and extends the head, and returns how many it handled (0 when
// the transaction failed: then everything goes the slow way).
func (s *Service) inputChain(ctx context.Context, pdus []gomatrixserverlib.PDU, outcomes []InputOutcome) int {
	roomID := pdus[0].RoomID().String()
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return 0
	}
	var ids []string
	for _, p := range pdus {
		ids = append(ids, p.EventID())
		ids = append(ids, p.AuthEventIDs()...)
		ids = append(ids, p.PrevEventIDs()...)
	}
	known, err := s.knownEvents(ctx, s.db, ids)
	if err != nil {
		return 0
	}
	// The chain: events whose auth events are stored and accepted, whose
	// prev events are stored or earlier in the chain, and that pass their
	// auth events' check.
	inChain := map[string]bool{}
	var chain []gomatrixserverlib.PDU
	for _, p := range pdus {
		if p.RoomID().String() != roomID || p.Version() != room.version.Version() {
			break
		}
		if _, ok := known[p.EventID()]; ok {
			break // duplicates and outliers take the normal path
		}
		ok := true
		for _, id := range p.AuthEventIDs() {
			if k, found := known[id]; !found || k.rejected {
				ok = false
			}
		}
		for _, id := range p.PrevEventIDs() {
			if k, found := known[id]; !(found && !k.outlier && !k.rejected) && !inChain[id] {
				ok = false
			}
		}
		if !ok {
			break
		}
		auth, err := s.pdusOf(ctx, room, p.AuthEventIDs(), known)
		if err != nil || s.checkAuthEventsKnown(ctx, room, p, auth, known) != "" {
			break // the single path rejects it with the reason logged
		}
		chain = append(chain, p)
		inChain[p.EventID()] = true
	}
	if len(chain) < 2 {
		return 0
	}

	n := 0
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		n = 0
		groupAfter := map[string]int64{} // chain event → state group after it
		for _, p := range chain {
			w, err := s.openWriter(ctx, tx, room)
			if err != nil {
				return err
			}
			if w.group == 0 || !sameSet(p.PrevEventIDs(), w.extremities) {
				break
			}
			linear := true
			for _, id := range p.PrevEventIDs() {
				g, ok := groupAfter[id]
				if !ok {
					g = known[id].stateAfter()
				}
				if g != w.group {
					linear = false
				}
			}
			if !linear {
				break
			}
			needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{p}).Tuples()
			needed = append(needed, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomCreate})
			if err := w.load(ctx, needed); err != nil {
				return err
			}
			if err := gomatrixserverlib.Allowed(p, w, userIDForSender); err != nil {
				// a rejected event ends the chain: later ones may cite it
				break
			}
			if _, err := w.persist(ctx, p, "", ""); err != nil {
				return err
			}
			if _, err := w.finish(ctx); err != nil {
				return err
			}
			groupAfter[p.EventID()] = w.group
			outcomes[n] = InputAccepted
			n++
		}
		return nil
	})
	if err != nil {
		slog.WarnContext(ctx, "batched input failed; retrying event by event", "room_id", roomID, "err", err)
		for i := range outcomes {
			outcomes[i] = ""
		}
		return 0
	}
	return n
}
