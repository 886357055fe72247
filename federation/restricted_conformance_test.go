package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
)

// Restricted rooms over federation (MSC3083): the resident server alone
// judges, on its own current state, whether a joiner is in an allowed
// room, and says so at make_join and again at send_join.

// restrictedRoom creates, as c, a public room and a room of version
// version restricted to the first one's members, and returns both.
func restrictedRoom(t *testing.T, c *mautrix.Client, version string, via string) (allowed, room id.RoomID) {
	t.Helper()
	ctx := context.Background()
	a, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "allowed"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "restricted", RoomVersion: id.RoomVersion(version)})
	if err != nil {
		t.Fatal(err)
	}
	setJoinRules(t, c, r.RoomID, []any{map[string]any{"type": "m.room_membership", "room_id": a.RoomID, "via": []string{via}}})
	return a.RoomID, r.RoomID
}

func setJoinRules(t *testing.T, c *mautrix.Client, room id.RoomID, allow any) {
	t.Helper()
	if _, err := c.SendStateEvent(context.Background(), room, event.StateJoinRules, "", map[string]any{"join_rule": "restricted", "allow": allow}); err != nil {
		t.Fatalf("set join rules: %v", err)
	}
}

func joinVia(c *mautrix.Client, room id.RoomID, via ...string) error {
	_, err := c.JoinRoom(context.Background(), room.String(), &mautrix.ReqJoinRoom{Via: via})
	return err
}

// memberContent is user's current member event content as c sees it.
func memberContent(c *mautrix.Client, room id.RoomID, user id.UserID) map[string]any {
	var m map[string]any
	if err := c.StateEvent(context.Background(), room, event.StateMember, user.String(), &m); err != nil {
		return nil
	}
	return m
}

func waitMembership(t *testing.T, c *mautrix.Client, room id.RoomID, user id.UserID, want string) {
	t.Helper()
	waitFor(t, string(user)+" "+want+" in "+string(room)+" as "+string(c.UserID)+" sees it", func() bool {
		return membershipOf(context.Background(), c, room, user) == want
	})
}

// remoteErrcode is the errcode of a federation client error.
func remoteErrcode(err error) (int, string) {
	var he gomatrix.HTTPError
	if !errors.As(err, &he) {
		return 0, ""
	}
	var me struct {
		Code string `json:"errcode"`
	}
	_ = json.Unmarshal(he.Contents, &me)
	return he.Code, me.Code
}

func TestRestrictedJoinOverFederation(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
		allowed, room := restrictedRoom(t, alice, "8", "hs1.test")

		if err := joinVia(bob, room, "hs1.test"); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Fatalf("join before joining the allowed room: %v, want M_FORBIDDEN", err)
		}

		if err := joinVia(bob, allowed, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		if err := joinVia(bob, room, "hs1.test"); err != nil {
			t.Fatalf("join as a member of the allowed room: %v", err)
		}
		if got := memberContent(alice, room, bob.UserID)["join_authorised_via_users_server"]; got != alice.UserID.String() {
			t.Fatalf("bob's join authorised via %v, want %s", got, alice.UserID)
		}

		// A profile change is a join→join too: the authoriser of the
		// first join does not carry over.
		if err := bob.SetDisplayName(ctx, "Robert"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "hs1 to accept bob's new display name", func() bool {
			return memberContent(alice, room, bob.UserID)["displayname"] == "Robert"
		})

		// A join→join with a made-up authoriser: the server drops the
		// key, so hs1 accepts the event (it would demand a signature from
		// the server of "unused" otherwise, and then every later
		// membership of bob's would cite an event hs1 refused).
		if _, err := bob.SendStateEvent(ctx, room, event.StateMember, bob.UserID.String(), map[string]any{
			"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused",
		}); err != nil {
			t.Fatalf("profile change with a client-chosen authoriser: %v", err)
		}
		waitFor(t, "hs1 to accept bob's profile change", func() bool {
			return memberContent(alice, room, bob.UserID)["displayname"] == "Bobby"
		})
		if _, ok := memberContent(alice, room, bob.UserID)["join_authorised_via_users_server"]; ok {
			t.Fatal("the client-chosen authoriser was kept")
		}

		// Left the allowed room: hs1 refuses, on its own current state.
		for _, r := range []id.RoomID{room, allowed} {
			if _, err := bob.LeaveRoom(ctx, r); err != nil {
				t.Fatal(err)
			}
			waitMembership(t, alice, r, bob.UserID, "leave")
		}
		if err := joinVia(bob, room, "hs1.test"); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Fatalf("join after leaving the allowed room: %v, want M_FORBIDDEN", err)
		}

		// make_join's judgement binds nothing: a template obtained while
		// in the allowed room is judged again at send_join.
		if err := joinVia(bob, allowed, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, alice, allowed, bob.UserID, "join")
		made, err := hs2.Fed.Client.MakeJoin(ctx, "hs2.test", "hs1.test", room.String(), bob.UserID.String())
		if err != nil {
			t.Fatalf("make_join: %v", err)
		}
		if _, err := bob.LeaveRoom(ctx, allowed); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, alice, allowed, bob.UserID, "leave")
		impl := gomatrixserverlib.MustGetRoomVersion(made.RoomVersion)
		made.JoinEvent.Version = impl
		join, err := impl.NewEventBuilderFromProtoEvent(&made.JoinEvent).Build(time.Now(), "hs2.test",
			gomatrixserverlib.KeyID(hs2.SigningKey.KeyID), hs2.SigningKey.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hs2.Fed.Client.SendJoin(ctx, "hs2.test", "hs1.test", join); err == nil {
			t.Fatal("send_join of a stale template: accepted, want refused")
		} else if code, _ := remoteErrcode(err); code != http.StatusForbidden {
			t.Fatalf("send_join of a stale template: %v, want 403", err)
		}
		if m := membershipOf(ctx, alice, room, bob.UserID); m != "leave" {
			t.Fatalf("bob's membership on hs1 after the refused send_join: %q", m)
		}

		// Mangled allow lists let no one in without an invite. (A list
		// mixing invalid and valid entries is not tested: the spec ignores
		// the invalid ones, but gomatrixserverlib's auth rules then fail to
		// read the whole join rule, so no server on it would accept the
		// join whatever we vouch.)
		if err := joinVia(bob, allowed, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, alice, allowed, bob.UserID, "join")
		for _, tc := range []struct {
			name  string
			allow any
			ok    bool
		}{
			{"a list of strings", []string{"invalid"}, false},
			{"not a list", "invalid", false},
		} {
			setJoinRules(t, alice, room, tc.allow)
			err := joinVia(bob, room, "hs1.test")
			if tc.ok != (err == nil) {
				t.Fatalf("%s: join: %v, want success %v", tc.name, err, tc.ok)
			}
		}
	})
}

// A server without a user who may invite, or that is not in the allowed
// room, says so with the errcodes that make the joiner try the next
// server; a joiner does try it.
func TestRestrictedJoinFailOver(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test", "hs3.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs2, hs3 := n.Server("hs2.test"), n.Server("hs3.test")
		alice := n.Server("hs1.test").Register(t, "alice")
		bob, charlie := hs2.Register(t, "bob"), hs3.Register(t, "charlie")
		allowed, room := restrictedRoom(t, alice, "8", "hs1.test")
		if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"invite": 100, "users": map[string]any{alice.UserID.String(): 100}}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []id.RoomID{allowed, room} {
			if err := joinVia(bob, r, "hs1.test"); err != nil {
				t.Fatal(err)
			}
		}
		if err := joinVia(charlie, allowed, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, bob, allowed, charlie.UserID, "join")

		_, err := hs3.Fed.Client.MakeJoin(ctx, "hs3.test", "hs2.test", room.String(), charlie.UserID.String())
		if code, errcode := remoteErrcode(err); code != http.StatusBadRequest || errcode != "M_UNABLE_TO_GRANT_JOIN" {
			t.Fatalf("make_join on a server whose users may not invite: %v, want 400 M_UNABLE_TO_GRANT_JOIN", err)
		}
		if err := joinVia(charlie, room, "hs2.test"); err == nil {
			t.Fatal("join through hs2 alone succeeded")
		}
		if err := joinVia(charlie, room, "hs2.test", "hs1.test"); err != nil {
			t.Fatalf("join failing over to hs1: %v", err)
		}
		waitFor(t, "charlie's join on hs2", func() bool {
			return memberContent(bob, room, charlie.UserID)["join_authorised_via_users_server"] == alice.UserID.String()
		})

		// bob may invite now, but hs2 has left the allowed room: its
		// record of charlie there is stale, so it cannot judge.
		if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"invite": 100, "users": map[string]any{alice.UserID.String(): 100, bob.UserID.String(): 100}}); err != nil {
			t.Fatal(err)
		}
		if _, err := charlie.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, bob, room, charlie.UserID, "leave")
		if _, err := bob.LeaveRoom(ctx, allowed); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's power on hs2", func() bool {
			var pl event.PowerLevelsEventContent
			return bob.StateEvent(ctx, room, event.StatePowerLevels, "", &pl) == nil && pl.GetUserLevel(bob.UserID) == 100
		})
		_, err = hs3.Fed.Client.MakeJoin(ctx, "hs3.test", "hs2.test", room.String(), charlie.UserID.String())
		if code, errcode := remoteErrcode(err); code != http.StatusBadRequest || errcode != "M_UNABLE_TO_AUTHORISE_JOIN" {
			t.Fatalf("make_join on a server not in the allowed room: %v, want 400 M_UNABLE_TO_AUTHORISE_JOIN", err)
		}
		if err := joinVia(charlie, room, "hs2.test", "hs1.test"); err != nil {
			t.Fatalf("join failing over to hs1: %v", err)
		}
	})
}

// A server in a restricted room none of whose users may invite joins its
// own user through a resident server that can vouch.
func TestRestrictedJoinLocalUserThroughOtherServer(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		charlie := hs2.Register(t, "charlie")
		alice, bob := hs1.Register(t, "alice"), hs1.Register(t, "bob")
		allowed, room := restrictedRoom(t, charlie, "8", "hs2.test")
		mustInvite(t, charlie, room, alice.UserID)
		waitFor(t, "alice's invite", func() bool { return joinVia(alice, room, "hs2.test") == nil })

		if err := joinVia(bob, room, "hs1.test"); err == nil {
			t.Fatal("bob joined without being in the allowed room")
		}
		if err := joinVia(bob, allowed, "hs2.test"); err != nil {
			t.Fatal(err)
		}
		if err := joinVia(bob, room, "hs1.test"); err != nil {
			t.Fatalf("join through hs2 for a user of a resident server: %v", err)
		}
		waitMembership(t, charlie, room, bob.UserID, "join")
		waitMembership(t, alice, room, bob.UserID, "join")
		if got := memberContent(alice, room, bob.UserID)["join_authorised_via_users_server"]; got != charlie.UserID.String() {
			t.Fatalf("bob's join authorised via %v, want %s", got, charlie.UserID)
		}
	})
}

// In a v12 room the creator is in no power level list and may vouch
// (creators are above all levels); later a local user with invite power
// vouches without asking the creator's server.
func TestRestrictedJoinV12Authorisers(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		alice := hs1.Register(t, "alice")
		bob, charlie := hs2.Register(t, "bob"), hs2.Register(t, "charlie")
		allowed, room := restrictedRoom(t, alice, "12", "hs1.test")
		for _, r := range []id.RoomID{allowed, room} {
			if err := joinVia(bob, r, "hs1.test"); err != nil {
				t.Fatal(err)
			}
		}
		if got := memberContent(bob, room, bob.UserID)["join_authorised_via_users_server"]; got != alice.UserID.String() {
			t.Fatalf("bob's join authorised via %v, want the creator %s", got, alice.UserID)
		}
		if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{"invite": 50, "users": map[string]any{bob.UserID.String(): 50}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's power on hs2", func() bool {
			var pl event.PowerLevelsEventContent
			return bob.StateEvent(ctx, room, event.StatePowerLevels, "", &pl) == nil && pl.GetUserLevel(bob.UserID) == 50
		})
		if err := joinVia(charlie, allowed, "hs1.test"); err != nil {
			t.Fatal(err)
		}
		if err := joinVia(charlie, room, "hs2.test"); err != nil {
			t.Fatal(err)
		}
		if got := memberContent(bob, room, charlie.UserID)["join_authorised_via_users_server"]; got != bob.UserID.String() {
			t.Fatalf("charlie's join authorised via %v, want the local inviter %s", got, bob.UserID)
		}
	})
}
