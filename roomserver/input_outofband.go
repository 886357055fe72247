package roomserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Events of rooms this server does not take part in. A room we know only
// through an invite of one of our users (or one all our users have left)
// has no state we could check an event against, and its servers will not
// let us fetch any. Its servers still send us the membership events about
// our users: the echo of an invite we hold, and the inviter withdrawing
// the invite (a leave with the invitee as state key), which the invitee
// must see. Only the latter changes anything here, and only when its
// sender is the user who sent the invite: the one authorisation we can
// verify without the room's state (the event is signed by the sender's
// server, which the transaction checked). Anything else is refused
// without fetching.

// inputNotResident handles the PDUs of a room this server is not in; ok
// false: the server is in the room, input them the ordinary way.
func (s *Service) inputNotResident(ctx context.Context, room *roomInfo, pdus []gomatrixserverlib.PDU) (outcomes []InputOutcome, errs []error, ok bool) {
	resident, err := s.resident(ctx, room)
	if err != nil || resident {
		// on a failed read the ordinary path reports its own errors
		return nil, nil, false
	}
	outcomes = make([]InputOutcome, len(pdus))
	errs = make([]error, len(pdus))
	for i, pdu := range pdus {
		outcomes[i], errs[i] = s.inputOutOfBand(ctx, room, pdu)
	}
	return outcomes, errs, true
}

func (s *Service) inputOutOfBand(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU) (InputOutcome, error) {
	if pdu.RoomID().String() != room.id || pdu.Version() != room.version.Version() {
		return "", fmt.Errorf("event %s is not of room %s", pdu.EventID(), room.id)
	}
	known, err := s.knownEvents(ctx, s.db, []string{pdu.EventID()})
	if err != nil {
		return "", err
	}
	if _, ok := known[pdu.EventID()]; ok {
		return InputDuplicate, nil // e.g. the invite we were sent through /invite
	}
	notIn := httputil.Forbidden("this server is not in room " + room.id)
	sk := pdu.StateKey()
	if pdu.Type() != spec.MRoomMember || sk == nil || !s.isLocal(*sk) || *sk == string(pdu.SenderID()) {
		return "", notIn
	}
	if m, err := pdu.Membership(); err != nil || m != spec.Leave {
		return "", notIn
	}
	invitee := *sk
	rescinded := false
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.LockRoom(ctx, room.id); err != nil {
			return err
		}
		var membership, inviteID, inviteJSON string
		var redacted sql.NullString
		err := tx.QueryRow(ctx, `SELECT m.membership, e.event_id, e.json, e.redacted_by FROM room_members m JOIN events e ON e.event_nid = m.event_nid
			WHERE m.room_nid = $1 AND m.user_id = $2`, room.nid, invitee).Scan(&membership, &inviteID, &inviteJSON, &redacted)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("membership of %s in %s: %w", invitee, room.id, err)
		}
		if membership != spec.Invite {
			return nil
		}
		invite, err := room.version.NewEventFromTrustedJSONWithEventID(inviteID, []byte(inviteJSON), redacted.Valid)
		if err != nil {
			return fmt.Errorf("parse invite %s: %w", inviteID, err)
		}
		if invite.SenderID() != pdu.SenderID() {
			return nil // only the inviter's withdrawal is verifiable here
		}
		if err := setReplacedState(pdu, invite); err != nil {
			return err
		}
		rescinded = true
		return s.storeOutOfBand(ctx, tx, room, pdu, invitee, spec.Leave)
	})
	if err != nil {
		return "", fmt.Errorf("input event %s: %w", pdu.EventID(), err)
	}
	if !rescinded {
		return "", notIn
	}
	slog.InfoContext(ctx, "remote invite withdrawn by the inviter", "room_id", room.id, "event_id", pdu.EventID())
	return InputAccepted, nil
}
