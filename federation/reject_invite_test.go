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

// Rejecting a remote invite shows the room under leave with the user's
// leave event in /sync — whether the inviting server took the rejection
// or was unreachable (then the leave is signed by our server and kept out
// of band).
func TestRejectRemoteInviteShowsLeaveInSync(t *testing.T) {
	for _, tc := range []struct {
		name        string
		inviterDown bool
	}{
		{"inviter reachable", false},
		{"inviter unreachable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
			alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
			room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			mustInvite(t, alice, room, bob.UserID)
			first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := first.Rooms.Invite[room]; !ok {
				t.Fatalf("bob has no invite to %s", room)
			}
			n.SetDown("hs1.test", tc.inviterDown)
			if _, err := bob.LeaveRoom(ctx, room, &mautrix.ReqLeave{Reason: "kein Bedarf"}); err != nil {
				t.Fatalf("reject the invite: %v", err)
			}
			body, err := bob.MakeFullRequest(ctx, mautrix.FullRequest{Method: "GET",
				URL: bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{"since": first.NextBatch})})
			if err != nil {
				t.Fatal(err)
			}
			resp := string(body)
			if gjson.Get(resp, "rooms.invite."+gjsonKey(room)).Exists() {
				t.Errorf("the invite still shows after the rejection")
			}
			evs := gjson.Get(resp, "rooms.leave."+gjsonKey(room)+".timeline.events").Array()
			if len(evs) == 0 {
				t.Fatalf("no leave timeline for the rejected room: %s", gjson.Get(resp, "rooms").Raw)
			}
			leave := evs[len(evs)-1]
			if leave.Get("state_key").String() != bob.UserID.String() || leave.Get("content.membership").String() != "leave" ||
				leave.Get("content.reason").String() != "kein Bedarf" {
				t.Errorf("last event = %s, want bob's leave", leave.Raw)
			}
			if tc.inviterDown {
				if m := membershipOf(ctx, alice, room, bob.UserID); m != "invite" {
					t.Errorf("hs1 was down but sees bob as %q", m)
				}
			} else if m := membershipOf(ctx, alice, room, bob.UserID); m != "leave" {
				t.Errorf("hs1 sees bob as %q after the rejection, want leave", m)
			}
		})
	}
}

// gjsonKey escapes a room ID for a gjson path.
func gjsonKey(room id.RoomID) string {
	out := []byte{}
	for _, c := range []byte(room) {
		if c == '.' || c == '*' || c == '?' || c == '|' || c == '#' || c == '@' {
			out = append(out, '\\')
		}
		out = append(out, c)
	}
	return string(out)
}

// An invite into a room the invitee's server is already in still shows
// the room's name and the inviter in the invitee's /sync (invite_state),
// as an invite into a room the server does not know does.
func TestInviteIntoResidentRoomShowsRoomState(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	hs2 := n.Server("hs2.test")
	alice, bob, carol := n.Server("hs1.test").Register(t, "alice"), hs2.Register(t, "bob"), hs2.Register(t, "carol")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Befundbesprechung"})
	mustInvite(t, alice, room, bob.UserID)
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	mustInvite(t, alice, room, carol.UserID)
	waitFor(t, "carol's invite", func() bool {
		resp, err := carol.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			return false
		}
		inv, ok := resp.Rooms.Invite[room]
		if !ok {
			return false
		}
		var name, inviter bool
		for _, e := range inv.State.Events {
			name = name || (e.Type.Type == "m.room.name" && e.Content.Raw["name"] == "Befundbesprechung")
			inviter = inviter || (e.Type.Type == "m.room.member" && e.GetStateKey() == carol.UserID.String() && e.Sender == alice.UserID)
		}
		if !name || !inviter {
			t.Logf("invite_state lacks the name (%v) or alice's invite (%v)", name, inviter)
		}
		return name && inviter
	})
}

// A join through another server keeps the keys the client added to its
// join body, as a local join does.
func TestRemoteJoinKeepsBodyContent(t *testing.T) {
	ctx := context.Background()
	n := hstest.NewNetwork(t, "hs1.test", "hs2.test")
	alice, bob := n.Server("hs1.test").Register(t, "alice"), n.Server("hs2.test").Register(t, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	url := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", created.RoomID.String()}, map[string]string{"via": "hs1.test"})
	if _, err := bob.MakeRequest(ctx, "POST", url, map[string]any{"foo": "bar", "membership": "ban"}, nil); err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := alice.StateEvent(ctx, created.RoomID, event.StateMember, bob.UserID.String(), &c); err != nil {
		t.Fatal(err)
	}
	if c["foo"] != "bar" || c["membership"] != "join" {
		t.Errorf("bob's member content on hs1 = %v, want foo=bar and membership join", c)
	}
}
