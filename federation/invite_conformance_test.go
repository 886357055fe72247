package federation_test

import (
	"context"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// syncJSON is c's /sync (since "" for an initial one) as raw JSON,
// left rooms included.
func syncJSON(t *testing.T, c *mautrix.Client, since string) gjson.Result {
	t.Helper()
	q := map[string]string{"timeout": "0", "filter": `{"room":{"include_leave":true}}`}
	if since != "" {
		q["since"] = since
	}
	body, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{Method: "GET", URL: c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q)})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return gjson.ParseBytes(body)
}

// memberEvent finds user's membership event in a room section of /sync
// (timeline first, then state).
func memberEvent(room gjson.Result, user id.UserID) gjson.Result {
	for _, part := range []string{"timeline.events", "state.events"} {
		evs := room.Get(part).Array()
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].Get("type").String() == "m.room.member" && evs[i].Get("state_key").String() == user.String() {
				return evs[i]
			}
		}
	}
	return gjson.Result{}
}

// A state event this server did not build — our own join through
// make_join/send_join, an event received over federation — still carries
// the state it replaced in unsigned (prev_content, prev_sender,
// replaces_state), as our own events do: a client reads is_direct from
// the invite a join replaced (Complement TestFederationRoomsInvite,
// "Invited user has 'is_direct' flag in prev_content after joining").
func TestRemoteStateEventsCarryPrevContent(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testRemoteStateEventsCarryPrevContent)
}

func testRemoteStateEventsCarryPrevContent(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Name: "Konsil", IsDirect: true, Invite: []id.UserID{bob.UserID},
	})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	state, err := alice.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	invite := state[event.StateMember][bob.UserID.String()]
	if invite == nil {
		t.Fatal("hs1 has no invite for bob")
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("join: %v", err)
	}
	waitFor(t, "hs1 to see bob's join", func() bool { return membershipOf(ctx, alice, room, bob.UserID) == "join" })
	first := syncJSON(t, bob, "")
	if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Konsil Kardiologie"}); err != nil {
		t.Fatal(err)
	}
	var rename gjson.Result
	waitFor(t, "the rename to reach bob", func() bool {
		for _, ev := range syncJSON(t, bob, first.Get("next_batch").String()).Get("rooms.join." + gjsonKey(room) + ".timeline.events").Array() {
			if ev.Get("type").String() == "m.room.name" {
				rename = ev
				return true
			}
		}
		return false
	})

	for _, tc := range []struct {
		name string
		ev   gjson.Result
		want map[string]any
	}{
		{"our join through send_join", memberEvent(first.Get("rooms.join."+gjsonKey(room)), bob.UserID), map[string]any{
			"content.membership":               "join",
			"unsigned.prev_content.membership": "invite",
			"unsigned.prev_content.is_direct":  true,
			"unsigned.prev_sender":             alice.UserID.String(),
			"unsigned.replaces_state":          invite.ID.String(),
		}},
		{"a state event received over federation", rename, map[string]any{
			"content.name":               "Konsil Kardiologie",
			"unsigned.prev_content.name": "Konsil",
			"unsigned.prev_sender":       alice.UserID.String(),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ev.Exists() {
				t.Fatalf("event not in bob's /sync: %s", first.Get("rooms").Raw)
			}
			for path, want := range tc.want {
				if got := tc.ev.Get(path).Value(); got != want {
					t.Errorf("%s = %v, want %v (event %s)", path, got, want, tc.ev.Raw)
				}
			}
		})
	}
}

// An invite into a room bob's server is not in is withdrawn by the
// inviter kicking him: hs1 sends the leave to hs2 (bob's server), which
// takes it without the room's state because its sender is the inviter,
// so bob's /sync moves the room from invite to leave. A leave for bob
// sent by anyone else cannot be checked there and changes nothing
// (Complement TestFederationRoomsInvite, "Inviter user can rescind invite
// over federation" and "Non-invitee user cannot rescind invite").
func TestRemoteInviteRescinded(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testRemoteInviteRescinded)
}

func testRemoteInviteRescinded(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1 := n.Server("hs1.test")
	alice, alice2, bob := hs1.Register(t, "alice"), hs1.Register(t, "alice2"), n.Server("hs2.test").Register(t, "bob")

	cases := []struct {
		name            string
		inviter, kicker *mautrix.Client
		wantRoomUnder   string // section of bob's /sync
		wantLeaveSentBy id.UserID
		room            id.RoomID
	}{
		// first: the refused kick must not be merely still under way when
		// the next case's accepted one arrives (hs1 sends in stream order)
		{name: "kicked by another member", inviter: alice2, kicker: alice, wantRoomUnder: "invite"},
		{name: "kicked by the inviter", inviter: alice, kicker: alice, wantRoomUnder: "leave", wantLeaveSentBy: alice.UserID},
	}
	for i := range cases {
		tc := &cases[i]
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice2.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		tc.room = created.RoomID
		if _, err := alice2.JoinRoomByID(ctx, tc.room); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.inviter.InviteUser(ctx, tc.room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("invite: %v", err)
		}
	}
	first := syncJSON(t, bob, "")
	for _, tc := range cases {
		if !first.Get("rooms.invite." + gjsonKey(tc.room)).Exists() {
			t.Fatalf("%s: bob has no invite to %s", tc.name, tc.room)
		}
		if _, err := tc.kicker.KickUser(ctx, tc.room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "versehentlich"}); err != nil {
			t.Fatalf("%s: kick: %v", tc.name, err)
		}
	}
	last := cases[len(cases)-1]
	waitFor(t, "the withdrawal to reach bob", func() bool {
		return syncJSON(t, bob, first.Get("next_batch").String()).Get("rooms.leave." + gjsonKey(last.room)).Exists()
	})

	now := syncJSON(t, bob, "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, section := range []string{"invite", "join", "leave"} {
				if got := now.Get("rooms." + section + "." + gjsonKey(tc.room)).Exists(); got != (section == tc.wantRoomUnder) {
					t.Errorf("room under %s: %v, want it under %s only", section, got, tc.wantRoomUnder)
				}
			}
			if tc.wantRoomUnder != "leave" {
				return
			}
			leave := memberEvent(now.Get("rooms.leave."+gjsonKey(tc.room)), bob.UserID)
			if leave.Get("content.membership").String() != "leave" || leave.Get("sender").String() != tc.wantLeaveSentBy.String() ||
				leave.Get("content.reason").String() != "versehentlich" || leave.Get("unsigned.prev_content.membership").String() != "invite" {
				t.Errorf("bob's membership event %s, want the leave %s sent with the invite as prev_content", leave.Raw, tc.wantLeaveSentBy)
			}
		})
	}
}

// A room bob's server holds the state of but has left (bob, its only
// member there, was banned) still takes the events about bob the
// ordinary way: the unban reaches hs2, so a new invite is not refused as
// "membership is ban" and bob can join again (Complement
// TestUnbanViaInvite). An invite into such a room reaches hs2 out of
// band, and its withdrawal by the inviter is taken like one into a room
// hs2 never saw.
func TestRemoteMembershipAfterLeaving(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testRemoteMembershipAfterLeaving)
}

func testRemoteMembershipAfterLeaving(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	inSection := func(section string) func() bool {
		return func() bool { return syncJSON(t, bob, "").Get("rooms." + section + "." + gjsonKey(room)).Exists() }
	}

	if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	waitFor(t, "bob to see the ban", inSection("leave"))
	if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("unban: %v", err)
	}
	waitFor(t, "hs2 to take the unban", func() bool {
		m := memberEvent(syncJSON(t, bob, "").Get("rooms.leave."+gjsonKey(room)), bob.UserID)
		return m.Get("content.membership").String() == "leave" && m.Get("unsigned.prev_content.membership").String() == "ban"
	})

	for _, step := range []struct {
		name string
		do   func() error
		want string // section of bob's /sync afterwards
	}{
		{"re-invite after the unban", func() error {
			_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
			return err
		}, "invite"},
		{"the inviter withdraws it", func() error {
			_, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID})
			return err
		}, "leave"},
		{"invited again", func() error {
			_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
			return err
		}, "invite"},
		{"bob joins", func() error {
			_, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}})
			return err
		}, "join"},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		waitFor(t, step.name+": room under "+step.want+" in bob's /sync", inSection(step.want))
	}
}
