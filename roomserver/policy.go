package roomserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/storage"
)

// Policy is a node policy layered over the room version's auth rules: the
// care domain's contact policy (who may invite or join whom), its coupling
// aliases and its reaction to messages. The roomserver declares it so that
// it never imports the care domain; internal/homeserver installs it.
type Policy interface {
	// CheckEvent runs for every event this server builds for a local
	// sender, after the auth rules allowed it, with db the writing
	// transaction (or the database when the event is pre-built outside
	// one). An error refuses the event; nothing is written.
	CheckEvent(ctx context.Context, db *storage.DB, ev PolicyEvent) error
	// JoinVirtual may serve a join to an address that names no room of
	// this server itself (a coupling code's alias, or the lobby room ID
	// that alias resolves to): it returns the room the user is now
	// joined to, or "" to let the normal resolution go on. It is asked
	// before an alias is resolved and after a room ID was not found.
	JoinVirtual(ctx context.Context, userID, address string) (roomID string, err error)
	// Written learns of events after they committed. It runs on the
	// writer's goroutine before the write returns: keep it short.
	Written(ctx context.Context, evs []PolicyEvent)
}

// PolicyEvent is what a Policy sees of an event.
type PolicyEvent struct {
	RoomID   string
	EventID  string
	Sender   string
	Type     string
	StateKey *string
	Content  []byte
	// PrevMembership is the target's membership before an m.room.member
	// event ("" when none).
	PrevMembership string
	// Members lists the users joined to or invited into the room before
	// this event (nil after commit).
	Members func(ctx context.Context) ([]string, error)
	// Remote marks a membership in a room whose state this server does
	// not hold (an invite over federation, a join through another
	// server): Members is empty because it is unknown, not because the
	// room is new.
	Remote bool
}

// checkRemoteMembership asks the node policy about a membership event in
// a room that lives on another server: an invite for a local user
// received over federation, or a local user's join through another
// server.
func (s *Service) checkRemoteMembership(ctx context.Context, roomID, sender, target string, content []byte) error {
	if s.policy == nil {
		return nil
	}
	ev := PolicyEvent{RoomID: roomID, Sender: sender, Type: spec.MRoomMember, StateKey: &target, Content: content, Remote: true,
		Members: func(context.Context) ([]string, error) { return nil, nil }}
	if room, err := s.roomInfo(ctx, s.db, roomID); err == nil {
		if m, err := s.membershipNow(ctx, room.nid, target); err == nil {
			ev.PrevMembership = m
		}
	}
	return s.policy.CheckEvent(ctx, s.db, ev)
}

// SetPolicy installs the node policy (nil: plain Matrix).
func (s *Service) SetPolicy(p Policy) { s.policy = p }

// checkPolicy asks the node policy about a built event.
func (w *writer) checkPolicy(ctx context.Context, pdu gomatrixserverlib.PDU) error {
	if w.s.policy == nil {
		return nil
	}
	ev := PolicyEvent{
		RoomID: w.room.id, EventID: pdu.EventID(), Sender: string(pdu.SenderID()), Type: pdu.Type(),
		StateKey: pdu.StateKey(), Content: pdu.Content(), Members: w.policyMembers,
	}
	if sk := pdu.StateKey(); sk != nil && pdu.Type() == spec.MRoomMember {
		if old := w.state[gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: *sk}].pdu; old != nil {
			ev.PrevMembership, _ = old.Membership()
		}
	}
	return w.s.policy.CheckEvent(ctx, w.tx, ev)
}

// policyMembers lists joined and invited users as the writer sees them:
// the committed membership table plus this batch's own member events.
func (w *writer) policyMembers(ctx context.Context) ([]string, error) {
	m := map[string]bool{}
	if !w.fresh {
		rows, err := w.tx.Query(ctx, `SELECT user_id FROM room_members WHERE room_nid = $1 AND membership IN ('join', 'invite')`, w.room.nid)
		if err != nil {
			return nil, fmt.Errorf("members of %s: %w", w.room.id, err)
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				return nil, err
			}
			m[u] = true
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for k, e := range w.state {
		if k.EventType != spec.MRoomMember || e.pdu == nil {
			continue
		}
		ms, _ := e.pdu.Membership()
		m[k.StateKey] = ms == spec.Join || ms == spec.Invite
	}
	out := make([]string, 0, len(m))
	for u, in := range m {
		if in {
			out = append(out, u)
		}
	}
	return out, nil
}

// policyWritten tells the node policy about committed events.
func (s *Service) policyWritten(ctx context.Context, roomID string, written []writtenEvent) {
	if s.policy == nil || len(written) == 0 {
		return
	}
	evs := make([]PolicyEvent, len(written))
	for i, e := range written {
		evs[i] = PolicyEvent{RoomID: roomID, EventID: e.pdu.EventID(), Sender: string(e.pdu.SenderID()), Type: e.pdu.Type(),
			StateKey: e.pdu.StateKey(), Content: e.pdu.Content()}
		if e.membership != "" {
			// build kept the replaced state's content in unsigned
			evs[i].PrevMembership = gjson.GetBytes(e.pdu.Unsigned(), "prev_content.membership").String()
		}
	}
	s.policy.Written(ctx, evs)
}
