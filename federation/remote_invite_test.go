package federation_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/hstest"
	"praxis/internal/storage"
)

func TestRemoteInviteFailures(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, testRemoteInviteFailures)
}

func testRemoteInviteFailures(t *testing.T, n *hstest.Network) {
	ctx := context.Background()
	hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
	alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Konsil"})

	for _, tc := range []struct {
		name       string
		target     id.UserID
		setup      func(t *testing.T) (undo func())
		wantStatus int
		wantCode   string
		wantInMsg  string
	}{
		{
			name: "invitee's server is down", target: bob.UserID,
			setup: func(t *testing.T) func() {
				n.SetDown("hs2.test", true)
				return func() { n.SetDown("hs2.test", false) }
			},
			wantStatus: 502, wantCode: "M_UNKNOWN", wantInMsg: "hs2.test",
		},
		{
			name: "invitee's server refuses us", target: bob.UserID,
			setup: func(t *testing.T) func() {
				allow(t, hs2, "hs1.test", false)
				return func() { allow(t, hs2, "hs1.test", true) }
			},
			wantStatus: 403, wantCode: "M_FORBIDDEN", wantInMsg: "hs2.test refused the invite",
		},
		{
			name: "unknown user on the invitee's server", target: "@nobody:hs2.test",
			wantStatus: 404, wantCode: "M_NOT_FOUND", wantInMsg: "hs2.test",
		},
		{
			name: "server that is no partner", target: "@carol:hs3.test",
			wantStatus: 403, wantCode: "M_FORBIDDEN", wantInMsg: "hs3.test",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				defer tc.setup(t)()
			}
			_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: tc.target})
			var he mautrix.HTTPError
			if !errors.As(err, &he) || he.RespError == nil {
				t.Fatalf("invite: %v, want HTTP %d %s", err, tc.wantStatus, tc.wantCode)
			}
			if he.Response.StatusCode != tc.wantStatus || he.RespError.ErrCode != tc.wantCode || !strings.Contains(he.RespError.Err, tc.wantInMsg) {
				t.Errorf("got %d %s %q, want %d %s mentioning %q", he.Response.StatusCode, he.RespError.ErrCode, he.RespError.Err, tc.wantStatus, tc.wantCode, tc.wantInMsg)
			}
			// nothing stored: the room has no membership event for the target
			var m event.MemberEventContent
			if err := alice.StateEvent(ctx, room, event.StateMember, tc.target.String(), &m); hstest.ErrCode(err) != "M_NOT_FOUND" {
				t.Errorf("state of %s after the failed invite: %+v (%v), want none", tc.target, m, err)
			}
		})
	}

	t.Run("the invite works once the partner is back", func(t *testing.T) {
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("invite: %v", err)
		}
		if got := membershipOf(ctx, alice, room, bob.UserID); got != "invite" {
			t.Errorf("bob's membership %q, want invite", got)
		}
	})
}

// TestTrustedPrivateChatRemoteInvitee: the trusted_private_chat preset
// gives every invitee power level 100, those of a partner server too.
func TestTrustedPrivateChatRemoteInvitee(t *testing.T) {
	hstest.EachNetwork(t, []string{"hs1.test", "hs2.test"}, func(t *testing.T, n *hstest.Network) {
		ctx := context.Background()
		hs1, hs2 := n.Server("hs1.test"), n.Server("hs2.test")
		alice, carol, bob := hs1.Register(t, "alice"), hs1.Register(t, "carol"), hs2.Register(t, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID, carol.UserID},
		})
		if err != nil {
			t.Fatal(err)
		}
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx, created.RoomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		for _, u := range []id.UserID{alice.UserID, carol.UserID, bob.UserID} {
			if got := pl.GetUserLevel(u); got != 100 {
				t.Errorf("power level of %s is %d, want 100", u, got)
			}
		}
		if got := membershipOf(ctx, alice, created.RoomID, bob.UserID); got != "invite" {
			t.Errorf("bob's membership %q, want invite", got)
		}
	})
}

// allow changes srv's allowlist at runtime, as praxisctl federation
// allow|deny does.
func allow(t *testing.T, srv *hstest.Server, server string, allowed bool) {
	t.Helper()
	err := srv.DB.Transact(context.Background(), func(tx *storage.DB) error {
		return srv.Fed.Allow.Set(context.Background(), tx, server, allowed, "@admin:"+srv.Config.ServerName)
	})
	if err != nil {
		t.Fatal(err)
	}
}
