package federation_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/internal/storage/storagetest"
)

// eachNetwork runs fn on a two-server network (hs1.test, hs2.test) per
// engine: SQLite, and PostgreSQL when PRAXIS_TEST_POSTGRES is set (each
// server with its own fresh database).
func eachNetwork(t *testing.T, fn func(t *testing.T, n *hstest.Network)) {
	for name, dsn := range storagetest.Engines(t) {
		t.Run(name, func(t *testing.T) {
			fn(t, hstest.NewNetworkWith(t, []string{"hs1.test", "hs2.test"}, hstest.WithConfig(func(c *config.Config) { c.Database = dsn(t) })))
		})
	}
}

// mustCreateRoom creates a room as c and returns its ID.
func mustCreateRoom(t *testing.T, c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	created, err := c.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return created.RoomID
}

// mustInvite has c invite user into room.
func mustInvite(t *testing.T, c *mautrix.Client, room id.RoomID, user id.UserID) {
	t.Helper()
	if _, err := c.InviteUser(context.Background(), room, &mautrix.ReqInviteUser{UserID: user}); err != nil {
		t.Fatalf("invite %s: %v", user, err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// hasEvent reports whether c sees an event of type typ whose content
// field key equals val in the room's recent timeline.
func hasEvent(ctx context.Context, c *mautrix.Client, room id.RoomID, typ event.Type, key, val string) bool {
	resp, err := c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		return false
	}
	for _, ev := range resp.Chunk {
		if ev.Type == typ && ev.Content.Raw[key] == val {
			return true
		}
	}
	return false
}

func membershipOf(ctx context.Context, c *mautrix.Client, room id.RoomID, user id.UserID) string {
	var m event.MemberEventContent
	if err := c.StateEvent(ctx, room, event.StateMember, user.String(), &m); err != nil {
		return ""
	}
	return string(m.Membership)
}

func TestRemoteInviteJoinTalkLeave(t *testing.T) { eachNetwork(t, testRemoteInviteJoinTalkLeave) }

func testRemoteInviteJoinTalkLeave(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")

	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "cardiology consult"})
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite remote user: %v", err)
	}
	// bob's server shows the invite with the room's stripped state
	waitFor(t, "bob's invite in /sync", func() bool {
		resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			return false
		}
		inv, ok := resp.Rooms.Invite[room]
		if !ok {
			return false
		}
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateRoomName {
				return true
			}
		}
		return false
	})

	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("join remote room: %v", err)
	}
	if m := membershipOf(ctx, alice, room, bob.UserID); m != "join" {
		t.Fatalf("alice's server sees bob as %q, want join", m)
	}
	if m := membershipOf(ctx, bob, room, alice.UserID); m != "join" {
		t.Fatalf("bob's server sees alice as %q, want join", m)
	}

	if _, err := alice.SendText(ctx, room, "from hs1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's message on hs2", func() bool { return hasEvent(ctx, bob, room, event.EventMessage, "body", "from hs1") })
	if _, err := bob.SendText(ctx, room, "from hs2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's message on hs1", func() bool { return hasEvent(ctx, alice, room, event.EventMessage, "body", "from hs2") })

	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's leave on hs1", func() bool { return membershipOf(ctx, alice, room, bob.UserID) == "leave" })
}

func TestRemoteInviteRejected(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	mustInvite(t, alice, room, bob.UserID)
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("reject remote invite: %v", err)
	}
	if m := membershipOf(ctx, alice, room, bob.UserID); m != "leave" {
		t.Fatalf("alice's server sees bob as %q after the rejection, want leave", m)
	}
}

func TestRemoteJoinRefusals(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, room string
		via        []string
		want       string
	}{
		{"invite-only room", created.RoomID.String(), nil, "M_FORBIDDEN"},
		{"unknown room on a partner", "!nope:hs1.test", nil, "M_NOT_FOUND"},
		{"server not on the allowlist", "!nope:evil.test", nil, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bob.JoinRoom(ctx, tc.room, &mautrix.ReqJoinRoom{Via: tc.via})
			if got := hstest.ErrCode(err); got != tc.want {
				t.Fatalf("join %s: got %q (%v), want %s", tc.room, got, err, tc.want)
			}
		})
	}
}

// A server joining a room late gets the earlier history through
// /backfill, in order and before its join.
func TestJoinBackfillsHistory(t *testing.T) { eachNetwork(t, testJoinBackfillsHistory) }

func testJoinBackfillsHistory(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	for _, body := range []string{"one", "two", "three"} {
		if _, err := alice.SendText(ctx, room, body); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("join: %v", err)
	}
	var got []string
	from := ""
	for page := 0; page < 10; page++ {
		resp, err := bob.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type == event.EventMessage {
				got = append(got, ev.Content.Raw["body"].(string))
			}
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	if want := []string{"three", "two", "one"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("bob's history (newest first) = %v, want %v", got, want)
	}
	// the history is not news: bob's /sync timeline does not replay it
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range resp.Rooms.Join[room].Timeline.Events {
		if ev.Type == event.EventMessage {
			t.Fatalf("backfilled message %v in the initial sync timeline", ev.Content.Raw["body"])
		}
	}
}

// Profiles and aliases of a partner's users and rooms are looked up over
// federation; a server that is not a partner is never asked.
func TestRemoteProfileAndAlias(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	if err := alice.SetDisplayName(ctx, "Dr. Alice"); err != nil {
		t.Fatal(err)
	}
	p, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil || p.DisplayName != "Dr. Alice" {
		t.Fatalf("remote profile = %+v, %v; want Dr. Alice", p, err)
	}
	if _, err := bob.GetProfile(ctx, "@nobody:hs1.test"); hstest.ErrCode(err) != "M_NOT_FOUND" {
		t.Fatalf("unknown remote user: %v, want M_NOT_FOUND", err)
	}
	if _, err := bob.GetProfile(ctx, "@x:evil.test"); hstest.ErrCode(err) != "M_NOT_FOUND" {
		t.Fatalf("user of a non-partner: %v, want M_NOT_FOUND", err)
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "konsil"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := bob.ResolveAlias(ctx, "#konsil:hs1.test")
	if err != nil || res.RoomID != created.RoomID {
		t.Fatalf("remote alias resolves to %+v, %v; want %s", res, err, created.RoomID)
	}
	joined, err := bob.JoinRoom(ctx, "#konsil:hs1.test", nil)
	if err != nil || joined.RoomID != created.RoomID {
		t.Fatalf("join by remote alias: %+v, %v", joined, err)
	}
	if m := membershipOf(ctx, alice, created.RoomID, bob.UserID); m != "join" {
		t.Fatalf("hs1 sees bob as %q after the alias join, want join", m)
	}
}

// An invite for a user of a server that is already in the room arrives
// twice — through /invite and as a PDU — and ends as one invite in the
// room's state on both servers.
func TestRemoteInviteIntoResidentRoom(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs2 := n.Server("hs2.test")
	alice, bob, carol := n.Server("hs1.test").Register(t, "alice"), hs2.Register(t, "bob"), hs2.Register(t, "carol")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	mustInvite(t, alice, room, bob.UserID)
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatalf("invite into a room hs2 is in: %v", err)
	}
	waitFor(t, "hs2 to hold carol's invite in the room state", func() bool { return membershipOf(ctx, bob, room, carol.UserID) == "invite" })
	if _, err := carol.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("carol joins: %v", err)
	}
	waitFor(t, "hs1 to see carol joined", func() bool { return membershipOf(ctx, alice, room, carol.UserID) == "join" })
	if _, err := alice.SendText(ctx, room, "for both"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "carol to get the message", func() bool { return hasEvent(ctx, carol, room, event.EventMessage, "body", "for both") })
}

// A server whose last user left a room and rejoins later takes the
// room's state anew from the resident server: what happened meanwhile is
// not lost.
func TestRejoinAfterLeavingTakesFreshState(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hs1 to see bob leave", func() bool { return membershipOf(ctx, alice, room, bob.UserID) == "leave" })
	if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "changed while bob was away"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	var topic event.TopicEventContent
	if err := bob.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "changed while bob was away" {
		t.Fatalf("topic after rejoin = %q, %v", topic.Topic, err)
	}
	if m := membershipOf(ctx, alice, room, bob.UserID); m != "join" {
		t.Fatalf("hs1 sees bob as %q after the rejoin", m)
	}
	if _, err := alice.SendText(ctx, room, "welcome back"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to get the message after the rejoin", func() bool { return hasEvent(ctx, bob, room, event.EventMessage, "body", "welcome back") })
}

// Knocking on a partner's room: the knock reaches the resident server,
// the knocker's server shows it with the room summary, and the invite
// that answers it lets the knocker join.
func TestRemoteKnock(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Sprechstunde",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Parsed: &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.KnockRoom(ctx, room.String(), &mautrix.ReqKnockRoom{Via: []string{"hs1.test"}, Reason: "Termin"}); err != nil {
		t.Fatalf("remote knock: %v", err)
	}
	if m := membershipOf(ctx, alice, room, bob.UserID); m != "knock" {
		t.Fatalf("hs1 sees bob as %q, want knock", m)
	}
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	knocked, ok := resp.Rooms.Knock[room]
	if !ok || len(knocked.State.Events) < 2 {
		t.Fatalf("bob's sync knock section for the room: %+v", resp.Rooms.Knock)
	}
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("invite the knocker: %v", err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("join after the knock: %v", err)
	}
	if m := membershipOf(ctx, alice, room, bob.UserID); m != "join" {
		t.Fatalf("hs1 sees bob as %q, want join", m)
	}
}

// A restricted room lets in a partner's user who is in one of the rooms
// its join rule names: the resident server vouches for the join.
func TestRemoteRestrictedJoin(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	team, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, team.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	rule := &event.JoinRulesEventContent{JoinRule: event.JoinRuleRestricted, Allow: []event.JoinRuleAllow{{Type: event.JoinRuleAllowRoomMembership, RoomID: team.RoomID}}}
	restricted, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Parsed: rule}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, restricted.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatalf("restricted join of a member of the allowed room: %v", err)
	}
	if m := membershipOf(ctx, alice, restricted.RoomID, bob.UserID); m != "join" {
		t.Fatalf("hs1 sees bob as %q, want join", m)
	}
	carol := n.Server("hs2.test").Register(t, "carol")
	if _, err := carol.JoinRoom(ctx, restricted.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Fatalf("restricted join of a non-member: %v, want M_FORBIDDEN", err)
	}
}

// createRoom's invite list may name a partner's users (a direct chat
// with a colleague at another practice); a non-partner's refuses the
// request before any room exists.
func TestCreateRoomInvitesRemoteUsers(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{"@eve:evil.test"}}); hstest.ErrCode(err) != "M_FORBIDDEN" {
		t.Fatalf("createRoom inviting a non-partner's user: %v, want M_FORBIDDEN", err)
	}
	if rooms, err := alice.JoinedRooms(ctx); err != nil || len(rooms.JoinedRooms) != 0 {
		t.Fatalf("a refused createRoom left rooms behind: %v, %v", rooms, err)
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom inviting a partner's user: %v", err)
	}
	if m := membershipOf(ctx, alice, created.RoomID, bob.UserID); m != "invite" {
		t.Fatalf("bob is %q in the new room, want invite", m)
	}
	var inv event.MemberEventContent
	if err := alice.StateEvent(ctx, created.RoomID, event.StateMember, bob.UserID.String(), &inv); err != nil || !inv.IsDirect {
		t.Fatalf("the invite is not marked direct: %+v, %v", inv, err)
	}
	if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
}

// With three servers, a server that joins through one learns of the
// third from the room state and talks to it directly.
func TestThreeServers(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test", "hs3.test")
	alice, bob, carol := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob"), n.Server("hs3.test").Register(t, "carol")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if _, err := carol.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{"hs1.test"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hs3 to see bob's join", func() bool { return membershipOf(ctx, carol, room, bob.UserID) == "join" })
	if _, err := bob.SendText(ctx, room, "from hs2 to all"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hs3 to get bob's message", func() bool { return hasEvent(ctx, carol, room, event.EventMessage, "body", "from hs2 to all") })
	waitFor(t, "hs1 to get bob's message", func() bool { return hasEvent(ctx, alice, room, event.EventMessage, "body", "from hs2 to all") })
	if _, err := carol.SendText(ctx, room, "from hs3 to all"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hs2 to get carol's message", func() bool { return hasEvent(ctx, bob, room, event.EventMessage, "body", "from hs3 to all") })
}
