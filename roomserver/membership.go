package roomserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// MembershipRequest is a membership change: Sender acts on Target (the
// same user for join, leave and knock).
type MembershipRequest struct {
	RoomID string
	Sender string
	Target string
	Reason string
	// IsDirect marks an invite as a direct chat.
	IsDirect bool
	// Extra are further content keys a client put into its join body;
	// the server's own keys (membership, profile, reason) win.
	Extra map[string]any
}

// JoinContent is what a client's join request adds to its member event.
type JoinContent struct {
	Reason string
	// Extra are the body's other keys (Matrix clients may add their own).
	Extra map[string]any
}

// joinExtra drops from a join body's extra keys those only the server
// may set: the membership itself, a restricted join's authoriser, a third
// party invite's proof.
func joinExtra(extra map[string]any) map[string]any {
	for _, k := range []string{"membership", "reason", "join_authorised_via_users_server", "third_party_invite", "third_party_signed"} {
		delete(extra, k)
	}
	if len(extra) == 0 {
		return nil
	}
	return extra
}

// membershipChange describes one transition for changeMembership.
type membershipChange struct {
	membership string
	// check inspects the target's current membership ("" for none) and
	// may refuse the change or declare it already done.
	check func(old string) (done bool, err error)
	// profile is put into the content (join, invite).
	displayName, avatarURL string
	// unsignedKey names the stripped state to attach (invites, knocks).
	unsignedKey string
	isDirect    bool
	// prepare may add to the content once the room's state is at hand.
	prepare func(ctx context.Context, w *writer, target, old string, content map[string]any) error
}

// changeMembership sends one m.room.member event after the transition's own
// checks; the auth rules of the room version do the rest.
func (s *Service) changeMembership(ctx context.Context, req MembershipRequest, c membershipChange) (string, error) {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return "", httputil.InvalidParam("invalid room ID " + req.RoomID)
	}
	if _, err := spec.NewUserID(req.Target, true); err != nil {
		return "", httputil.InvalidParam("invalid user ID " + req.Target)
	}
	room, err := s.roomInfo(ctx, s.db, req.RoomID)
	if err != nil {
		return "", err
	}
	var eventID string
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		w, err := s.openWriter(ctx, tx, room)
		if err != nil {
			return err
		}
		old, err := w.membership(ctx, req.Target)
		if err != nil {
			return err
		}
		if c.check != nil {
			done, err := c.check(old)
			if err != nil || done {
				if done {
					ev, _ := w.current(ctx, spec.MRoomMember, req.Target)
					if ev != nil {
						eventID = ev.EventID()
					}
				}
				return err
			}
		}
		content := map[string]any{}
		for k, v := range req.Extra {
			content[k] = v
		}
		content["membership"] = c.membership
		if req.Reason != "" {
			content["reason"] = req.Reason
		}
		if c.isDirect {
			content["is_direct"] = true
		}
		setProfile(content, c.displayName, c.avatarURL)
		if c.prepare != nil {
			if err := c.prepare(ctx, w, req.Target, old, content); err != nil {
				return err
			}
		}
		var unsigned []byte
		if c.unsignedKey != "" {
			if unsigned, err = w.strippedStateUnsigned(ctx, c.unsignedKey, req.Sender); err != nil {
				return err
			}
		}
		pdu, err := w.add(ctx, proto{sender: req.Sender, evType: spec.MRoomMember, stateKey: &req.Target, content: mustJSON(content), unsigned: unsigned}, "", "")
		if err != nil {
			return err
		}
		eventID = pdu.EventID()
		_, err = w.finish(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	slog.DebugContext(ctx, "membership changed", "room_id", req.RoomID, "user_id", req.Target, "membership", c.membership, "event_id", eventID)
	return eventID, nil
}

// ResolveRoom turns a room ID or a local alias into a room ID this server
// knows, without asking other servers (JoinVia does that): a remote alias
// or a room this server is not in is 404.
func (s *Service) ResolveRoom(ctx context.Context, roomIDOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(roomIDOrAlias, "!"):
		if _, err := spec.NewRoomID(roomIDOrAlias); err != nil {
			return "", httputil.InvalidParam("invalid room ID " + roomIDOrAlias)
		}
		if _, err := s.roomInfo(ctx, s.db, roomIDOrAlias); err != nil {
			return "", err
		}
		return roomIDOrAlias, nil
	case strings.HasPrefix(roomIDOrAlias, "#"):
		if local, server, ok := strings.Cut(roomIDOrAlias[1:], ":"); !ok || local == "" || server == "" {
			return "", httputil.InvalidParam("invalid room alias " + roomIDOrAlias)
		}
		roomID, err := s.aliasRoom(ctx, roomIDOrAlias)
		if err != nil {
			return "", err
		}
		if roomID == "" {
			if !strings.HasSuffix(roomIDOrAlias, ":"+s.serverName) {
				return "", httputil.NotFound("room alias " + roomIDOrAlias + " is on another server")
			}
			return "", httputil.NotFound("room alias " + roomIDOrAlias + " does not exist")
		}
		return roomID, nil
	}
	return "", httputil.InvalidParam("not a room ID or alias: " + roomIDOrAlias)
}

// aliasRoom returns the room an alias points to, or "".
func (s *Service) aliasRoom(ctx context.Context, alias string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	return roomID, nil
}

// Join joins userID to a local room by ID or alias and returns the room
// ID. Joining a room one is already in changes nothing.
func (s *Service) Join(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error) {
	return s.joinWith(ctx, userID, roomIDOrAlias, JoinContent{Reason: reason})
}

func (s *Service) joinWith(ctx context.Context, userID, roomIDOrAlias string, jc JoinContent) (string, error) {
	if s.policy != nil && strings.HasPrefix(roomIDOrAlias, "#") {
		if roomID, err := s.policy.JoinVirtual(ctx, userID, roomIDOrAlias); err != nil || roomID != "" {
			return roomID, err
		}
	}
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		if s.policy != nil && strings.HasPrefix(roomIDOrAlias, "!") {
			if vroom, verr := s.policy.JoinVirtual(ctx, userID, roomIDOrAlias); verr != nil || vroom != "" {
				return vroom, verr
			}
		}
		return "", err
	}
	dn, av, err := s.profile(ctx, userID)
	if err != nil && err != ErrUnknownUser {
		return "", fmt.Errorf("profile of %s: %w", userID, err)
	}
	_, err = s.changeMembership(ctx, MembershipRequest{RoomID: roomID, Sender: userID, Target: userID, Reason: jc.Reason, Extra: joinExtra(jc.Extra)}, membershipChange{
		membership: spec.Join, displayName: dn, avatarURL: av,
		check:   func(old string) (bool, error) { return old == spec.Join, nil },
		prepare: s.authoriseRestrictedJoin,
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

// Invite invites a local user.
func (s *Service) Invite(ctx context.Context, req MembershipRequest) (string, error) {
	if _, err := spec.NewUserID(req.Target, true); err != nil {
		return "", httputil.InvalidParam("invalid user ID " + req.Target)
	}
	if !s.isLocal(req.Target) {
		return "", httputil.Forbidden("inviting users of other servers is not supported yet")
	}
	dn, av, err := s.profile(ctx, req.Target)
	if err == ErrUnknownUser {
		return "", httputil.NotFound("unknown user " + req.Target)
	}
	if err != nil {
		return "", fmt.Errorf("profile of %s: %w", req.Target, err)
	}
	return s.changeMembership(ctx, req, membershipChange{
		membership: spec.Invite, displayName: dn, avatarURL: av, unsignedKey: "invite_room_state", isDirect: req.IsDirect,
		check: func(old string) (bool, error) {
			switch old {
			case spec.Join:
				return false, httputil.Forbidden(req.Target + " is already in the room")
			case spec.Ban:
				return false, httputil.Forbidden(req.Target + " is banned from the room")
			}
			return false, nil
		},
	})
}

// Leave leaves a room, or rejects an invite, or withdraws a knock. Leaving
// a room one has already left changes nothing.
func (s *Service) Leave(ctx context.Context, userID, roomID, reason string) error {
	_, err := s.changeMembership(ctx, MembershipRequest{RoomID: roomID, Sender: userID, Target: userID, Reason: reason}, membershipChange{
		membership: spec.Leave,
		check: func(old string) (bool, error) {
			switch old {
			case "":
				return false, httputil.Forbidden("you are not in room " + roomID)
			case spec.Leave:
				return true, nil
			}
			return false, nil
		},
	})
	return err
}

// Kick removes another user from a room.
func (s *Service) Kick(ctx context.Context, req MembershipRequest) error {
	_, err := s.changeMembership(ctx, req, membershipChange{
		membership: spec.Leave,
		check: func(old string) (bool, error) {
			if old != spec.Join && old != spec.Invite && old != spec.Knock {
				return false, httputil.Forbidden(req.Target + " is not in the room")
			}
			return false, nil
		},
	})
	return err
}

// Ban bans a user from a room.
func (s *Service) Ban(ctx context.Context, req MembershipRequest) error {
	_, err := s.changeMembership(ctx, req, membershipChange{membership: spec.Ban})
	return err
}

// Unban lifts a ban; the user is then "left" and may be invited again.
func (s *Service) Unban(ctx context.Context, req MembershipRequest) error {
	_, err := s.changeMembership(ctx, req, membershipChange{
		membership: spec.Leave,
		check: func(old string) (bool, error) {
			if old != spec.Ban {
				return false, httputil.Forbidden(req.Target + " is not banned")
			}
			return false, nil
		},
	})
	return err
}

// Knock asks to join a room whose join rule is knock.
func (s *Service) Knock(ctx context.Context, userID, roomIDOrAlias, reason string) (string, error) {
	roomID, err := s.ResolveRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	dn, av, err := s.profile(ctx, userID)
	if err != nil && err != ErrUnknownUser {
		return "", fmt.Errorf("profile of %s: %w", userID, err)
	}
	_, err = s.changeMembership(ctx, MembershipRequest{RoomID: roomID, Sender: userID, Target: userID, Reason: reason}, membershipChange{
		membership: spec.Knock, displayName: dn, avatarURL: av, unsignedKey: "knock_room_state",
		check: func(old string) (bool, error) {
			switch old {
			case spec.Join:
				return false, httputil.Forbidden("you are already in the room")
			case spec.Knock:
				return true, nil
			}
			return false, nil
		},
	})
	if err != nil {
		return "", err
	}
	return roomID, nil
}

// Forget hides a room the user has left from their /sync leave section.
func (s *Service) Forget(ctx context.Context, userID, roomID string) error {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.InvalidParam("invalid room ID " + roomID)
	}
	room, err := s.roomInfo(ctx, s.db, roomID)
	if err != nil {
		return err
	}
	var membership string
	err = s.db.QueryRow(ctx, `SELECT membership FROM room_members WHERE room_nid = $1 AND user_id = $2`, room.nid, userID).Scan(&membership)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	if membership != spec.Leave && membership != spec.Ban {
		return httputil.Unknown("you must leave the room before forgetting it")
	}
	if _, err := s.db.Exec(ctx, `UPDATE room_members SET forgotten = TRUE WHERE room_nid = $1 AND user_id = $2 AND membership IN ('leave', 'ban')`,
		room.nid, userID); err != nil {
		return fmt.Errorf("forget room: %w", err)
	}
	return nil
}

// PropagateProfile sends a new member event with the user's new display
// name and avatar into every room they are joined to. A room that refuses
// the change (power levels) is logged and skipped.
func (s *Service) PropagateProfile(ctx context.Context, userID, displayName, avatarURL string) error {
	rooms, err := s.roomsWithMembership(ctx, userID, spec.Join)
	if err != nil {
		return err
	}
	var errs []error
	for _, roomID := range rooms {
		room, err := s.roomInfo(ctx, s.db, roomID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = s.db.Transact(ctx, func(tx *storage.DB) error {
			w, err := s.openWriter(ctx, tx, room)
			if err != nil {
				return err
			}
			old, err := w.current(ctx, spec.MRoomMember, userID)
			if err != nil || old == nil {
				return err
			}
			if m, _ := old.Membership(); m != spec.Join {
				return nil
			}
			content := map[string]any{}
			if err := json.Unmarshal(old.Content(), &content); err != nil {
				return fmt.Errorf("member content: %w", err)
			}
			delete(content, "displayname")
			delete(content, "avatar_url")
			delete(content, "reason")
			// A restricted join's authoriser vouched for that join only;
			// kept, it would demand that server's signature on this one.
			delete(content, "join_authorised_via_users_server")
			setProfile(content, displayName, avatarURL)
			if string(mustJSON(content)) == string(canonical(old.Content())) {
				return nil
			}
			if _, err := w.add(ctx, proto{sender: userID, evType: spec.MRoomMember, stateKey: &userID, content: mustJSON(content)}, "", ""); err != nil {
				return err
			}
			_, err = w.finish(ctx)
			return err
		})
		if err != nil {
			var he *httputil.Error
			if errors.As(err, &he) {
				slog.WarnContext(ctx, "profile change not sent to room", "room_id", roomID, "user_id", userID, "reason", he.Message)
				continue
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LeaveAllRooms leaves every room the user is in, invited to or knocking
// on: part of deactivating an account.
func (s *Service) LeaveAllRooms(ctx context.Context, userID string) error {
	rooms, err := s.roomsWithMembership(ctx, userID, spec.Join, spec.Invite, spec.Knock)
	if err != nil {
		return err
	}
	var errs []error
	for _, roomID := range rooms {
		// LeaveAny: an invite from another server is declined there.
		if err := s.LeaveAny(ctx, userID, roomID, ""); err != nil {
			errs = append(errs, fmt.Errorf("leave %s: %w", roomID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) roomsWithMembership(ctx context.Context, userID string, memberships ...string) ([]string, error) {
	q, args := storage.In(`SELECT r.room_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.user_id = $1 AND m.membership IN ($IN) ORDER BY r.room_nid`, 1, memberships)
	rows, err := s.db.Query(ctx, q, append([]any{userID}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// canonical re-encodes JSON with sorted keys for comparisons.
func canonical(b []byte) []byte {
	c, err := gomatrixserverlib.CanonicalJSON(b)
	if err != nil {
		return b
	}
	return c
}
