package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Restricted rooms (v8+, MSC3083): a user who is not invited may join when
// they are joined to one of the rooms the join rule's allow list names. A
// resident server vouches for such a join by naming one of its users who
// may invite in join_authorised_via_users_server and signing the event;
// the auth rules then only check that user's power. So everything about
// the allow list is this server's judgement, made on its own current
// state, and a server that cannot judge says so with one of two 400
// errcodes that make the joining server try another resident server.

const (
	// errcodeUnableToAuthorise: we cannot tell whether the user is in an
	// allowed room (we are not in any allowed room they might be in).
	errcodeUnableToAuthorise = "M_UNABLE_TO_AUTHORISE_JOIN"
	// errcodeUnableToGrant: the user qualifies, but none of our users in
	// the room may invite.
	errcodeUnableToGrant = "M_UNABLE_TO_GRANT_JOIN"
)

// joinViaOtherServer reports whether a join failed only because this
// server cannot vouch for it, so that another resident server may.
func joinViaOtherServer(err error) bool {
	var he *httputil.Error
	return errors.As(err, &he) && (he.ErrCode == errcodeUnableToAuthorise || he.ErrCode == errcodeUnableToGrant)
}

// allowedRooms returns the room IDs of join rules content's m.room_membership
// allow entries, or ok=false when the join rule is not a restricted one
// (or the room version has none). Entries that are not objects of that
// type with a room ID are ignored, as the spec asks; an allow key that is
// not a list allows no one.
func allowedRooms(version gomatrixserverlib.IRoomVersion, joinRules []byte) (rooms []string, ok bool) {
	if joinRules == nil || version.CheckRestrictedJoinsAllowed() != nil {
		return nil, false
	}
	c := gjson.ParseBytes(joinRules)
	if rule := c.Get("join_rule").String(); rule != spec.Restricted && rule != spec.KnockRestricted {
		return nil, false
	}
	allow := c.Get("allow")
	if !allow.IsArray() {
		return nil, true
	}
	for _, a := range allow.Array() {
		if !a.IsObject() || a.Get("type").String() != spec.MRoomMembership {
			continue
		}
		if id := a.Get("room_id"); id.Type == gjson.String && id.String() != "" {
			rooms = append(rooms, id.String())
		}
	}
	return rooms, true
}

// authoriseRestrictedJoin is the prepare step of a join (local or through
// make_join): in a restricted room, a user who is neither joined nor
// invited gets join_authorised_via_users_server set to one of our users
// who may invite, when this server can see them joined to an allowed
// room. Otherwise the join is refused here with the reason — 403 when
// the user is in none of the allowed rooms, or the 400 errcodes that send
// the joiner to another server — rather than left to the auth rules.
func (s *Service) authoriseRestrictedJoin(ctx context.Context, w *writer, user, old string, content map[string]any) error {
	// A client may not pick its own authoriser (nor a stale one survive a
	// profile change): only this function names one.
	delete(content, "join_authorised_via_users_server")
	if old == spec.Join || old == spec.Invite || old == spec.Ban {
		// joined and invited users need no authoriser; a ban is the auth
		// rules' to refuse
		return nil
	}
	via, err := s.restrictedAuthoriser(ctx, w, user)
	if err != nil || via == "" {
		return err
	}
	content["join_authorised_via_users_server"] = via
	return nil
}

// restrictedAuthoriser returns the local user who vouches for user's join
// into w's room, "" when the room is not restricted, or the error that
// explains why this server does not vouch.
func (s *Service) restrictedAuthoriser(ctx context.Context, w *writer, user string) (string, error) {
	jr, err := w.current(ctx, spec.MRoomJoinRules, "")
	if err != nil {
		return "", err
	}
	if jr == nil {
		return "", nil
	}
	allowed, ok := allowedRooms(w.room.version, jr.Content())
	if !ok {
		return "", nil
	}
	if len(allowed) == 0 {
		return "", httputil.Forbidden("the room's join rule allows no room's members to join without an invite")
	}
	member, unsure, err := s.memberOfAllowedRoom(ctx, w.tx, user, allowed)
	if err != nil {
		return "", err
	}
	if !member {
		if unsure {
			return "", httputil.Errorf(http.StatusBadRequest, errcodeUnableToAuthorise,
				"this server cannot tell whether %s is joined to one of the rooms the join rule allows", user)
		}
		return "", httputil.Forbidden(user + " is not joined to any room the join rule allows and is not invited")
	}
	via, err := s.localInviter(ctx, w)
	if err != nil {
		return "", err
	}
	if via == "" {
		return "", httputil.Errorf(http.StatusBadRequest, errcodeUnableToGrant,
			"none of this server's users in the room may invite, so it cannot grant the join")
	}
	return via, nil
}

// memberOfAllowedRoom reports whether user is joined to one of the
// allowed rooms per our current state. Only rooms we are resident in
// count: the membership we hold of a room we left is stale. unsure is
// set when some allowed room is not one of those, so another server may
// know better.
func (s *Service) memberOfAllowedRoom(ctx context.Context, db *storage.DB, user string, allowed []string) (member, unsure bool, err error) {
	q, args := storage.In(`SELECT r.room_id,
		(SELECT COUNT(*) FROM room_members m WHERE m.room_nid = r.room_nid AND m.user_id = $1 AND m.membership = 'join'),
		(SELECT COUNT(*) FROM room_members m WHERE m.room_nid = r.room_nid AND m.user_id LIKE $2 AND m.membership = 'join')
		FROM rooms r WHERE r.room_id IN ($IN) AND r.current_state_group IS NOT NULL`, 2, allowed)
	rows, err := db.Query(ctx, q, append([]any{user, "%:" + s.serverName}, args...)...)
	if err != nil {
		return false, false, fmt.Errorf("check allowed rooms: %w", err)
	}
	defer rows.Close()
	resident := map[string]bool{}
	for rows.Next() {
		var roomID string
		var joined, locals int
		if err := rows.Scan(&roomID, &joined, &locals); err != nil {
			return false, false, err
		}
		if locals == 0 {
			continue
		}
		resident[roomID] = true
		if joined > 0 {
			member = true
		}
	}
	if err := rows.Err(); err != nil {
		return false, false, err
	}
	for _, id := range allowed {
		if !resident[id] {
			unsure = true
		}
	}
	return member, unsure, nil
}

// localInviter returns one of our joined users in w's room whose power
// (v12 creators: above all) reaches the invite level, or "". The longest
// joined comes first, so the choice is stable.
func (s *Service) localInviter(ctx context.Context, w *writer) (string, error) {
	rows, err := w.tx.Query(ctx, `SELECT user_id FROM room_members WHERE room_nid = $1 AND membership = 'join' AND user_id LIKE $2 ORDER BY stream_pos`,
		w.room.nid, "%:"+s.serverName)
	if err != nil {
		return "", fmt.Errorf("list members: %w", err)
	}
	var candidates []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return "", err
		}
		if s.isLocal(u) {
			candidates = append(candidates, u)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	if len(candidates) == 0 {
		return "", nil
	}
	if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomCreate}, {EventType: spec.MRoomPowerLevels}}); err != nil {
		return "", err
	}
	pl, err := w.powerLevels()
	if err != nil {
		return "", err
	}
	for _, u := range candidates {
		if w.userLevel(pl, u) >= pl.Invite {
			// the auth rules read the authoriser's membership
			if err := w.load(ctx, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomMember, StateKey: u}}); err != nil {
				return "", err
			}
			return u, nil
		}
	}
	return "", nil
}

// checkVouchedJoin is send_join's re-check before we sign a join that
// names one of our users as its authoriser: a user already joined or
// invited needs no vouching, nor does a join into a room that is not
// restricted (the signature is harmless then); anyone else must still
// qualify per our current state.
func (s *Service) checkVouchedJoin(ctx context.Context, room *roomInfo, user string) error {
	w, err := s.readHead(ctx, s.db, room)
	if err != nil {
		return err
	}
	old, err := w.membership(ctx, user)
	if err != nil {
		return err
	}
	if old == spec.Join || old == spec.Invite {
		return nil
	}
	// outside a restricted room the auth rules ignore the authoriser
	_, err = s.restrictedAuthoriser(ctx, w, user)
	return err
}

// stripAuthoriser removes join_authorised_via_users_server from member
// event content a client sent.
func stripAuthoriser(content json.RawMessage) json.RawMessage {
	if !gjson.GetBytes(content, "join_authorised_via_users_server").Exists() {
		return content
	}
	out, err := sjson.DeleteBytes(content, "join_authorised_via_users_server")
	if err != nil {
		return content
	}
	return out
}

// inputResidentJoin stores a join of ours that another resident server
// vouched for (we could not) in a room we already hold: it is one more
// event of the room, not a fresh copy of its state.
func (s *Service) inputResidentJoin(ctx context.Context, server string, join gomatrixserverlib.PDU) error {
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, join, s.fed.verifier, userIDForSender); err != nil {
		return fmt.Errorf("join returned by %s: %w", server, err)
	}
	outcome, err := s.InputPDU(ctx, join, nil)
	if errors.Is(err, ErrMissingPrevEvents) {
		// The resident server has events we have not received yet; it
		// sends us the join with them.
		slog.InfoContext(ctx, "join through another server arrives with its transaction", "room_id", join.RoomID().String(), "event_id", join.EventID(), "via", server)
		return nil
	}
	if err != nil {
		return err
	}
	if outcome == InputRejected || outcome == InputSoftFailed {
		return httputil.Forbidden("the join " + server + " accepted is not allowed by the room's state here")
	}
	slog.InfoContext(ctx, "joined resident room through another server", "room_id", join.RoomID().String(), "user_id", string(join.SenderID()), "via", server)
	return nil
}
