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
// through an invite of one of our users has no state we could check an
// event against, and its servers will not let us fetch any. Its servers
// still send us the membership events about our users: the echo of an
// invite we hold, and the inviter withdrawing the invite (a leave with
// the invitee as state key), which the invitee must see. Only the latter
// changes anything here, and only when its sender is the user who sent
// the invite: the one authorisation we can verify without the room's
// state (the event is signed by the sender's server, which the
// transaction checked). Anything else is refused without fetching. A room
// we hold state of but have left (all our users gone) takes its events
// the ordinary way (an unban of our user extends the head we hold),
// except the withdrawal of an invite that reached us out of band: that
// one follows history we no longer see.

// inputNotResident handles the PDUs of a room this server is not in; ok
// false: the server is in the room, input them the ordinary way.
func (s *Service) inputNotResident(ctx context.Context, room *roomInfo, pdus []gomatrixserverlib.PDU, remote RemoteEvents) (outcomes []InputOutcome, errs []error, ok bool) {
	var hasState, resident bool
	err := s.db.QueryRow(ctx, `SELECT r.current_state_group IS NOT NULL, EXISTS (SELECT 1 FROM room_members m
			WHERE m.room_nid = r.room_nid AND m.membership = 'join' AND m.user_id LIKE $2)
		FROM rooms r WHERE r.room_nid = $1`, room.nid, "%:"+s.serverName).Scan(&hasState, &resident)
	if err != nil || (resident && hasState) {
		// on a failed read the ordinary path reports its own errors
		return nil, nil, false
	}
	outcomes = make([]InputOutcome, len(pdus))
	errs = make([]error, len(pdus))
	for i, pdu := range pdus {
		var handled bool
		outcomes[i], handled, errs[i] = s.inputOutOfBand(ctx, room, pdu, hasState)
		if !handled {
			outcomes[i], errs[i] = s.InputPDU(ctx, pdu, remote)
		}
	}
	return outcomes, errs, true
}

// inputOutOfBand takes an inviter's withdrawal of an out-of-band invite.
// Any other event is refused when the room has no state (haveState
// false), else left to the ordinary path (handled false).
func (s *Service) inputOutOfBand(ctx context.Context, room *roomInfo, pdu gomatrixserverlib.PDU, haveState bool) (outcome InputOutcome, handled bool, err error) {
	if pdu.RoomID().String() != room.id || pdu.Version() != room.version.Version() {
		return "", true, fmt.Errorf("event %s is not of room %s", pdu.EventID(), room.id)
	}
	notThis := func() (InputOutcome, bool, error) {
		if haveState {
			return "", false, nil
		}
		return "", true, httputil.Forbidden("this server is not in room " + room.id)
	}
	if !haveState {
		known, err := s.knownEvents(ctx, s.db, []string{pdu.EventID()})
		if err != nil {
			return "", true, err
		}
		if _, ok := known[pdu.EventID()]; ok {
			return InputDuplicate, true, nil // e.g. the invite we were sent through /invite
		}
	}
	sk := pdu.StateKey()
	if pdu.Type() != spec.MRoomMember || sk == nil || !s.isLocal(*sk) || *sk == string(pdu.SenderID()) {
		return notThis()
	}
	if m, err := pdu.Membership(); err != nil || m != spec.Leave {
		return notThis()
	}
	invitee := *sk
	rescinded := false
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.LockRoom(ctx, room.id); err != nil {
			return err
		}
		var membership, inviteID, inviteJSON string
		var outlier bool
		var redacted sql.NullString
		err := tx.QueryRow(ctx, `SELECT m.membership, e.event_id, e.json, e.outlier, e.redacted_by FROM room_members m JOIN events e ON e.event_nid = m.event_nid
			WHERE m.room_nid = $1 AND m.user_id = $2`, room.nid, invitee).Scan(&membership, &inviteID, &inviteJSON, &outlier, &redacted)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("membership of %s in %s: %w", invitee, room.id, err)
		}
		if membership != spec.Invite || !outlier {
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
		return "", true, fmt.Errorf("input event %s: %w", pdu.EventID(), err)
	}
	if !rescinded {
		return notThis()
	}
	slog.InfoContext(ctx, "remote invite withdrawn by the inviter", "room_id", room.id, "event_id", pdu.EventID())
	return InputAccepted, true, nil
}
